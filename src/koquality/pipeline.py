"""Runs the stages over a run directory: caches and shards, the dropped-row ledger, the manifest.

```
runs/<name>/
  recipe.yaml  corpus.parquet  dropped.parquet  manifest.json  run.log  report.html  figures/
  scores/<scorer>-<key>/shard-NNNNN.parquet   id → ppl, n_tokens (key: the scorer's settings)
  morphemes/kiwi-<key>/shard-*.parquet        id → Kiwi's morphemes, written by the kiwi scorer, read by TF-IDF
  vectors/<encoder>-<key>.npy                 row i ↔ corpus row i (hf/st also keep shards beside it)
  clusters/len{L}_k{K}.parquet (+ .json: boundaries, clamped K, inertia; + .centroids.npy)
  selections/len{L}_k{K}_m{M}_n{N}.jsonl
  export/train.<format>
```
Scores are cached by row id in shards written as they are computed, so a killed run resumes and a re-run
(or a bigger corpus) scores only rows it has not seen; vectors are reused when what produced them is
unchanged. Stages stream: ingest writes Parquet as it reads, later stages read only the columns they need,
and vectors are read from disk one length group at a time. Every row read is either in `corpus.parquet`
or in `dropped.parquet` with its reason: rows.read = rows.dropped + rows.corpus.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__, backends, cache, hub, progress
from .cache import ShardCache, fingerprint, library_version, versions
from .clustering import cluster
from .dedup import DedupResult, semantic_duplicates
from .engines import MapStage, fill
from .evaluate import evaluate, load_results, markdown_table
from .errors import KoqualityError
from .export import export
from .drops import TEXTS, Ledger
from .ingest import SourceSpec, ingest_to_parquet
from .recipe import Recipe, Section, load_recipe
from .report import write_report
from .sampling import cell_summary, sample
from .morphemes import directory as morpheme_directory, tokens_in_order
from .rundir import claimed, remove_temporaries
from .train import CONFIG_FILE, train
from .tables import (VectorFile, VectorRows, VectorWriter, atomic_path, save_vectors, with_optional_input, write_json,
                     write_table)

log = logging.getLogger("koquality")
EXPORT_SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "csv": ".csv", "hf": "", "text": ".txt"}


@dataclass
class RunResult:
    run_dir: Path
    manifest: dict[str, Any]
    selection: pa.Table

    @property
    def selection_path(self) -> Path:
        return self.run_dir / self.manifest["files"]["selection"]


class Stages:
    """Times each stage and logs it; the timings go into the manifest."""

    def __init__(self):
        self.records: dict[str, dict[str, Any]] = {}

    def run(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.note(name, seconds=round(time.perf_counter() - start, 3))
        log.info("%s done in %.2fs", name, self.records[name]["seconds"])
        return result

    def note(self, name: str, **fields: Any) -> None:
        self.records.setdefault(name, {}).update(fields)


def check_recipe_dir(run_dir: Path, recipe: Recipe, force: bool) -> None:
    """A run directory belongs to one recipe; running another into it needs --force."""
    saved = run_dir / "recipe.yaml"
    if saved.exists() and not force:

        try:
            previous = load_recipe(saved, relative_to_file=False)
        except KoqualityError as e:
            raise KoqualityError(f"{saved}: damaged, so the run it belongs to is unknown ({e}); "
                                 "use --force to replace it with this recipe") from None
        # training and evaluation keep their own cache keys in model/ and eval/; either engine gives the same result
        curation = {"train", "eval", "engine"}
        if previous.model_dump(exclude=curation) != recipe.model_dump(exclude=curation):
            raise KoqualityError(f"{run_dir}: holds a run of a different recipe (see {saved}); "
                                 f"use another --output or --force to replace it")


SCORES_SCHEMA = pa.schema([("id", pa.string()), ("ppl", pa.float64()), ("n_tokens", pa.int32())])


def stage_key(backend: backends.Backend, section: dict[str, Any], seed: int, row_ids: list[str] | None = None) -> str:
    """The cache key of a stage's output: a score depends on the settings and the library; a vector also on the
    seed, and a corpus-wide encoder's (TF-IDF) on every row it was fitted on."""
    if backend.stage != "embed":
        return backend.cache_key(section, library_version(backend.library))
    return backend.cache_key(section, seed, library_version(backend.library), row_ids)


