"""Zero-shot KoBEST through lm-evaluation-harness, on a tiny GPT-NeoX built here (random weights: the scores
mean nothing, the code paths are the real ones): lm-eval's own kobest tasks, fed our converted rows."""

import contextlib
import importlib
import json
import math
import shutil
import socket
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")
torch = pytest.importorskip("torch")

from conftest import SHARED_DATA
from tiny_models import build_causal_lm

from koquality.errors import KoqualityError
from koquality.evaluate import (
    TASKS,
    evaluate,
    lm_eval_args,
    load_results,
    markdown_table,
    cache_dir,
    kobest_task_dir,
    offline_tasks,
    task_names,
)
from koquality.kobest import kobest_rows

FIXTURE = Path(__file__).parent / "fixtures" / "kobest"
KOBEST = SHARED_DATA / "kobest"
TEST_ROWS = {"kobest_boolq": 1404, "kobest_copa": 1000, "kobest_hellaswag": 500, "kobest_sentineg": 397, "kobest_wic": 1260}


@contextlib.contextmanager
def no_network():
    """Refuse (and record) every attempt to open a network connection."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network access refused by the test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", refuse)
        mp.setattr(socket.socket, "connect", lambda self, address: refuse(address))
        yield attempts


def loglikelihoods(model, tokenizer, pairs):
    """Sum of log-probabilities of each continuation, encoded as lm-eval does for a causal LM: trailing
    spaces of the context move to the continuation, the pair is encoded whole and split after the context."""
    totals = []
    for context, continuation in pairs:
        stripped = context.rstrip()
        continuation = context[len(stripped):] + continuation
        whole = tokenizer(stripped + continuation)["input_ids"]
        ctx = tokenizer(stripped)["input_ids"]
        assert len(whole) <= 2048  # no truncation to model
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
        totals.append(sum(logprobs[len(ctx) - 1 + i, token].item() for i, token in enumerate(whole[len(ctx):])))
    return totals


def boolq_pairs(row):
    """The kobest_boolq request, written out from lm-eval's YAML: `{{paragraph}} 질문: {{question}} 답변: `
    then target_delimiter ' ' and the choices 아니오 / 예."""
    context = f"{row['paragraph']} 질문: {row['question']} 답변: "
    return [(context, " 아니오"), (context, " 예")]


def markdown_tables(text):
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = []
                tables.append(current)
            current.append(cells)
        else:
            current = None
    return tables


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return build_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def fixture_run(tiny_lm, tmp_path_factory):
    output = tmp_path_factory.mktemp("fixture_run") / "tiny.json"
    with no_network() as attempts:
        result = evaluate(str(tiny_lm), output, kobest_dir=FIXTURE, device="cpu", batch_size=4)
    return result, output, attempts


@pytest.fixture(scope="module")
def kobest():
    if not KOBEST.is_dir():
        pytest.skip(f"KoBEST not present at {KOBEST}")
    return KOBEST


@pytest.fixture(scope="module")
def real_run(tiny_lm, kobest, tmp_path_factory):
    output = tmp_path_factory.mktemp("real_run") / "results.json"
    with no_network() as attempts:
        result = evaluate(str(tiny_lm), output, limit=8, kobest_dir=kobest, device="cpu")
    assert attempts == []
    return result


@pytest.fixture(scope="module")
def real_samples(tiny_lm, kobest, tmp_path_factory):
    """The arguments evaluate() passes, run with log_samples (no network: a refused request fails at once)."""
    args = lm_eval_args(str(tiny_lm), limit=8, device="cpu", kobest_dir=kobest, task_dir=tmp_path_factory.mktemp("tasks"))
    with no_network():
        return lm_eval.simple_evaluate(**{**args, "log_samples": True})


def test_task_names():
    assert task_names(None) == list(TASKS)
    assert task_names(["BoolQ", "kobest_copa", "boolq"]) == ["kobest_boolq", "kobest_copa"]
    assert task_names("wic, hellaswag") == ["kobest_wic", "kobest_hellaswag"]
    with pytest.raises(KoqualityError, match=r"--tasks mnli: not a KoBEST task \(expected boolq, copa, hellaswag, sentineg, wic"):
        task_names(["boolq", "mnli"])


def test_offline_task_files_are_lm_evals_tasks_on_our_rows(tmp_path, monkeypatch):
    paths = offline_tasks(FIXTURE, tmp_path / "tasks", ["hellaswag", "kobest_boolq"])
    assert paths == [tmp_path / "tasks" / "kobest_hellaswag.yaml", tmp_path / "tasks" / "kobest_boolq.yaml"]
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    installed = Path(lm_eval.tasks.__file__).parent / "kobest"
    raw = load_yaml(paths[0], resolve_func=False, recursive=False)
    assert raw["include"] == str(installed / "kobest_hellaswag.yaml") and Path(raw["include"]).is_absolute()
    assert raw["dataset_path"] == "json" and raw["dataset_name"] is None
    files = raw["dataset_kwargs"]["data_files"]
    assert set(files) == {"train", "validation", "test"} and all(Path(f).is_absolute() for f in files.values())
    test_lines = Path(files["test"]).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in test_lines] == kobest_rows(FIXTURE, "hellaswag", "test")
    assert "남자가 캠핑장에" in test_lines[0]  # UTF-8, not \uXXXX escapes
    merged = load_yaml(paths[0], resolve_func=False)
    assert merged["task"] == "kobest_hellaswag" and merged["doc_to_text"] == "{{query}}"  # lm-eval's definition
    assert [m["metric"] for m in merged["metric_list"]] == ["acc", "acc_norm", "f1"]
    assert not any("hf_evaluate" in m for m in merged["metric_list"])

    # lm-eval builds the task from the file alone, and datasets' json builder reads our files with no network
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
    with no_network() as attempts:
        tasks = TaskManager(include_defaults=False).load([str(p) for p in paths])["tasks"]
    assert attempts == []
    docs = list(tasks["kobest_hellaswag"].test_docs())
    rows = kobest_rows(FIXTURE, "hellaswag", "test")
    assert [d["query"] for d in docs] == [f"문장: {r['context']}" for r in rows]  # the task's process_docs ran
    assert [d["choices"] for d in docs] == [[r[f"ending_{i}"] for i in range(1, 5)] for r in rows]
    assert list(tasks["kobest_boolq"].validation_docs()) == kobest_rows(FIXTURE, "boolq", "validation")
    aggregation = tasks["kobest_boolq"].aggregation()["f1"]
    assert aggregation([(0, 0), (1, 0), (1, 1), (0, 0)]) == pytest.approx((0.8 + 2 / 3) / 2)  # macro-F1


def test_fixture_all_five_tasks(fixture_run):
    result, output, attempts = fixture_run
    assert attempts == []  # offline really is offline: no hub, no metric script, no download counter
    assert result["tasks"] == list(TASKS)
    for task in TASKS:
        scores = result["scores"][task]
        assert scores["n"] == scores["n_test"] == len(kobest_rows(FIXTURE, task.removeprefix("kobest_"), "test")) == 4
        assert 0 <= scores["acc"] <= 1 and scores["acc"] * 4 == round(scores["acc"] * 4)
        assert math.isfinite(scores["f1"]) and 0 <= scores["f1"] <= 1
        assert math.isfinite(scores["acc_stderr"])
        assert scores["acc"] == result["lm_eval"]["results"][task]["acc,none"]
        assert ("acc_norm" in scores) == (task == "kobest_hellaswag")
    assert result["average"]["acc"] == pytest.approx(sum(result["scores"][t]["acc"] for t in TASKS) / 5)
    assert result["average"]["f1"] == pytest.approx(sum(result["scores"][t]["f1"] for t in TASKS) / 5)
    assert result["kobest"]["source"] == "dir" and result["kobest"]["dir"] == str(FIXTURE.resolve())
    assert result["lm_eval_version"] == lm_eval.__version__
    assert result["num_fewshot"] == 0 and result["limit"] is None and result["adapter"] is None
    tasks_dir = kobest_task_dir(FIXTURE, TASKS)  # the converted data lives in koquality's cache, not beside the results
    assert sorted(p.name for p in tasks_dir.glob("*.yaml")) == sorted(f"{t}.yaml" for t in TASKS)
    assert tasks_dir.is_relative_to(cache_dir()) and sorted(p.name for p in output.parent.iterdir()) == ["tiny.json", "tiny.md"]


def test_written_json_and_markdown(fixture_run):
    result, output, _ = fixture_run
    assert json.loads(output.read_text(encoding="utf-8")) == result  # JSON-clean: nothing stringified on the way
    assert load_results(output) == result
    markdown = output.with_suffix(".md").read_text(encoding="utf-8")
    tables = markdown_tables(markdown)
    assert len(tables) == 2
    assert markdown.index("Macro-F1") < markdown.index("| Model") < markdown.index("Accuracy")
    for table, metric in zip(tables, ("f1", "acc")):
        header, _, row = table
        assert header == ["Model", "BoolQ", "COPA", "HellaSwag", "SentiNeg", "WiC", "Avg"]
        assert row[0] == result["model"]
        expected = [f"{100 * result['scores'][t][metric]:.2f}" for t in TASKS] + [f"{100 * result['average'][metric]:.2f}"]
        assert row[1:] == expected
    assert "zero-shot" in markdown and "n = BoolQ 4, COPA 4, HellaSwag 4, SentiNeg 4, WiC 4" in markdown
    assert "limit" not in markdown  # a full run


def test_load_results_rejects_other_files(tmp_path):
    with pytest.raises(KoqualityError, match="no such file"):
        load_results(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(KoqualityError, match="not JSON"):
        load_results(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"results": {"kobest_boolq": {}}}), encoding="utf-8")
    with pytest.raises(KoqualityError, match="not a koquality eval results file"):
        load_results(tmp_path / "other.json")


def test_real_kobest_limited(real_run, real_samples):
    for task in TASKS:
        scores = real_run["scores"][task]
        assert scores["n"] == 8 and scores["n_test"] == TEST_ROWS[task]
        assert 0 <= scores["acc"] <= 1 and math.isfinite(scores["f1"])
        # evaluate() and the direct call on the same arguments agree
        assert scores["acc"] == real_samples["results"][task]["acc,none"]
        assert scores["f1"] == pytest.approx(real_samples["results"][task]["f1,none"])
    assert real_run["limit"] == 8 and "limit 8" in markdown_table(real_run)


def test_lm_eval_consumed_our_rows_with_its_prompts(kobest, real_samples):
    samples = real_samples["samples"]
    for task in ("boolq", "copa", "sentineg", "wic"):
        rows = kobest_rows(kobest, task, "test")
        logged = samples[f"kobest_{task}"]
        assert sorted(s["doc_id"] for s in logged) == list(range(8))
        for sample in logged:
            assert sample["doc"] == rows[sample["doc_id"]]
            row = rows[sample["doc_id"]]
            # kobest_copa's doc_to_target is the right alternative's text, the others' the label
            assert sample["target"] == (row[f"alternative_{row['label'] + 1}"] if task == "copa" else row["label"])
    boolq = kobest_rows(kobest, "boolq", "test")
    for sample in samples["kobest_boolq"]:
        assert [tuple(a) for a in sample["arguments"]] == boolq_pairs(boolq[sample["doc_id"]])
    copa = kobest_rows(kobest, "copa", "test")
    for sample in samples["kobest_copa"]:
        row = copa[sample["doc_id"]]
        connector = {"원인": " 왜냐하면", "결과": " 그래서"}[row["question"]]
        assert [tuple(a) for a in sample["arguments"]] == [(f"{row['premise']} {connector}", f" {row['alternative_1']}"),
                                                           (f"{row['premise']} {connector}", f" {row['alternative_2']}")]
    hellaswag = kobest_rows(kobest, "hellaswag", "test")
    first = min(samples["kobest_hellaswag"], key=lambda s: s["doc_id"])
    assert first["arguments"][0][0] == f"문장: {hellaswag[first['doc_id']]['context']}"
    assert first["doc"]["context"] == hellaswag[first["doc_id"]]["context"]
    assert samples["kobest_sentineg"][0]["arguments"][0][0].endswith(" 긍부정:")
    assert "두 문장에서" in samples["kobest_wic"][0]["arguments"][0][0]


def test_boolq_accuracy_is_the_models_own_argmax(kobest, tiny_lm, real_samples):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_lm))
    rows = kobest_rows(kobest, "boolq", "test")[:8]
    correct = 0
    logged = {s["doc_id"]: s for s in real_samples["samples"]["kobest_boolq"]}
    for doc_id, row in enumerate(rows):
        scores = loglikelihoods(model, tokenizer, boolq_pairs(row))
        assert [r[0] for r in logged[doc_id]["filtered_resps"]] == pytest.approx(scores, abs=1e-3)
        correct += int(max(range(2), key=lambda i: scores[i]) == row["label"])
    assert real_samples["results"]["kobest_boolq"]["acc,none"] == correct / 8


@pytest.fixture(scope="module")
def adapter(tiny_lm, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_lm))
    # random B (not the usual zeros), so that the adapter changes the scores and its use can be seen
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["query_key_value"], task_type="CAUSAL_LM",
                                            init_lora_weights=False))
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(str(tiny_lm)).save_pretrained(path)
    assert json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_lm)
    return path


def test_peft_adapter(tiny_lm, adapter, fixture_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = lm_eval_args(str(adapter), tasks=["boolq"], limit=2, device="cpu", kobest_dir=FIXTURE, task_dir=tmp_path / "t")
    assert args["model_args"]["pretrained"] == str(tiny_lm.resolve())
    assert args["model_args"]["peft"] == args["model_args"]["tokenizer"] == str(adapter.resolve())
    with no_network():
        raw = lm_eval.simple_evaluate(**{**args, "log_samples": True})
    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    rows = kobest_rows(FIXTURE, "boolq", "test")
    logged = sorted(raw["samples"]["kobest_boolq"], key=lambda s: s["doc_id"])
    lm_eval_scores = [[r[0] for r in s["filtered_resps"]] for s in logged]
    base = AutoModelForCausalLM.from_pretrained(str(tiny_lm)).eval()
    base_scores = [loglikelihoods(base, tokenizer, boolq_pairs(row)) for row in rows[:2]]
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_lm)), str(adapter)).eval()
    tuned_scores = [loglikelihoods(tuned, tokenizer, boolq_pairs(row)) for row in rows[:2]]
    assert all(s == pytest.approx(t, abs=1e-3) for s, t in zip(lm_eval_scores, tuned_scores))
    assert all(s != pytest.approx(b, abs=1e-2) for s, b in zip(lm_eval_scores, base_scores))  # the adapter is on

    output = tmp_path / "adapter.json"
    result = evaluate(str(adapter), output, tasks="boolq", limit=2.0, kobest_dir=FIXTURE, device="cpu")  # as the CLI gives it
    assert result["adapter"] == str(adapter.resolve()) and result["pretrained"] == str(tiny_lm.resolve())
    assert result["lm_eval"]["model_args"]["peft"] == str(adapter.resolve())
    assert result["tasks"] == ["kobest_boolq"] and result["scores"]["kobest_boolq"]["n"] == 2
    assert result["limit"] == 2 and isinstance(result["limit"], int)
    assert result["scores"]["kobest_boolq"]["acc"] == raw["results"]["kobest_boolq"]["acc,none"]
    # base and fine-tuned side by side: one row each; tasks the adapter run skipped are blank
    base_result = load_results(fixture_run[1])
    acc_table = markdown_tables(markdown_table([base_result, load_results(output)]))[1]
    assert [row[0] for row in acc_table[2:]] == [base_result["model"], f"{adapter} (adapter on {tiny_lm.resolve()})"]
    assert acc_table[3][1:] == [f"{100 * result['scores']['kobest_boolq']['acc']:.2f}"] + ["–"] * 4 + \
        [f"{100 * result['scores']['kobest_boolq']['acc']:.2f}"]
    assert "limit 2" in output.with_suffix(".md").read_text(encoding="utf-8")


def test_task_manager_knows_lm_evals_kobest_tasks(tiny_lm, tmp_path):
    args = lm_eval_args(str(tiny_lm), tasks="copa", device="cpu", kobest_dir=FIXTURE, task_dir=tmp_path)
    assert set(TASKS) <= set(args["task_manager"].all_subtasks)  # the names the online run resolves
    assert args["tasks"] == [str((tmp_path / "kobest_copa.yaml").resolve())]
    assert args["model_args"] == {"pretrained": str(tiny_lm.resolve()), "dtype": "float32", "trust_remote_code": False}
    assert (args["num_fewshot"], args["random_seed"], args["log_samples"]) == (0, 1234, False)


def test_unknown_task_fails_before_anything_runs(tiny_lm, tmp_path):
    with pytest.raises(KoqualityError, match="--tasks mnli: not a KoBEST task"):
        evaluate(str(tiny_lm), tmp_path / "r.json", tasks=["boolq", "mnli"], kobest_dir=FIXTURE)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("setting, message", [({"limit": 0}, "--limit 0: expected"), ({"num_fewshot": -1}, "--num-fewshot -1"),
                                              ({"device": "tpu"}, "--device tpu: expected auto, cpu or cuda"),
                                              ({"dtype": "int8"}, "--dtype int8: expected")])
def test_bad_settings_fail_before_anything_runs(tiny_lm, tmp_path, setting, message):
    with pytest.raises(KoqualityError, match=message):
        evaluate(str(tiny_lm), tmp_path / "r.json", kobest_dir=FIXTURE, **{"device": "cpu", **setting})
    assert list(tmp_path.iterdir()) == []


def test_kobest_dir_without_a_task_folder(tiny_lm, tmp_path):
    partial = tmp_path / "kobest"
    shutil.copytree(FIXTURE, partial, ignore=lambda d, names: ["WiC"] if Path(d) == FIXTURE else [])
    with pytest.raises(KoqualityError, match=r"WiC/train.tsv: no such file \(expected the KoBEST v1.0 layout"):
        evaluate(str(tiny_lm), tmp_path / "r.json", kobest_dir=partial, device="cpu")
    assert not (tmp_path / "r_tasks").exists() and not (tmp_path / "r.json").exists()


def test_hub_unreachable_says_to_use_kobest_dir(tiny_lm, tmp_path, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # both libraries read those variables when imported (already done): set what they read them into, and
    # point the caches at empty folders so that a machine with KoBEST cached behaves the same
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(KoqualityError) as caught:
        evaluate(str(tiny_lm), tmp_path / "r.json", tasks="boolq", device="cpu")
    message = str(caught.value)
    assert "hub could not be reached" in message and "skt/kobest_v1" in message and "--kobest-dir DIR" in message
    assert "\n" not in message and not (tmp_path / "r.json").exists()


def test_missing_lm_eval_names_the_extra(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "lm_eval", None)
    with pytest.raises(KoqualityError, match=r"pip install 'koquality\[eval\]'"):
        evaluate(str(tiny_lm), tmp_path / "r.json", kobest_dir=FIXTURE)



def test_hub_run_is_the_same_tasks_as_the_offline_run(tiny_lm, fixture_run, tmp_path, monkeypatch, hub_reachable):
    """The online path with the hub dataset stood in for by the fixture's rows: lm-eval's tasks by name,
    results keyed and valued exactly as the offline run's."""
    import datasets
    import huggingface_hub.constants

    requested = []

    def hub(path, name=None, **kwargs):
        requested.append((path, name))
        return datasets.DatasetDict({split: datasets.Dataset.from_list(kobest_rows(FIXTURE, name, split))
                                     for split in ("train", "validation", "test")})

    monkeypatch.setattr(datasets, "load_dataset", hub)
    monkeypatch.setattr(datasets, "load_dataset_builder", lambda path, name=None, **kwargs: requested.append((path, name)))
    # lm-eval's installed kobest YAMLs ask the hub for an f1 metric script (unused for multiple choice)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with contextlib.suppress(ImportError):
        monkeypatch.setattr(importlib.import_module("evaluate.config"), "HF_EVALUATE_OFFLINE", True)
    with no_network():
        result = evaluate(str(tiny_lm), tmp_path / "hub.json", device="cpu", batch_size=4)
    assert sorted(set(requested)) == [("skt/kobest_v1", t.removeprefix("kobest_")) for t in sorted(TASKS)]
    assert result["kobest"] == {"source": "hub", "dataset": "skt/kobest_v1"}
    assert result["scores"] == fixture_run[0]["scores"]
    assert not (tmp_path / "hub_tasks").exists()


