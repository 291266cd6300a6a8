"""The `koquality` command: a thin layer over the library, one command per stage plus `run`.

Formats are chosen by extension; every command keeps its input's columns and adds its own. Problems with
the user's input print one line, `koquality: …`, and exit with code 2.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import List, Optional

import typer
import typer.core
from rich.console import Console
from rich.table import Table

from . import progress
from .errors import MAX_SEED, KoqualityError, check_range

def _type_label(param, ctx) -> str | None:
    """click's style in the help's type column: `--recipe RECIPE`, a flag without one (typer's own
    `<bool>` / `<list[str]>` labels read like Python, not like a command line)."""
    if getattr(param, "is_flag", False):
        return None
    label = param.metavar or (param.name or "").upper()
    return f"{label}..." if param.nargs == -1 else label


for _kind in ("TyperOption", "TyperArgument"):
    if hasattr(typer.core, _kind):
        getattr(typer.core, _kind).display_type_rich = _type_label

SOURCES_HELP = ("files (.jsonl .json .csv .tsv, also .gz/.bz2/.xz/.zst; .parquet .arrow), datasets save_to_disk "
                "folders, directories, globs or hub ids (org/name)")

# The source options `ingest`, `run` and `sweep` share (None: the source's own default, or the recipe's).
SOURCE_NAMES = typer.Option(None, "--source", help="a name per SRC, in order (default: the file name)")
SOURCE_MAP = typer.Option(None, "--map", help="FIELD=SOURCE_FIELD for every source, NAME:FIELD=SOURCE_FIELD for one; join fields with +")
SPLIT = typer.Option(None, help="hub datasets and save_to_disk folders: the split [default: train]")
CONFIG = typer.Option(None, help="hub datasets: the configuration")
ENCODING = typer.Option(None, help="text encoding of the files, e.g. cp949 [default: utf-8]")
TURNS = typer.Option(None, help="chats: first (first user turn + reply) or all (one row per reply) [default: first]")
QUOTING = typer.Option(None, help="CSV/TSV: auto (quotes in .csv, none in .tsv), quotes or none [default: auto]")
ON_ERROR = typer.Option(None, help="raise: stop at a broken record; skip: drop it with its reason [default: raise]")
MAX_CHARS = typer.Option(None, help="drop rows longer than this many characters [default: 20000]")
# Where the map stages (score, embed) run: `run`, `sweep`, `score` and `embed` share these.
ENGINE = typer.Option(None, "--engine", help="local (in this process) or ray (Ray Data actors) [default: local]")
ADDRESS = typer.Option(None, "--address", help="--engine ray: a Ray cluster's address, or auto (default: start Ray here)")
ACTORS = typer.Option(None, "--actors", metavar="N", help="--engine ray: actors per stage (default: one per GPU, else per CPU)")
GPUS_PER_ACTOR = typer.Option(None, "--gpus-per-actor", help="--engine ray: GPUs per actor, e.g. 0.5 for two models on a GPU [default: 1]")
IFD_MODEL = typer.Option(None, "--ifd-model", help="score each row's IFD (answer perplexity with / without the instruction) with this causal LM, hub id or path; needed by --method ifd and ppl_ifd")
DEDUP = typer.Option(None, "--dedup", metavar="THRESHOLD", help="drop rows whose embedding is more similar than this (cosine) to a kept row of their cell, e.g. 0.95")
DEDUP_KEEP = typer.Option(None, "--dedup-keep", help="--dedup: which row of a near-duplicate group stays: lowest_ppl, highest_ifd or first [default: lowest_ppl]")
DECONTAMINATE = typer.Option(None, "--decontaminate", metavar="BENCHMARK", help="drop rows that share a long n-gram with a benchmark: kobest (with --kobest-dir) or a JSONL/TSV/TXT file; repeatable")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Curate small, high-quality Korean instruction-tuning datasets (KoQuality).")
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"koquality {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print koquality's version and exit"),
          threads: Optional[int] = typer.Option(None, "--threads", metavar="N",
                                                help="worker threads for Kiwi, torch, BLAS and faiss (default: the CPUs "
                                                     "this process may use, not the machine's core count)")) -> None:
    """Curate small, high-quality Korean instruction-tuning datasets (KoQuality)."""
    from .threads import set_threads

    if threads is not None:
        check_range("--threads", threads, 1)
    set_threads(threads)


def _summary(title: str, rows: list[tuple[str, object]]) -> None:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)


def _with_signals(recipe, ifd_model=None, dedup=None, dedup_keep=None, decontaminate=None, kobest_dir=None,
                  method=None):
    """`recipe` with the selection signals given on the command line (--ifd-model, --dedup, --decontaminate)."""
    from .recipe import parse_recipe

    data = recipe.model_dump()
    if ifd_model:
        data["ifd"] = {**(data.get("ifd") or {}), "model": ifd_model}
    if dedup is not None or dedup_keep:
        data["dedup"] = {**(data.get("dedup") or {}), **({"threshold": dedup} if dedup is not None else {}),
                         **({"keep": dedup_keep} if dedup_keep else {})}
    if decontaminate:
        data["decontaminate"] = {**(data.get("decontaminate") or {}), "benchmarks": list(decontaminate),
                                 **({"kobest_dir": str(kobest_dir)} if kobest_dir else {})}
    if method:
        data["sample"] = {**data["sample"], "method": method}
    return parse_recipe(data, "the command line") if data != recipe.model_dump() else recipe


def _with_engine(recipe, **given):
    """`recipe` with the engine options given on the command line (`--engine ray --address auto`)."""
    from .recipe import parse_recipe

    given = {("name" if k == "engine" else k): v for k, v in given.items() if v is not None}
    if not given:
        return recipe
    data = recipe.model_dump()
    data["engine"] = {**data["engine"], **given}
    return parse_recipe(data, "the command line")


@app.command()
def run(sources: Optional[List[str]] = typer.Argument(None, metavar="[SRC...]", help="sources instead of the recipe's: " + SOURCES_HELP),
        recipe: str = typer.Option("demo", help="demo, paper, or a recipe .yaml file"),
        output: Optional[Path] = typer.Option(None, help="run directory (default: runs/<recipe name>)"),
        force: bool = typer.Option(False, help="replace a run directory that holds a different recipe"),
        report: bool = typer.Option(True, help="write report.html at the end"),
        train: Optional[str] = typer.Option(None, "--train", help="then fine-tune this model (hub id or path) on the selection"),
        eval: bool = typer.Option(False, "--eval", help="then evaluate the fine-tuned model on KoBEST"),
        kobest_dir: Optional[Path] = typer.Option(None, help="--eval and --decontaminate kobest offline: the KoBEST TSV folder"),
        limit: Optional[float] = typer.Option(None, help="--eval: examples per task (smoke runs only)"),
        reproduce: Optional[str] = typer.Option(None, help="original: the original KoQuality code's k-means (sklearn per length group on its row order) and sampling by ppl rounded to 2 decimals"),
        source: Optional[List[str]] = SOURCE_NAMES, map: Optional[List[str]] = SOURCE_MAP,
        split: Optional[str] = SPLIT, config: Optional[str] = CONFIG, encoding: Optional[str] = ENCODING,
        turns: Optional[str] = TURNS, quoting: Optional[str] = QUOTING, on_error: Optional[str] = ON_ERROR,
        max_chars: Optional[int] = MAX_CHARS, engine: Optional[str] = ENGINE, address: Optional[str] = ADDRESS,
        actors: Optional[int] = ACTORS, gpus_per_actor: Optional[float] = GPUS_PER_ACTOR,
        method: Optional[str] = typer.Option(None, help="the recipe's sampling method instead: rand, ppl, ppl_h, ifd, ppl_ifd or diverse"),
        ifd_model: Optional[str] = IFD_MODEL, dedup: Optional[float] = DEDUP, dedup_keep: Optional[str] = DEDUP_KEEP,
        decontaminate: Optional[List[str]] = DECONTAMINATE):
    """Run the whole pipeline: ingest → score → embed → cluster → sample → export → report (→ train → eval)."""
    from .pipeline import run as run_pipeline
    from .recipe import load_recipe, parse_recipe

    loaded = _with_sources(load_recipe(recipe), sources, source, map, on_error, max_chars, split=split, config=config,
                           encoding=encoding, turns=turns, quoting=quoting)
    loaded = _with_engine(loaded, engine=engine, address=address, actors=actors, gpus_per_actor=gpus_per_actor)
    loaded = _with_signals(loaded, ifd_model, dedup, dedup_keep, decontaminate, kobest_dir, method)
    if (eval or limit or (kobest_dir and not decontaminate)) and not train and loaded.train is None:
        raise KoqualityError("--eval evaluates the model that --train fine-tunes: add --train MODEL (hub id or path)")
    if train or eval or limit:
        data = loaded.model_dump()
        if train:
            data["train"] = {**(data.get("train") or {}), "model": train}
        if eval or limit or (kobest_dir and train):
            data["eval"] = {**(data.get("eval") or {}), **({"kobest_dir": str(kobest_dir)} if kobest_dir else {}),
                            **({"limit": limit} if limit else {})}
        loaded = parse_recipe(data, "--train/--eval")
    if reproduce:
        from .clustering import check_reproduce

        check_reproduce(reproduce)
        loaded = parse_recipe({**loaded.model_dump(), "reproduce": reproduce}, "--reproduce")
    result = run_pipeline(loaded, output or Path("runs") / loaded.name, force=force, report=report)
    from .report import summary_rows

    rows = summary_rows(result.manifest) + _cell_rows(result.manifest)
    rows += [("selection", str(result.selection_path)), ("training text", str(result.run_dir / result.manifest["files"]["export"]))]
    if report:
        rows += [("report", str(result.run_dir / "report.html"))]
    if "train" in result.manifest:
        rows += [("model", str(result.run_dir / "model"))]
    if "eval" in result.manifest:
        rows += [("KoBEST table", str(result.run_dir / result.manifest["files"]["eval"]))]
    _summary(f"koquality run: {loaded.name} → {result.run_dir}", rows)


def _cell_rows(manifest: dict) -> list[tuple[str, object]]:
    """The selection against its ratio: a collapsed cell (fewer than 1/N rows) is why they differ."""
    cells = manifest.get("cells")
    if not cells:
        return []
    return [("effective ratio", f"{cells['effective_ratio']:.2%} (N = {cells['ratio']:g})"),
            ("cells below 1/N rows", f"{cells['cells_below_1_over_n']:,} of {cells['cells']:,}")]


def _numbers(text: str, kind, option: str) -> list:
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise KoqualityError(f"{option} {text}: expected comma-separated {kind.__name__}s, e.g. {option} 1,5,10") from None


@app.command()
def sweep(inputs: Optional[List[str]] = typer.Argument(None, metavar="[SRC...]", help="sources instead of the recipe's (default: the demo corpus): " + SOURCES_HELP),
          recipe: Optional[str] = typer.Option(None, help="demo, paper, or a recipe .yaml file"),
          len_groups: str = typer.Option("1,5,10,20", help="L values"),
          k: str = typer.Option("1,10,20,50,100", help="K values"),
          method: str = typer.Option("rand,ppl,ppl_h", help="methods: rand, ppl, ppl_h (the paper's), ifd, ppl_ifd, diverse"),
          ratio: str = typer.Option("0.1,0.05,0.01", help="N values"),
          output: Path = typer.Option(Path("runs/sweep"), help="run directory"),
          force: bool = typer.Option(False, help="replace a run directory that holds a different recipe"),
          report: bool = typer.Option(True, help="write report.html at the end"),
          source: Optional[List[str]] = SOURCE_NAMES, map: Optional[List[str]] = SOURCE_MAP,
          split: Optional[str] = SPLIT, config: Optional[str] = CONFIG, encoding: Optional[str] = ENCODING,
          turns: Optional[str] = TURNS, quoting: Optional[str] = QUOTING, on_error: Optional[str] = ON_ERROR,
          max_chars: Optional[int] = MAX_CHARS, engine: Optional[str] = ENGINE, address: Optional[str] = ADDRESS,
          actors: Optional[int] = ACTORS, gpus_per_actor: Optional[float] = GPUS_PER_ACTOR,
          ifd_model: Optional[str] = IFD_MODEL, dedup: Optional[float] = DEDUP, dedup_keep: Optional[str] = DEDUP_KEEP,
          decontaminate: Optional[List[str]] = DECONTAMINATE,
          kobest_dir: Optional[Path] = typer.Option(None, help="--decontaminate kobest offline: the KoBEST TSV folder")):
    """The paper's experiment grid: every (L, K, method, N) selection, scoring and embedding once."""
    from .recipe import load_recipe, parse_recipe
    from .report import summary_rows
    from .sweep import sweep as run_sweep

    base = _with_sources(load_recipe(recipe or "demo"), inputs, source, map, on_error, max_chars, split=split,
                         config=config, encoding=encoding, turns=turns, quoting=quoting)
    base = _with_engine(base, engine=engine, address=address, actors=actors, gpus_per_actor=gpus_per_actor)
    base = _with_signals(base, ifd_model, dedup, dedup_keep, decontaminate, kobest_dir)
    if inputs:
        base = parse_recipe({**base.model_dump(), "name": "sweep"}, "sweep")
    result = run_sweep(base, output, _numbers(len_groups, int, "--len-groups"), _numbers(k, int, "--k"),
                       [m.strip() for m in method.split(",") if m.strip()], _numbers(ratio, float, "--ratio"),
                       force=force, report=report)
    rows = summary_rows(result.manifest) + _cell_rows(result.manifest) + [("sweep table", str(result.run_dir / "sweep.csv"))]
    if report:
        rows += [("report", str(result.run_dir / "report.html"))]
    _summary(f"koquality sweep → {result.run_dir}", rows)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run or sweep directory")):
    """Write RUN_DIR/report.html (figures inline) and RUN_DIR/figures/*.png."""
    from .report import write_report

    path = write_report(run_dir)
    _summary(f"report → {path}", [("figures", str(run_dir / "figures"))])