def map_stage(backend: backends.Backend, section: dict[str, Any], root: Path, seed: int, shard_rows: int,
              morphemes: Path | None = None) -> MapStage:
    """`backend` over `section["field"]`, its shards in `root/<backend>-<key>/`."""
    cache = ShardCache(root / f"{backend.name}-{stage_key(backend, section, seed)}",
                       SCORES_SCHEMA if backend.stage == "score" and not backend.reads else None)
    return MapStage(backend, section, section.get("field", "instruction"), cache, shard_rows,
                    context={"seed": seed} if "seed" in backend.context else {}, morphemes=morphemes)


def score_stage(recipe: Recipe, run_dir: Path) -> MapStage:
    """The recipe's scorer over its field, cached in scores/<scorer>-<key>/. The kiwi scorer also keeps its
    morphemes for TF-IDF when that embeds the same field (see morphemes.py)."""
    field = recipe.score.field
    morphemes = (morpheme_directory(run_dir, field)
                 if recipe.embed.encoder == "tfidf" and recipe.embed.field == field else None)
    return map_stage(backends.backend("score", recipe.score.scorer), recipe.score.model_dump(), run_dir / "scores",
                     recipe.seed, recipe.score.shard_rows, morphemes)


def scores_cached(rows: pa.Table, ids: pa.ChunkedArray, recipe: Recipe, run_dir: Path, stages: Stages) -> pa.Table:
    """The recipe's scorer over `rows` (id, score.field); `ppl` and `n_tokens` for `ids` (null where not scored).

    A run killed mid-way leaves its finished shards; the next run reuses them and scores the rest, so its
    result is identical to an uninterrupted run's. Shards that are damaged are recomputed (see cache.py).
    """
    return _cached_columns("score", score_stage(recipe, run_dir), rows, ids, recipe, run_dir, stages, counted="scored")


def signal_cached(name: str, stage_kind: str, section: Section, rows: pa.Table, ids: pa.ChunkedArray, recipe: Recipe,
                  run_dir: Path, stages: Stages) -> pa.Table:
    """A backend that reads its own columns (IFD, decontamination) over `rows`, cached in
    `<run>/signals/<name>-<key>/` like the scores; returns its columns for `ids` (null where not computed)."""
    settings = section.model_dump()
    stage = map_stage(backends.backend(stage_kind, name), settings, run_dir / "signals", recipe.seed, settings["shard_rows"])
    return _cached_columns(name, stage, rows, ids, recipe, run_dir, stages)


def _cached_columns(name: str, stage: MapStage, rows: pa.Table, ids: pa.ChunkedArray, recipe: Recipe, run_dir: Path,
                    stages: Stages, counted: str = "computed") -> pa.Table:
    """Compute `stage` for the rows of `rows` no shard holds yet, on the recipe's engine, note what came from
    the cache under `name`, and return the stage's columns for `ids`."""
    computed = fill(stage, with_optional_input(rows, stage.columns).select(["id", *stage.columns]), recipe.engine)
    stages.note(name, cache=str(stage.cache.directory.relative_to(run_dir)), **{counted: computed},
                from_cache=rows.num_rows - computed, engine=recipe.engine.name)
    return stage.cache.take(ids).select(list(stage.backend.writes))


