"""Stage 1 — ingest: sources → one corpus table (`id`, `source`, `instruction`, `input`, `output`, `len`, extras).

Reads every source, maps its fields, cleans the text (strips whitespace, turns CRLF and a lone CR into LF,
removes control and invisible characters), then drops, each with a reason: broken records (`malformed`,
only with `on_error="skip"`), empty instructions or responses, rows longer than `max_chars`, and exact
duplicates (same instruction, input and output, whichever source they came from; the first is kept). Each kept row
gets a stable `id` (a hash of source and text: the same row has the same id in every run). `len` is the
number of Unicode characters of the stripped instruction, the paper's length measure.

Every row read ends up either in the corpus or in the dropped table with its reason, file and location;
every file a directory or glob holds but that is not read is listed in `skipped` with why.

Invisible characters are removed because they make texts that look the same differ (so duplicates survive)
and carry nothing a model should learn: zero-width space/joiners and direction marks (U+200B–U+200F), bidi
embeddings and isolates (U+202A–U+202E, U+2066–U+2069), word joiner and invisible operators
(U+2060–U+2064), BOM (U+FEFF), soft hyphen (U+00AD), Mongolian vowel separator (U+180E), the Hangul fillers
(U+3164, U+FFA0, U+115F, U+1160: they print as blanks, used to fake empty names), and tag characters
(U+E0000–U+E007F). Removing the zero-width joiner splits emoji sequences such as 👨‍👩‍👧 into their single
emoji; the words stay. Variation selectors (U+FE00–U+FE0F, U+E0100–U+E01EF) are kept: they choose how an
emoji or a CJK ideograph is drawn, which is part of the text.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from . import progress
from .drops import DROPPED_SCHEMA
from .errors import check_range
from .sources import SourceRows, expand, iter_source
from .tables import atomic_path, temporary

MAX_CHARS = 20_000
# C0/C1 control characters other than tab and newline, and the invisible characters of the module docstring.
INVISIBLE = ("\u00ad\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\u3164\ufeff\uffa0"
             "\U000e0000-\U000e007f")
CONTROL = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{INVISIBLE}]")


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
    quoting: str = "auto"  # CSV/TSV: auto (quotes for .csv, none for .tsv), quotes (RFC 4180) or none


@dataclass
class IngestResult:
    corpus: pa.Table
    dropped: pa.Table
    read: int
    mappings: dict[str, str]  # source name → the mapping used, for the user to check
    cleaned: dict[str, int] = field(default_factory=dict)  # rows whose text was changed, by what
    skipped: list[dict[str, str]] = field(default_factory=list)  # files in directories/globs not read: path, reason

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


def _specs(sources: Iterable[SourceSpec | str]) -> list[SourceSpec]:
    return [SourceSpec(path=s) if isinstance(s, str) else s for s in sources]


def _chunks(specs: list[SourceSpec], on_error: str, chunk_rows: int | None,
            skipped: list[dict[str, str]]) -> Iterator[SourceRows]:
    for s in specs:
        paths, passed = expand(s.path)
        skipped += passed
        for path in paths:
            yield from iter_source(path, name=s.source, field_map=s.map, encoding=s.encoding, split=s.split,
                                   config=s.config, join=s.join, source_from=s.source_from, turns=s.turns,
                                   on_error=on_error, chunk_rows=chunk_rows, quoting=s.quoting)


def ingest(sources: Iterable[SourceSpec | str], on_error: str = "raise", max_chars: int = MAX_CHARS) -> IngestResult:
    """Read, map, clean and de-duplicate `sources` into tables; directories and globs expand to their files."""
    check_range("max_chars", max_chars, 1)
    ingester, skipped = _Ingester(max_chars), []
    with progress.stage("ingest", None) as advance:
        parts = [ingester.process(chunk, advance) for chunk in _chunks(_specs(sources), on_error, None, skipped)]
    corpus = unify([kept for kept, _ in parts])
    dropped = pa.concat_tables([DROPPED_SCHEMA.empty_table(), *(d for _, d in parts)])
    return IngestResult(corpus=corpus, dropped=dropped, read=ingester.read, mappings=ingester.mappings(),
                        cleaned=dict(ingester.cleaned), skipped=skipped)


def ingest_to_parquet(sources: Iterable[SourceSpec | str], corpus_path: Path, on_error: str = "raise",
                      max_chars: int = MAX_CHARS, chunk_rows: int = 50_000) -> IngestResult:
    """Like `ingest`, but streams: chunks of `chunk_rows` rows go to Parquet parts as they are read, then
    into `corpus_path` under one schema. Memory holds one chunk and the de-duplication digests, not the
    corpus. The returned `corpus` is empty; `dropped` holds the dropped rows. The parts go to a directory of
    their own (`.NAME.XXXX.tmp`), so two runs writing into one directory do not remove each other's."""
    check_range("max_chars", max_chars, 1)
    ingester, skipped = _Ingester(max_chars), []
    parts_dir = temporary(corpus_path, directory=True)
    dropped = []
    try:
        with progress.stage("ingest", None) as advance:
            for i, chunk in enumerate(_chunks(_specs(sources), on_error, chunk_rows, skipped)):
                kept, gone = ingester.process(chunk, advance)
                pq.write_table(kept, parts_dir / f"part-{i:05d}.parquet")
                dropped.append(gone)
        parts = sorted(parts_dir.glob("part-*.parquet"))
        schema = unified_schema([pq.read_schema(p) for p in parts])
        with atomic_path(corpus_path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
            for part in parts:
                writer.write_table(conform(pq.read_table(part), schema))
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return IngestResult(corpus=pa.table({}), dropped=pa.concat_tables([DROPPED_SCHEMA.empty_table(), *dropped]),
                        read=ingester.read, mappings=ingester.mappings(), cleaned=dict(ingester.cleaned),
                        skipped=skipped)


class _Ingester:
    """The row rules, applied chunk by chunk; de-duplication state spans chunks and sources."""

    def __init__(self, max_chars: int):
        self.max_chars = max_chars
        # 16-byte digest of the texts → the row kept: its id and where it was read (a duplicate's detail names it)
        self.first_seen: dict[bytes, tuple[str, str, str]] = {}
        self.cleaned: Counter = Counter()
        self.read = 0
        self.maps: dict[str, dict[str, str]] = {}  # source name → file → its mapping, as of its latest chunk

    def mappings(self) -> dict[str, str]:
        """Each source's final mapping (a later chunk may have gained an `input` field); several files under
        one name with different mappings show each."""
        return {name: "; ".join(dict.fromkeys(m for m in files.values() if m)) for name, files in self.maps.items()}

    def process(self, src: SourceRows, advance) -> tuple[pa.Table, pa.Table]:
        kept: dict[str, list[Any]] = {k: [] for k in ("id", "source", "instruction", "input", "output", "system", "len")}
        extras: dict[str, list[Any]] = {}
        dropped: dict[str, list[Any]] = {name: [] for name in DROPPED_SCHEMA.names}
        self.maps.setdefault(src.name, {})[str(src.path)] = src.fmap.describe()
        n_kept = 0

        def drop(values: tuple) -> None:
            for key, value in zip(DROPPED_SCHEMA.names, values):
                dropped[key].append(value)

        for problem in src.problems:
            drop((None, src.name, str(src.path), problem.location, "malformed", problem.message, None, None, None))
        path = str(src.path)  # one string shared by the chunk's rows (and the dedup table's entries)
        for i in range(len(src.instruction)):
            name = src.row_sources[i] if src.row_sources is not None else src.name
            texts = tuple(clean(t, self.cleaned) for t in (src.instruction[i], src.input[i], src.output[i]))
            instruction, inp, output = texts
            rid = row_id(name, instruction, inp, output)
            where = (rid, name, path, src.locations[i])
            chars = sum(map(len, texts))
            digest = hashlib.blake2b("\x1f".join(texts).encode("utf-8"), digest_size=16).digest()
            if not instruction:
                detail = src.notes.get(i) or "instruction is empty or null after cleaning"
                drop((*where, "empty_instruction", detail, *texts))
            elif not output:
                drop((*where, "empty_output", src.notes.get(i) or "output is empty or null after cleaning", *texts))
            elif chars > self.max_chars:
                drop((*where, "too_long", f"{chars:,} characters (limit {self.max_chars:,}; raise it with --max-chars)", *texts))
            elif digest in self.first_seen:
                kept_id, kept_file, kept_at = self.first_seen[digest]
                drop((*where, "duplicate", f"same instruction, input and output as the row kept from {kept_file} "
                                           f"{kept_at} (id {kept_id})", *texts))
            else:
                self.first_seen[digest] = (rid, where[2], src.locations[i])
                for key, value in zip(kept, (rid, name, instruction, inp, output, clean(src.system[i], self.cleaned),
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
        done = len(src.instruction) + len(src.problems)
        self.read += done
        advance(done)
        if not any(kept["system"]):
            del kept["system"]
        columns = {k: pa.array(v, type=pa.int32() if k == "len" else pa.string()) for k, v in kept.items()}
        for name, values in extras.items():
            columns[name] = _extra_column(values)
        return pa.table(columns), pa.table(dropped, schema=DROPPED_SCHEMA)


def _extra_column(values: list[Any]) -> pa.Array:
    """Keep a source's own column with its type; a column whose type differs between rows becomes text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """Every column of every part, in order of first appearance; a column typed differently in different
    parts (a number in one source, text in another) becomes text; a column that is only ever null stays null."""
    types: dict[str, set] = {}
    for schema in schemas:
        for f in schema:
            types.setdefault(f.name, set()).add(f.type)
    fields = []
    for name, seen in types.items():
        concrete = {t for t in seen if t != pa.null()}
        fields.append(pa.field(name, concrete.pop() if len(concrete) == 1 else (pa.null() if not concrete else pa.string())))
    return pa.schema(fields)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, f.type))
        else:
            column = table.column(f.name)
            columns.append(column if column.type == f.type else column.cast(f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def unify(tables: list[pa.Table]) -> pa.Table:
    if not tables:
        return pa.table({})
    schema = unified_schema([t.schema for t in tables])
    return pa.concat_tables([conform(t, schema) for t in tables])
