"""The Hugging Face backends on tiny models built here and loaded through the same `--model PATH` code
users run. Skipped when the `hf` extra (torch, transformers) is not installed."""

import math
import random

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import koquality  # noqa: E402
from tiny_models import build_causal_lm, build_encoder, build_sentence_transformer, korean_lines  # noqa: E402

from koquality.clustering import kmeans  # noqa: E402
from koquality.embedding import embed, make_encoder  # noqa: E402
from koquality.recipe import parse_recipe  # noqa: E402
from koquality.pipeline import run  # noqa: E402
from koquality.scoring import make_scorer  # noqa: E402
from koquality.tables import read_table, write_table  # noqa: E402


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory):
    return build_causal_lm(tmp_path_factory.mktemp("models") / "tiny-neox")


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory):
    return build_encoder(tmp_path_factory.mktemp("models") / "tiny-roberta")


@pytest.fixture(scope="module")
def texts():
    lines = korean_lines()
    return lines[:40] + ["a", "서울 " * 700]  # a one-token text and one past max_length


def paper_loop_ppl(model_path, texts, max_length=1024):
    """The paper's scorer: one text at a time, fp32, no BOS, exp(mean NLL of tokens 2..n)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length, add_special_tokens=False).input_ids
        if ids.shape[1] < 2:
            out.append(math.nan)
            continue
        with torch.no_grad():
            out.append(math.exp(model(input_ids=ids, labels=ids).loss.item()))
    return np.array(out)


def test_batched_ppl_equals_the_paper_loop(lm_path, texts):
    expected = paper_loop_ppl(lm_path, texts)
    got = make_scorer("hf", model=str(lm_path), device="cpu").score(texts)
    assert np.isnan(got["ppl"][-2]) and got["n_tokens"][-2] == 1  # "a": one token, no perplexity
    assert got["n_tokens"][-1] == 1024  # truncated as the paper
    ok = ~np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got["ppl"]), ~ok)
    np.testing.assert_allclose(got["ppl"][ok], expected[ok], rtol=1e-4)


def test_batch_invariance(lm_path, texts):
    one_per_batch = make_scorer("hf", model=str(lm_path), device="cpu", batch_tokens=1).score(texts)["ppl"]
    big_batches = make_scorer("hf", model=str(lm_path), device="cpu", batch_tokens=8192).score(texts)["ppl"]
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    shuffled = make_scorer("hf", model=str(lm_path), device="cpu").score([texts[i] for i in order])["ppl"]
    unshuffled = np.empty_like(shuffled)
    unshuffled[order] = shuffled
    for other in (big_batches, unshuffled):
        np.testing.assert_allclose(other, one_per_batch, rtol=1e-5, equal_nan=True)


def test_pad_is_eos_embeddings_not_resized_and_remote_code_off(lm_path, monkeypatch):
    import transformers

    seen = {}
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    scorer = make_scorer("hf", model=str(lm_path), device="cpu")
    assert seen["trust_remote_code"] is False and seen["dtype"] == torch.float32
    assert scorer.tokenizer.pad_token is None and scorer.pad_id == scorer.tokenizer.eos_token_id
    assert scorer.model.get_input_embeddings().weight.shape[0] == len(scorer.tokenizer)


def test_add_bos_scores_the_first_token(lm_path):
    plain = make_scorer("hf", model=str(lm_path), device="cpu").score(["a", "안녕하세요"])
    bos = make_scorer("hf", model=str(lm_path), device="cpu", add_bos=True).score(["a", "안녕하세요"])
    assert list(bos["n_tokens"]) == [n + 1 for n in plain["n_tokens"]]
    assert np.isnan(plain["ppl"][0]) and np.isfinite(bos["ppl"][0])


def test_unscorable_rows_are_dropped_with_a_reason(lm_path, tmp_path):
    rows = [{"instruction": t, "output": "답변입니다."} for t in ["a", "파이썬 리스트 정렬", "서울의 인구는?"]]
    write_table(pa.Table.from_pylist(rows), tmp_path / "src.jsonl")
    recipe = parse_recipe({"name": "hf", "sources": [{"path": str(tmp_path / "src.jsonl")}],
                           "score": {"scorer": "hf", "model": str(lm_path), "device": "cpu"},
                           "cluster": {"len_groups": 1, "k": 1}, "sample": {"ratio": 1.0}})
    result = run(recipe, tmp_path / "run")
    assert result.manifest["rows"] == {"read": 3, "dropped": 1, "corpus": 2, "selected": 2}
    dropped = read_table(tmp_path / "run" / "dropped.parquet").to_pylist()
    assert dropped[0]["reason"] == "unscorable" and dropped[0]["instruction"] == "a"
    assert dropped[0]["detail"] == "1 tokens (perplexity needs at least 2)"


def test_score_cli_with_a_local_model(lm_path, texts, tmp_path):
    write_table(pa.table({"instruction": texts[:6]}), tmp_path / "in.jsonl")
    koquality("score", tmp_path / "in.jsonl", "--scorer", "hf", "--model", lm_path, "--device", "cpu",
              "--output", tmp_path / "out.parquet")
    got = read_table(tmp_path / "out.parquet").column("ppl").to_numpy()
    np.testing.assert_allclose(got, paper_loop_ppl(lm_path, texts[:6]), rtol=1e-4)


def paper_loop_embeddings(model_path, texts):
    """The paper's embedding: one text at a time, padded to 512 tokens, pooler output."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            token = tokenizer(text, padding="max_length", truncation=True, max_length=512, return_tensors="pt")
            out.append(model(**token).pooler_output.numpy().squeeze())
    return np.array(out)


