"""Reading instruction sources and mapping their fields onto `instruction` / `input` / `output`.

Source formats stay at this edge: readers yield `(location, record)` pairs with a location a person can
find (`line N`, `record N`, `row N`), a mapping (given with `--map`, or detected from the field names) turns
a record into the common shape, and the rest of the pipeline sees only that shape. Fields the mapping does
not use are kept as extra columns.

Formats: `.jsonl`, `.json` (an array of objects), `.csv`, `.tsv`, `.parquet`, a directory or glob of them,
or a hub dataset id (`org/name`). Schemas detected: Alpaca (instruction/input/output), Q/A (`Q`/`A`,
`question`/`answer`), prompt/response (or completion), ShareGPT (`conversations` of from/value) and
OpenAI-style `messages` (role/content). A mapped field may join several source fields with `+`
(e.g. `output=reason+answer`).

A broken record (bad JSON, bad bytes, a missing field, a number where text belongs) is a `Problem`: by
default the read stops with `FILE line N: what is wrong (what was expected)`; with `on_error="skip"` it
becomes a counted drop. Text is read line by line, so a bad byte is reported on its own line.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from .errors import KoqualityError

FIELDS = ("instruction", "input", "output")
SOURCE_FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
# Columns koquality writes itself; a source field with one of these names is kept as `orig_<name>`.
RESERVED = ("id", "source", "instruction", "input", "output", "len", "ppl", "n_tokens", "len_group", "cluster",
            "text", "reason", "system", "messages")

# Field names recognised for each role.
CANDIDATES = {
    "instruction": ("instruction", "question", "Q", "prompt", "query"),
    "input": ("input", "context"),
    "output": ("output", "answer", "A", "response", "completion"),
}
CHAT_FIELDS = {"messages": ("role", "content"), "conversations": ("from", "value")}
USER_ROLES, ASSISTANT_ROLES = ("user", "human"), ("assistant", "gpt", "bot")
PACKAGE_PREFIX = "koquality:"
SOURCE_NAME = re.compile(r"[\w][\w.\-]*")
TURNS = ("first", "all")


def is_hub_id(text: str) -> bool:
    """`org/name` that is not a local file: a Hugging Face hub dataset, loaded with `datasets.load_dataset`."""
    return (re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not Path(text).exists()
            and Path(text).suffix.lower() not in SOURCE_FORMATS)


def resolve_path(path: str | os.PathLike) -> Path:
    """`koquality:demo/alpaca.json` names a file shipped in the package; anything else is a local path."""
    text = str(path)
    if text.startswith(PACKAGE_PREFIX):
        return Path(str(resources.files("koquality") / "data" / text[len(PACKAGE_PREFIX):]))
    return Path(text)


def expand(path: str | os.PathLike) -> list[str]:
    """A directory or glob becomes its source files (sorted); a hub id or a single file stays as it is."""
    text = str(path)
    if is_hub_id(text) or text.startswith(PACKAGE_PREFIX):
        return [text]
    if any(c in text for c in "*?["):
        files = sorted(f for f in glob.glob(text, recursive=True) if Path(f).suffix.lower() in SOURCE_FORMATS)
        if not files:
            raise KoqualityError(f"{text}: no {', '.join(SOURCE_FORMATS)} files match")
        return files
    if Path(text).is_dir():
        files = sorted(str(f) for f in Path(text).rglob("*") if f.suffix.lower() in SOURCE_FORMATS and f.is_file())
        if not files:
            raise KoqualityError(f"{text}: directory holds no {', '.join(SOURCE_FORMATS)} files")
        return files
    return [text]


def source_name(name: str | None, default: str) -> str:
    """Source names become column values and, in reports, file names: keep them to word characters."""
    if name is not None:
        if not SOURCE_NAME.fullmatch(name):
            raise KoqualityError(f"--source {name!r}: use letters, digits, '_', '-' or '.' (not starting with '.' or '-')")
        return name
    return re.sub(r"[^\w.\-]", "_", default).lstrip(".-") or "source"


@dataclass(frozen=True)
class Problem:
    """A broken record: where it is and what is wrong with it, in the words of the error message."""

    location: str
    message: str


@dataclass(frozen=True)
class FieldMap:
    """Which source field(s) feed each target field; `chat` names a conversation field instead."""

    instruction: tuple[str, ...] = ()
    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    chat: str | None = None

    def used_fields(self) -> set[str]:
        return {f for name in FIELDS for f in getattr(self, name)} | ({self.chat} if self.chat else set())

    def describe(self) -> str:
        if self.chat:
            role, text = CHAT_FIELDS[self.chat]
            return f"{self.chat} ({role}/{text}) → instruction, output"
        return ", ".join(f"{name}={'+'.join(getattr(self, name))}" for name in FIELDS if getattr(self, name))


def parse_map(items: list[str] | dict[str, str] | None) -> dict[str, tuple[str, ...]]:
    """`["instruction=Q", "output=reason+answer"]` (CLI) or `{"instruction": "Q"}` (recipe) → field tuples."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, dict) else [_split_map_item(i) for i in items]
    mapping = {}
    for target, source in pairs:
        if target not in FIELDS:
            raise KoqualityError(f"--map {target}={source}: unknown target field '{target}' (expected one of: {', '.join(FIELDS)})")
        fields = tuple(f.strip() for f in str(source).split("+") if f.strip())
        if not fields:
            raise KoqualityError(f"--map {target}=: give the source field after '='")
        mapping[target] = fields
    return mapping