@app.command()
def inspect(run_dir: Path = typer.Argument(..., help="a run or sweep directory")):
    """Print a run's summary table."""
    import json

    from .report import summary_rows

    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise KoqualityError(f"{run_dir}: not a koquality run directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    _summary(f"{manifest['name']}: {run_dir}", summary_rows(manifest) + _cell_rows(manifest) + [("selection", manifest["files"]["selection"])])


def _source_specs(sources: list[str], names: list[str] | None, maps: list[str] | None, **options) -> list:
    """Pair SRCs with --source names (in order) and --map items (`FIELD=SRC` for all, `NAME:FIELD=SRC` for one)."""
    from .ingest import SourceSpec

    names = names or []
    if names and len(names) != len(sources):
        raise KoqualityError(f"--source given {len(names)} time(s) for {len(sources)} source(s): give one name per SRC, in order")
    shared, per_source = [], {}
    for item in maps or []:
        target = item.split("=", 1)[0]
        if ":" in target:
            name, rest = item.split(":", 1)
            per_source.setdefault(name, []).append(rest)
        else:
            shared.append(item)
    unknown = set(per_source) - set(names)
    if unknown:
        raise KoqualityError(f"--map {sorted(unknown)[0]}:…: no source is named {sorted(unknown)[0]!r} (name sources with --source)")
    given = {k: v for k, v in options.items() if v is not None}
    return [SourceSpec(path=src, source=name, map=shared + per_source.get(name, []) or None, **given)
            for src, name in zip(sources, names or [None] * len(sources))]


def _with_sources(recipe, sources: list[str] | None, names, maps, on_error: str | None, max_chars: int | None,
                  **options):
    """`recipe` with the sources named on the command line (and the ingest options given) instead of its own:
    `run` and `sweep` read sources exactly as `ingest` does."""
    from dataclasses import asdict

    from .recipe import parse_recipe
    from .sources import parse_map

    if not sources and (names or maps or any(v is not None for v in options.values())):
        raise KoqualityError("--source, --map and the other source options apply to sources named on the command "
                             "line (SRC...); a recipe's sources take their options in the recipe")
    if not sources and on_error is None and max_chars is None:
        return recipe
    data = recipe.model_dump()
    if sources:
        specs = [asdict(s) for s in _source_specs(sources, names, maps, **options)]
        for spec in specs:
            spec["map"] = {target: "+".join(fields) for target, fields in parse_map(spec["map"]).items()}
        data["sources"] = specs
    data["ingest"].update({k: v for k, v in dict(on_error=on_error, max_chars=max_chars).items() if v is not None})
    return parse_recipe(data, "the command line")


@app.command()
def ingest(sources: List[str] = typer.Argument(..., metavar="SRC...", help=SOURCES_HELP),
           output: Path = typer.Option(..., help="corpus file to write"),
           source: Optional[List[str]] = SOURCE_NAMES, map: Optional[List[str]] = SOURCE_MAP,
           split: Optional[str] = SPLIT, config: Optional[str] = CONFIG, encoding: Optional[str] = ENCODING,
           turns: Optional[str] = TURNS, quoting: Optional[str] = QUOTING, on_error: Optional[str] = ON_ERROR,
           max_chars: Optional[int] = MAX_CHARS,
           dropped: Optional[Path] = typer.Option(None, help="where dropped rows go (default: <output>.dropped.parquet)")):
    """Read, map, clean, drop empty/too long/broken rows and exact duplicates; add id, source, len."""
    from .drops import Ledger, dropped_file
    from .ingest import ingest as ingest_sources
    from .tables import table_format, write_table

    table_format(output)
    specs = _source_specs(sources, source, map, split=split, config=config, encoding=encoding, turns=turns,
                          quoting=quoting)
    if max_chars is not None:
        check_range("--max-chars", max_chars, 1)
    result = ingest_sources(specs, **{k: v for k, v in dict(on_error=on_error, max_chars=max_chars).items() if v is not None})
    for name, mapping in result.mappings.items():
        console.print(f"[bold]{name}[/]: {mapping}", highlight=False)
    dropped_path = dropped_file(output, dropped)
    for item in result.skipped[:10]:
        console.print(f"[yellow]skipped[/] {item['path']}: {item['reason']}", highlight=False)
    if len(result.skipped) > 10:
        console.print(f"[yellow]skipped[/] {len(result.skipped) - 10:,} more", highlight=False)
    drops = Ledger(result.read, result.dropped)
    counts = drops.rows(result.corpus.num_rows)
    write_table(result.corpus, output)
    drops.write(dropped_path)
    rows = [("rows read", counts["read"]), ("dropped", counts["dropped"])]
    rows += [(f"  {r}", n) for r, n in sorted(drops.by_reason().items())]
    rows += [(f"cleaned: {what}", n) for what, n in sorted(result.cleaned.items())]
    rows += [("files skipped", len(result.skipped))] if result.skipped else []
    _summary(f"ingest → {output}", rows + [("corpus", result.corpus.num_rows), ("dropped rows", str(dropped_path))])


def _map_stage_command(stage: str, backend_key: str, summary: str):
    """`koquality score` / `koquality embed`: options built from the registered backends' settings
    (backends.py), so a new backend's settings are options here without touching this file."""
    import inspect

    from . import backends

    fields = backends.settings_fields(stage)
    kinds = ", ".join(f"{name} ({backends.backend(stage, name).help})" for name in backends.names(stage))
    default = backends.names(stage)[0]
    params = [
        inspect.Parameter("input", inspect.Parameter.KEYWORD_ONLY, annotation=Path,
                          default=typer.Argument(..., metavar="INPUT", help="a table with the texts (.parquet .jsonl .csv …)")),
        inspect.Parameter("output", inspect.Parameter.KEYWORD_ONLY, annotation=Path, default=typer.Option(
            ..., help="table to write (INPUT's columns plus ppl, n_tokens)" if stage == "score" else ".npy file; row i is row i of INPUT")),
        inspect.Parameter(backend_key, inspect.Parameter.KEYWORD_ONLY, annotation=str,
                          default=typer.Option(default, help=kinds)),
        inspect.Parameter("field", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                          default=typer.Option("instruction", help="the column holding the texts")),
    ]
    if stage == "embed":
        params.append(inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                                        default=typer.Option(42, help="tfidf: the SVD's seed")))
    for name, info in fields.items():
        kind = _option_type(info.annotation)
        flags = (f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}",) if kind is bool else ()
        help_text = info.description or ""
        if info.default is not None and kind is not bool:
            help_text += f" [default: {info.default}]"
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                        default=typer.Option(None, *flags, help=help_text)))
    params += [
        inspect.Parameter("cache", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path], default=typer.Option(
            None, help="where finished shards are kept, so a killed command resumes (default: a folder beside "
                       "OUTPUT, removed after success)")),
        inspect.Parameter("keep_cache", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, help="keep the default cache folder after success")),
        inspect.Parameter("shard_rows", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                          default=typer.Option(8192, help="rows per cached shard")),
        inspect.Parameter("engine", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=ENGINE),
        inspect.Parameter("address", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=ADDRESS),
        inspect.Parameter("actors", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int], default=ACTORS),
        inspect.Parameter("gpus_per_actor", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[float], default=GPUS_PER_ACTOR),
    ]

    def command(**options):
        from .stage_commands import map_stage_command

        settings = {name: options.pop(name) for name in fields}
        rows = map_stage_command(stage, options.pop(backend_key), settings, **options)
        _summary(f"{stage} → {options['output']}", rows)

    command.__signature__ = inspect.Signature(params)
    command.__doc__ = summary
    app.command(stage)(command)