def vectors_cached(corpus: pa.Table, recipe: Recipe, run_dir: Path, stages: Stages) -> tuple[VectorFile, Path]:
    """Vectors for the corpus rows, in order. Row-independent encoders (`hf`, `st`) write shards by id as
    they go, on the recipe's engine, like scoring; TF-IDF is fitted on the whole corpus at once, so it is
    cached whole. The matrix is reused only while its completion marker vouches for it (size and checksum)."""
    section = recipe.embed.model_dump()
    encoder = backends.backend("embed", recipe.embed.encoder)
    row_ids = None if encoder.row_independent else corpus.column("id").to_pylist()
    path = run_dir / "vectors" / f"{encoder.name}-{stage_key(encoder, section, recipe.seed, row_ids)}.npy"
    if cache.trusted(path):
        stages.note("embed", cache=str(path.relative_to(run_dir)), from_cache=True)
        return VectorFile(path), path
    if not encoder.row_independent:  # TF-IDF, written batch by batch: the matrix is never in memory whole
        tfidf = encoder.build(section, seed=recipe.seed)
        with progress.stage("embed", corpus.num_rows) as advance, \
                VectorWriter(path, corpus.num_rows, recipe.embed.dims) as writer:
            texts = corpus.column(recipe.embed.field).to_pylist()
            tokens = tokens_in_order(morpheme_directory(run_dir, recipe.embed.field), corpus.column("id"), texts)
            for batch in tfidf.encode_batches(texts, tokens=tokens):
                writer.write(batch)
                advance(len(batch))
        stages.note("embed", embedded=corpus.num_rows)
    else:
        stage = map_stage(encoder, section, run_dir / "vectors", recipe.seed, recipe.embed.shard_rows)  # shards beside path
        embedded = fill(stage, corpus.select(["id", stage.field]), recipe.engine)
        stage.cache.write_npy(corpus.column("id").to_pylist(), path)
        stages.note("embed", embedded=embedded, engine=recipe.engine.name)
    cache.seal(path, rows=corpus.num_rows)
    stages.note("embed", cache=str(path.relative_to(run_dir)), from_cache=False)
    return VectorFile(path), path





@contextlib.contextmanager
def run_log(run_dir: Path):
    """Log to run_dir/run.log for the duration of a run or sweep. Every other file of a run is replaced by a
    rename, which never follows a link; the log is appended to, so a link there is refused rather than
    followed out of the run directory."""
    path = run_dir / "run.log"
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise KoqualityError(f"{path}: is a link or not a regular file; koquality appends its log only to a "
                             "file of its own (remove it, or use another --output)")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


@dataclass
class Prepared:
    """What every selection of a run directory shares: the scored corpus and its vectors."""

    corpus_path: Path
    corpus: pa.Table  # the columns clustering and sampling need; texts and extras stay in corpus_path
    vectors: VectorFile  # read one length group at a time by clustering
    vectors_path: Path
    drops: Ledger
    mappings: dict[str, str]
    cleaned: dict[str, int]
    skipped: list[dict[str, str]]  # files a directory or glob source held that were not read, with why
    deduplicated: int = 0  # corpus rows a run's semantic dedup dropped (they are in `drops` too)


