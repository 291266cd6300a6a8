"""Reading instruction sources and mapping their fields onto `instruction` / `input` / `output`.

Source formats stay at this edge: every reader yields `(location, record)` pairs, a mapping (given with
`--map`, or detected from the field names) turns a record into the common shape, and the rest of the
pipeline sees only that shape. Fields the mapping does not use are kept as extra columns.

Supported: `.jsonl`, `.json` (an array of objects), `.csv`, `.parquet`; the schemas Alpaca
(instruction/input/output), Q/A (`Q`/`A`, `question`/`answer`), prompt/response (or completion), ShareGPT
(`conversations` of from/value) and OpenAI-style `messages` (role/content). A mapped field may join several
source fields with `+` (e.g. `output=reason+answer`), joined by a newline.
"""

from __future__ import annotations

import csv
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
SOURCE_FORMATS = (".jsonl", ".json", ".csv", ".parquet")
# Columns koquality writes itself; a source field with one of these names is kept as `orig_<name>`.
RESERVED = ("id", "source", "instruction", "input", "output", "len", "ppl", "n_tokens", "len_group", "cluster",
            "text", "reason", "system", "messages")

# Field names recognised for each role, most specific first.
CANDIDATES = {
    "instruction": ("instruction", "question", "Q", "prompt", "query"),
    "input": ("input", "context"),
    "output": ("output", "answer", "A", "response", "completion"),
}
CHAT_FIELDS = {"messages": ("role", "content", "user", "assistant", "system"),
               "conversations": ("from", "value", "human", "gpt", "system")}
PACKAGE_PREFIX = "koquality:"


def is_hub_id(text: str) -> bool:
    """`org/name` that is not a local file: a Hugging Face hub dataset, loaded with `datasets.load_dataset`."""
    return (re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not Path(text).exists()
            and Path(text).suffix.lower() not in SOURCE_FORMATS)


def hub_records(name: str, split: str = "train", config: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, config, split=split)
    except Exception as e:  # the hub raises many types: offline, not found, gated, bad split
        raise KoqualityError(f"{name}: cannot be loaded from the Hugging Face hub "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})") from None
    for i, record in enumerate(dataset.to_list(), start=1):
        yield f"record {i}", record


def resolve_path(path: str | os.PathLike) -> Path:
    """`koquality:demo/alpaca.json` names a file shipped in the package; anything else is a local path."""
    text = str(path)
    if text.startswith(PACKAGE_PREFIX):
        return Path(str(resources.files("koquality") / "data" / text[len(PACKAGE_PREFIX):]))
    return Path(text)


@dataclass(frozen=True)
class FieldMap:
    """Which source field(s) feed each target field; `chat` names a conversation field instead."""

    instruction: tuple[str, ...] = ()
    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    chat: str | None = None
    chat_style: str = "messages"  # or "conversations" (ShareGPT)

    def used_fields(self) -> set[str]:
        return {f for name in FIELDS for f in getattr(self, name)} | ({self.chat} if self.chat else set())

    def describe(self) -> str:
        if self.chat:
            return f"{self.chat} ({'role/content' if self.chat_style == 'messages' else 'from/value'}) → instruction, output"
        parts = [f"{name}={'+'.join(getattr(self, name))}" for name in FIELDS if getattr(self, name)]
        return ", ".join(parts)


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


def detect_map(path: Path, fields: list[str], explicit: dict[str, tuple[str, ...]]) -> FieldMap:
    """Complete an explicit mapping from the field names found; fail with the fields listed when unsure."""
    present = set(fields)
    if not explicit:
        for chat_field, markers in CHAT_FIELDS.items():
            if chat_field in present:
                return FieldMap(chat=chat_field, chat_style=chat_field)
    chosen: dict[str, tuple[str, ...]] = {}
    for target in FIELDS:
        if target in explicit:
            chosen[target] = explicit[target]
            continue
        taken = {f for fs in chosen.values() for f in fs} | {f for fs in explicit.values() for f in fs}
        match = next((c for c in CANDIDATES[target] if c in present and c not in taken), None)
        if match:
            chosen[target] = (match,)
    found = ", ".join(fields) or "none"
    if "instruction" not in chosen:
        raise KoqualityError(
            f"{path}: cannot tell which field holds the instruction (fields found: {found}); "
            f"use --map instruction=FIELD --map output=FIELD")
    if "output" not in chosen:
        raise KoqualityError(
            f"{path}: no response field (expected one of: {', '.join(CANDIDATES['output'])}; fields found: {found}); "
            f"use --map output=FIELD")
    return FieldMap(**chosen)