def _option_type(annotation):
    """The option type of a setting: str for a Literal (pydantic checks the value), X for `X | None`."""
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return str
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _option_type(args[0]) if len(args) == 1 else annotation


_map_stage_command("score", "scorer", "Add ppl and n_tokens (ppl stays empty where a text cannot be scored).")
_map_stage_command("embed", "encoder", "Write one vector per row to a .npy file.")


@app.command()
def cluster(input: Path, vectors: Path = typer.Option(..., help=".npy from koquality embed"),
            len_groups: int = typer.Option(..., help="L: number of length-quantile groups"),
            k: int = typer.Option(..., help="K: clusters per length group"),
            output: Path = typer.Option(...), seed: int = typer.Option(42),
            n_init: int = typer.Option(10, help="k-means restarts (the paper: 10)"),
            device: str = typer.Option("cpu", help="cpu (faiss) or cuda (faiss-gpu when installed, else torch)"),
            reproduce: Optional[str] = typer.Option(None, help="original: the original KoQuality code's k-means (sklearn per length group on its row order) and sampling by ppl rounded to 2 decimals"),
        source: Optional[List[str]] = SOURCE_NAMES, map: Optional[List[str]] = SOURCE_MAP,
        split: Optional[str] = SPLIT, config: Optional[str] = CONFIG, encoding: Optional[str] = ENCODING,
        turns: Optional[str] = TURNS, quoting: Optional[str] = QUOTING, on_error: Optional[str] = ON_ERROR,
        max_chars: Optional[int] = MAX_CHARS):
    """Add len_group and cluster."""
    from .clustering import cluster as cluster_table
    from .tables import load_vectors, read_table, table_format, write_json, write_table

    table_format(output)
    check_range("--seed", seed, 0, MAX_SEED)
    check_range("--n-init", n_init, 1)
    result = cluster_table(read_table(input), load_vectors(vectors), len_groups, k, seed=seed, n_init=n_init,
                           device=device, reproduce=reproduce)
    write_table(result.table, output)
    write_json(result.info, output.with_name(f"{output.stem}.clusters.json"))
    rows = [(f"group {g['len_group']} (len ≥ {b:g})", f"{g['rows']:,} rows, k={g['k']}")
            for g, b in zip(result.info["groups"], result.info["boundaries"])]
    _summary(f"cluster → {output}", rows + [("K clamped in", f"{len(result.info['clamped'])} group(s)")])