def prepare(recipe: Recipe, run_dir: Path, stages: Stages) -> Prepared:
    """ingest → score → corpus.parquet (+ dropped.parquet) → vectors, each from its cache when it can be."""
    log.info("run %s into %s", recipe.name, run_dir)
    with atomic_path(run_dir / "recipe.yaml") as tmp:
        tmp.write_text(recipe.to_yaml(), encoding="utf-8")
    specs = [SourceSpec(**s.model_dump()) for s in recipe.sources]
    ingested_path = run_dir / "ingested.parquet"
    ingested = stages.run("ingest", ingest_to_parquet, specs, ingested_path, on_error=recipe.ingest.on_error,
                          max_chars=recipe.ingest.max_chars)
    stages.note("ingest", rows_in=ingested.read, rows_out=pq.ParquetFile(ingested_path).metadata.num_rows)
    for name, mapping in ingested.mappings.items():
        log.info("source %s: %s", name, mapping)
    for skipped in ingested.skipped:
        log.warning("skipped %s: %s", skipped["path"], skipped["reason"])
    _check_text_fields(pq.read_schema(ingested_path), recipe)

    # Each stage reads only the columns it needs: the corpus's texts and extras stay on disk. Rows a filter
    # drops (decontamination) are not scored.
    texts = pq.read_table(ingested_path, columns=["id", *TEXTS]) \
        if recipe.decontaminate is not None or recipe.ifd is not None else None
    ids = pq.read_table(ingested_path, columns=["id"]).column("id")
    signals, wanted = {}, None  # column → values, row i ↔ ingested row i
    if recipe.decontaminate is not None:
        found = stages.run("decontaminate", signal_cached, "decontaminate", "filter", recipe.decontaminate, texts, ids,
                           recipe, run_dir, stages)
        signals["contaminated_by"] = found.column("contaminated_by")
        wanted = pc.is_null(found.column("contaminated_by"))
        stages.note("decontaminate", contaminated=found.column("contaminated_by").length() - found.column("contaminated_by").null_count)
    to_score = pq.read_table(ingested_path, columns=["id", recipe.score.field])
    scored = stages.run("score", scores_cached, to_score if wanted is None else to_score.filter(wanted), ids, recipe,
                        run_dir, stages)
    for column in scored.column_names:
        signals[column] = scored.column(column)
    del to_score, scored
    if recipe.ifd is not None:
        found = stages.run("ifd", signal_cached, "ifd", "score", recipe.ifd,
                           texts if wanted is None else texts.filter(wanted), ids, recipe, run_dir, stages)
        for column in found.column_names:
            signals[column] = found.column(column)
        stages.note("ifd", answers_truncated=int(pc.sum(pc.greater(found.column("answer_tokens_cut"), 0)).as_py() or 0))
        del found
    del texts
    corpus_path = run_dir / "corpus.parquet"
    drops = Ledger(ingested.read, ingested.dropped)
    n_corpus = _write_corpus(ingested_path, pa.table(signals), corpus_path, recipe, drops)
    del signals
    ingested_path.unlink()
    drops.write(run_dir / "dropped.parquet")
    if n_corpus == 0:
        raise KoqualityError(f"{run_dir}: no rows left after ingest and scoring (see {run_dir / 'dropped.parquet'})")

    columns = list(dict.fromkeys(["id", "source", "instruction", "len", "ppl", recipe.embed.field,
                                  *(["ifd"] if recipe.ifd is not None else [])]))
    corpus = pq.read_table(corpus_path, columns=columns)
    vectors, vectors_path = stages.run("embed", vectors_cached, corpus, recipe, run_dir, stages)
    return Prepared(corpus_path, corpus, vectors, vectors_path, drops, ingested.mappings,
                    ingested.cleaned, ingested.skipped)


def _check_text_fields(schema: pa.Schema, recipe: Recipe) -> None:
    """score.field and embed.field may name a source's own column, known only once the sources are read."""
    for key, field in (("score.field", recipe.score.field), ("embed.field", recipe.embed.field)):
        if field not in schema.names:
            raise KoqualityError(f"{key}: {field!r} is not a column of the corpus (columns: {', '.join(schema.names)})")
        if not pa.types.is_string(schema.field(field).type):
            raise KoqualityError(f"{key}: column {field!r} holds {schema.field(field).type}, not text")


def cluster_into(run_dir: Path, prepared: Prepared, recipe: Recipe, len_groups: int, k: int):
    """Cluster the corpus with (L, K) and write clusters/len{L}_k{K}.parquet and .json."""
    c = recipe.cluster
    assigner = None
    if recipe.engine.name == "ray":
        from .engines.ray import ray_assigner  # Ray is the optional `ray` extra

        assigner = ray_assigner(prepared.vectors, recipe.engine)
    clustered = cluster(prepared.corpus, prepared.vectors, len_groups, k, seed=recipe.seed, n_init=c.n_init,
                        niter=c.niter, device=c.device, reproduce=recipe.reproduce, assigner=assigner, fit_rows=c.fit_rows)
    path = run_dir / "clusters" / f"len{len_groups}_k{k}.parquet"
    write_table(clustered.table.select(["id", "len_group", "cluster"]), path)
    write_json(clustered.info, path.with_suffix(".json"))
    # every group's centroids, stacked (rows info["groups"][g]["centroids"] are group g's): what explains a
    # cluster and assigns new rows to it
    save_vectors(clustered.centroids, path.with_suffix(".centroids.npy"))
    return clustered, path