def _split_map_item(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise KoqualityError(f"--map {item}: expected FIELD=SOURCE_FIELD, e.g. --map output=answer")
    target, source = item.split("=", 1)
    return target.strip(), source.strip()


MAP_HELP = "use --map instruction=FIELD --map output=FIELD (and --map input=FIELD)"


def detect_map(path: Path, fields: list[str], explicit: dict[str, tuple[str, ...]]) -> FieldMap:
    """Complete an explicit mapping from the field names found; fail with the fields listed when unsure."""
    present = set(fields)
    found = ", ".join(fields) or "none"
    if not explicit:
        chats = [c for c in CHAT_FIELDS if c in present]
        if len(chats) == 1:
            return FieldMap(chat=chats[0])
    chosen: dict[str, tuple[str, ...]] = dict(explicit)
    taken = {f for fs in explicit.values() for f in fs}
    for target in FIELDS:
        if target in chosen:
            continue
        matches = [c for c in CANDIDATES[target] if c in present and c not in taken]
        if len(matches) > 1:
            raise KoqualityError(f"{path}: fields {' and '.join(repr(m) for m in matches)} could each be the {target} "
                                 f"(fields found: {found}); choose one with --map {target}=FIELD")
        if matches:
            chosen[target] = (matches[0],)
            taken.add(matches[0])
    if "instruction" not in chosen:
        raise KoqualityError(f"{path}: cannot tell which field holds the instruction (fields found: {found}); {MAP_HELP}")
    if "output" not in chosen:
        raise KoqualityError(f"{path}: no response field (expected one of: {', '.join(CANDIDATES['output'])}; "
                             f"fields found: {found}); use --map output=FIELD")
    return FieldMap(**chosen)


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def _decode_error(raw: bytes, e: UnicodeDecodeError, encoding: str) -> str:
    return (f"byte 0x{raw[e.start]:02x} at column {e.start + 1} is not valid {encoding} "
            f"(expected {encoding} text; use --encoding to read another, e.g. --encoding cp949)")


def _text_lines(path: Path, encoding: str) -> Iterator[tuple[int, str, Problem | None]]:
    """Decoded lines with their numbers; a BOM is dropped; a line that does not decode comes with a Problem
    (and its text decoded with replacement characters, for readers that must keep their place)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            problem = None
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as e:
                problem = Problem(f"line {n}", _decode_error(raw, e, encoding))
                text = raw.decode(encoding, errors="replace")
            yield n, text.lstrip("\ufeff") if n == 1 else text, problem


def _jsonl_records(path: Path, encoding: str) -> Iterator[tuple[str, dict | Problem]]:
    seen_object = False
    for n, line, problem in _text_lines(path, encoding):
        if problem:
            yield problem.location, problem
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line.rstrip("\r\n"))  # so an error's column is on this line, not past its end
        except json.JSONDecodeError as e:
            hint = "" if seen_object or line.lstrip().startswith(("{", "[")) else "; the file looks like plain text"
            yield f"line {n}", Problem(f"line {n}", f"not valid JSON: {e.msg} at column {e.colno} "
                                                   f"(expected one JSON object per line{hint})")
            continue
        if not isinstance(record, dict):
            yield f"line {n}", Problem(f"line {n}", f"a JSON {_kind(record)} (expected a JSON object)")
            continue
        seen_object = True
        yield f"line {n}", record


def _csv_records(path: Path, encoding: str, delimiter: str) -> Iterator[tuple[str, dict | Problem]]:
    bad: dict[int, str] = {}

    def lines():
        for n, line, problem in _text_lines(path, encoding):
            if problem:
                bad[n] = problem.message
            yield line

    reader = csv.reader(lines(), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    if len(set(header)) != len(header):
        repeated = sorted({h for h in header if header.count(h) > 1})
        raise KoqualityError(f"{path} line 1: column name(s) {', '.join(repeated)} repeated in the header (expected unique names)")
    start = reader.line_num + 1
    for row in reader:
        first, last = start, reader.line_num
        start = last + 1
        location = f"line {first}"
        broken = next((bad[n] for n in range(first, last + 1) if n in bad), None)
        if broken:
            yield location, Problem(location, broken)
        elif not row or (len(row) == 1 and not row[0].strip()):
            continue
        elif len(row) != len(header):
            yield location, Problem(location, f"{len(row)} fields (expected {len(header)}, as the header: {', '.join(header)})")
        else:
            yield location, dict(zip(header, row))


def _json_records(path: Path, encoding: str) -> Iterator[tuple[str, dict | Problem]]:
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding).lstrip("\ufeff")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1)
        raise KoqualityError(f"{path} line {line}: byte 0x{raw[e.start]:02x} at column {column + 1} is not valid {encoding} "
                             f"(expected {encoding} text; use --encoding to read another, e.g. --encoding cp949)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        hint = "; this looks like JSON Lines: name it .jsonl" if e.msg == "Extra data" else ""
        raise KoqualityError(f"{path} line {e.lineno}: not valid JSON: {e.msg} at column {e.colno} "
                             f"(expected a JSON array of objects{hint})") from None
    if not isinstance(data, list):
        keys = f" with keys {', '.join(list(data)[:8])}" if isinstance(data, dict) else ""
        raise KoqualityError(f"{path}: top level is a JSON {_kind(data)}{keys} (expected a list of objects)")
    for i, record in enumerate(data, start=1):
        location = f"record {i}"
        if isinstance(record, dict):
            yield location, record
        else:
            yield location, Problem(location, f"a JSON {_kind(record)} (expected an object)")


def _parquet_records(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise KoqualityError(f"{path}: not a Parquet file ({e})") from None
    n = 0
    for batch in file.iter_batches(batch_size=8192):
        for record in batch.to_pylist():
            n += 1
            yield f"row {n}", record


def read_records(path: Path, encoding: str = "utf-8") -> Iterator[tuple[str, dict | Problem]]:
    """Yield (location, record or Problem) from a local file; file-level problems raise at once."""
    suffix = path.suffix.lower()
    if suffix not in SOURCE_FORMATS:
        shown = suffix or "no extension"
        raise KoqualityError(f"{path}: unknown format '{shown}' (expected one of: {', '.join(SOURCE_FORMATS)})")
    if not path.exists():
        raise KoqualityError(f"{path}: no such file")
    if path.is_dir():
        raise KoqualityError(f"{path}: is a directory (expected a file)")
    try:
        "".encode(encoding)
    except LookupError:
        raise KoqualityError(f"--encoding {encoding}: unknown encoding (e.g. utf-8, cp949, euc-kr)") from None
    if _is_utf8(encoding):
        encoding = "utf-8"
    if path.stat().st_size == 0:
        raise KoqualityError(f"{path}: empty file (expected at least one record)")
    if suffix == ".parquet":
        return _parquet_records(path)
    if suffix == ".json":
        return _json_records(path, encoding)
    if suffix in (".csv", ".tsv"):
        return _csv_records(path, encoding, "," if suffix == ".csv" else "\t")
    return _jsonl_records(path, encoding)


def hub_records(name: str, split: str = "train", config: str | None = None) -> Iterator[tuple[str, dict]]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, config, split=split)
    except Exception as e:  # the hub raises many types: offline, not found, gated, bad split
        raise KoqualityError(f"{name}: cannot be loaded from the Hugging Face hub "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})") from None
    for i, record in enumerate(dataset.to_list(), start=1):
        yield f"record {i}", record


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {list: "list", dict: "object", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


class _Broken(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _text(value: Any, name: str) -> str:
    """Text, or '' for null/NaN (dropped later as empty, with a reason); other types are broken records."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    raise _Broken(f"field \"{name}\" is a {_kind(value)} (expected text)")


