"""Reading instruction sources and mapping their fields onto `instruction` / `input` / `output`.

Source formats stay at this edge: readers yield `(location, record)` pairs with a location a person can
find (`line N`, `record N`, `row N`), a mapping (given with `--map`, or detected from the field names) turns
a record into the common shape, and the rest of the pipeline sees only that shape. Fields the mapping does
not use are kept as extra columns.

Formats: `.jsonl`, `.json` (an array of objects), `.csv`, `.tsv` (each of these four also compressed:
`.gz`, `.bz2`, `.xz`, `.zst`), `.parquet`, `.arrow` (Arrow IPC file or stream), a `datasets` `save_to_disk`
directory, a directory or glob of them, or a hub dataset id (`org/name`). Schemas detected: Alpaca
(instruction/input/output), Q/A (`Q`/`A`, `question`/`answer`), prompt/response (or completion), ShareGPT
(`conversations` of from/value) and OpenAI-style `messages` (role/content). A mapped field may join several
source fields with `+` (e.g. `output=reason+answer`). The mapping is detected from the fields of the first
1,000 records, not the first alone (Alpaca files often leave `input` out of the records where it is empty);
an `input` field first seen later extends it, and any other change later in the file is an error, so the
mapping never depends on the order of the rows.

A broken record (bad JSON, bad bytes, a missing field, a number where text belongs, a lone surrogate, a
quote that is never closed) is a `Problem`: by default the read stops with `FILE line N: what is wrong (what
was expected)`; with `on_error="skip"` it becomes a counted drop. Text in byte encodings (utf-8, cp949,
euc-kr) is split into lines before it is decoded, so a bad byte is reported on its own line; UTF-16 (found by
its BOM, as Windows "Unicode" export writes it, or named with `encoding`) is decoded first, since its bytes
cannot be split. A file with any `\\n` has lines ending at `\\n` or `\\r\\n` (a bare `\\r` inside is text);
a file with none has lines ending at `\\r` (old Mac and some spreadsheet exports).

CSV follows RFC 4180 (quoted fields may hold delimiters, quotes as `""` and line breaks); TSV has no quoting
(a `"` is text), as the tools that write it do. `quoting` (auto, quotes, none) overrides this. A quoted CSV
record that goes wrong loses only its first line, as a counted problem, and reading resumes at the next
line, so a stray quote cannot swallow the rows after it unnoticed.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import glob
import gzip
import io
import json
import lzma
import math
import os
import re
import stat
import zlib
from collections import deque
from dataclasses import dataclass, field, replace
from importlib import resources
from itertools import chain, islice
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from .errors import KoqualityError

FIELDS = ("instruction", "input", "output")
SOURCE_FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
TEXT_FORMATS = (".jsonl", ".json", ".csv", ".tsv")  # also read compressed
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".zst": None}  # .zst: pyarrow
READABLE = (f"{', '.join(TEXT_FORMATS)} (also as {'/'.join(COMPRESSIONS)}), .parquet, .arrow, "
            f"or a datasets save_to_disk directory")
# Columns koquality writes itself; a source field with one of these names is kept as `orig_<name>`.
RESERVED = frozenset(("id", "source", "instruction", "input", "output", "len", "ppl", "n_tokens", "len_group",
                      "cluster", "text", "reason", "system", "messages"))

# Field names recognised for each role.
CANDIDATES = {
    "instruction": ("instruction", "question", "Q", "prompt", "query"),
    "input": ("input", "context"),
    "output": ("output", "answer", "A", "response", "completion"),
}
CHAT_FIELDS = {"messages": ("role", "content"), "conversations": ("from", "value")}
# Compared in lower case. ShareGPT exports say human/gpt (or ChatGPT, bot), OpenAI role/content says
# user/assistant, Gemini says model, OpenAssistant says prompter.
USER_ROLES = ("user", "human", "prompter")
ASSISTANT_ROLES = ("assistant", "gpt", "chatgpt", "bot", "model", "ai")
PACKAGE_PREFIX = "koquality:"
SOURCE_NAME = re.compile(r"[\w][\w.\-]*")
TURNS = ("first", "all")
QUOTING = ("auto", "quotes", "none")
SAMPLE_RECORDS = 1000  # records whose fields decide the mapping
CHUNK, SNIFF = 1 << 20, 1 << 14
BATCH_ROWS = 8192
# Only JSON can hold a lone surrogate (`"\ud800"`); it cannot be written as UTF-8, so such a record is
# broken. Records are searched only when their text holds a `\uD8..`-`\uDF..` escape.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
SURROGATE = re.compile("[\ud800-\udfff]")
# Stands for a bare CR in a CSV line while the csv module reads it (it would take it for a line end);
# text decoded from bytes never holds a lone surrogate, so nothing real can be mistaken for it.
CR_MARK = "\udfff"
DAMAGED = (OSError, EOFError, zlib.error, lzma.LZMAError)  # what a truncated or corrupt (compressed) file raises


def is_hub_id(text: str) -> bool:
    """`org/name` that is not a local file: a Hugging Face hub dataset, loaded with `datasets.load_dataset`."""
    return (re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None and not Path(text).exists()
            and not any(file_format(Path(text))))


def resolve_path(path: str | os.PathLike) -> Path:
    """`koquality:demo/alpaca.json` names a file shipped in the package; anything else is a local path."""
    text = str(path)
    if text.startswith(PACKAGE_PREFIX):
        return Path(str(resources.files("koquality") / "data" / text[len(PACKAGE_PREFIX):]))
    return Path(text)


def file_format(path: Path) -> tuple[str, str]:
    """(format, compression) from the name: `a.jsonl.gz` → ('.jsonl', '.gz'); format '' when not readable."""
    name = path.name.lower()
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), "")
    fmt = Path(name[:len(name) - len(compression)]).suffix
    readable = fmt in TEXT_FORMATS if compression else fmt in SOURCE_FORMATS or fmt == ".arrow"
    return (fmt if readable else ""), compression


def _suffix(path: Path) -> str:
    """The suffix shown in messages: `.xlsx`, `.parquet.gz`."""
    return ("".join(path.suffixes[-2:]) if file_format(path)[1] else path.suffix).lower()


def source_stem(path: Path) -> str:
    """The default source name: the file name without its format and compression suffixes."""
    fmt, compression = file_format(path)
    return path.name[:len(path.name) - len(fmt) - len(compression)] if fmt else path.stem


def is_saved_dataset(path: Path) -> bool:
    """A `datasets` `save_to_disk` directory: a Dataset (state.json + dataset_info.json) or a DatasetDict."""
    return (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file()
                                                     and (path / "dataset_info.json").is_file())


def expand(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """A directory or glob becomes its sources (sorted), plus what was not read and why (`path`, `reason`),
    so nothing is passed over unseen. Links to directories are followed, but each real file or directory is
    visited once: a link loop ends, and a file reached twice is read once. A `save_to_disk` directory is one
    source, not its `.arrow` files. A hub id or a single file stays as it is."""
    text = str(path)
    if is_hub_id(text) or text.startswith(PACKAGE_PREFIX):
        return [text], []
    found: list[str] = []
    skipped: list[dict[str, str]] = []
    if any(c in text for c in "*?["):
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        whole = {m for m in matches if m.is_dir() and is_saved_dataset(m)}
        seen: dict = {}
        for m in matches:
            if m.is_dir() and m not in whole:
                continue  # a glob's own matches cover what it means to read inside its directories
            if not any(d in whole for d in m.parents):  # a datasets directory's own files are read with it
                _visit(m, found, skipped, seen, hidden_ok=True)
        if not found:
            raise KoqualityError(f"{text}: no sources match (expected {READABLE}){_skipped_note(skipped)}")
        return sorted(found), skipped
    root = Path(text)
    if root.is_dir() and not is_saved_dataset(root):
        root_stat = root.stat()
        _walk(root, found, skipped, {(root_stat.st_dev, root_stat.st_ino): str(root)})
        if not found:
            raise KoqualityError(f"{text}: directory holds no sources (expected {READABLE}){_skipped_note(skipped)}")
        return sorted(found), skipped
    return [text], []


def _walk(directory: Path, found: list[str], skipped: list[dict[str, str]], seen: dict) -> None:
    try:
        entries = sorted(directory.iterdir())
    except OSError as e:
        skipped.append({"path": str(directory), "reason": f"cannot be listed ({e.strerror or e})"})
        return
    for entry in entries:
        if _visit(entry, found, skipped, seen, hidden_ok=False):
            _walk(entry, found, skipped, seen)


def _visit(path: Path, found: list[str], skipped: list[dict[str, str]], seen: dict, hidden_ok: bool) -> bool:
    """Take `path` as a source or list it as skipped; True for a directory to walk into."""
    def skip(reason: str) -> bool:
        skipped.append({"path": str(path), "reason": reason})
        return False

    try:
        st = path.stat()  # follows links
    except OSError as e:
        return skip(f"cannot be read ({e.strerror or e})")
    if path.name.startswith(".") and not hidden_ok:
        return skip("hidden")
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return skip(f"same {'directory' if stat.S_ISDIR(st.st_mode) else 'file'} as {seen[key]} (through a link)")
    seen[key] = str(path)
    if stat.S_ISDIR(st.st_mode):
        if not is_saved_dataset(path):
            return True
        found.append(str(path))
    elif not stat.S_ISREG(st.st_mode):
        return skip("not a regular file")
    elif file_format(path)[0]:
        found.append(str(path))
    else:
        return skip(f"unsupported format {_suffix(path) or '(no extension)'} (expected {READABLE})")
    return False


def _skipped_note(skipped: list[dict[str, str]]) -> str:
    if not skipped:
        return ""
    shown = ", ".join(f"{s['path']} ({s['reason'].split(' (')[0]})" for s in skipped[:3])
    return f"; skipped: {shown}{', …' if len(skipped) > 3 else ''}"


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


def detect_map(where: str | Path, fields: list[str], explicit: dict[str, tuple[str, ...]]) -> FieldMap:
    """Complete an explicit mapping from the field names found; fail with the fields listed when unsure
    (`where`, the file or the line, starts the message)."""
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
            raise KoqualityError(f"{where}: fields {' and '.join(repr(m) for m in matches)} could each be the {target} "
                                 f"(fields found: {found}); choose one with --map {target}=FIELD")
        if matches:
            chosen[target] = (matches[0],)
            taken.add(matches[0])
    if "instruction" not in chosen:
        raise KoqualityError(f"{where}: cannot tell which field holds the instruction (fields found: {found}); {MAP_HELP}")
    if "output" not in chosen:
        raise KoqualityError(f"{where}: no response field (expected one of: {', '.join(CANDIDATES['output'])}; "
                             f"fields found: {found}); use --map output=FIELD")
    return FieldMap(**chosen)


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


def _is_wide(encoding: str) -> bool:
    """UTF-16/32: a `\\n` byte may be half of another character, so the text is decoded before it is split."""
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


def _decode_error(raw: bytes, e: UnicodeDecodeError, encoding: str) -> str:
    return (f"byte 0x{raw[e.start]:02x} at column {e.start + 1} is not valid {encoding} "
            f"(expected {encoding} text; use --encoding to read another, e.g. --encoding cp949)")


def _open(path: Path) -> BinaryIO:
    """The file's bytes, decompressed as its name says."""
    compression = file_format(path)[1]
    if compression == ".zst":
        import pyarrow as pa

        return io.BufferedReader(pa.input_stream(str(path), compression="zstd"), CHUNK)
    return COMPRESSIONS[compression](path, "rb") if compression else open(path, "rb")