@dataclass
class Cells:
    """The clustered rows that sampling draws from: all of them, or those semantic dedup kept."""

    table: pa.Table
    vectors: Any  # row i ↔ table row i (VectorFile or VectorRows)
    found: DedupResult | None  # None without dedup
    file: str = ""  # the duplicates' file, relative to the run directory

    @property
    def removed(self) -> int:
        return self.found.removed if self.found is not None else 0

    @property
    def dedup(self) -> dict[str, Any] | None:
        """What dedup did and what other thresholds would have done: the manifest's and the report's entry."""
        return self.found.summary() | {"file": self.file} if self.found is not None else None


def dedup_into(run_dir: Path, prepared: Prepared, recipe: Recipe, clustered, len_groups: int, k: int) -> Cells:
    """Semantic dedup inside the cells of (L, K) when the recipe asks for it (dedup.py); the duplicates go to
    clusters/len{L}_k{K}.duplicates.parquet, each with the row it duplicates."""
    path = run_dir / "clusters" / f"len{len_groups}_k{k}.duplicates.parquet"
    if recipe.dedup is None:
        path.unlink(missing_ok=True)  # an earlier run's of this recipe, before --force took dedup out
        return Cells(clustered.table, prepared.vectors, None)
    d = recipe.dedup
    largest = int(np.unique(clustered.table.column("len_group").to_numpy() * (k + 1)
                            + clustered.table.column("cluster").to_numpy(), return_counts=True)[1].max())
    if largest > 50_000:  # exact search is quadratic in a cell: 400K rows in one cell take ~17 minutes
        log.warning("dedup L=%d K=%d: a cell of %d rows; exact near-duplicate search grows with its square (more "
                    "clusters make smaller cells)", len_groups, k, largest)
    found = semantic_duplicates(clustered.table, prepared.vectors, d.threshold, d.keep)
    write_table(found.duplicates, path)
    kept = np.flatnonzero(found.keep_mask)
    log.info("dedup L=%d K=%d: %d semantic duplicates (cosine > %g) removed", len_groups, k, found.removed, d.threshold)
    return Cells(clustered.table.take(pa.array(kept)), VectorRows(prepared.vectors, kept), found,
                 str(path.relative_to(run_dir)))


def ifd_values(table: pa.Table) -> np.ndarray | None:
    return table.column("ifd").to_numpy(zero_copy_only=False).astype(np.float64) if "ifd" in table.column_names else None


def drop_duplicates(prepared: Prepared, cells: Cells, run_dir: Path) -> None:
    """A run's semantic duplicates into its ledger and dropped.parquet (a sweep's differ per (L, K): they stay
    in each clusters/*.duplicates.parquet and sweep.csv)."""
    if not cells.removed:
        return
    dup = cells.found.duplicates
    rows = corpus_rows(prepared.corpus_path, dup.column("id"))
    details = dict(zip(dup.column("id").to_pylist(), cells.found.details()))
    prepared.deduplicated = prepared.drops.drop(rows, "semantic_duplicate",
                                                [details[rid] for rid in rows.column("id").to_pylist()])
    prepared.drops.write(run_dir / "dropped.parquet")


def base_manifest(recipe: Recipe, run_dir: Path, prepared: Prepared, stages: Stages, started: float) -> dict[str, Any]:
    manifest = {
        "name": recipe.name,
        "koquality": __version__,
        "rows": prepared.drops.rows(prepared.corpus.num_rows - prepared.deduplicated),
        "dropped_by_reason": prepared.drops.by_reason(),
        "cleaned": prepared.cleaned,
        "sources": {name: {"mapping": m} for name, m in prepared.mappings.items()},
        "skipped_files": prepared.skipped,
        "corpus_by_source": dict(Counter(prepared.corpus.column("source").to_pylist())),
        "seed": recipe.seed,
        "stages": stages.records,
        "seconds": round(time.perf_counter() - started, 3),
        "versions": versions(),
        "files": {"recipe": "recipe.yaml", "corpus": "corpus.parquet", "dropped": "dropped.parquet",
                  "vectors": str(prepared.vectors_path.relative_to(run_dir))},
    }
    return manifest