def _get(record: dict, fields: tuple[str, ...], target: str, join: str) -> str:
    parts = []
    for name in fields:
        if name not in record:
            if target == "input":  # optional: Alpaca files often leave it out when empty
                continue
            raise _Broken(f"field \"{name}\" is missing (expected one of: {', '.join(CANDIDATES[target])}; "
                          f"use --map {target}=FIELD)")
        parts.append(_text(record[name], name))
    return join.join(p for p in parts if p)


def _chat_pairs(turns: Any, chat: str, all_turns: bool) -> list[tuple[str, str, str, str]]:
    """(instruction, input, output, system) per assistant reply: the first only, or all with earlier turns
    folded into `input` as `user: …` / `assistant: …` lines."""
    if not isinstance(turns, list):
        raise _Broken(f"field \"{chat}\" is a {_kind(turns)} (expected a list of turns)")
    role_key, text_key = CHAT_FIELDS[chat]
    system, history, pairs = "", [], []
    user: str | None = None
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or role_key not in turn:
            raise _Broken(f"turn {i} of \"{chat}\" has no \"{role_key}\" (expected objects with {role_key}/{text_key})")
        role = str(turn[role_key]).lower()
        text = _text(turn.get(text_key), f"{chat}[{i}].{text_key}")
        if role == "system":
            system = system or text
        elif role in USER_ROLES:
            if user is not None:
                history.append(f"user: {user}")
            user = text
        elif role in ASSISTANT_ROLES and user is not None:
            pairs.append((user, "\n".join(history), text, system))
            if not all_turns:
                return pairs
            history += [f"user: {user}", f"assistant: {text}"]
            user = None
    return pairs or [(user or "", "", "", system)]