@app.command()
def sample(input: Path, method: str = typer.Option(..., help="rand, ppl, ppl_h (the paper's), ifd, ppl_ifd (need an ifd column) or diverse (needs --vectors)"),
           ratio: float = typer.Option(..., help="N: share of each cell to keep"),
           output: Path = typer.Option(...), seed: int = typer.Option(42),
           reproduce: Optional[str] = typer.Option(None, help="original: the original KoQuality code's k-means (sklearn per length group on its row order) and sampling by ppl rounded to 2 decimals"),
           vectors: Optional[Path] = typer.Option(None, help="--method diverse: the rows' vectors (.npy, row i ↔ row i of INPUT)")):
    """Keep a ratio N of every (length group, cluster) cell."""
    from .sampling import sample as sample_table
    from .tables import VectorFile, read_table, table_format, write_table

    table_format(output)
    check_range("--seed", seed, 0, MAX_SEED)
    table = read_table(input)
    result = sample_table(table, method, ratio, seed=seed, reproduce=reproduce,
                          vectors=VectorFile(vectors) if vectors is not None else None)
    write_table(result, output)
    _summary(f"sample → {output}", [("rows in", table.num_rows), ("selected", result.num_rows)])


@app.command()
def decontaminate(input: Path = typer.Argument(..., help="rows with instruction, output (and input): .jsonl, .parquet or .csv"),
                  output: Path = typer.Option(..., help="the rows that share no long n-gram with a benchmark"),
                  against: List[str] = typer.Option(["kobest"], "--against", help="kobest, or a .jsonl/.tsv/.txt file of benchmark texts; repeatable"),
                  kobest_dir: Optional[Path] = typer.Option(None, help="the KoBEST TSV folder (default: the hub's skt/kobest_v1)"),
                  n: Optional[int] = typer.Option(None, "--n", help="n-gram length [default: 13 morphemes, 20 characters]"),
                  unit: str = typer.Option("morpheme", help="morpheme (Kiwi) or char"),
                  dropped: Optional[Path] = typer.Option(None, help="where contaminated rows go (default: <output>.dropped.parquet)"),
                  cache: Optional[Path] = typer.Option(None, help="keep shards here (default: beside --output, removed after success)"),
                  keep_cache: bool = typer.Option(False, help="keep the default cache folder after success"),
                  shard_rows: int = typer.Option(8192, help="results are saved every this many rows, so a killed command resumes"),
                  engine: Optional[str] = ENGINE, address: Optional[str] = ADDRESS, actors: Optional[int] = ACTORS):
    """Drop rows whose instruction, input or output shares a long n-gram with a benchmark item (reason: contaminated)."""
    from .stage_commands import decontaminate_command
    from .recipe import parse_engine

    settings = {"benchmarks": list(against), "kobest_dir": str(kobest_dir) if kobest_dir else None, "n": n, "unit": unit}
    check_range("--shard-rows", shard_rows, 1)
    rows = decontaminate_command(input, output, dropped, settings, cache, keep_cache,
                                 parse_engine(dict(name=engine, address=address, actors=actors)), shard_rows)
    _summary(f"decontaminate → {output}", rows)