@contextlib.contextmanager
def started_run(recipe: Recipe, run_dir: Path, force: bool):
    """Claim `run_dir` for `recipe` (see rundir.py), log to it, remove what an interrupted run left, and
    prepare the corpus: what `run` and `sweep` both begin with. A hub that the recipe needs but cannot reach
    stops it before the run directory is made."""
    hub.require_for_recipe(recipe)
    with claimed(run_dir):
        check_recipe_dir(run_dir, recipe, force)
        with run_log(run_dir):
            remove_temporaries(run_dir)
            stages, started = Stages(), time.perf_counter()
            yield stages, prepare(recipe, run_dir, stages), started


def finish_run(recipe: Recipe, run_dir: Path, prepared: Prepared, stages: Stages, started: float, shown: pa.Table,
               cluster_info: dict[str, Any], cells: dict[str, Any], report: bool, dedup: dict[str, Any] | None = None,
               **files: Path) -> dict[str, Any]:
    """Write the manifest for the selection `shown` (`cells`: how its cells played out, see
    sampling.cell_summary), warn when it is empty or far from the ratio, then (unless `report=False`)
    write report.html."""
    manifest = base_manifest(recipe, run_dir, prepared, stages, started)
    manifest["rows"]["selected"] = shown.num_rows
    manifest["selected_by_source"] = dict(Counter(shown.column("source").to_pylist())) if shown.num_rows else {}
    manifest["cluster"] = cluster_info
    manifest["cells"] = cells
    if dedup is not None:
        manifest["dedup"] = dedup
    if cells["warning"]:
        log.warning("%s", cells["warning"])
    manifest["files"].update({name: str(path.relative_to(run_dir)) for name, path in files.items()})
    write_json(manifest, run_dir / "manifest.json")
    log.info("rows %s", manifest["rows"])
    if report:

        stages.run("report", write_report, run_dir)
        manifest["stages"] = stages.records
        write_json(manifest, run_dir / "manifest.json")
    return manifest


def run(recipe: Recipe, run_dir: str | Path, force: bool = False, report: bool = True) -> RunResult:
    """The whole pipeline into `run_dir`, then (unless `report=False`) report.html."""
    run_dir = Path(run_dir)
    with started_run(recipe, run_dir, force) as (stages, prepared, started):
        c, s = recipe.cluster, recipe.sample
        clustered, cluster_path = stages.run("cluster", cluster_into, run_dir, prepared, recipe, c.len_groups, c.k)
        kept = stages.run("dedup", dedup_into, run_dir, prepared, recipe, clustered, c.len_groups, c.k)
        drop_duplicates(prepared, kept, run_dir)
        chosen = stages.run("sample", sample, kept.table, s.method, s.ratio, seed=recipe.seed, reproduce=recipe.reproduce,
                            vectors=kept.vectors)
        cells = cell_summary(kept.table.column("len_group").to_numpy(), kept.table.column("cluster").to_numpy(),
                             s.method, s.ratio, chosen.num_rows, ifd=ifd_values(kept.table))
        selection = _full_rows(prepared.corpus_path, chosen)
        selection_path = run_dir / "selections" / f"{recipe.selection_name()}.jsonl"
        write_table(selection, selection_path)
        export_path = run_dir / "export" / f"train{EXPORT_SUFFIX[recipe.export.format]}"
        stages.run("export", export, selection, export_path, format=recipe.export.format, template=recipe.export.template)
        manifest = finish_run(recipe, run_dir, prepared, stages, started, selection, clustered.info, cells, report,
                              dedup=kept.dedup, clusters=cluster_path, selection=selection_path, export=export_path)
        if recipe.train:
            trained = train_and_evaluate(recipe, run_dir, selection_path, stages)
            manifest["files"].update(trained.pop("files"))
            manifest.update(trained)
            manifest["stages"] = stages.records
            write_json(manifest, run_dir / "manifest.json")
            if report:  # again, now with the loss curve and the KoBEST table

                write_report(run_dir)
    return RunResult(run_dir, manifest, selection)


