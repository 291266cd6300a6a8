"""A recipe: everything a run needs, as one YAML file validated by pydantic.

Presets ship with the package (`koquality/recipes/*.yaml`, also `recipes/` in the repository): `demo` runs
offline on the bundled demo corpus; `paper` is the KoQuality paper's final setting. Keys are the words of
the CLI: `len_groups`, `k`, `method`, `ratio` mean the same thing everywhere. Unknown keys are errors, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from . import backends
from .dedup import KEEP_ORDERS
from .errors import MAX_SEED, KoqualityError
from .sampling import IFD_METHODS, METHODS, PAPER_METHODS

PRESETS = ("demo", "paper", "paper-train")


Section = backends.Settings  # strict: `k: true` or `seed: 1.5e3` is a mistake, not a 1 or a 1500; no unknown keys


class SourceConfig(Section):
    path: str
    source: str | None = None
    map: dict[str, str] = Field(default_factory=dict)
    encoding: str = "utf-8"
    split: str = "train"  # hub datasets only
    config: str | None = None
    join: str = "\n"  # separates fields joined with '+' in `map`
    source_from: str | None = None  # name each row's source by this field's text before the first '_'
    turns: Literal["first", "all"] = "first"  # chats: the first exchange, or one row per assistant reply
    quoting: Literal["auto", "quotes", "none"] = "auto"  # CSV/TSV: auto = RFC 4180 quotes in .csv, none in .tsv


class IngestConfig(Section):
    on_error: Literal["raise", "skip"] = "raise"  # skip: broken records become drops with file, line, reason
    max_chars: int = Field(20_000, ge=1)  # rows longer than this (instruction + input + output) are dropped


def _map_stage_section(stage: str, backend_key: str, default: str, shard_help: str) -> type[Section]:
    """The `score:` / `embed:` section: which backend, the text field, the shard size, and every registered
    backend's settings (backends.py) — a backend added to the registry is a recipe key here too. Each
    backend gets only its own settings."""
    shared = {name: (info.annotation, info) for name, info in backends.settings_fields(stage).items()}
    # backends that read their own columns (IFD) write other columns than the stage's, so they are sections of
    # their own (`_signal_section`), not choices here
    choices = tuple(name for name in backends.names(stage) if not backends.backend(stage, name).reads)
    return create_model(f"{stage.title()}Config", __base__=Section,
                        **{backend_key: (Literal[choices], default)},  # type: ignore[valid-type]
                        **shared,
                        field=(str, "instruction"),
                        shard_rows=(int, Field(8192, ge=1, description=shard_help)))


def _signal_section(stage: str, name: str) -> type[Section]:
    """The section of one backend that reads its own columns (`ifd:`, `decontaminate:`): its settings and the
    shard size of its cache."""
    backend = backends.backend(stage, name)
    fields = {field: (info.annotation, info) for field, info in backend.settings.model_fields.items()}
    return create_model(f"{name.title()}Config", __base__=Section, **fields,
                        shard_rows=(int, Field(8192, ge=1, description="saved every this many rows")))


ScoreConfig = _map_stage_section("score", "scorer", "kiwi", "scores are saved every this many rows, so a killed run resumes")
EmbedConfig = _map_stage_section("embed", "encoder", "tfidf", "row-independent encoders save vectors every this many rows")
IfdConfig = _signal_section("score", "ifd")
DecontaminateConfig = _signal_section("filter", "decontaminate")


class ClusterConfig(Section):
    len_groups: int = Field(5, ge=1)
    k: int = Field(100, ge=1)
    n_init: int = Field(10, ge=1)
    niter: int = Field(25, ge=1)
    device: str = "cpu"  # cuda: faiss-gpu when installed, else torch
    fit_rows: int | None = Field(None, ge=1)  # fit each group's centroids on a seeded sample of this many rows (millions of rows)


class DedupConfig(Section):
    """Semantic near-duplicates dropped inside each (length group, cluster) cell (dedup.py)."""

    threshold: float = Field(0.95, gt=0, le=1)  # cosine similarity above which a row duplicates a kept one
    keep: Literal[KEEP_ORDERS] = "lowest_ppl"  # type: ignore[valid-type]  # which row of a duplicate group stays


class SampleConfig(Section):
    method: Literal[METHODS] = "ppl"  # type: ignore[valid-type]
    ratio: float = Field(0.01, gt=0, le=1)


class ExportConfig(Section):
    format: Literal["jsonl", "parquet", "csv", "hf", "text"] = "jsonl"
    template: Literal["paper", "chat"] = "paper"


class EngineConfig(Section):
    """Where the map stages (score, embed) run: `local` in this process, or `ray` on a Ray cluster
    (engines/ray.py). The selection is the same with either."""

    name: Literal["local", "ray"] = "local"
    address: str | None = None  # ray: a cluster's address or "auto"; None starts Ray on this machine
    actors: int | None = Field(None, ge=1)  # ray: actors per map stage (default: one per GPU, else one per CPU)
    gpus_per_actor: float | None = Field(None, gt=0)  # ray: e.g. 0.5 for two 1.3B scorers per GPU (default 1)
    cpus_per_actor: float | None = Field(None, gt=0)  # ray: default (CPUs − 1) / actors, at most 1
    stall_timeout: float = Field(1800, gt=0)  # ray: seconds without a finished shard before the run stops


class TrainConfig(Section):
    """The recipe's `train:` section and `koquality train`'s options; the defaults are the paper's run."""

    model: str | None = None  # hub id or local path; paper: EleutherAI/polyglot-ko-5.8b
    revision: str | None = None
    trust_remote_code: bool = False
    packing: Literal["blocks", "none"] = "blocks"  # blocks: concatenate and cut (run_clm); none: a row per sequence
    block_size: int = Field(1024, ge=8)
    eos: bool = False  # append EOS after every text (the paper did not)
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs
    lr: float = Field(5e-5, gt=0)
    scheduler: str = "linear"  # a transformers SchedulerType, or warmup_lr: DeepSpeed's WarmupLR as the original ran it
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    batch_size: int = Field(4, ge=1)  # per device
    global_batch_size: int | None = Field(256, ge=1)  # batch × accumulation × processes; None: use grad_accum
    grad_accum: int | None = Field(None, ge=1)
    precision: Literal["auto", "auto-fp16", "bf16", "fp16", "fp32"] = "auto"  # auto-fp16: fp16 on a GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    lora: bool = False
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target: list[str] | None = None  # None: peft's default modules for the architecture
    deepspeed: str | None = None  # zero3, zero3-offload or a DeepSpeed JSON file
    processes: int = Field(1, ge=1)  # > 1: `koquality run` launches training with torchrun, one process per GPU
    save_steps: int | None = Field(None, ge=1)  # None: a checkpoint at the end of every epoch (the paper)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    seed: int = Field(42, ge=0, le=MAX_SEED)
    validation: float = Field(0.0, ge=0, lt=1)  # share of the texts held out and evaluated: the first ones (run_clm's train[:5%])
    eval_steps: int | None = Field(None, ge=1)  # with validation: evaluate every N steps (None: after every epoch)
    eval_sequences: int | None = Field(None, ge=1)  # evaluate on the first N validation sequences (run_clm's max_eval_samples)

    @model_validator(mode="before")
    @classmethod
    def _accumulation_replaces_the_global_batch(cls, data):
        if isinstance(data, dict) and data.get("grad_accum") is not None and "global_batch_size" not in data:
            data = {**data, "global_batch_size": None}
        return data

    @model_validator(mode="after")
    def _one_accumulation(self):
        if self.grad_accum is not None and self.global_batch_size is not None:
            raise ValueError("give grad_accum or global_batch_size, not both")
        return self