@app.command()
def dedup(input: Path = typer.Argument(..., help="clustered rows (koquality cluster's output: id, len_group, cluster, ppl)"),
          vectors: Path = typer.Option(..., help="the rows' vectors (.npy, row i ↔ row i of INPUT)"),
          output: Path = typer.Option(..., help="the rows that are no near-duplicate of a kept row of their cell"),
          threshold: float = typer.Option(0.95, help="cosine similarity above which a row duplicates a kept one"),
          keep: str = typer.Option("lowest_ppl", help="which row of a near-duplicate group stays: lowest_ppl, highest_ifd or first"),
          dropped: Optional[Path] = typer.Option(None, help="where duplicates go (default: <output>.dropped.parquet)")):
    """Drop semantic near-duplicates inside each (length group, cluster) cell (reason: semantic_duplicate)."""
    from .stage_commands import dedup_command

    _summary(f"dedup → {output}", dedup_command(input, vectors, output, threshold, keep, dropped))


@app.command()
def export(input: Path, output: Path = typer.Option(...),
           format: Optional[str] = typer.Option(None, help="jsonl, parquet, csv, hf or text (default: from the extension)"),
           template: str = typer.Option("paper", help="paper (### 질문: …### 답변: …) or chat"),
           force: bool = typer.Option(False, help="hf: write into a directory that holds other files (never deleting them)")):
    """Render training text and write it out."""
    from .export import export as export_table
    from .tables import read_table

    table = read_table(input)
    if not table.num_rows:
        logging.getLogger("koquality").warning("%s has no rows: the export is empty", input)
    path = export_table(table, output, format=format, template=template, force=force)
    _summary(f"export → {path}", [("rows", table.num_rows), ("template", template)])


