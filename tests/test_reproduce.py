"""`reproduce: original`: the original KoQuality code's partitions and selections.

The reference here is an independent re-implementation of the original's gen_dataset_curation scripts in
pandas and sklearn, written from the original code (nayohan/KoQuality): generate_perplexity.py rounds `ppl`
to 2 decimals and sorts by (len, ppl); generate_sentence_embedding_clustering.py splits by `len` quantiles,
fits `KMeans(random_state=42, n_clusters=K, n_init=10)` per group on that row order and assigns the labels
back by position, then sorts by (len_group, cluster, ppl, len); proceed_sampling_dataset.py sorts each length
group by ppl and keeps positions 0, s, 2s, … (ppl) or the first int(N × cell) unique instructions (ppl_h).
The original's per-group `sort_values('ppl')` is pandas' unstable quicksort; the reference uses
kind="stable", so the equality below is "up to that sort's tie order". K-means runs at one thread on both
sides (sklearn's multithreaded Lloyd sums in thread order).
"""

import glob

import numpy as np
import pyarrow as pa
import pytest
from threadpoolctl import threadpool_limits

from conftest import koquality
from koquality.clustering import cluster, original_order, round_ppl
from koquality.errors import KoqualityError
from koquality.recipe import load_recipe, parse_recipe
from koquality.sampling import sample
from koquality.tables import read_table

pd = pytest.importorskip("pandas")
L, K, N = 5, 10, 0.1  # the demo recipe's


def original_clusters(frame, vectors_by_id, len_groups, k, random_state=42):
    """The original's generate_perplexity.py + generate_sentence_embedding_clustering.py after scoring and
    embedding: returns its cluster file (a DataFrame in the order it wrote it)."""
    from sklearn.cluster import KMeans

    df = frame[["id", "len", "ppl", "instruction"]].copy()
    df["ppl"] = [round(p, 2) for p in df["ppl"]]
    df = df.sort_values(by=["len", "ppl"]).dropna(axis=0).reset_index(drop=True)  # written as JSON, read back
    parts = []
    for i in range(len_groups):  # make_split_len
        if i == len_groups - 1:
            part = df[df["len"] >= df["len"].quantile(q=i / len_groups)].copy()
        else:
            part = df[(df["len"] >= df["len"].quantile(q=i / len_groups))
                      & (df["len"] < df["len"].quantile(q=(i + 1) / len_groups))].copy()
        part["len_group"] = i
        parts.append(part)
    for part in parts:  # run_clustering: the group's embeddings in its row order, labels back by position
        emb = np.stack([vectors_by_id[i] for i in part["id"]])
        with threadpool_limits(limits=1):
            part["cluster"] = KMeans(random_state=random_state, n_clusters=k, n_init=10).fit_predict(emb)
    final = pd.concat(parts, ignore_index=True).sort_values(by=["len_group", "cluster", "ppl", "len"], axis=0)
    return final.reset_index(drop=True)


def original_sampling(clusters_df, len_groups, k, method, ratio):
    """proceed_sampling_dataset.py's sampling_data and final sort, with kind="stable" for its quicksort."""
    parts = []
    for g in range(len_groups):
        df = clusters_df[clusters_df["len_group"] == g]
        df = df.sort_values("ppl", ascending=method == "ppl", kind="stable")
        cells = [df[df["cluster"] == c] for c in range(k)]
        if method == "ppl":
            cells = [cell.iloc[list(range(0, len(cell), int(1 / ratio))), :] for cell in cells]
        else:
            cells = [cell.drop_duplicates(["instruction"])[:int(ratio * len(cell))] for cell in cells]
        parts.append(pd.concat(cells, ignore_index=True))
    result = pd.concat(parts, ignore_index=True)
    return result.sort_values(by=["len_group", "cluster", "ppl", "len"], axis=0)