def test_cli_eval_writes_json_markdown_and_a_comparison_table(tiny_lm, adapter, tmp_path):
    from conftest import koquality

    common = ["--kobest-dir", FIXTURE, "--tasks", "boolq,copa", "--device", "cpu"]
    koquality("eval", tiny_lm, "--output", tmp_path / "base.json", *common)
    proc = koquality("eval", adapter, "--output", tmp_path / "tuned.json", *common, "--compare", tmp_path / "base.json")
    base, tuned = load_results(tmp_path / "base.json"), load_results(tmp_path / "tuned.json")
    assert base["scores"].keys() == tuned["scores"].keys() == {"kobest_boolq", "kobest_copa"}
    assert tuned["adapter"] and base["adapter"] is None
    f1_table = markdown_tables((tmp_path / "tuned.md").read_text(encoding="utf-8"))[0]
    assert len(f1_table) == 4  # header, rule, base, tuned: the comparison is in the file, not only on screen
    assert "Macro-F1" in proc.stdout and "eval → " in proc.stdout
    failed = koquality("eval", tiny_lm, "--output", tmp_path / "x.json", "--tasks", "mmlu", check=False)
    assert failed.returncode == 2 and "--tasks mmlu: not a KoBEST task" in failed.stderr and "Traceback" not in failed.stderr


def test_a_model_that_cannot_be_loaded_is_one_line(tmp_path, monkeypatch):
    from conftest import koquality

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the subprocesses inherit it: no hub, no waiting on retries

    proc = koquality("eval", tmp_path / "nothing-here", "--output", tmp_path / "x.json", "--kobest-dir", FIXTURE, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no such model directory" in proc.stderr
    proc = koquality("eval", "no-such-org/no-such-model", "--output", tmp_path / "x.json", "--kobest-dir", FIXTURE,
                     check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no-such-org/no-such-model: cannot load the model's config" in proc.stderr
    assert not (tmp_path / "x.json").exists()
