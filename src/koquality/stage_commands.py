"""The single-stage commands — `koquality score`, `embed`, `decontaminate` and `dedup` — over a user's file.

score, embed and decontaminate each run one map stage (see backends.py) through the shard cache a run uses, so
a killed command resumes: the shards live in `--cache DIR` (default `OUTPUT.koquality-cache/` beside the
output, removed after success unless `--keep-cache`), and the summary says how many rows came `from cache`.
Rows without an `id` column are keyed by a digest of the texts the stage reads. dedup runs whole: a row's fate
depends on its cell.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import backends
from .cache import remove_if_empty
from .dedup import REASON, semantic_duplicates
from .drops import Ledger, dropped_file
from .embedding import embed
from .engines import MapStage, fill
from .errors import KoqualityError, check_range
from .pipeline import map_stage
from .recipe import EngineConfig, parse_engine
from .tables import (VectorFile, read_table, require_columns, save_vectors, set_column, table_format, with_optional_input,
                     write_table)


def text_ids(table: pa.Table, columns: list[str]) -> pa.Array:
    """Row ids for a table that has none (`koquality score` / `embed` on a user's file): a digest of the texts
    the stage reads, which is all its output depends on, so equal texts share one cached value."""
    if "id" in table.column_names:
        return table.column("id").combine_chunks().cast(pa.string())
    rows = zip(*(table.column(c).to_pylist() for c in columns))
    return pa.array([hashlib.blake2b("\x1f".join("\x00" if t is None else t for t in texts).encode("utf-8"),
                                     digest_size=10).hexdigest() if len(columns) > 1 or texts[0] is not None else "null"
                     for texts in rows], pa.string())


def map_table(table: pa.Table, stage: str, name: str, settings: dict[str, Any], field: str, cache_root: Path,
              engine: EngineConfig | None = None, seed: int = 42, shard_rows: int = 8192) -> tuple[MapStage, pa.Array, int]:
    """One map stage over a table outside a run (`koquality score` / `embed`), through the same shard cache as a
    run: shards in `cache_root/<backend>-<key>/`, so a killed command resumes. Returns the stage (its cache
    holds the output), the rows' ids and how many rows were computed rather than read from the cache."""
    mapped = map_stage(backends.backend(stage, name), {**settings, "field": field}, Path(cache_root), seed, shard_rows)
    table = with_optional_input(table, mapped.columns)
    require_columns(table, mapped.columns, stage)
    ids = text_ids(table, mapped.columns)
    computed = fill(mapped, pa.table({"id": ids, **{c: table.column(c) for c in mapped.columns}}), engine)
    return mapped, ids, computed


def cache_folder(output: Path, cache: Path | None) -> Path:
    """Where a single-stage command keeps its shards: `cache`, else `OUTPUT.koquality-cache/` beside OUTPUT."""
    return Path(cache) if cache is not None else output.with_name(output.name + ".koquality-cache")


def release_cache(mapped: MapStage, cache: Path | None, keep_cache: bool, output: Path) -> list[tuple[str, object]]:
    """After success: the default cache folder goes (its shards only; the folder if that empties it) unless
    `keep_cache`; a kept cache is named in the summary."""
    if cache is None and not keep_cache:
        mapped.cache.remove()
        remove_if_empty(cache_folder(output, cache))
        return []
    return [("cache", str(mapped.cache.directory))]


def map_stage_command(stage: str, name: str, settings: dict[str, Any], *, input: Path, output: Path, field: str,
                      cache: Path | None, keep_cache: bool, shard_rows: int, engine: str | None, address: str | None,
                      actors: int | None, gpus_per_actor: float | None, seed: int = 42) -> list[tuple[str, object]]:
    """`koquality score` / `koquality embed`: INPUT's texts through one backend into OUTPUT, with shards kept in
    `cache` (default: `OUTPUT.koquality-cache/` beside OUTPUT, removed after success unless `keep_cache`) so
    that a killed command resumes. Returns the summary's rows."""
    backend = backends.backend(stage, name)
    settings = {k: v for k, v in settings.items() if v is not None}
    backend.options(settings, strict=True)  # a setting this backend does not take is an error here
    check_range("--shard-rows", shard_rows, 1)
    if stage != "embed":
        table_format(output)
    elif output.suffix != ".npy":
        raise KoqualityError(f"{output}: vectors are written as .npy")
    engine_config = parse_engine(dict(name=engine, address=address, actors=actors, gpus_per_actor=gpus_per_actor))
    table = read_table(input)
    if not backend.row_independent:  # fitted on the whole input (TF-IDF): nothing to shard
        require_columns(table, [field], stage)
        vectors = embed(table, backend.build(settings, seed=seed), field=field)
        save_vectors(vectors, output)
        return [("rows", table.num_rows), ("dimensions", vectors.shape[1]), ("cache", f"none ({name} fits the whole input)")]
    mapped, ids, computed = map_table(table, stage, name, settings, field, cache_folder(output, cache), engine_config,
                                      seed, shard_rows)
    rows: list[tuple[str, object]] = [("rows", table.num_rows), ("computed", computed), ("from cache", table.num_rows - computed)]
    if stage != "embed":
        cached = mapped.cache.take(ids)
        for column in backend.writes:
            table = set_column(table, column, cached.column(column))
        write_table(table, output)
        rows += [(f"no {column} (empty)", table.column(column).null_count) for column in backend.writes[:1]]
    else:
        mapped.cache.write_npy(ids.to_pylist(), output)
        rows.append(("dimensions", mapped.cache.schema.field("vector").type.list_size))
    return rows + release_cache(mapped, cache, keep_cache, output)


def decontaminate_command(input: Path, output: Path, dropped: Path | None, settings: dict[str, Any], cache: Path | None,
                          keep_cache: bool, engine: EngineConfig, shard_rows: int = 8192) -> list[tuple[str, object]]:
    """`koquality decontaminate`: INPUT's rows without those that share a long n-gram with a benchmark, into
    OUTPUT; the others into `dropped` (default OUTPUT.dropped.parquet) with reason `contaminated` and what
    they share. Resumable like `koquality score` (shards in `cache`)."""
    table_format(output)
    dropped = dropped_file(output, dropped)
    backend = backends.backend("filter", "decontaminate")
    settings = backend.options(settings, strict=True)
    table = read_table(input)
    require_columns(table, ["instruction", "output"], "decontaminate")
    mapped, ids, computed = map_table(table, "filter", "decontaminate", settings, "instruction",
                                      cache_folder(output, cache), engine, shard_rows=shard_rows)
    found = mapped.cache.take(ids).column("contaminated_by")
    hit = pc.is_valid(found)
    gone = table.filter(hit)  # the ledger keeps the texts it has (an absent `input` stays null there)
    if "id" not in gone.column_names:
        gone = gone.append_column("id", ids.filter(hit))
    drops = Ledger(table.num_rows)
    drops.drop(gone, "contaminated", found.filter(hit).to_pylist())
    kept = table.filter(pc.invert(hit))
    counts = drops.rows(kept.num_rows)
    write_table(kept, output)
    drops.write(dropped)
    return [("rows", counts["read"]), ("computed", computed), ("from cache", counts["read"] - computed),
            ("contaminated", counts["dropped"]), ("kept", counts["corpus"]), ("dropped rows", str(dropped)),
            *release_cache(mapped, cache, keep_cache, output)]


def dedup_command(input: Path, vectors: Path, output: Path, threshold: float, keep: str,
                  dropped: Path | None) -> list[tuple[str, object]]:
    """`koquality dedup`: INPUT's clustered rows without their cells' semantic near-duplicates, into OUTPUT; the
    duplicates into `dropped` (default OUTPUT.dropped.parquet), each naming the row it duplicates. Not a map
    stage (a row's fate depends on its cell), so nothing to resume: it runs whole."""
    table_format(output)
    dropped = dropped_file(output, dropped)
    table = read_table(input)
    found = semantic_duplicates(table, VectorFile(vectors), threshold, keep)
    drops = Ledger(table.num_rows)
    drops.drop(table.filter(pa.array(~found.keep_mask)), REASON, found.details())  # both in table order
    kept = table.filter(pa.array(found.keep_mask))
    counts = drops.rows(kept.num_rows)
    write_table(kept, output)
    drops.write(dropped)
    rows = [("rows", counts["read"]), (f"duplicates (cosine > {threshold:g})", counts["dropped"]), ("kept", counts["corpus"])]
    rows += [(f"  at {b['threshold']:g} it would be", b["removed"]) for b in found.by_threshold if b["threshold"] != threshold][::4]
    return rows + [("dropped rows", str(dropped))]