def read_records(path: Path, encoding: str = "utf-8") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location, record) with a location a person can find in the file: `line N` or `record N`."""
    suffix = path.suffix.lower()
    if suffix not in SOURCE_FORMATS:
        shown = suffix or "no extension"
        raise KoqualityError(f"{path}: unknown format '{shown}' (expected one of: {', '.join(SOURCE_FORMATS)})")
    if not path.exists():
        raise KoqualityError(f"{path}: no such file")
    if path.is_dir():
        raise KoqualityError(f"{path}: is a directory (expected a file)")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            for i, record in enumerate(pq.read_table(path).to_pylist(), start=1):
                yield f"record {i}", record
        elif suffix == ".csv":
            with open(path, encoding=encoding, newline="") as f:
                reader = csv.DictReader(f)
                for record in reader:
                    yield f"line {reader.line_num}", record
        elif suffix == ".json":
            with open(path, encoding=encoding) as f:
                try:
                    data = json.load(f)
                except json.JSONDecodeError as e:
                    raise KoqualityError(f"{path} line {e.lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(data, list):
                raise KoqualityError(f"{path}: top level is a JSON {type(data).__name__} (expected a list of objects)")
            for i, record in enumerate(data, start=1):
                if not isinstance(record, dict):
                    raise KoqualityError(f"{path} record {i}: a JSON {type(record).__name__} (expected an object)")
                yield f"record {i}", record
        else:
            with open(path, encoding=encoding) as f:
                for n, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise KoqualityError(f"{path} line {n}: not valid JSON ({e.msg})") from None
                    if not isinstance(record, dict):
                        raise KoqualityError(f"{path} line {n}: a JSON {type(record).__name__} (expected an object)")
                    yield f"line {n}", record
    except UnicodeDecodeError as e:
        raise KoqualityError(f"{path}: byte {e.start} is not valid {encoding} (expected {encoding} text)") from None


def _text(value: Any, path: Path, location: str, name: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    kind = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    raise KoqualityError(f"{path} {location}: field \"{name}\" is {kind} (expected text)")


def _get(record: dict, fields: tuple[str, ...], path: Path, location: str, target: str, join: str = "\n") -> str:
    parts = []
    for name in fields:
        if name not in record:
            if target == "input":  # an optional field: Alpaca files often leave it out when empty
                continue
            expected = ", ".join(CANDIDATES[target])
            raise KoqualityError(
                f"{path} {location}: field \"{name}\" is missing (expected one of: {expected}; use --map {target}=FIELD)")
        parts.append(_text(record[name], path, location, name))
    return join.join(p for p in parts if p)


def _chat_pair(turns: Any, fmap: FieldMap, path: Path, location: str) -> tuple[str, str, str]:
    """First user turn and the first assistant reply after it; a system prompt is kept apart."""
    if not isinstance(turns, list):
        raise KoqualityError(f"{path} {location}: field \"{fmap.chat}\" is not a list of turns")
    role_key, text_key = ("role", "content") if fmap.chat_style == "messages" else ("from", "value")
    system = user = None
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or role_key not in turn:
            raise KoqualityError(f"{path} {location}: turn {i + 1} of \"{fmap.chat}\" has no \"{role_key}\" (expected objects with {role_key}/{text_key})")
        role = str(turn[role_key]).lower()
        text = _text(turn.get(text_key), path, location, f"{fmap.chat}[{i}].{text_key}")
        if role == "system" and user is None:
            system = text
        elif role in ("user", "human") and user is None:
            user = text
        elif role in ("assistant", "gpt", "bot") and user is not None:
            return user, text, system or ""
    return user or "", "", system or ""


@dataclass
class SourceRows:
    """One source read and mapped: the three text fields, extras, and where each row came from."""

    name: str
    path: Path
    fmap: FieldMap
    instruction: list[str] = field(default_factory=list)
    input: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    system: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    row_sources: list[str] | None = None  # per-row source names (`source_from`), else `name` for every row
    extras: dict[str, list[Any]] = field(default_factory=dict)


def read_source(path: str | os.PathLike, name: str | None = None, field_map: list[str] | dict[str, str] | None = None,
                encoding: str = "utf-8", split: str = "train", config: str | None = None, join: str = "\n",
                source_from: str | None = None) -> SourceRows:
    """Read one source. `join` separates fields joined with `+` in the map; `source_from` names each row's
    source by the part of that field before the first `_` (KULLM-v2's ids: `dolly_12` → `dolly`)."""
    explicit = parse_map(field_map)
    if is_hub_id(str(path)):
        records = hub_records(str(path), split=split, config=config)
        path = Path(str(path))
        name = name or path.name
    else:
        path = resolve_path(path)
        records = read_records(path, encoding=encoding)
    first = next(records, None)
    if first is None:
        raise KoqualityError(f"{path}: no records (the file is empty)")
    fmap = detect_map(path, list(first[1].keys()), explicit)
    rows = SourceRows(name=name or path.stem, path=path, fmap=fmap, row_sources=[] if source_from else None)
    used = fmap.used_fields()
    n = 0
    for location, record in _chain(first, records):
        if fmap.chat:
            if fmap.chat not in record:
                raise KoqualityError(f"{path} {location}: field \"{fmap.chat}\" is missing (expected a list of turns)")
            instruction, output, system = _chat_pair(record[fmap.chat], fmap, path, location)
            inp = ""
        else:
            instruction = _get(record, fmap.instruction, path, location, "instruction", join)
            inp = _get(record, fmap.input, path, location, "input", join) if fmap.input else ""
            output = _get(record, fmap.output, path, location, "output", join)
            system = ""
        rows.instruction.append(instruction)
        rows.input.append(inp)
        rows.output.append(output)
        rows.system.append(system)
        rows.locations.append(location)
        if source_from:
            if not isinstance(record.get(source_from), str) or not record[source_from]:
                raise KoqualityError(f"{path} {location}: field \"{source_from}\" (source_from) is missing or not text")
            rows.row_sources.append(record[source_from].split("_", 1)[0])
        for key, value in record.items():
            if key in used:
                continue
            column = f"orig_{key}" if key in RESERVED else key
            if column not in rows.extras:
                rows.extras[column] = [None] * n
            rows.extras[column].append(json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value)
        n += 1
        for values in rows.extras.values():
            if len(values) < n:
                values.append(None)
    return rows


def _chain(first, rest):
    yield first
    yield from rest
