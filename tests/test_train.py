"""Fine-tuning on a selection: a tiny GPT-NeoX trained for real on the demo selection (CPU), the paper's
preset resolved into Trainer arguments, run_clm's blocks, resume, LoRA, DeepSpeed ZeRO-3 and torchrun."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from conftest import SHARED_DATA, koquality  # noqa: E402
from tiny_models import build_causal_lm  # noqa: E402

from koquality.errors import KoqualityError  # noqa: E402
from koquality.pipeline import run  # noqa: E402
from koquality.recipe import load_recipe  # noqa: E402
from koquality.train import (deepspeed_config, grad_accumulation, pad_batch, read_loss_log, token_blocks, train,  # noqa: E402
                             train_config, training_arguments, training_texts)

FAST = dict(block_size=64, grad_accum=1, lr=1e-3)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_causal_lm(tmp_path_factory.mktemp("tiny") / "lm")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("demo") / "run"
    run(load_recipe("demo"), run_dir, report=False)
    return run_dir


def _weights(path):
    from transformers import AutoModelForCausalLM

    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_cli_trains_with_falling_loss_and_the_model_reloads(tiny_lm, demo_run, tmp_path):
    out = tmp_path / "model"
    proc = koquality("train", demo_run, "--model", tiny_lm, "--output", out, "--block-size", 64, "--grad-accum", 1,
                     "--max-steps", 30, "--lr", 1e-3)
    assert "train → " in proc.stdout and "loss: first → last" in proc.stdout
    log = read_loss_log(out)
    assert [r["step"] for r in log] == list(range(1, 31))
    losses = [r["loss"] for r in log]
    assert all(0 < x < 20 for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05  # it learns the demo text

    summary = json.loads((out / "koquality-train.json").read_text(encoding="utf-8"))
    texts, template = training_texts(demo_run)
    assert summary["data"]["texts"] == len(texts) and template == "paper"
    assert summary["steps"] == 30 and summary["resolved"]["global_batch_size"] == 4
    assert summary["data"]["sequences"] == summary["data"]["tokens"] // 64

    before, after = _weights(tiny_lm), _weights(out)
    assert before.keys() == after.keys() and any((before[k] - after[k]).abs().max() > 0 for k in before)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out)("### 질문: 안녕")["input_ids"] == AutoTokenizer.from_pretrained(tiny_lm)("### 질문: 안녕")["input_ids"]


def test_training_text_is_the_papers_template(demo_run):
    texts, _ = training_texts(demo_run)
    selection = [json.loads(line) for line in (demo_run / json.loads((demo_run / "manifest.json").read_text())["files"]["selection"]).read_text(encoding="utf-8").splitlines()]
    assert texts[0] == f"### 질문: {selection[0]['instruction']}### 답변: {selection[0]['output']}"
    assert len(texts) == len(selection)


def test_training_text_from_files_and_saved_datasets(demo_run, tmp_path):
    from koquality.export import export
    from koquality.tables import read_table

    texts, _ = training_texts(demo_run)
    manifest = json.loads((demo_run / "manifest.json").read_text())
    selection = read_table(demo_run / manifest["files"]["selection"])
    export(selection, tmp_path / "hf")  # a `datasets` directory with a text column
    export(selection, tmp_path / "chat.parquet", template="chat")
    assert training_texts(tmp_path / "hf") == (texts, None)  # its own text column, as given
    assert training_texts(demo_run / manifest["files"]["export"]) == (texts, None)
    assert training_texts(tmp_path / "chat.parquet")[0][0].startswith("### 사용자:\n")
    assert training_texts(demo_run / manifest["files"]["selection"], template="chat")[0] == training_texts(tmp_path / "chat.parquet")[0]
    with pytest.raises(KoqualityError, match="neither a koquality run nor a saved `datasets` dataset"):
        training_texts(tmp_path)


def test_blocks_are_run_clm_group_texts():
    rows = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]]
    assert token_blocks(rows, 4) == [[1, 2, 3, 4], [5, 6, 7, 8]]  # 10 tokens → 2 blocks, remainder dropped
    assert token_blocks(rows, 11) == []


def test_unpacked_batches_keep_eos_and_mask_padding():
    eos = 0  # GPT-NeoX pads with EOS: padding must be masked by position, not by id
    batch = pad_batch(eos)([{"input_ids": [5, 6, eos]}, {"input_ids": [7]}])
    assert batch["input_ids"].tolist() == [[5, 6, eos], [7, eos, eos]]
    assert batch["labels"].tolist() == [[5, 6, eos], [7, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_paper_preset_resolves_to_the_papers_trainer_arguments(tmp_path, monkeypatch):
    import torch

    config = train_config("paper", model="EleutherAI/polyglot-ko-5.8b")
    assert (config.lr, config.block_size, config.batch_size, config.epochs, config.seed) == (5e-5, 1024, 4, 2.0, 42)
    assert grad_accumulation(config, 4) == 16  # the paper's 4 GPUs: accumulation 16, global batch 256
    assert grad_accumulation(config, 1) == 64  # one GPU keeps the global batch with more accumulation
    with pytest.raises(KoqualityError, match="global batch 256 is not a multiple of batch 4 × 3 processes"):
        grad_accumulation(config, 3)
    monkeypatch.setenv("WORLD_SIZE", "1")
    args, resolved = training_arguments(torch, config, tmp_path)
    assert resolved["grad_accum"] == 64 and resolved["global_batch_size"] == 256
    assert (args.learning_rate, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (5e-5, 4, 64)
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon, args.weight_decay) == (0.9, 0.999, 1e-8, 0.0)
    assert args.lr_scheduler_type == "linear" and args.warmup_steps == 0 and args.num_train_epochs == 2
    assert args.seed == 42 and args.save_strategy == "epoch" and args.optim == "adamw_torch"
    assert train_config("paper", grad_accum=2).global_batch_size is None
    lora = train_config("lora")
    assert lora.lora and lora.global_batch_size == 64


def test_resume_continues_exactly_where_it_stopped(tiny_lm, demo_run, tmp_path):
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                control.should_training_stop = True

    config = train_config(model=str(tiny_lm), max_steps=6, save_steps=3, **FAST)
    whole = train(demo_run, tmp_path / "whole", config)
    train(demo_run, tmp_path / "split", config, callbacks=[StopAt()])
    assert (tmp_path / "split" / "checkpoint-3").is_dir() and len(read_loss_log(tmp_path / "split")) == 3
    with pytest.raises(KoqualityError, match="already holds a training run; use --resume"):
        train(demo_run, tmp_path / "split", config)
    resumed = train(demo_run, tmp_path / "split", config, resume=True)
    assert resumed["steps"] == whole["steps"] == 6
    split_log, whole_log = read_loss_log(tmp_path / "split"), read_loss_log(tmp_path / "whole")
    assert [r["step"] for r in split_log] == list(range(1, 7))
    assert [r["loss"] for r in split_log] == pytest.approx([r["loss"] for r in whole_log], rel=1e-5)
    before, after = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert all((before[k] - after[k]).abs().max() < 1e-5 for k in before)


def test_lora_saves_an_adapter_and_leaves_the_base_weights(tiny_lm, demo_run, tmp_path):
    pytest.importorskip("peft")
    from peft import AutoPeftModelForCausalLM

    summary = train(demo_run, tmp_path / "lora", train_config("lora", model=str(tiny_lm), max_steps=4, global_batch_size=4, block_size=64))
    assert summary["config"]["lora"] and (tmp_path / "lora" / "adapter_config.json").exists()
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    adapter = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_lm) and adapter["target_modules"] == ["query_key_value"]
    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "lora")
    trained = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert trained and any(v.abs().max() > 0 for v in trained.values())  # B starts at zero: it moved


def _distributed_env(port):
    return {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0",
            "WORLD_SIZE": "1", "COLUMNS": "200"}


def test_deepspeed_zero3_trains_and_gathers_the_full_model(tiny_lm, demo_run, tmp_path):
    pytest.importorskip("deepspeed")
    shipped = json.loads(deepspeed_config("zero3").read_text())
    assert shipped["zero_optimization"]["stage"] == 3
    assert shipped["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert "offload_param" in json.loads(deepspeed_config("zero3-offload").read_text())["zero_optimization"]
    proc = subprocess.run([sys.executable, "-m", "koquality", "train", str(demo_run), "--model", str(tiny_lm), "--output",
                           str(tmp_path / "ds"), "--block-size", "64", "--grad-accum", "1", "--max-steps", "3",
                           "--deepspeed", "zero3"], capture_output=True, text=True, env=_distributed_env(29517))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ds" / "koquality-train.json").read_text())
    assert summary["resolved"]["deepspeed"].endswith("ds_zero3.json") and summary["steps"] == 3
    before, after = _weights(tiny_lm), _weights(tmp_path / "ds")  # whole tensors, not ZeRO-3 shards
    assert all(before[k].shape == after[k].shape for k in before)
    assert any((before[k] - after[k]).abs().max() > 0 for k in before)


def test_torchrun_two_processes_share_the_global_batch(tiny_lm, demo_run, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    if not torchrun:
        pytest.skip("torchrun not found beside the interpreter")
    out = tmp_path / "ddp"
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", "29519", "-m", "koquality", "train",
                           str(demo_run), "--model", str(tiny_lm), "--output", str(out), "--block-size", "64",
                           "--global-batch-size", "16", "--max-steps", "4", "--lr", "1e-3"],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "koquality-train.json").read_text())
    assert summary["resolved"] | {"deepspeed": None} == {"grad_accum": 2, "world_size": 2, "precision": "fp32",
                                                          "global_batch_size": 16, "deepspeed": None}
    assert len(read_loss_log(out)) == 4  # written once, by the main process
    assert proc.stdout.count("train → ") == 1


def test_training_errors_are_one_line(tiny_lm, demo_run, tmp_path):
    def fails(*args):
        proc = koquality("train", *args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        return proc.stderr

    assert "no model given (--model" in fails(demo_run, "--output", tmp_path / "a")
    assert "has no checkpoint-N folder" in fails(demo_run, "--model", tiny_lm, "--output", tmp_path / "b", "--resume")
    (tmp_path / "one.jsonl").write_text('{"instruction": "물은 몇 도에서 끓나요?", "output": "100도입니다."}\n', encoding="utf-8")
    assert "tokens in all, fewer than one block of 1024" in fails(tmp_path / "one.jsonl", "--model", tiny_lm, "--output", tmp_path / "c")
    assert "--deepspeed nope.json: no such file" in fails(demo_run, "--model", tiny_lm, "--output", tmp_path / "d", "--deepspeed", "nope.json")
    assert "--precision bf16 needs a CUDA GPU" in fails(demo_run, "--model", tiny_lm, "--output", tmp_path / "e", "--precision", "bf16",
                                                        "--block-size", 64, "--grad-accum", 1)
    assert "cannot load a tokenizer" in fails(demo_run, "--model", tmp_path / "missing", "--output", tmp_path / "f")
    assert "--preset big: expected one of paper, lora" in fails(demo_run, "--model", tiny_lm, "--output", tmp_path / "g", "--preset", "big")
    run_eval = koquality("run", "--eval", "--output", tmp_path / "i", check=False)
    assert run_eval.returncode == 2 and "--eval evaluates the model that --train fine-tunes" in run_eval.stderr
    (tmp_path / "rows.jsonl").write_text('{"question": "가"}\n', encoding="utf-8")
    assert "no `text` column and no `instruction`/`output` columns" in fails(tmp_path / "rows.jsonl", "--model", tiny_lm, "--output", tmp_path / "h")


def _recipe_with_training(tmp_path, tiny_lm, **train):
    import yaml

    from koquality.recipe import load_recipe as load

    data = load("demo").model_dump(mode="json", exclude={"train", "eval"})
    data["train"] = {"model": str(tiny_lm), "block_size": 64, "grad_accum": 1, "max_steps": 4, "lr": 1e-3, **train}
    data["eval"] = {"tasks": ["boolq", "copa"], "limit": 4, "device": "cpu", "baseline": True,
                    "kobest_dir": str(KOBEST)}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


# the real KoBEST release when it is beside the repository, else our own small fixture in the same layout
KOBEST = SHARED_DATA / "kobest" if (SHARED_DATA / "kobest").is_dir() else Path(__file__).parent / "fixtures" / "kobest"


def test_run_chains_curation_training_and_evaluation(tiny_lm, tmp_path):
    pytest.importorskip("lm_eval")
    recipe = _recipe_with_training(tmp_path, tiny_lm)
    out = tmp_path / "run"
    proc = koquality("run", "--recipe", recipe, "--output", out, "--no-report")
    assert "KoBEST fine-tuned: mean acc / macro-F1" in proc.stdout and "KoBEST base" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["train"]["steps"] == 4 and manifest["files"]["model"] == "model"
    assert set(manifest["eval"]) == {"base", "fine-tuned"}
    table = (out / "eval" / "kobest.md").read_text(encoding="utf-8")
    assert str(tiny_lm) in table and "BoolQ" in table and "COPA" in table
    for name in ("base", "fine-tuned"):  # the reloaded model, evaluated on the first 4 examples of each task
        result = json.loads((out / "eval" / f"{name}.json").read_text(encoding="utf-8"))
        assert {t: s["n"] for t, s in result["scores"].items()} == {"kobest_boolq": 4, "kobest_copa": 4}
        assert result["kobest"]["dir"] == str(KOBEST.resolve())
    assert json.loads((out / "eval" / "fine-tuned.json").read_text())["pretrained"] == str((out / "model").resolve())
    koquality("report", out)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "alt='training_loss'" in page and "<h2>KoBEST</h2>" in page and "train loss: first" in page
    trained = (out / "model" / "model.safetensors").stat().st_mtime_ns

    again = koquality("run", "--recipe", recipe, "--output", out, "--no-report")  # nothing changed: all reused
    stages = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stages"]
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == trained
    assert {name for name, info in stages.items() if info.get("cached")} >= {"train", "eval base", "eval fine-tuned"}
    assert again.returncode == 0


def test_run_launches_torchrun_for_several_processes(tiny_lm, tmp_path):
    recipe = _recipe_with_training(tmp_path, tiny_lm, processes=2, grad_accum=None, global_batch_size=8)
    import yaml

    data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    data.pop("eval")
    recipe.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    koquality("run", "--recipe", recipe, "--output", tmp_path / "run", "--no-report")
    summary = json.loads((tmp_path / "run" / "model" / "koquality-train.json").read_text(encoding="utf-8"))
    assert summary["resolved"]["world_size"] == 2 and summary["resolved"]["grad_accum"] == 1
    assert summary["steps"] == 4


def test_recipe_training_sections_are_validated(tmp_path):
    from koquality.recipe import parse_recipe

    base = {"sources": [{"path": "a.jsonl"}]}
    with pytest.raises(KoqualityError, match="train needs model"):
        parse_recipe({**base, "train": {"epochs": 1}})
    with pytest.raises(KoqualityError, match="eval evaluates the model that train fine-tunes"):
        parse_recipe({**base, "eval": {}})
    with pytest.raises(KoqualityError, match="train.lr"):
        parse_recipe({**base, "train": {"model": "m", "lr": -1}})
    paper = load_recipe("paper-train")
    assert (paper.train.model, paper.train.lr, paper.train.block_size, paper.train.global_batch_size,
            paper.train.epochs, paper.train.processes) == ("EleutherAI/polyglot-ko-5.8b", 5e-5, 1024, 256, 2, 4)
    assert paper.eval.num_fewshot == 0 and paper.eval.baseline and len(paper.eval.tasks) == 5
    assert paper.model_dump(exclude={"name", "train", "eval"}) == load_recipe("paper").model_dump(exclude={"name", "train", "eval"})


def test_train_settings_from_a_recipe_or_json(tmp_path):
    from importlib import resources

    from koquality.train import load_train_config

    recipe = Path(str(resources.files("koquality") / "recipes" / "paper-train.yaml"))
    config = train_config("paper", base=load_train_config(recipe), lr=1e-4)  # an option overrides the file
    assert (config.model, config.deepspeed, config.processes, config.global_batch_size, config.lr) == \
        ("EleutherAI/polyglot-ko-5.8b", "zero3", 4, 256, 1e-4)
    (tmp_path / "train.json").write_text(json.dumps(config.model_dump()), encoding="utf-8")
    assert train_config("paper", base=load_train_config(tmp_path / "train.json")) == config
    assert train_config("paper", base=load_train_config(tmp_path / "train.json"), grad_accum=2).global_batch_size is None
    with pytest.raises(KoqualityError, match="the recipe has no train: section"):
        load_train_config(Path(str(resources.files("koquality") / "recipes" / "demo.yaml")))
    (tmp_path / "bad.json").write_text("[1]", encoding="utf-8")
    with pytest.raises(KoqualityError, match="expected a JSON object of train settings"):
        load_train_config(tmp_path / "bad.json")
