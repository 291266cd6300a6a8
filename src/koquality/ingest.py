"""Stage 1 — ingest: sources → one corpus table (`id`, `source`, `instruction`, `input`, `output`, `len`, extras).

Reads every source, maps its fields, cleans the text (strips whitespace, turns CRLF into LF, removes
control characters), then drops, each with a reason: broken records (`malformed`, only with
`on_error="skip"`), empty instructions or responses, rows longer than `max_chars`, and exact duplicates
(same instruction, input and output, whichever source they came from; the first is kept). Each kept row
gets a stable `id` (a hash of source and text: the same row has the same id in every run). `len` is the
number of Unicode characters of the stripped instruction, the paper's length measure.

Every row read ends up either in the corpus or in the dropped table with its reason, file and location.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa

from . import progress
from .sources import SourceRows, expand, read_source

DROPPED_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("file", pa.string()), ("location", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()),
    ("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()),
])
MAX_CHARS = 20_000
# C0/C1 control characters other than tab and newline, and zero-width/BOM characters inside text.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")


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
    turns: str = "first"


@dataclass
class IngestResult:
    corpus: pa.Table
    dropped: pa.Table
    read: int
    mappings: dict[str, str]  # source name → the mapping used, for the user to check
    cleaned: dict[str, int] = field(default_factory=dict)  # rows whose text was changed, by what

    @property
    def counts(self) -> dict[str, int]:
        return {"read": self.read, "dropped": self.dropped.num_rows, "corpus": self.corpus.num_rows}


def row_id(source: str, instruction: str, input: str, output: str) -> str:
    digest = hashlib.blake2b("\x1f".join((source, instruction, input, output)).encode("utf-8"), digest_size=8)
    return digest.hexdigest()


def clean(text: str, counts: Counter) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        counts["crlf"] += 1
    if CONTROL.search(text):
        text = CONTROL.sub("", text)
        counts["control_characters"] += 1
    return text.strip()


def ingest(sources: Iterable[SourceSpec | str], on_error: str = "raise", max_chars: int = MAX_CHARS) -> IngestResult:
    """Read, map, clean and de-duplicate `sources`; directories and globs expand to their files."""
    specs = [SourceSpec(path=s) if isinstance(s, str) else s for s in sources]
    read = [read_source(path, name=s.source, field_map=s.map, encoding=s.encoding, split=s.split, config=s.config,
                        join=s.join, source_from=s.source_from, turns=s.turns, on_error=on_error)
            for s in specs for path in expand(s.path)]
    return ingest_rows(read, max_chars=max_chars)


def ingest_rows(sources: list[SourceRows], max_chars: int = MAX_CHARS) -> IngestResult:
    total = sum(len(s.instruction) + len(s.problems) for s in sources)
    kept: dict[str, list[Any]] = {k: [] for k in ("id", "source", "instruction", "input", "output", "system", "len")}
    extras: dict[str, list[Any]] = {}
    dropped: dict[str, list[Any]] = {name: [] for name in DROPPED_SCHEMA.names}
    first_seen: dict[tuple[str, str, str], str] = {}
    cleaned: Counter = Counter()
    n_kept = 0

    def drop(values: tuple) -> None:
        for key, value in zip(DROPPED_SCHEMA.names, values):
            dropped[key].append(value)

    with progress.stage("ingest", total) as advance:
        for src in sources:
            for problem in src.problems:
                drop((None, src.name, str(src.path), problem.location, "malformed", problem.message, None, None, None))
            for i in range(len(src.instruction)):
                name = src.row_sources[i] if src.row_sources is not None else src.name
                texts = (clean(src.instruction[i], cleaned), clean(src.input[i], cleaned), clean(src.output[i], cleaned))
                instruction, inp, output = texts
                rid = row_id(name, instruction, inp, output)
                where = (rid, name, str(src.path), src.locations[i])
                chars = sum(map(len, texts))
                if not instruction:
                    drop((*where, "empty_instruction", "instruction is empty or null after cleaning", *texts))
                elif not output:
                    drop((*where, "empty_output", "output is empty or null after cleaning", *texts))
                elif chars > max_chars:
                    drop((*where, "too_long", f"{chars:,} characters (limit {max_chars:,}; raise it with --max-chars)", *texts))
                elif texts in first_seen:
                    drop((*where, "duplicate", f"same instruction, input and output as row {first_seen[texts]}", *texts))
                else:
                    first_seen[texts] = rid
                    for key, value in zip(kept, (rid, name, instruction, inp, output, clean(src.system[i], cleaned),
                                                 len(instruction))):
                        kept[key].append(value)
                    for column, values in src.extras.items():
                        if column not in extras:
                            extras[column] = [None] * n_kept
                        extras[column].append(values[i])
                    n_kept += 1
                    for values in extras.values():
                        if len(values) < n_kept:
                            values.append(None)
            advance(len(src.instruction) + len(src.problems))

    if not any(kept["system"]):
        del kept["system"]
    columns = {k: pa.array(v, type=pa.int32() if k == "len" else pa.string()) for k, v in kept.items()}
    for name, values in extras.items():
        columns[name] = _extra_column(values)
    return IngestResult(corpus=pa.table(columns), dropped=pa.table(dropped, schema=DROPPED_SCHEMA), read=total,
                        mappings={s.name: s.fmap.describe() for s in sources}, cleaned=dict(cleaned))


def _extra_column(values: list[Any]) -> pa.Array:
    """Keep a source's own column with its type; a column whose type differs between sources becomes text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