@app.command()
def train(selection: str = typer.Argument(..., help="a run directory, a selection/training-text file (.jsonl .parquet .csv .json) or a saved datasets directory"),
          model: Optional[str] = typer.Option(None, help="hub id or local path of the causal LM (paper: EleutherAI/polyglot-ko-5.8b)"),
          output: Path = typer.Option(..., help="directory for the model, tokenizer, koquality-train.json, loss.jsonl, checkpoints"),
          preset: str = typer.Option("paper", help="paper (the paper's README settings), paper-script (what the original's training script ran: 5 % held out and evaluated, DeepSpeed's WarmupLR, global batch 64, fp16) or lora (one GPU)"),
          max_steps: Optional[int] = typer.Option(None, help="stop after this many optimizer steps (overrides --epochs)"),
          epochs: Optional[float] = typer.Option(None, help="paper: 2"),
          lr: Optional[float] = typer.Option(None, help="paper: 5e-5"),
          block_size: Optional[int] = typer.Option(None, help="tokens per training sequence (paper: 1024)"),
          packing: Optional[str] = typer.Option(None, help="blocks (concatenate and cut, the paper) or none (one row per sequence)"),
          eos: Optional[bool] = typer.Option(None, "--eos/--no-eos", help="append EOS after every text (the paper: no)"),
          batch_size: Optional[int] = typer.Option(None, help="per device (paper: 4)"),
          global_batch_size: Optional[int] = typer.Option(None, help="batch × accumulation × processes (paper: 256)"),
          grad_accum: Optional[int] = typer.Option(None, help="gradient accumulation steps (replaces --global-batch-size)"),
          precision: Optional[str] = typer.Option(None, help="auto (bf16 where supported, fp16 on older GPUs, fp32 on CPU), auto-fp16 (fp16 on a GPU, fp32 on CPU), bf16, fp16, fp32"),
          gradient_checkpointing: Optional[bool] = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing"),
          lora: Optional[bool] = typer.Option(None, "--lora/--no-lora", help="train LoRA adapters with peft instead of every weight"),
          lora_r: Optional[int] = typer.Option(None, help="LoRA rank (default 16)"),
          deepspeed: Optional[str] = typer.Option(None, help="zero3, zero3-offload (shipped configs) or a DeepSpeed JSON file"),
          save_steps: Optional[int] = typer.Option(None, help="checkpoint every N steps (default: every epoch)"),
          seed: Optional[int] = typer.Option(None, help="paper: 42"),
          revision: Optional[str] = typer.Option(None), trust_remote_code: bool = typer.Option(False),
          template: Optional[str] = typer.Option(None, help="for rows without `text`: paper or chat (a run directory uses its own)"),
          config: Optional[Path] = typer.Option(None, help="train settings from a file: a recipe .yaml (its train: section) or a .json of train keys; options given here override it"),
          resume: bool = typer.Option(False, help="continue from the last checkpoint in OUTPUT"),
          force: bool = typer.Option(False, help="replace a training run already in OUTPUT")):
    """Fine-tune a causal LM on a selection (the paper's recipe by default). Multi-GPU: torchrun --nproc_per_node N -m koquality train …"""
    from .train import is_main_process, load_train_config, train as train_model, train_config

    config = train_config(preset, base=load_train_config(config) if config else None, model=model,
                          max_steps=max_steps, epochs=epochs, lr=lr, block_size=block_size, packing=packing, eos=eos,
                          batch_size=batch_size, global_batch_size=global_batch_size, grad_accum=grad_accum, precision=precision, gradient_checkpointing=gradient_checkpointing,
                          lora=lora, lora_r=lora_r, deepspeed=deepspeed, save_steps=save_steps, seed=seed,
                          revision=revision, trust_remote_code=trust_remote_code or None)
    summary = train_model(selection, output, config, resume=resume, force=force, template=template)
    if is_main_process():
        _summary(f"train → {output}", [("texts", summary["data"]["texts"]), ("tokens", summary["data"]["tokens"]),
                                       ("sequences", summary["data"]["sequences"]), ("steps", summary["steps"]),
                                       ("global batch", summary["resolved"]["global_batch_size"]),
                                       ("precision", summary["resolved"]["precision"]),
                                       ("loss: first → last", f"{summary['first_loss']:.4f} → {summary['final_loss']:.4f}"),
                                       ("loss log", str(output / "loss.jsonl"))])