def _damaged(path: Path, e: Exception, where: str = "") -> KoqualityError:
    """A truncated or corrupt file (or one that cannot be opened): one line, with how far the read got."""
    detail = str(e).splitlines()[0] if str(e) else "no detail"
    return KoqualityError(f"{path}: cannot be read{' ' + where if where else ''} ({type(e).__name__}: {detail})")


def _sniff(path: Path, encoding: str) -> tuple[str, str]:
    """The encoding to read with (a UTF-16 BOM decides it) and the line end: `\\n` if the file holds one
    (`\\r\\n` ends there too), else `\\r`. Reads only up to the first `\\n`, in small pieces, so that damage
    further in is found while reading lines, with the line reached."""
    with _open(path) as f:
        chunk = f.read(SNIFF)
        if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            encoding = "utf-16"
        wide = _is_wide(encoding)
        decode = codecs.getincrementaldecoder(encoding)(errors="replace").decode if wide else bytes
        lf, cr = ("\n", "\r") if wide else (b"\n", b"\r")
        seen_cr = False
        while chunk:
            text = decode(chunk)
            if lf in text:
                return encoding, "\n"
            seen_cr = seen_cr or cr in text
            chunk = f.read(SNIFF)
    return encoding, "\r" if seen_cr else "\n"


def _split(f, sep):
    """Lines of a stream (bytes or text) that end at `sep`, each with its `sep`."""
    tail = sep[:0]
    for chunk in iter(lambda: f.read(CHUNK), sep[:0]):
        lines = (tail + chunk).split(sep)
        tail = lines.pop()
        for line in lines:
            yield line + sep
    if tail:
        yield tail