@pytest.fixture(scope="module")
def original_run(tmp_path_factory):
    """The demo corpus through `koquality run --reproduce original` (the CLI as a user runs it)."""
    run_dir = tmp_path_factory.mktemp("reproduce") / "run"
    koquality("run", "--reproduce", "original", "--output", run_dir, "--no-report")
    corpus = read_table(run_dir / "corpus.parquet")
    vectors = np.load(glob.glob(str(run_dir / "vectors" / "*.npy"))[0])
    frame = corpus.select(["id", "len", "ppl", "instruction"]).to_pandas()
    reference = original_clusters(frame, dict(zip(frame["id"], vectors)), L, K)
    return run_dir, corpus, vectors, frame, reference


def test_clusters_equal_sklearn_run_the_original_way(original_run):
    run_dir, corpus, _, _, reference = original_run
    ours = read_table(run_dir / "clusters" / f"len{L}_k{K}.parquet").to_pandas().set_index("id")
    theirs = reference.set_index("id").loc[ours.index]
    assert (ours["len_group"].to_numpy() == theirs["len_group"].to_numpy()).all()
    assert (ours["cluster"].to_numpy() == theirs["cluster"].to_numpy()).all()
    assert corpus.num_rows == len(reference) > 300
    rounded = [round(p, 2) for p in corpus.column("ppl").to_pylist()]
    assert len(set(rounded)) < len(rounded)  # the demo has ties in rounded ppl


def test_the_row_order_matters(original_run):
    # the same KMeans fed each group's rows in table order (not the original's) labels them otherwise
    from sklearn.cluster import KMeans

    run_dir, corpus, vectors, _, _ = original_run
    clusters = read_table(run_dir / "clusters" / f"len{L}_k{K}.parquet")
    assert clusters.column("id").to_pylist() == corpus.column("id").to_pylist()  # written in corpus order
    groups, labels = clusters.column("len_group").to_numpy(), clusters.column("cluster").to_numpy()
    differ = 0
    for g in range(L):
        rows = np.flatnonzero(groups == g)
        with threadpool_limits(limits=1):
            other = KMeans(random_state=42, n_clusters=K, n_init=10).fit_predict(vectors[rows])
        differ += not np.array_equal(other, labels[rows])
    assert differ


def test_selection_equals_the_original_sampling(original_run):
    run_dir, corpus, _, _, reference = original_run
    selection = read_table(run_dir / "selections" / f"len{L}_k{K}_mppl_n{N:g}.jsonl")
    expected = original_sampling(reference, L, K, "ppl", N)
    assert selection.column("id").to_pylist() == expected["id"].tolist()  # the same rows in the same order
    assert selection.column("ppl_rounded").to_pylist() == expected["ppl"].tolist()
    by_id = dict(zip(corpus.column("id").to_pylist(), corpus.column("ppl").to_pylist()))
    assert selection.column("ppl").to_pylist() == [by_id[i] for i in expected["id"]]  # ppl itself unrounded

    clusters = read_table(run_dir / "clusters" / f"len{L}_k{K}.parquet")  # in corpus order
    clustered = corpus.append_column("len_group", clusters.column("len_group")).append_column("cluster", clusters.column("cluster"))
    for method, ratio in (("ppl_h", 0.2), ("ppl", 0.25)):
        ours = sample(clustered, method, ratio, reproduce="original")
        assert ours.column("id").to_pylist() == original_sampling(reference, L, K, method, ratio)["id"].tolist()