@dataclass
class SourceRows:
    """One source read and mapped: the three text fields, extras, where each row came from, and problems."""

    name: str
    path: Path
    fmap: FieldMap
    instruction: list[str] = field(default_factory=list)
    input: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    system: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    extras: dict[str, list[Any]] = field(default_factory=dict)
    row_sources: list[str] | None = None  # per-row source names (`source_from`), else `name` for every row
    problems: list[Problem] = field(default_factory=list)


def read_source(path: str | os.PathLike, **options: Any) -> SourceRows:
    """Read one source file or hub dataset whole (options as `iter_source`)."""
    return next(iter_source(path, chunk_rows=None, **options))


def iter_source(path: str | os.PathLike, name: str | None = None, field_map: list[str] | dict[str, str] | None = None,
                encoding: str = "utf-8", split: str = "train", config: str | None = None, join: str = "\n",
                source_from: str | None = None, turns: str = "first", on_error: str = "raise",
                chunk_rows: int | None = 50_000) -> Iterator[SourceRows]:
    """Read one source file or hub dataset in chunks of `chunk_rows` rows (None: one chunk), so a large
    file never has to be held whole.

    `join` separates fields joined with `+` in the map; `source_from` names each row's source by the part of
    that field before the first `_` (KULLM-v2's ids: `dolly_12` → `dolly`); `turns="all"` makes one pair per
    assistant reply of a chat; `on_error="skip"` collects broken records in `problems` instead of stopping.
    """
    if turns not in TURNS:
        raise KoqualityError(f"--turns {turns}: expected one of {', '.join(TURNS)}")
    if on_error not in ("raise", "skip"):
        raise KoqualityError(f"--on-error {on_error}: expected raise or skip")
    explicit = parse_map(field_map)
    if is_hub_id(str(path)):
        records = hub_records(str(path), split=split, config=config)
        path = Path(str(path))
        default_name = path.name  # org/KoAlpaca-v1.1a → KoAlpaca-v1.1a
    else:
        path = resolve_path(path)
        records = read_records(path, encoding=encoding)
        default_name = path.stem
    rows = SourceRows(name=source_name(name, default_name), path=path, fmap=FieldMap(), row_sources=[] if source_from else None)

    def broken(location: str, message: str) -> None:
        if on_error == "raise":
            raise KoqualityError(f"{path} {location}: {message}")
        rows.problems.append(Problem(location, message))

    fmap: FieldMap | None = None
    n = 0
    for location, record in records:
        if chunk_rows and n >= chunk_rows:
            yield rows
            rows = SourceRows(name=rows.name, path=path, fmap=fmap, row_sources=[] if source_from else None)
            n = 0
        if isinstance(record, Problem):
            broken(location, record.message)
            continue
        if fmap is None:
            fmap = rows.fmap = detect_map(path, list(record.keys()), explicit)
            used = fmap.used_fields()
        try:
            if fmap.chat:
                if fmap.chat not in record:
                    raise _Broken(f"field \"{fmap.chat}\" is missing (expected a list of turns)")
                pairs = _chat_pairs(record[fmap.chat], fmap.chat, turns == "all")
            else:
                pairs = [(_get(record, fmap.instruction, "instruction", join),
                          _get(record, fmap.input, "input", join) if fmap.input else "",
                          _get(record, fmap.output, "output", join), "")]
            if source_from is not None:
                origin = record.get(source_from)
                if not isinstance(origin, str) or not origin:
                    raise _Broken(f"field \"{source_from}\" (source_from) is missing or not text")
        except _Broken as e:
            broken(location, e.message)
            continue
        extras = {(f"orig_{k}" if k in RESERVED else k): (json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v)
                  for k, v in record.items() if k not in used}
        for t, (instruction, inp, output, system) in enumerate(pairs, start=1):
            rows.instruction.append(instruction)
            rows.input.append(inp)
            rows.output.append(output)
            rows.system.append(system)
            rows.locations.append(location if len(pairs) == 1 else f"{location} turn {t}")
            if source_from is not None:
                rows.row_sources.append(origin.split("_", 1)[0])
            for column, value in extras.items():
                if column not in rows.extras:
                    rows.extras[column] = [None] * n
                rows.extras[column].append(value)
            n += 1
            for values in rows.extras.values():
                if len(values) < n:
                    values.append(None)
    if fmap is None and not rows.problems:
        raise KoqualityError(f"{path}: no records (expected at least one)")
    yield rows