def _text_lines(path: Path, encoding: str) -> Iterator[tuple[int, str, Problem | None]]:
    """Decoded lines with their numbers and line ends; a BOM is dropped; a line that does not decode comes
    with a Problem (and its text decoded with replacement characters, for readers that must keep their place)."""
    n = 0
    try:
        encoding, newline = _sniff(path, encoding)
        with _open(path) as f:
            if _is_wide(encoding):
                try:
                    lines = io.TextIOWrapper(f, encoding=encoding, newline=newline)
                    for n, text in enumerate(lines, start=1):
                        yield n, text.lstrip("\ufeff") if n == 1 else text, None
                except UnicodeDecodeError as e:
                    raise KoqualityError(f"{path}: not valid {encoding} text after line {n} ({e.reason}; "
                                         f"use --encoding to read another, e.g. --encoding utf-8)") from None
                return
            for n, raw in enumerate(f if newline == "\n" else _split(f, b"\r"), start=1):
                problem = None
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as e:
                    problem = Problem(f"line {n}", _decode_error(raw, e, encoding))
                    text = raw.decode(encoding, errors="replace")
                yield n, text.lstrip("\ufeff") if n == 1 else text, problem
    except DAMAGED as e:
        raise _damaged(path, e, f"after line {n}" if n else "") from None