def test_cluster_and_sample_commands_match_the_run(original_run, tmp_path):
    run_dir, corpus, vectors, _, _ = original_run
    np.save(tmp_path / "vectors.npy", vectors)
    koquality("cluster", run_dir / "corpus.parquet", "--vectors", tmp_path / "vectors.npy", "--len-groups", L, "--k", K,
              "--output", tmp_path / "clustered.parquet", "--reproduce", "original")
    koquality("sample", tmp_path / "clustered.parquet", "--method", "ppl", "--ratio", N, "--output",
              tmp_path / "selection.parquet", "--reproduce", "original")
    selection = read_table(run_dir / "selections" / f"len{L}_k{K}_mppl_n{N:g}.jsonl")
    assert read_table(tmp_path / "selection.parquet").column("id").to_pylist() == selection.column("id").to_pylist()
    bad = koquality("sample", tmp_path / "clustered.parquet", "--method", "ppl", "--ratio", N, "--output",
                    tmp_path / "x.parquet", "--reproduce", "paper", check=False)
    assert bad.returncode == 2 and "--reproduce paper: expected original" in bad.stderr


def test_ties_in_length_and_rounded_ppl_keep_table_order():
    # rows 0-5 share len 3; ppl 1.004 / 1.001 / 0.996 all round to 1.0: the original's order is by (len, rounded
    # ppl), ties in table order — not by the unrounded ppl
    lengths = np.array([3, 3, 3, 3, 3, 3, 1, 2])
    ppl = np.array([1.004, 2.0, 1.001, 0.996, 1.5, 0.5, 9.0, 0.1])
    rounded = round_ppl(ppl)
    assert rounded.tolist() == [1.0, 2.0, 1.0, 1.0, 1.5, 0.5, 9.0, 0.1]
    assert original_order(lengths, rounded).tolist() == [6, 7, 5, 0, 2, 3, 4, 1]
    assert round_ppl([2.675, 1.005, 0.125]).tolist() == [round(2.675, 2), round(1.005, 2), round(0.125, 2)]
    # Python's round on the float, as the original (ppl.tolist() is a float): numpy's rounds 3.145 to 3.14
    assert round_ppl(np.array([3.145])).tolist() == [3.15] and np.round(3.145, 2) == 3.14


def test_synthetic_ties_match_the_reference():
    rng = np.random.default_rng(7)
    n = 240
    lengths = rng.integers(5, 12, n)  # few lengths: many rows tie in len
    ppl = np.round(rng.uniform(3, 3.2, n), 3)  # 3 decimals, rounded to 2: many ties in ppl too
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    table = pa.table({"id": [f"r{i}" for i in range(n)], "len": pa.array(lengths, pa.int32()), "ppl": ppl,
                      "instruction": [f"q{i % 200}" for i in range(n)]})
    ours = cluster(table, vectors, 3, 6, seed=42, reproduce="original")
    reference = original_clusters(table.to_pandas(), dict(zip(table.column("id").to_pylist(), vectors)), 3, 6)
    theirs = reference.set_index("id").loc[table.column("id").to_pylist()]
    assert ours.table.column("cluster").to_pylist() == theirs["cluster"].tolist()
    assert ours.table.column("len_group").to_pylist() == theirs["len_group"].tolist()
    assert ours.table.column("ppl").to_pylist() == ppl.tolist()  # the scored ppl stays; ppl_rounded is added
    assert ours.table.column("ppl_rounded").to_pylist() == [round(p, 2) for p in ppl.tolist()]
    assert ours.info["reproduce"] == "original" and "random_state=42" in ours.info["kmeans"]
    for method, ratio in (("ppl", 0.2), ("ppl_h", 0.3)):
        picked = sample(ours.table, method, ratio, reproduce="original").column("id").to_pylist()
        assert picked == original_sampling(reference, 3, 6, method, ratio)["id"].tolist()