class EvalConfig(Section):
    """Zero-shot KoBEST through lm-evaluation-harness, as the paper."""

    tasks: list[str] = Field(default_factory=lambda: ["boolq", "copa", "hellaswag", "sentineg", "wic"])
    num_fewshot: int = Field(0, ge=0)
    limit: float | None = Field(None, gt=0)  # per task: a count, or a share when < 1 (for smoke runs only)
    batch_size: int | Literal["auto"] = 8  # auto: lm-eval finds the largest batch that fits
    device: str = "auto"
    dtype: str = "auto"
    kobest_dir: str | None = None  # the KoBEST TSV release, for machines without the hub
    baseline: bool = True  # also evaluate train.model as it was: the base-vs-tuned comparison is the point


class Recipe(Section):
    name: str = "run"
    seed: int = Field(42, ge=0, le=MAX_SEED)
    # original: cluster and sample as the original KoQuality code did (sklearn KMeans on its row order, ppl rounded
    # to 2 decimals); see clustering.py and sampling.py. None: koquality's own k-means and unrounded ppl.
    reproduce: Literal["original"] | None = None
    sources: list[SourceConfig]
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    decontaminate: DecontaminateConfig | None = None  # drop rows sharing a long n-gram with a benchmark (decontaminate.py)
    ifd: IfdConfig | None = None  # score every row's IFD (scoring/ifd.py): `ifd`, `ppl_ifd` and keep: highest_ifd need it
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    dedup: DedupConfig | None = None  # drop semantic near-duplicates inside each cell before sampling
    sample: SampleConfig = Field(default_factory=SampleConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    train: TrainConfig | None = None  # fine-tune on the selection after export (needs train.model)
    eval: EvalConfig | None = None  # evaluate the trained model on KoBEST (needs train)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name):
        # the name becomes the default run directory, runs/<name>: it must not climb out of it
        if not re.fullmatch(r"[\w][\w.\-]*", name):
            raise ValueError("use letters, digits, '_', '-' or '.' (it names the run directory runs/<name>)")
        return name

    @field_validator("sources")
    @classmethod
    def _at_least_one(cls, sources):
        if not sources:
            raise ValueError("a recipe needs at least one source")
        return sources

    @model_validator(mode="after")
    def _training_needs_a_model(self):
        if self.train is not None and not self.train.model:
            raise ValueError("train needs model: a hub id or local path of the causal LM to fine-tune")
        if self.eval is not None and self.train is None:
            raise ValueError("eval evaluates the model that train fine-tunes: add a train section (with model)")
        return self

    @model_validator(mode="after")
    def _ifd_is_scored_where_it_is_used(self):
        needs = ([f"sample.method: {self.sample.method}"] if self.sample.method in IFD_METHODS else []) + \
                (["dedup.keep: highest_ifd"] if self.dedup is not None and self.dedup.keep == "highest_ifd" else [])
        if needs and self.ifd is None:
            raise ValueError(f"{needs[0]} needs every row's IFD: add an ifd section with the model that scores it "
                             "(ifd: {model: NAME_OR_PATH})")
        if self.reproduce and (self.dedup is not None or self.sample.method not in PAPER_METHODS or self.cluster.fit_rows):
            raise ValueError("reproduce: original runs the original code's stages only (no dedup or cluster.fit_rows, "
                             "a paper method)")
        return self

    def to_yaml(self) -> str:
        # recipes without them read as they always did
        exclude: dict[str, Any] = {key: True for key in ("reproduce", "decontaminate", "ifd", "dedup") if getattr(self, key) is None}
        if self.cluster.fit_rows is None:
            exclude["cluster"] = {"fit_rows"}
        if self.engine == EngineConfig():
            exclude["engine"] = True
        return yaml.safe_dump(self.model_dump(mode="json", exclude=exclude), allow_unicode=True, sort_keys=False)

    def selection_name(self) -> str:
        c, s = self.cluster, self.sample
        return f"len{c.len_groups}_k{c.k}_m{s.method}_n{s.ratio:g}"


def load_recipe(name_or_path: str | Path, relative_to_file: bool = True) -> Recipe:
    """A preset by name, or a recipe file. Relative paths in a file (sources, kobest_dir, a DeepSpeed JSON,
    a local model folder) are read from the file's folder, so a recipe works from any working directory;
    hub ids stay hub ids. `relative_to_file=False` for a run directory's own recipe.yaml, which holds the
    paths as they were resolved."""
    text_name = str(name_or_path)
    if text_name in PRESETS:
        text = (resources.files("koquality") / "recipes" / f"{text_name}.yaml").read_text(encoding="utf-8")
        origin = f"recipe '{text_name}'"
    else:
        path = Path(name_or_path)
        if path.suffix not in (".yaml", ".yml"):
            raise KoqualityError(f"--recipe {name_or_path}: expected {', '.join(PRESETS)} or a .yaml file")
        if not path.exists():
            raise KoqualityError(f"{path}: no such file")
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise KoqualityError(f"{path}: byte 0x{e.object[e.start]:02x} at offset {e.start} is not UTF-8 "
                                 "(save the recipe as UTF-8)") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise KoqualityError(f"{origin}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise KoqualityError(f"{origin}: expected a mapping of recipe keys (name, sources, score, …)")
    if relative_to_file and text_name not in PRESETS:
        _paths_from(Path(name_or_path).resolve().parent, data)
    return parse_recipe(data, origin)


def _paths_from(folder: Path, data: dict[str, Any]) -> None:
    """Rewrite, in place, the relative paths of a recipe's raw data as paths from `folder`."""
    from .sources import PACKAGE_PREFIX, is_hub_id

    def local(value: Any, must_exist: bool) -> Any:
        if not isinstance(value, str) or not value or value.startswith(PACKAGE_PREFIX) or Path(value).is_absolute():
            return value
        candidate = folder / value
        if candidate.exists() or (any(c in value for c in "*?[") and not is_hub_id(value)):
            return str(candidate)
        return value if is_hub_id(value) or must_exist else str(candidate)

    for source in data.get("sources") or []:
        if isinstance(source, dict):
            source["path"] = local(source.get("path"), must_exist=False)
    for section, key, must_exist in (("eval", "kobest_dir", False), ("train", "deepspeed", True),
                                     ("score", "model", True), ("embed", "model", True), ("ifd", "model", True), ("train", "model", True)):
        part = data.get(section)
        if isinstance(part, dict) and key in part:
            part[key] = local(part[key], must_exist)
    part = data.get("decontaminate")
    if isinstance(part, dict):
        if "kobest_dir" in part:
            part["kobest_dir"] = local(part["kobest_dir"], False)
        if isinstance(part.get("benchmarks"), list):  # "kobest" is a name, not a file; anything else is a file
            part["benchmarks"] = [b if b == "kobest" else local(b, False) for b in part["benchmarks"]]


def parse_engine(given: dict[str, Any]) -> EngineConfig:
    """An engine section from command-line options (None: not given)."""
    return _validated(EngineConfig, {k: v for k, v in given.items() if v is not None}, "engine")


def _validated(model, data: dict[str, Any], origin: str):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise KoqualityError(f"{origin}: {where}: {err['msg']}") from None


def parse_recipe(data: dict[str, Any], origin: str = "recipe") -> Recipe:
    return _validated(Recipe, data, origin)
