"""Stage 1 — ingest: sources → one corpus table (`id`, `source`, `instruction`, `input`, `output`, `len`, extras).

Reads every source, maps its fields, strips whitespace, drops empty instructions/responses and exact
duplicates (same instruction, input and output, whichever source they came from; the first is kept) and
gives each row a stable `id` (a hash of source and text, so the same row gets the same id in every run).
`len` is the number of Unicode characters of the stripped instruction, the paper's length measure.

Every row read ends up either in the corpus or in the dropped table with its `reason`, file and location.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow as pa

from . import progress
from .sources import SourceRows, read_source

DROPPED_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("file", pa.string()), ("location", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()),
    ("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()),
])


@dataclass
class SourceSpec:
    """Where a source is and how to read it (the recipe's and the CLI's shared description)."""

    path: str
    source: str | None = None
    map: dict[str, str] | list[str] | None = None
    encoding: str = "utf-8"
    split: str = "train"
    config: str | None = None
    join: str = "\n"
    source_from: str | None = None


@dataclass
class IngestResult:
    corpus: pa.Table
    dropped: pa.Table
    read: int
    mappings: dict[str, str]  # source name → the mapping used, for the user to check

    @property
    def counts(self) -> dict[str, int]:
        return {"read": self.read, "dropped": self.dropped.num_rows, "corpus": self.corpus.num_rows}


def row_id(source: str, instruction: str, input: str, output: str) -> str:
    digest = hashlib.blake2b("\x1f".join((source, instruction, input, output)).encode("utf-8"), digest_size=8)
    return digest.hexdigest()


def ingest(sources: Iterable[SourceSpec | str]) -> IngestResult:
    specs = [SourceSpec(path=s) if isinstance(s, str) else s for s in sources]
    read = [read_source(s.path, name=s.source, field_map=s.map, encoding=s.encoding, split=s.split,
                        config=s.config, join=s.join, source_from=s.source_from) for s in specs]
    return ingest_rows(read)


def ingest_rows(sources: list[SourceRows]) -> IngestResult:
    total = sum(len(s.instruction) for s in sources)
    kept: dict[str, list[Any]] = {k: [] for k in ("id", "source", "instruction", "input", "output", "system", "len")}
    extras: dict[str, list[Any]] = {}
    dropped: dict[str, list[Any]] = {name: [] for name in DROPPED_SCHEMA.names}
    first_seen: dict[tuple[str, str, str], str] = {}
    n_kept = 0

    def drop(src: SourceRows, i: int, rid: str | None, reason: str, detail: str, texts: tuple[str, str, str]):
        name = src.row_sources[i] if src.row_sources is not None else src.name
        for key, value in zip(DROPPED_SCHEMA.names, (rid, name, str(src.path), src.locations[i], reason, detail, *texts)):
            dropped[key].append(value)

    with progress.stage("ingest", total) as advance:
        for src in sources:
            for i in range(len(src.instruction)):
                name = src.row_sources[i] if src.row_sources is not None else src.name
                texts = (src.instruction[i].strip(), src.input[i].strip(), src.output[i].strip())
                instruction, inp, output = texts
                rid = row_id(name, instruction, inp, output)
                if not instruction:
                    drop(src, i, rid, "empty_instruction", "instruction is empty after stripping whitespace", texts)
                elif not output:
                    drop(src, i, rid, "empty_output", "output is empty after stripping whitespace", texts)
                elif texts in first_seen:
                    drop(src, i, rid, "duplicate", f"same instruction, input and output as row {first_seen[texts]}", texts)
                else:
                    first_seen[texts] = rid
                    for key, value in zip(("id", "source", "instruction", "input", "output", "system", "len"),
                                          (rid, name, instruction, inp, output, src.system[i].strip(), len(instruction))):
                        kept[key].append(value)
                    for column, values in src.extras.items():
                        if column not in extras:
                            extras[column] = [None] * n_kept
                        extras[column].append(values[i])
                    n_kept += 1
                    for values in extras.values():
                        if len(values) < n_kept:
                            values.append(None)
            advance(len(src.instruction))

    if not any(kept["system"]):
        del kept["system"]
    columns = {k: pa.array(v, type=pa.int32() if k == "len" else pa.string()) for k, v in kept.items()}
    for name, values in extras.items():
        columns[name] = _extra_column(values)
    return IngestResult(corpus=pa.table(columns), dropped=pa.table(dropped, schema=DROPPED_SCHEMA), read=total,
                        mappings={s.name: s.fmap.describe() for s in sources})


def _extra_column(values: list[Any]) -> pa.Array:
    """Keep a source's own column with its type; a column whose type differs between sources becomes text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
