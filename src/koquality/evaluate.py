"""Evaluation (after training, outside the curation pipeline): zero-shot KoBEST with lm-evaluation-harness.

The paper (KoQuality, HCLT 2023) compares the models fine-tuned on each curated subset by zero-shot KoBEST
(BoolQ, COPA, HellaSwag, SentiNeg, WiC) run with EleutherAI's lm-evaluation-harness, and reports macro-F1
and accuracy per task with their average. `evaluate` does the same with lm-eval used as a library
(`lm_eval.simple_evaluate`, its `hf` model and its built-in `kobest_*` tasks: their prompts, answer
choices and metrics), so numbers are comparable with anyone else's lm-eval KoBEST run.

Reads: a causal LM (a hub name or a local directory; a directory holding `adapter_config.json` is a
PEFT/LoRA adapter, evaluated on top of its `base_model_name_or_path`) and KoBEST — from the hub dataset
`skt/kobest_v1`, or offline from the KoBEST v1.0 TSVs (`kobest_dir`, converted by `koquality.kobest`).
Writes: `output` (JSON: per-task acc, acc_stderr, macro-F1, acc_norm where the task has it, n; the average;
the settings; lm-eval's raw `results` and `n-samples`) and `output.with_suffix(".md")` (the paper's table
shape). Offline, it also writes `<output stem>_tasks/` beside them: one task YAML per task, which
`include:`s lm-eval's own YAML and replaces only where the data comes from (local JSONL files), so the
task keeps its name and definition and can be re-run with the CLI: `lm_eval --tasks <dir>/kobest_boolq.yaml`.

The offline YAMLs also restate the task's `metric_list` without `hf_evaluate: true`: with that flag lm-eval
calls `evaluate.load("f1")`, which fetches a metric script from the hub (and waits on its retries when
there is no network) even though the multiple-choice F1 it reports never uses it — the value comes from
the task's own `utils.macro_f1_score` aggregation, which the restated list keeps. For the same reason an
offline run switches off `datasets`' download-count ping (a request to S3 each time a task loads its
files). Online, lm-eval itself still asks the hub for the model's commit sha when `model` is a hub name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from . import __version__, hub
from .errors import KoqualityError, missing_extra
from .cache import fingerprint
from .kobest import kobest_rows
from .tables import atomic_path, write_json

TASKS = ("kobest_boolq", "kobest_copa", "kobest_hellaswag", "kobest_sentineg", "kobest_wic")
LABELS = {"kobest_boolq": "BoolQ", "kobest_copa": "COPA", "kobest_hellaswag": "HellaSwag",
          "kobest_sentineg": "SentiNeg", "kobest_wic": "WiC"}
SPLITS = ("train", "validation", "test")
FORMAT = "koquality-eval/1"
HUB_DATASET = "skt/kobest_v1"


def task_names(tasks: str | Iterable[str] | None = None) -> list[str]:
    """lm-eval task names for `tasks` (short `boolq` or full `kobest_boolq`, a list or a comma-separated
    string; None = all five), in the order given, without repeats."""
    if tasks is None:
        return list(TASKS)
    if isinstance(tasks, str):
        tasks = tasks.split(",")
    names: list[str] = []
    for task in tasks:
        text = task.strip().lower()
        name = text if text.startswith("kobest_") else f"kobest_{text}"
        if name not in TASKS:
            valid = ", ".join(t.removeprefix("kobest_") for t in TASKS)
            raise KoqualityError(f"--tasks {task}: not a KoBEST task (expected {valid}, or the same with kobest_ in front)")
        if name not in names:
            names.append(name)
    if not names:
        raise KoqualityError("--tasks: no task given")
    return names


def _lm_eval():
    try:
        import lm_eval
        import lm_eval.tasks
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise missing_extra("koquality eval", "eval") from None
    return lm_eval


def _kobest_tasks_dir() -> Path:
    return Path(_lm_eval().tasks.__file__).parent / "kobest"


def _installed_yaml(name: str) -> Path:
    path = _kobest_tasks_dir() / f"{name}.yaml"
    if not path.is_file():
        import lm_eval

        raise KoqualityError(f"lm-evaluation-harness {lm_eval.__version__} has no {name} task ({path} is missing); "
                             "install a release with the kobest tasks: pip install 'lm_eval>=0.4'")
    return path


class _Function(str):
    """A `!function module.name` value of a task YAML, kept as text."""


def _read_task_yaml(path: Path) -> dict[str, Any]:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: _Function(loader.construct_scalar(node)))
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=Loader)


def _dump_task_yaml(config: dict[str, Any]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))
    return yaml.dump(config, Dumper=Dumper, allow_unicode=True, sort_keys=False)


def _offline_metric_list(installed: Path) -> list[dict[str, Any]] | None:
    """The task's metric_list without `hf_evaluate` (see the module docstring); None when it has none to drop.
    `!function utils.x` is resolved next to the YAML that names it, so it becomes the importable
    `lm_eval.tasks.kobest.utils.x` here."""
    metrics = _read_task_yaml(installed).get("metric_list")
    if not metrics or not any(m.get("hf_evaluate") for m in metrics):
        return None
    restated = []
    for metric in metrics:
        metric = {k: v for k, v in metric.items() if k != "hf_evaluate"}
        for key, value in metric.items():
            if isinstance(value, _Function):
                module = value.rpartition(".")[0]
                if (installed.parent / f"{module.replace('.', '/')}.py").is_file():
                    metric[key] = _Function(f"lm_eval.tasks.{installed.parent.name}.{value}")
        restated.append(metric)
    return restated


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False))
            f.write("\n")


def cache_dir() -> Path:
    """koquality's cache: $KOQUALITY_CACHE, else $XDG_CACHE_HOME/koquality, else ~/.cache/koquality."""
    if os.environ.get("KOQUALITY_CACHE"):
        return Path(os.environ["KOQUALITY_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "koquality"


def kobest_task_dir(kobest_dir: str | Path, tasks: str | Iterable[str] | None = None) -> Path:
    """Where the offline task files of `kobest_dir` live in the cache: keyed by the folder, its TSVs' sizes
    and times, the tasks and the installed lm-eval (whose YAMLs they include), so an edited release or another
    lm-eval gets files of its own."""
    folder = Path(kobest_dir).resolve()
    tsvs = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*.tsv")) \
        if folder.is_dir() else []
    try:
        from importlib.metadata import version

        lm_eval_version = version("lm_eval")
    except Exception:  # not installed: evaluate() names the missing extra itself
        lm_eval_version = None
    return cache_dir() / "kobest" / fingerprint(str(folder), tsvs, task_names(tasks), lm_eval_version, __version__)


def offline_tasks(kobest_dir: str | Path, out_dir: str | Path, tasks: str | Iterable[str] | None = None) -> list[Path]:
    """Write `out_dir/data/<task>/{train,validation,test}.jsonl` (the hub schema, from the TSVs) and
    `out_dir/kobest_<task>.yaml` per task: lm-eval's installed task with only its data source replaced.
    Returns the YAML paths, which `lm_eval.simple_evaluate(tasks=...)` and `lm_eval --tasks` accept."""
    names = task_names(tasks)
    kobest_dir = Path(kobest_dir)
    if not kobest_dir.is_dir():
        raise KoqualityError(f"--kobest-dir {kobest_dir}: no such directory")
    installed = {name: _installed_yaml(name) for name in names}
    splits = {name: {split: kobest_rows(kobest_dir, name.removeprefix("kobest_"), split) for split in SPLITS}
              for name in names}  # read everything first: a bad file fails before anything is written
    out_dir = Path(out_dir).resolve()
    paths = []
    for name in names:
        short = name.removeprefix("kobest_")
        files = {}
        for split, rows in splits[name].items():
            files[split] = str(out_dir / "data" / short / f"{split}.jsonl")
            _write_jsonl(rows, Path(files[split]))
        config: dict[str, Any] = {
            "include": str(installed[name]),
            "task": name,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files, "cache_dir": str(out_dir / "data" / ".cache")},
        }
        metric_list = _offline_metric_list(installed[name])
        if metric_list is not None:
            config["metric_list"] = metric_list
        header = (f"# lm-evaluation-harness's {name} (prompts, choices, metrics: the included YAML) on KoBEST read from\n"
                  f"# {kobest_dir.resolve()} (converted by koquality.kobest) instead of the hub dataset {HUB_DATASET}.\n"
                  "# metric_list is the included one without hf_evaluate, which would fetch a metric script from the hub.\n"
                  f"# Written by koquality.evaluate; run it with: lm_eval --model hf --tasks {out_dir / f'{name}.yaml'}\n")
        path = out_dir / f"{name}.yaml"
        with atomic_path(path) as tmp:
            tmp.write_text(header + _dump_task_yaml(config), encoding="utf-8")
        paths.append(path)
    return paths


def _connection_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, names in (("requests.exceptions", ("ConnectionError", "Timeout")), ("httpx", ("TransportError",)),
                          ("huggingface_hub.errors", ("OfflineModeIsEnabled", "LocalEntryNotFoundError"))):
        try:
            imported = import_module(module)
        except ImportError:
            continue
        errors += [getattr(imported, name) for name in names if hasattr(imported, name)]
    return tuple(errors)


def _check_hub(names: Sequence[str]) -> None:
    """Fail fast, before a model is loaded, with a one-line error when the hub copy of KoBEST is out of reach."""
    import datasets

    for name in names:
        config = _read_task_yaml(_installed_yaml(name))
        path, subset = config.get("dataset_path", HUB_DATASET), config.get("dataset_name")
        try:
            datasets.load_dataset_builder(path, subset)
        except _connection_errors() as e:
            raise KoqualityError(f"KoBEST: the Hugging Face hub could not be reached to load {path} ({type(e).__name__}); "
                                 "pass --kobest-dir DIR (the KoBEST v1.0 TSVs) to evaluate offline") from None


@contextlib.contextmanager
def _no_download_counts(offline: bool) -> Iterator[None]:
    """Offline means no network: `datasets` otherwise pings S3 to count a download of its packaged `json`
    builder each time a task loads its files (a HEAD request with a 3 s timeout, errors ignored)."""
    if not offline:
        yield
        return
    import datasets.config

    before = datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = before


def _adapter(model: str) -> dict[str, Any] | None:
    config_path = Path(model) / "adapter_config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise KoqualityError(f"{config_path}: not valid JSON ({e})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base:
        raise KoqualityError(f"{config_path}: no base_model_name_or_path, so the base model of this adapter is unknown")
    return config


def _model_args(model: str, dtype: str, revision: str | None, trust_remote_code: bool) -> dict[str, Any]:
    local = Path(model).expanduser()
    if not local.exists() and model.startswith(("/", "./", "../", "~")):
        raise KoqualityError(f"{model}: no such model directory")
    adapter = _adapter(str(local)) if local.is_dir() else None
    if adapter is not None:
        base = adapter["base_model_name_or_path"]
        args: dict[str, Any] = {"pretrained": str(Path(base).resolve()) if Path(base).is_dir() else base,
                                "peft": str(local.resolve())}
        if any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            args["tokenizer"] = str(local.resolve())
    else:
        # a local directory goes by absolute path: after evaluating, lm-eval asks the hub for the commit sha
        # of `pretrained`, and a relative path such as "runs/final" reads as a hub id; an absolute one does not
        args = {"pretrained": str(local.resolve()) if local.is_dir() else model}
    if revision is not None:
        args["revision"] = revision
    args.update(dtype=dtype, trust_remote_code=trust_remote_code)
    return args


def _check_loadable(model_args: dict[str, Any]) -> None:
    """The model's config, fetched before lm-eval starts: a name that cannot be loaded (a typo, no hub) is a
    one-line error rather than a traceback from deep inside lm-eval."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model_args["pretrained"], revision=model_args.get("revision"),
                                   trust_remote_code=model_args["trust_remote_code"])
    except (OSError, ValueError) as e:
        raise KoqualityError(f"{model_args['pretrained']}: cannot load the model's config ({str(e).splitlines()[0]})") from None


def _limit(limit: float | None) -> int | float | None:
    """A count of examples as an int (a CLI float option gives 8.0), a share (below 1) as a float."""
    if limit is None:
        return None
    if not limit > 0:
        raise KoqualityError(f"--limit {limit}: expected a number of examples (or a share below 1) above 0")
    return int(limit) if limit >= 1 and float(limit).is_integer() else limit


def lm_eval_args(model: str, tasks: str | Iterable[str] | None = None, num_fewshot: int = 0,
                 limit: float | None = None, batch_size: int | str = 8, device: str = "auto",
                 dtype: str = "auto", kobest_dir: str | Path | None = None, task_dir: str | Path | None = None,
                 revision: str | None = None, trust_remote_code: bool = False, seed: int = 1234) -> dict[str, Any]:
    """The keyword arguments `evaluate` passes to `lm_eval.simple_evaluate` (with kobest_dir, the offline task
    YAMLs are written to `task_dir` first). Checks the settings before anything heavy is loaded."""
    names = task_names(tasks)
    _lm_eval()
    import torch
    from lm_eval.tasks import TaskManager

    from .torch_utils import resolve_device, resolve_dtype

    if num_fewshot < 0:
        raise KoqualityError(f"--num-fewshot {num_fewshot}: expected 0 or more")
    limit = _limit(limit)
    device = resolve_device(torch, device)
    dtype_name = str(resolve_dtype(torch, dtype, device)).removeprefix("torch.")
    model_args = _model_args(model, dtype_name, revision, trust_remote_code)
    hub.require(models=[model], datasets=[] if kobest_dir is not None else [HUB_DATASET])
    _check_loadable(model_args)
    if kobest_dir is not None:
        if task_dir is None:
            raise KoqualityError("offline KoBEST needs a task_dir to write its task files to")
        specs: list[str] = [str(p) for p in offline_tasks(kobest_dir, task_dir, names)]
    else:
        _check_hub(names)
        specs = names
    # indexing only lm-eval's kobest folder: the default TaskManager scans every task lm-eval ships (~6 s)
    manager = TaskManager(include_path=str(_kobest_tasks_dir()), include_defaults=False, metadata=dict(model_args))
    return {"model": "hf", "model_args": model_args, "tasks": specs, "num_fewshot": num_fewshot, "limit": limit,
            "batch_size": batch_size, "device": device, "log_samples": False, "task_manager": manager,
            "random_seed": seed, "numpy_random_seed": seed, "torch_random_seed": seed, "fewshot_random_seed": seed}


def _plain(value: Any) -> Any:
    """lm-eval's output as plain JSON: numpy scalars as numbers, NaN/inf as null, anything else exotic as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if math.isfinite(value) else None
    return None


def _scores(raw: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    scores = {}
    for name in names:
        metrics = raw["results"].get(name)
        if metrics is None:
            raise KoqualityError(f"lm-eval returned no results for {name}")
        counts = raw.get("n-samples", {}).get(name, {})
        entry = {"acc": _number(metrics.get("acc,none")), "acc_stderr": _number(metrics.get("acc_stderr,none")),
                 "f1": _number(metrics.get("f1,none"))}
        if "acc_norm,none" in metrics:
            entry.update(acc_norm=_number(metrics.get("acc_norm,none")),
                         acc_norm_stderr=_number(metrics.get("acc_norm_stderr,none")))
        entry.update(n=counts.get("effective"), n_test=counts.get("original"))
        scores[name] = entry
    return scores


def _average(scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    average: dict[str, Any] = {}
    for metric in ("acc", "f1"):
        values = [s[metric] for s in scores.values() if s.get(metric) is not None]
        average[metric] = sum(values) / len(values) if values else None
    average["tasks"] = len(scores)
    return average


def evaluate(model: str, output: str | Path, tasks: str | Iterable[str] | None = None, num_fewshot: int = 0,
             limit: float | None = None, batch_size: int | str = 8, device: str = "auto", dtype: str = "auto",
             kobest_dir: str | Path | None = None, revision: str | None = None, trust_remote_code: bool = False,
             seed: int = 1234, label: str | None = None) -> dict[str, Any]:
    """Zero-shot (by default) KoBEST of `model` with lm-eval; writes `output` (JSON) and its `.md` table and
    returns the JSON. `limit` evaluates only the first N test examples of each task (a smoke test, not a score).
    Offline (`kobest_dir`), the converted data and task files go to koquality's cache (`kobest_task_dir`),
    not beside `output`: 17 MB that belong to no model. `label` names the model's row in tables (default:
    `model`)."""
    output = Path(output)
    task_dir = kobest_task_dir(kobest_dir, tasks) if kobest_dir is not None else None
    args = lm_eval_args(model, tasks, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size, device=device,
                        dtype=dtype, kobest_dir=kobest_dir, task_dir=task_dir, revision=revision,
                        trust_remote_code=trust_remote_code, seed=seed)
    import lm_eval

    with _no_download_counts(offline=kobest_dir is not None):
        raw = lm_eval.simple_evaluate(**args)
    if raw is None:  # not rank 0 of a distributed run: that rank writes
        return {}
    names = task_names(tasks)
    scores = _scores(raw, names)
    model_args = args["model_args"]
    result = {
        "format": FORMAT,
        "model": model,
        "label": label,
        "pretrained": model_args["pretrained"],
        "adapter": model_args.get("peft"),
        "revision": revision,
        "dtype": model_args["dtype"],
        "device": args["device"],
        "tasks": names,
        "num_fewshot": num_fewshot,
        "limit": args["limit"],
        "batch_size": batch_size,
        "seed": seed,
        "kobest": ({"source": "dir", "dir": str(Path(kobest_dir).resolve()), "task_files": args["tasks"]}
                   if kobest_dir is not None else {"source": "hub", "dataset": HUB_DATASET}),
        "lm_eval_version": lm_eval.__version__,
        "scores": scores,
        "average": _average(scores),
        "lm_eval": _plain({"model_args": model_args, "results": raw.get("results"), "n-samples": raw.get("n-samples"),
                           "versions": raw.get("versions"), "config": raw.get("config")}),
    }
    write_json(result, output)
    markdown = f"# KoBEST: {model}\n\n{markdown_table([result])}"
    with atomic_path(output.with_suffix(".md")) as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    return result


def load_results(path: str | Path) -> dict[str, Any]:
    """A results JSON written by `evaluate`, checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise KoqualityError(f"{path}: no such file")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise KoqualityError(f"{path}: not JSON ({e})") from None
    if not isinstance(result, dict) or result.get("format") != FORMAT or not isinstance(result.get("scores"), dict):
        raise KoqualityError(f"{path}: not a koquality eval results file (written by koquality eval, with \"format\": \"{FORMAT}\")")
    return result


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _note(result: dict[str, Any]) -> str:
    shots = "zero-shot" if not result.get("num_fewshot") else f"{result['num_fewshot']}-shot"
    counts = ", ".join(f"{LABELS[t]} {s.get('n')}" for t, s in result["scores"].items() if t in LABELS)
    source = result.get("kobest", {})
    where = f"from {source['dir']}" if source.get("source") == "dir" else f"from the hub ({source.get('dataset', HUB_DATASET)})"
    limit = f"; limit {result['limit']} (first examples only: not comparable with full runs)" if result.get("limit") else ""
    return (f"{_label(result)}: {shots}, KoBEST test split {where}, lm-evaluation-harness {result.get('lm_eval_version')}; "
            f"n = {counts}{limit}.")


def model_label(result: dict[str, Any]) -> str:
    """A model's name in tables: the given label, else the model (and the base an adapter sits on)."""
    label = result.get("label") or result.get("model", "?")
    if not result.get("label") and result.get("adapter") and result.get("pretrained"):
        label = f"{label} (adapter on {result['pretrained']})"
    return str(label)


def _label(result: dict[str, Any]) -> str:
    return model_label(result).replace("|", "\\|")


def score_cells(result: dict[str, Any], metric: str) -> list[str]:
    """One table row's cells for `metric`: ×100 per task in TASKS order, then the average; – where not run."""
    scores = result.get("scores", {})
    return [_cell(scores.get(t, {}).get(metric)) for t in TASKS] + [_cell(result.get("average", {}).get(metric))]


def markdown_table(results: dict[str, Any] | Iterable[dict[str, Any]]) -> str:
    """The paper's table shape, one row per results dict (e.g. the base model and each fine-tuned one):
    macro-F1 then accuracy, ×100, per task and their average over the tasks evaluated."""
    results = [results] if isinstance(results, dict) else list(results)
    header = "| Model | " + " | ".join(LABELS[t] for t in TASKS) + " | Avg |"
    rule = "|---|" + "---:|" * (len(TASKS) + 1)
    notes = [_note(r) for r in results] + ["Avg: mean over the tasks evaluated; – : task not evaluated."]
    lines: list[str] = []
    for metric, title in (("f1", "Macro-F1"), ("acc", "Accuracy")):
        lines += [f"## {title} (×100)", "", header, rule]
        for result in results:
            lines.append(f"| {_label(result)} | " + " | ".join(score_cells(result, metric)) + " |")
        lines.append("")
    for note in notes:
        lines += [note, ""]
    return "\n".join(lines)