def _read_text(path: Path, encoding: str) -> str:
    """The whole file decoded (for `.json`); a bad byte is named with its line and column."""
    try:
        with _open(path) as f:
            raw = f.read()
    except DAMAGED as e:
        raise _damaged(path, e) from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    try:
        return raw.decode(encoding).lstrip("\ufeff")
    except UnicodeDecodeError as e:
        if _is_wide(encoding):
            line = raw[:e.start].decode(encoding, errors="replace").count("\n") + 1
            raise KoqualityError(f"{path} line {line}: not valid {encoding} text ({e.reason}; "
                                 f"use --encoding to read another, e.g. --encoding utf-8)") from None
        line = raw[:e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1)
        raise KoqualityError(f"{path} line {line}: byte 0x{raw[e.start]:02x} at column {column + 1} is not valid {encoding} "
                             f"(expected {encoding} text; use --encoding to read another, e.g. --encoding cp949)") from None


def _lone_surrogate(record: dict) -> str | None:
    """The problem with a record holding a lone surrogate anywhere (keys and nested values too), or None.
    Walks without recursion: a record may be nested nearly as deep as the JSON parser allows."""
    for key, value in record.items():
        stack = [key, value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                found = SURROGATE.search(item)
                if found:
                    name = key.encode("utf-8", "backslashreplace").decode("utf-8")
                    return (f'field "{name}" holds a lone surrogate \\u{ord(found.group()):04x}, half of a UTF-16 pair '
                            f"(expected text that is valid Unicode)")
            elif isinstance(item, dict):
                stack += [*item.keys(), *item.values()]
            elif isinstance(item, list):
                stack += item
    return None


def _json_error(e: Exception) -> str:
    if isinstance(e, RecursionError):
        return "JSON nested too deeply to read"
    return f"not valid JSON: {str(e).split(';')[0]}"


def _jsonl_records(path: Path, encoding: str) -> Iterator[tuple[str, dict | Problem]]:
    seen_object = False
    first = True
    lines = _text_lines(path, encoding)
    for n, line, problem in lines:
        if problem:
            yield problem.location, problem
            first = False
            continue
        if not line.strip():
            continue
        text = line.rstrip("\r\n")  # so an error's column is on this line, not past its end
        array, first = first and text.lstrip().startswith("["), False
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            if array:  # the first line opens a JSON array spread over many lines: the file is one, named .jsonl
                lines.close()
                yield from _json_records(path, encoding)
                return
            hint = "" if seen_object or text.lstrip().startswith(("{", "[")) else "; the file looks like plain text"
            yield f"line {n}", Problem(f"line {n}", f"not valid JSON: {e.msg} at column {e.colno} "
                                                   f"(expected one JSON object per line{hint})")
            continue
        except (RecursionError, ValueError) as e:  # nesting deeper than the parser goes; an int of 4,300+ digits
            yield f"line {n}", Problem(f"line {n}", f"{_json_error(e)} (expected one JSON object per line)")
            continue
        if not isinstance(record, dict):
            yield f"line {n}", Problem(f"line {n}", f"a JSON {_kind(record)} (expected a JSON object)")
            continue
        surrogate = SURROGATE_ESCAPE.search(text) and _lone_surrogate(record)
        if surrogate:
            yield f"line {n}", Problem(f"line {n}", surrogate)
            continue
        seen_object = True
        yield f"line {n}", record


def _json_records(path: Path, encoding: str) -> Iterator[tuple[str, dict | Problem]]:
    text = _read_text(path, encoding)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        lines = e.msg == "Extra data" and file_format(path)[0] == ".json"
        hint = "; this looks like JSON Lines: name it .jsonl" if lines else ""
        raise KoqualityError(f"{path} line {e.lineno}: not valid JSON: {e.msg} at column {e.colno} "
                             f"(expected a JSON array of objects{hint})") from None
    except (RecursionError, ValueError) as e:
        raise KoqualityError(f"{path}: {_json_error(e)} (expected a JSON array of objects)") from None
    if not isinstance(data, list):
        keys = f" with keys {', '.join(list(data)[:8])}" if isinstance(data, dict) else ""
        raise KoqualityError(f"{path}: top level is a JSON {_kind(data)}{keys} (expected a list of objects)")
    check = SURROGATE_ESCAPE.search(text) is not None
    for i, record in enumerate(data, start=1):
        location = f"record {i}"
        surrogate = check and isinstance(record, dict) and _lone_surrogate(record)
        if not isinstance(record, dict):
            yield location, Problem(location, f"a JSON {_kind(record)} (expected an object)")
        elif surrogate:
            yield location, Problem(location, surrogate)
        else:
            yield location, record


def _blank(fields: list[str] | None) -> bool:
    return not fields or (len(fields) == 1 and not fields[0].strip())


def _plain_rows(lines: Iterator[tuple[int, str, Problem | None]], delimiter: str) -> Iterator[tuple]:
    """No quoting: one row per line, split at the delimiter; quotes are text."""
    for n, text, problem in lines:
        yield n, text.rstrip("\r\n").split(delimiter), problem.message if problem else None


def _quoted_rows(lines: Iterator[tuple[int, str, Problem | None]], delimiter: str) -> Iterator[tuple]:
    """RFC 4180 records as (first line, fields, problem). The csv module reads in strict mode; when a record
    goes wrong (text after a closing quote, a quote open at the end of the file, a record over several lines
    with the wrong number of fields) its first line becomes the problem and reading resumes at the next line.
    The first record is the header."""
    pending: deque = deque()  # lines to read again after a record went wrong
    taken: list = []  # the lines of the record being read
    marked, bad = False, None  # this record has a bare CR / a line that did not decode
    header: list[str] | None = None

    def feed():
        nonlocal marked, bad
        while True:
            item = pending.popleft() if pending else next(lines, None)
            if item is None:
                return
            taken.append(item)
            _, text, problem = item
            if problem and not bad:
                bad = problem.message
            if "\r" in text:
                body = text.rstrip("\r\n")
                if "\r" in body:  # a bare CR inside the line is text; the csv module would take it for a line end
                    text, marked = body.replace("\r", CR_MARK) + text[len(body):], True
            yield text

    reader = csv.reader(feed(), delimiter=delimiter, strict=True)
    while True:
        taken.clear()
        marked, bad = False, None
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            wrong = _quote_problem(str(e), taken[0][0], taken[-1][0], delimiter)
        else:
            wrong = None
            if header is not None and len(taken) > 1 and len(fields) != len(header):
                wrong = (f"a quote opened here runs to line {taken[-1][0]}, making a record of {len(fields)} fields "
                         f"(expected {len(header)}, as the header: {', '.join(header)})")
        if wrong:
            pending.extendleft(reversed(taken[1:]))
            reader = csv.reader(feed(), delimiter=delimiter, strict=True)  # the old one may have seen the end
            yield taken[0][0], None, wrong
            continue
        if marked:
            fields = [f.replace(CR_MARK, "\r") for f in fields]
        if header is None and not _blank(fields):
            header = fields
        yield taken[0][0], fields, bad


def _quote_problem(error: str, first: int, last: int, delimiter: str) -> str:
    shown = "a tab" if delimiter == "\t" else f"'{delimiter}'"
    advice = 'write a quote inside a quoted field as ""; if quotes are plain text in this file, read it with quoting none'
    if error.startswith("unexpected end of data"):
        return f"a quote opened here is never closed (expected a closing quote before the end of the file; {advice})"
    if "expected after" in error:
        where = f"closes on line {last} and is followed by text" if last > first else "has text after its closing quote"
        return f"a quote opened here {where} (expected {shown} or the line end after a closing quote; {advice})"
    return f"not valid CSV: {error}"


def _csv_records(path: Path, encoding: str, delimiter: str, quoted: bool) -> Iterator[tuple[str, dict | Problem]]:
    csv.field_size_limit(2**31 - 1)  # 128 KiB by default; a longer row is dropped later as too_long, with its reason
    rows = (_quoted_rows if quoted else _plain_rows)(_text_lines(path, encoding), delimiter)
    header = None
    for n, header, problem in rows:
        if problem:
            raise KoqualityError(f"{path} line {n}: {problem}")
        if not _blank(header):
            break
    if header is None or _blank(header):
        return
    if len(set(header)) != len(header):
        repeated = sorted({h for h in header if header.count(h) > 1})
        raise KoqualityError(f"{path} line {n}: column name(s) {', '.join(repeated)} repeated in the header (expected unique names)")
    for n, fields, problem in rows:
        location = f"line {n}"
        if problem:
            yield location, Problem(location, problem)
        elif not fields or (len(fields) == 1 and not fields[0].strip()):  # a blank line
            continue
        elif len(fields) != len(header):
            yield location, Problem(location, f"{len(fields)} fields (expected {len(header)}, as the header: {', '.join(header)})")
        else:
            yield location, dict(zip(header, fields))


def _batch_records(path: Path, batches: Iterable) -> Iterator[tuple[str, dict]]:
    """Rows of Arrow batches as `row N`; a file that breaks part way is named with the last row read."""
    import pyarrow as pa

    n = 0
    try:
        for batch in batches:
            for record in batch.to_pylist():
                n += 1
                yield f"row {n}", record
    except (OSError, pa.ArrowException) as e:
        raise _damaged(path, e, f"after row {n:,}") from None


def _parquet_records(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise KoqualityError(f"{path}: not a Parquet file ({e})") from None
    return _batch_records(path, file.iter_batches(batch_size=BATCH_ROWS))


def _arrow_records(path: Path) -> Iterator[tuple[str, dict]]:
    """An Arrow IPC file, or the IPC stream format that `datasets` writes its `.arrow` files in."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except (OSError, pa.ArrowException):
        try:
            batches = pa.ipc.open_stream(pa.memory_map(str(path)))
        except (OSError, pa.ArrowException) as e:
            raise KoqualityError(f"{path}: not an Arrow IPC file or stream ({e})") from None
    return _batch_records(path, batches)


def _saved_records(path: Path, split: str) -> Iterator[tuple[str, dict]]:
    """A `datasets` `save_to_disk` directory, read in Arrow batches (memory-mapped, never whole)."""
    from datasets import DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except Exception as e:  # datasets raises many types for a damaged directory
        raise _damaged(path, e, "as a datasets directory") from None
    if isinstance(data, DatasetDict):
        if split not in data:
            raise KoqualityError(f"{path}: no split '{split}' (splits: {', '.join(data)}); choose one with split")
        data = data[split]
    return _batch_records(path, data.with_format("arrow").iter(batch_size=BATCH_ROWS))


def read_records(path: Path, encoding: str = "utf-8", quoting: str = "auto",
                 split: str = "train") -> Iterator[tuple[str, dict | Problem]]:
    """Yield (location, record or Problem) from a local file or `save_to_disk` directory; file-level problems
    raise at once. `quoting` applies to CSV/TSV: auto (quotes for .csv, none for .tsv), quotes or none."""
    if path.is_dir() and is_saved_dataset(path):
        return _saved_records(path, split)
    fmt = file_format(path)[0]
    if not fmt:
        raise KoqualityError(f"{path}: unknown format '{_suffix(path) or 'no extension'}' (expected {READABLE})")
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
    if fmt == ".parquet":
        return _parquet_records(path)
    if fmt == ".arrow":
        return _arrow_records(path)
    if fmt == ".json":
        return _json_records(path, encoding)
    if fmt in (".csv", ".tsv"):
        return _csv_records(path, encoding, "," if fmt == ".csv" else "\t",
                            quoted=quoting == "quotes" or (quoting == "auto" and fmt == ".csv"))
    return _jsonl_records(path, encoding)


def hub_records(name: str, split: str = "train", config: str | None = None) -> Iterator[tuple[str, dict]]:
    from datasets import load_dataset

    from . import hub

    hub.require(datasets=[name])
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


def _extra_name(name: str) -> str:
    """A source field kept as a column: `orig_` before a name koquality writes itself, and before any name
    that already starts with `orig_`, so two fields never share a column (`id` → `orig_id`,
    `orig_id` → `orig_orig_id`)."""
    return f"orig_{name}" if name in RESERVED or name.startswith("orig_") else name


def _chat_pairs(turns: Any, chat: str, all_turns: bool) -> tuple[list[tuple[str, str, str, str]], str | None]:
    """(instruction, input, output, system) per assistant reply: the first only, or all with earlier turns
    folded into `input` as `user: …` / `assistant: …` lines. With no reply, one pair with an empty side and
    a note saying why, for the drop's detail. A role koquality does not know is a broken record rather than
    a guess: taking a reply for a question (or skipping it) would make a wrong pair."""
    if not isinstance(turns, list):
        raise _Broken(f"field \"{chat}\" is a {_kind(turns)} (expected a list of turns)")
    role_key, text_key = CHAT_FIELDS[chat]
    system, history, pairs = "", [], []
    user: str | None = None
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or role_key not in turn:
            raise _Broken(f"turn {i} of \"{chat}\" has no \"{role_key}\" (expected objects with {role_key}/{text_key})")
        role = str(turn[role_key]).strip().lower()
        text = _text(turn.get(text_key), f"{chat}[{i}].{text_key}")
        if role == "system":
            system = system or text
        elif role in USER_ROLES:
            if user is not None:
                history.append(f"user: {user}")
            user = text
        elif role in ASSISTANT_ROLES:
            if user is None:
                continue
            pairs.append((user, "\n".join(history), text, system))
            if not all_turns:
                return pairs, None
            history += [f"user: {user}", f"assistant: {text}"]
            user = None
        else:
            raise _Broken(f"turn {i} of \"{chat}\": role {str(turn[role_key])[:40]!r} (field \"{role_key}\") is not "
                          f"one koquality knows (expected one of: system, {', '.join(USER_ROLES + ASSISTANT_ROLES)})")
    if pairs:
        return pairs, None
    if user is None:
        return [("", "", "", system)], "the conversation has no user turn" if turns else "the conversation has no turns"
    return [(user, "", "", system)], "the conversation has no assistant reply to the user's turn"


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
    notes: dict[int, str] = field(default_factory=dict)  # row → why its text is empty, where "empty" would mislead


def _remap(where: str, fmap: FieldMap, fields: list[str], explicit: dict[str, tuple[str, ...]]) -> FieldMap:
    """The mapping once a record brings a field not seen before. An `input` field may join it (the rows
    before simply had no input); any other change would make the mapping depend on the order of the rows."""
    new = detect_map(where, fields, explicit)
    if new == fmap or (not fmap.input and replace(new, input=()) == fmap):
        return new
    raise KoqualityError(f"{where}: fields first seen here change the mapping detected from the records before "
                         f"({fmap.describe()} → {new.describe()}; fields found: {', '.join(fields)}); "
                         f"give it with --map")


def read_source(path: str | os.PathLike, **options: Any) -> SourceRows:
    """Read one source file or hub dataset whole (options as `iter_source`)."""
    return next(iter_source(path, chunk_rows=None, **options))


def iter_source(path: str | os.PathLike, name: str | None = None, field_map: list[str] | dict[str, str] | None = None,
                encoding: str = "utf-8", split: str = "train", config: str | None = None, join: str = "\n",
                source_from: str | None = None, turns: str = "first", on_error: str = "raise",
                chunk_rows: int | None = 50_000, quoting: str = "auto") -> Iterator[SourceRows]:
    """Read one source file or hub dataset in chunks of `chunk_rows` rows (None: one chunk), so a large
    file never has to be held whole.

    `join` separates fields joined with `+` in the map; `source_from` names each row's source by the part of
    that field before the first `_` (KULLM-v2's ids: `dolly_12` → `dolly`); `turns="all"` makes one pair per
    assistant reply of a chat; `on_error="skip"` collects broken records in `problems` instead of stopping;
    `quoting` (auto, quotes, none) says whether CSV/TSV fields may be quoted. The mapping is detected from the
    fields of the first `SAMPLE_RECORDS` records (held meanwhile); each chunk carries the mapping as it stands,
    so the last chunk's is the mapping of the whole source.
    """
    if turns not in TURNS:
        raise KoqualityError(f"--turns {turns}: expected one of {', '.join(TURNS)}")
    if on_error not in ("raise", "skip"):
        raise KoqualityError(f"--on-error {on_error}: expected raise or skip")
    if quoting not in QUOTING:
        raise KoqualityError(f"--quoting {quoting}: expected one of {', '.join(QUOTING)}")
    explicit = parse_map(field_map)
    if is_hub_id(str(path)):
        records = hub_records(str(path), split=split, config=config)
        path = Path(str(path))
        default_name = path.name  # org/KoAlpaca-v1.1a → KoAlpaca-v1.1a
    else:
        path = resolve_path(path)
        records = read_records(path, encoding=encoding, quoting=quoting, split=split)
        default_name = source_stem(path)
    head = list(islice(records, SAMPLE_RECORDS))
    keys = dict.fromkeys(k for _, record in head if not isinstance(record, Problem) for k in record)
    fmap = detect_map(path, list(keys), explicit) if keys else None
    used = fmap.used_fields() if fmap else set()
    rows = SourceRows(name=source_name(name, default_name), path=path, fmap=fmap or FieldMap(),
                      row_sources=[] if source_from else None)

    def broken(location: str, message: str) -> None:
        if on_error == "raise":
            raise KoqualityError(f"{path} {location}: {message}")
        rows.problems.append(Problem(location, message))

    n = 0
    for location, record in chain(head, records):
        if chunk_rows and n >= chunk_rows:
            yield rows
            rows = SourceRows(name=rows.name, path=path, fmap=fmap or FieldMap(), row_sources=[] if source_from else None)
            n = 0
        if isinstance(record, Problem):
            broken(location, record.message)
            continue
        if fmap is None or not keys.keys() >= record.keys():
            keys.update(dict.fromkeys(record))
            fmap = rows.fmap = (_remap(f"{path} {location}", fmap, list(keys), explicit) if fmap
                                else detect_map(path, list(keys), explicit))
            used = fmap.used_fields()
        note = None
        try:
            if fmap.chat:
                if fmap.chat not in record:
                    raise _Broken(f"field \"{fmap.chat}\" is missing (expected a list of turns)")
                pairs, note = _chat_pairs(record[fmap.chat], fmap.chat, turns == "all")
            else:
                pairs = [(_get(record, fmap.instruction, "instruction", join),
                          _get(record, fmap.input, "input", join) if fmap.input else "",
                          _get(record, fmap.output, "output", join), "")]
            if source_from is not None:
                origin = record.get(source_from)
                if not isinstance(origin, str) or not origin:
                    raise _Broken(f"field \"{source_from}\" (source_from) is missing or not text")
            extras = {_extra_name(k): (json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v)
                      for k, v in record.items() if k not in used}
        except _Broken as e:
            broken(location, e.message)
            continue
        except RecursionError:  # json.dumps of a value nested nearly as deep as the parser allows
            broken(location, "a field is nested too deeply to keep as a column (expected at most a few hundred levels)")
            continue
        for t, (instruction, inp, output, system) in enumerate(pairs, start=1):
            if note:
                rows.notes[n] = note
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