def test_pooler_embeddings_equal_the_paper_loop(encoder_path, texts):
    table = pa.table({"instruction": texts[:20]})
    ours = embed(table, make_encoder("hf", model=str(encoder_path), device="cpu", batch_tokens=256))
    np.testing.assert_allclose(ours, paper_loop_embeddings(encoder_path, texts[:20]), rtol=1e-4, atol=1e-5)


def test_cls_and_mean_pooling_and_normalize(encoder_path, texts):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    model = AutoModel.from_pretrained(encoder_path).eval()
    sample = texts[:5]
    with torch.no_grad():
        states = [model(**tokenizer(t, return_tensors="pt")).last_hidden_state[0] for t in sample]
    cls = make_encoder("hf", model=str(encoder_path), pooling="cls", device="cpu").encode(sample)
    mean = make_encoder("hf", model=str(encoder_path), pooling="mean", device="cpu").encode(sample)
    np.testing.assert_allclose(cls, np.array([s[0].numpy() for s in states]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean, np.array([s.mean(0).numpy() for s in states]), rtol=1e-4, atol=1e-5)
    normed = make_encoder("hf", model=str(encoder_path), device="cpu", normalize=True).encode(sample)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-5)


def test_sentence_transformers_encoder(encoder_path, texts, tmp_path):
    from sentence_transformers import SentenceTransformer

    st_path = build_sentence_transformer(encoder_path, tmp_path / "st")
    ours = make_encoder("st", model=str(st_path), device="cpu").encode(texts[:8])
    ref = SentenceTransformer(str(st_path), device="cpu").encode(texts[:8])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_embed_cli_with_a_local_model(encoder_path, texts, tmp_path):
    write_table(pa.table({"instruction": texts[:6]}), tmp_path / "in.jsonl")
    koquality("embed", tmp_path / "in.jsonl", "--encoder", "hf", "--model", encoder_path, "--device", "cpu",
              "--output", tmp_path / "v.npy")
    np.testing.assert_allclose(np.load(tmp_path / "v.npy"), paper_loop_embeddings(encoder_path, texts[:6]),
                               rtol=1e-4, atol=1e-5)


def test_torch_kmeans_matches_sklearn_inertia():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(rng.normal(0, 3, 24), 1.0, size=(150, 24)) for _ in range(10)]).astype(np.float32)
    ours = kmeans(x, 10, seed=0, n_init=10, backend="torch", device="cpu")
    ref = KMeans(10, n_init=10, random_state=0).fit(x)
    assert ours.inertia <= ref.inertia_ * 1.01
    assert len(np.unique(ours.labels)) == 10


def test_sharded_vectors_are_gathered_in_corpus_order_without_stale_rows(encoder_path, texts, tmp_path):
    """Shards hold rows in the order they were encoded (and rows of an earlier, larger corpus); the gathered
    .npy must be exactly the current corpus's rows, in its order."""
    from koquality.backends import backend
    from koquality.cache import ShardCache
    from koquality.engines import MapStage, fill

    settings = {"model": str(encoder_path), "device": "cpu"}
    stage = MapStage(backend("embed", "hf"), settings, "instruction", ShardCache(tmp_path / "shards"), shard_rows=7)
    wide = pa.table({"id": [f"r{i}" for i in range(30)], "instruction": texts[:30]})
    assert fill(stage, wide) == 30
    stage.cache.write_npy(wide.column("id").to_pylist(), tmp_path / "wide.npy")
    assert len(list((tmp_path / "shards").glob("shard-*.parquet"))) == 5
    narrow = wide.take([29, 3, 17, 0, 8])
    narrow = pa.concat_tables([narrow, pa.table({"id": ["new"], "instruction": [texts[35]]})])
    assert fill(stage, narrow) == 1  # only "new"
    stage.cache.write_npy(narrow.column("id").to_pylist(), tmp_path / "narrow.npy")
    expected = make_encoder("hf", model=str(encoder_path), device="cpu").encode(narrow.column("instruction").to_pylist())
    np.testing.assert_allclose(np.load(tmp_path / "narrow.npy"), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "wide.npy")[[29, 3, 17, 0, 8]], expected[:5], rtol=1e-4, atol=1e-5)