def train_and_evaluate(recipe: Recipe, run_dir: Path, selection_path: Path, stages: Stages) -> dict[str, Any]:
    """Stages 7–8 when the recipe has them: the model in model/, KoBEST results in eval/.

    The model is keyed by the training settings and the selection's bytes: an unchanged pair is reused, a
    killed training resumes from its last checkpoint, anything else trains afresh. Evaluations are keyed by
    the model's key and the eval settings the same way.
    """


    model_dir = run_dir / "model"
    train_key = fingerprint(recipe.train.model_dump(), hashlib.sha256(selection_path.read_bytes()).hexdigest())
    key_file = model_dir / "koquality-key.txt"
    same = key_file.exists() and key_file.read_text(encoding="utf-8") == train_key
    if same and (model_dir / CONFIG_FILE).exists():
        summary = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        stages.note("train", cached=True)
    else:
        resume = same and any(model_dir.glob("checkpoint-*"))
        if not resume:
            # model/ is replaced only when koquality made it (its key file is there) or it is empty
            if model_dir.is_dir() and any(model_dir.iterdir()) and not key_file.exists():
                raise KoqualityError(f"{model_dir}: holds files koquality did not write; move them out of the run directory")
            shutil.rmtree(model_dir, ignore_errors=True)
            model_dir.mkdir(parents=True)
            key_file.write_text(train_key, encoding="utf-8")
        summary = stages.run("train", _train_processes, selection_path, model_dir, recipe, resume)
    result: dict[str, Any] = {"train": {k: summary[k] for k in ("steps", "train_loss", "first_loss", "final_loss", "data", "resolved")}}
    result["files"] = {"model": "model"}
    if recipe.eval:

        e = recipe.eval
        models = {"fine-tuned": str(model_dir)}
        labels = {"base": recipe.train.model, "fine-tuned": f"{recipe.train.model} + {recipe.selection_name()}"}
        if e.baseline:
            models = {"base": recipe.train.model, **models}
        tables = []
        for name, model in models.items():
            path = run_dir / "eval" / f"{name}.json"
            key_path = path.with_suffix(".key")
            key = fingerprint(e.model_dump(), train_key if name == "fine-tuned" else recipe.train.model)
            if path.exists() and key_path.exists() and key_path.read_text(encoding="utf-8") == key:
                stages.note(f"eval {name}", cached=True)
            else:
                stages.run(f"eval {name}", evaluate, model, path, tasks=e.tasks, num_fewshot=e.num_fewshot, limit=e.limit,
                           batch_size=e.batch_size, device=e.device, dtype=e.dtype, kobest_dir=e.kobest_dir,
                           label=labels[name])
                key_path.write_text(key, encoding="utf-8")
            tables.append(load_results(path))
        table_path = run_dir / "eval" / "kobest.md"
        with atomic_path(table_path) as tmp:
            tmp.write_text(markdown_table(tables), encoding="utf-8")
        result["eval"] = {name: t["average"] for name, t in zip(models, tables)}
        result["files"]["eval"] = str(table_path.relative_to(run_dir))
    return result


def _train_processes(selection_path: Path, model_dir: Path, recipe: Recipe, resume: bool) -> dict[str, Any]:
    """Train in this process, or with `train.processes` > 1 under torchrun (one process per GPU) while this
    process waits: curation stays single-process, and a failed launch is reported with its exit code."""


    if recipe.train.processes == 1:
        return train(selection_path, model_dir, recipe.train, resume=resume, template=recipe.export.template)
    config_path = model_dir / "train-config.json"
    write_json(recipe.train.model_dump(), config_path)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={recipe.train.processes}",
               "-m", "koquality", "train", str(selection_path), "--config", str(config_path), "--output", str(model_dir),
               "--template", recipe.export.template, *(["--resume"] if resume else [])]
    log.info("launching: %s", " ".join(command))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run(command, env=env)
    if proc.returncode != 0:
        raise KoqualityError(f"training with {recipe.train.processes} processes failed (exit {proc.returncode}); "
                             f"see the messages above; `koquality run` again resumes from the last checkpoint")
    return json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))