def test_default_mode_adds_nothing():
    rng = np.random.default_rng(0)
    table = pa.table({"id": [str(i) for i in range(60)], "len": pa.array(rng.integers(1, 50, 60), pa.int32()),
                      "ppl": rng.uniform(1, 9, 60), "instruction": [str(i) for i in range(60)]})
    result = cluster(table, rng.normal(size=(60, 4)).astype(np.float32), 2, 3, seed=42)
    assert "ppl_rounded" not in result.table.column_names and "reproduce" not in result.info
    assert "ppl_rounded" not in sample(result.table, "ppl", 0.5).column_names
    assert "reproduce" not in load_recipe("demo").to_yaml()
    recipe = parse_recipe({**load_recipe("demo").model_dump(), "reproduce": "original"})
    assert "reproduce: original" in recipe.to_yaml()
    with pytest.raises(KoqualityError, match="reproduce"):
        parse_recipe({**load_recipe("demo").model_dump(), "reproduce": "paper"})
    with pytest.raises(KoqualityError, match="expected original"):
        cluster(table, np.zeros((60, 4), np.float32), 2, 3, reproduce="paper")


# --- training: the original's shell script (train_llm/train_A100_5.8b.sh + ds_zero3-nooffload.json) ---------------


class DeepSpeed095WarmupLR:
    """DeepSpeed 0.9.5's WarmupLR (deepspeed/runtime/lr_schedules.py), as the original's engine drove it: built
    with the Trainer's "auto" values (min 0, max = lr, warmup_num_steps 0), stepped after every applied step."""

    def __init__(self, optimizer, warmup_min_lr=0.0, warmup_max_lr=5e-5, warmup_num_steps=0):
        import math

        self.optimizer, self.min_lr, self.delta = optimizer, warmup_min_lr, warmup_max_lr - warmup_min_lr
        self.warmup_num_steps = max(2, warmup_num_steps)
        self.inverse_log_warm_up = 1.0 / math.log(self.warmup_num_steps)
        self.last_batch_iteration = -1  # 0.9.5: no lr set here

    def step(self):
        import math

        self.last_batch_iteration += 1
        i = self.last_batch_iteration
        gamma = self.inverse_log_warm_up * math.log(i + 1) if i < self.warmup_num_steps else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = self.min_lr + self.delta * gamma


def _lrs(make_scheduler, steps=6, lr=5e-5):
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(optimizer)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_warmup_lr_is_deepspeed_0_9_5s():
    from types import SimpleNamespace

    from koquality.train import _trainer_class, train_config

    config = train_config("paper-script", model="m")
    trainer_cls = _trainer_class(config)
    ours = _lrs(lambda opt: trainer_cls.create_scheduler(SimpleNamespace(lr_scheduler=None, optimizer=opt), 100))
    assert ours == _lrs(DeepSpeed095WarmupLR) == [5e-5, 0.0, 5e-5, 5e-5, 5e-5, 5e-5]
    warm4 = train_config("paper-script", model="m", warmup_steps=4)
    ours = _lrs(lambda opt: _trainer_class(warm4).create_scheduler(SimpleNamespace(lr_scheduler=None, optimizer=opt), 100))
    assert ours == pytest.approx(_lrs(lambda opt: DeepSpeed095WarmupLR(opt, warmup_num_steps=4)))
    from transformers import Trainer

    assert _trainer_class(train_config("paper", model="m")) is Trainer