@app.command("eval")
def eval_(model: str = typer.Argument(..., help="a model directory (koquality train output, incl. LoRA adapters) or hub id"),
          output: Path = typer.Option(Path("results.json"), help="results JSON; the Markdown table goes beside it (.md)"),
          tasks: str = typer.Option("boolq,copa,hellaswag,sentineg,wic", help="KoBEST tasks, comma-separated"),
          num_fewshot: int = typer.Option(0, help="the paper: 0 (zero-shot)"),
          limit: Optional[float] = typer.Option(None, help="examples per task (a share when < 1); smoke runs only"),
          batch_size: str = typer.Option("8", help="examples per forward pass, or auto (lm-eval finds the largest that fits)"),
          device: str = typer.Option("auto", help="auto, cpu or cuda"),
          dtype: str = typer.Option("auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16"),
          kobest_dir: Optional[Path] = typer.Option(None, help="the KoBEST TSV folder (offline; default: skt/kobest_v1 from the hub)"),
          revision: Optional[str] = typer.Option(None), trust_remote_code: bool = typer.Option(False),
          compare: Optional[List[Path]] = typer.Option(None, help="earlier results JSON to put in the same table")):
    """Zero-shot KoBEST (BoolQ, COPA, HellaSwag, SentiNeg, WiC) with lm-evaluation-harness; accuracy and macro-F1."""
    from .evaluate import evaluate, load_results, markdown_table

    if batch_size != "auto" and not batch_size.isdigit():
        raise KoqualityError(f"--batch-size {batch_size}: expected a number or auto")
    earlier = [load_results(p) for p in compare or []]  # checked before a long evaluation, not after
    results = evaluate(model, output, tasks=[t.strip() for t in tasks.split(",") if t.strip()], num_fewshot=num_fewshot,
                       limit=limit, batch_size=batch_size if batch_size == "auto" else int(batch_size), device=device,
                       dtype=dtype, kobest_dir=kobest_dir, revision=revision, trust_remote_code=trust_remote_code)
    if not results:  # not the main process of a distributed evaluation: that one reports
        return
    table = markdown_table(earlier + [results])
    if compare:
        from .tables import atomic_path

        with atomic_path(output.with_suffix(".md")) as tmp:
            tmp.write_text(f"# KoBEST\n\n{table}", encoding="utf-8")
    Console().print(table, markup=False, highlight=False)
    _summary(f"eval → {output}", [("table", str(output.with_suffix(".md")))])


class _Warnings(logging.Handler):
    """The library's warnings (a damaged cache recomputed, a file skipped) on the terminal, one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        console.print(f"koquality: warning: {record.getMessage()}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    warnings = _Warnings(logging.WARNING)
    logging.getLogger("koquality").addHandler(warnings)
    try:
        with progress.use_reporter(progress.rich_reporter(console)):
            app()
    except KoqualityError as e:
        console.print(f"koquality: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except RecursionError:
        console.print("koquality: input nested too deeply to read", markup=False)
        sys.exit(2)
    except OSError as e:  # the machine's answer, not a bug: a full disk, a read-only folder, a missing permission
        where = f"{e.filename}: " if e.filename else ""
        console.print(f"koquality: {where}{e.strerror or e} (errno {e.errno})",
                      markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("koquality: interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