def _write_corpus(ingested_path: Path, signals: pa.Table, corpus_path: Path, recipe: Recipe, drops: Ledger,
                  batch_rows: int = 65536) -> int:
    """Stream the ingested rows into the corpus with their scores (`signals`, row i ↔ ingested row i). To the
    ledger go, in this order: contaminated rows (with what they share), then rows a score has no value for
    (unscorable, with what was missing)."""
    source = pq.ParquetFile(ingested_path)
    schema = source.schema_arrow
    for field in signals.schema:
        schema = schema.append(field)
    offset, kept = 0, 0
    unit, need = ("morphemes", 1) if recipe.score.scorer == "kiwi" else ("tokens", 2)
    ifd_limit = recipe.ifd.max_length if recipe.ifd is not None else None
    if "contaminated_by" in signals.column_names:  # a drop's detail, not a column of the corpus
        schema = schema.remove(schema.get_field_index("contaminated_by"))
    with atomic_path(corpus_path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in source.iter_batches(batch_size=batch_rows):
            rows = pa.Table.from_batches([batch])
            for field in signals.schema:
                rows = rows.append_column(field, signals.column(field.name).slice(offset, rows.num_rows))
            offset += rows.num_rows
            if "contaminated_by" in rows.column_names:
                found = pc.is_valid(rows.column("contaminated_by"))
                bad = rows.filter(found)
                drops.drop(bad, "contaminated", bad.column("contaminated_by").to_pylist())
                rows = rows.filter(pc.invert(found)).drop_columns(["contaminated_by"])
            no_ppl = pc.is_null(rows.column("ppl"))
            bad = rows.filter(no_ppl)
            drops.drop(bad, "unscorable", [f"{t} {unit} (perplexity needs at least {need})"
                                           for t in bad.column("n_tokens").to_pylist()])
            rows = rows.filter(pc.invert(no_ppl))
            if ifd_limit is not None:
                no_ifd = pc.is_null(rows.column("ifd"))
                bad = rows.filter(no_ifd)
                drops.drop(bad, "unscorable", [
                    f"IFD: no answer token to score ({cut} answer tokens cut at ifd.max_length {ifd_limit})" if cut else
                    f"IFD: no answer token to score ({n} scored)"
                    for n, cut in zip(bad.column("n_answer_tokens").to_pylist(), bad.column("answer_tokens_cut").to_pylist())])
                rows = rows.filter(pc.invert(no_ifd))
            writer.write_table(rows)
            kept += rows.num_rows
    return kept


def corpus_rows(corpus_path: Path, ids: pa.Array | pa.ChunkedArray, batch_rows: int = 65536) -> pa.Table:
    """The corpus rows whose id is in `ids`, every column, read by streaming the corpus (never whole)."""
    found = [pa.Table.from_batches([b]).filter(pc.is_in(b.column("id"), value_set=ids))
             for b in pq.ParquetFile(corpus_path).iter_batches(batch_size=batch_rows)]
    return pa.concat_tables(found) if found else pq.read_schema(corpus_path).empty_table()


def selection_rows(rows: pa.Table, chosen: pa.Table) -> pa.Table:
    """`chosen` (id, len_group, cluster, in selection order) with every corpus column taken from `rows`."""
    ids = chosen.column("id")
    rows = rows.take(pc.index_in(ids, value_set=rows.column("id")))
    rows = rows.append_column("len_group", chosen.column("len_group")).append_column("cluster", chosen.column("cluster"))
    if "ppl_rounded" in chosen.column_names:  # reproduce: original sorted and sampled by it
        rows = rows.append_column("ppl_rounded", chosen.column("ppl_rounded"))
    return rows


def _full_rows(corpus_path: Path, chosen: pa.Table) -> pa.Table:
    return selection_rows(corpus_rows(corpus_path, chosen.column("id")), chosen)