def test_paper_script_preset_resolves_to_the_scripts_trainer_arguments(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from types import SimpleNamespace

    from koquality.train import _precision, grad_accumulation, train_config, training_arguments

    config = train_config("paper-script", model="EleutherAI/polyglot-ko-5.8b")
    assert (config.lr, config.block_size, config.batch_size, config.epochs, config.seed) == (5e-5, 1024, 4, 2.0, 42)
    assert grad_accumulation(config, 4) == 4  # the script: batch 4 × accumulation 4 × 4 GPUs = 64
    assert grad_accumulation(config, 1) == 16
    monkeypatch.setenv("WORLD_SIZE", "1")
    args, resolved = training_arguments(torch, config, tmp_path)
    assert resolved["grad_accum"] == 16 and resolved["global_batch_size"] == 64
    assert (args.learning_rate, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (5e-5, 4, 16)
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay) == (0.9, 0.999, 1e-8, 0.0)
    # transformers' nearest schedule (the original Trainer's warmup_steps 0: constant); the Trainer swaps in WarmupLR
    assert args.lr_scheduler_type == "constant_with_warmup" and args.warmup_steps == 0 and args.num_train_epochs == 2
    assert resolved["scheduler"].endswith("lr × 1, 0, 1, then 1")
    assert args.eval_strategy == "steps" and args.eval_steps == 1 and resolved["evaluation"] == "every 1 steps"
    assert (config.validation, config.eval_sequences) == (0.05, 100)
    assert args.seed == 42 and args.save_strategy == "epoch" and args.max_grad_norm == 1.0
    # fp16 on any GPU (the script's --fp16), where `auto` would take bf16; fp32 on CPU, where fp16 cannot train
    gpu = SimpleNamespace(cuda=SimpleNamespace(is_available=lambda: True, is_bf16_supported=lambda: True))
    assert _precision(gpu, "auto-fp16") == "fp16" and _precision(gpu, "auto") == "bf16"
    if not torch.cuda.is_available():
        assert resolved["precision"] == "fp32" and not args.fp16 and not args.bf16
    # the README's settings are the `paper` preset, unchanged: no evaluation, linear decay, global batch 256
    paper_args, paper = training_arguments(torch, train_config("paper", model="m"), tmp_path)
    assert paper_args.eval_strategy == "no" and paper_args.lr_scheduler_type == "linear" and "scheduler" not in paper
    assert paper["global_batch_size"] == 256


def test_validation_count_is_datasets_percent_slicing():
    from koquality.train import validation_count

    datasets = pytest.importorskip("datasets")
    from datasets.arrow_reader import _pct_to_abs_closest

    assert datasets.__version__ and all(validation_count(n, 0.05) == _pct_to_abs_closest(5, n) for n in range(0, 5000))
    assert [validation_count(n, 0.05) for n in (10, 30, 50, 58, 4010)] == [0, 2, 2, 3, 200]
    assert all(validation_count(n, 0.07) == _pct_to_abs_closest(7, n) for n in range(0, 2000))
    assert validation_count(4010, 0.0) == 0


def test_paper_script_holds_out_and_evaluates_the_first_texts(original_run, tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import json

    from tiny_models import build_causal_lm
    from transformers import AutoTokenizer

    from koquality.train import EVAL_FILE, read_loss_log, token_blocks, train, train_config, training_texts

    run_dir = original_run[0]
    lm = build_causal_lm(tmp_path_factory.mktemp("tiny") / "lm")
    out = tmp_path_factory.mktemp("paper-script") / "model"
    config = train_config("paper-script", model=str(lm), block_size=64, grad_accum=1, max_steps=4, lr=1e-3)
    summary = train(run_dir, out, config)
    texts, _ = training_texts(run_dir)
    held = round(5 * len(texts) / 100)  # the first 5 % of the selection, in selection order
    assert summary["data"]["validation_texts"] == held > 0 and summary["data"]["texts"] == len(texts) - held
    tokenizer = AutoTokenizer.from_pretrained(lm)
    blocks = token_blocks(tokenizer(texts[:held])["input_ids"], 64)
    assert summary["data"]["validation_sequences"] == (len(blocks) or 1)
    assert summary["data"]["tokens"] == sum(map(len, tokenizer(texts[held:])["input_ids"]))
    evals = [json.loads(line) for line in (out / EVAL_FILE).read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in evals] == [1, 2, 3, 4]  # every step, as --eval_steps=1
    assert all(0 < r["eval_loss"] < 20 and 0 <= r["eval_accuracy"] <= 1 for r in evals)
    assert summary["eval_loss"] == evals[-1]["eval_loss"]
    log = read_loss_log(out)  # loss.jsonl keeps training steps only, each with the lr it ran at
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert [r["learning_rate"] for r in log] == pytest.approx([1e-3, 0.0, 1e-3, 1e-3])  # DeepSpeed 0.9.5's WarmupLR
