"""Stage 6 — export: a selection as training data.

`paper` renders the paper's training text `### 질문: {instruction}### 답변: {output}` (no newline between the
parts, as the paper). `chat` adds a `messages` column (user/assistant turns, the conversational format TRL
and chat templates take) and a readable `text`. When a row has an `input`, it follows the instruction
after a blank line. Formats: jsonl, parquet, csv, `hf` (`datasets.Dataset.save_to_disk`), `text` (the
rendered texts, one blank line between examples).

Exports never delete or overwrite what koquality did not write: see `write_dataset_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa

from .errors import KoqualityError
from .tables import atomic_path, empty_columns, require_columns, set_column, temporary, write_table

TEMPLATES = {
    "paper": "### 질문: {instruction}### 답변: {output}",
    "chat": "### 사용자:\n{instruction}\n\n### 어시스턴트:\n{output}",
}
FORMATS = ("jsonl", "parquet", "csv", "hf", "text")


def prompt(instruction: str, input: str | None) -> str:
    return f"{instruction}\n\n{input}" if input else instruction


def render(table: pa.Table, template: str = "paper") -> pa.Table:
    if template not in TEMPLATES:
        raise KoqualityError(f"--template {template}: expected one of {', '.join(TEMPLATES)}")
    table = empty_columns(table, ("instruction", "input", "output"))
    require_columns(table, ["instruction", "output"], "export")
    instructions = table.column("instruction").to_pylist()
    inputs = table.column("input").to_pylist() if "input" in table.column_names else [None] * table.num_rows
    outputs = table.column("output").to_pylist()
    prompts = [prompt(i, x) for i, x in zip(instructions, inputs)]
    texts = [TEMPLATES[template].format(instruction=p, output=o) for p, o in zip(prompts, outputs)]
    table = set_column(table, "text", pa.array(texts, type=pa.string()))
    if template == "chat":
        messages = [[{"role": "user", "content": p}, {"role": "assistant", "content": o}] for p, o in zip(prompts, outputs)]
        table = set_column(table, "messages", pa.array(messages))
    return table


def export(table: pa.Table, path: str | Path, format: str | None = None, template: str = "paper",
           force: bool = False) -> Path:
    """Render and write; `format` defaults to the extension (a path without one means `hf`).

    A file is replaced atomically, never a directory; an `hf` export (a directory) is written into a new or
    empty directory or over an earlier koquality export, and beside other files only with `force` (see
    `write_dataset_dir`)."""
    path = Path(path)
    format = format or {"": "hf", ".txt": "text"}.get(path.suffix, path.suffix.lstrip("."))
    if format not in FORMATS:
        raise KoqualityError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    rendered = render(table, template)
    if format == "hf":
        write_dataset_dir(rendered, path, force)
    elif format == "text":
        with atomic_path(path) as tmp:
            tmp.write_text("\n\n".join(rendered.column("text").to_pylist()) + "\n", encoding="utf-8")
    else:
        if path.suffix != f".{format}":
            raise KoqualityError(f"{path}: --format {format} needs a .{format} file name")
        write_table(rendered, path)
    return path


EXPORT_MARKER = ".koquality-export.json"  # in an hf export: the files koquality wrote there


def write_dataset_dir(rendered: pa.Table, path: Path, force: bool = False) -> None:
    """`datasets.Dataset.save_to_disk` into `path`, deleting and overwriting only what koquality wrote.

    The dataset is saved into a temporary directory beside `path` first. A new or empty `path` is then
    replaced by it in one rename. Otherwise the files an earlier export listed in its marker are replaced;
    files of anyone else make the export stop unless `force`, and even then they are left untouched (a
    name clash with one of them is an error)."""
    from datasets import Dataset

    if path.exists() and not path.is_dir():
        raise KoqualityError(f"{path}: exists and is a file; an hf export is a directory (choose a new name, or a "
                             ".jsonl/.parquet/.csv file name for another format)")
    ours = _exported_files(path)
    others = sorted(p.name for p in path.iterdir() if p.name not in ours and p.name != EXPORT_MARKER) if path.is_dir() else []
    if others and not force:
        raise KoqualityError(f"{path}: not empty and not a koquality export (holds {', '.join(others[:3])}"
                             f"{'…' if len(others) > 3 else ''}); choose a new or empty directory, or --force to "
                             "write the export beside those files (they are never deleted)")
    tmp = temporary(path.resolve(), directory=True)  # resolved: `..` or `.` has no name to put it beside
    try:
        Dataset(rendered).save_to_disk(str(tmp))
        written = sorted(os.listdir(tmp))
        clash = [name for name in written if name in others]
        if clash:
            raise KoqualityError(f"{path}: the export would replace {', '.join(clash)}, which koquality did not write")
        (tmp / EXPORT_MARKER).write_text(json.dumps({"files": written}) + "\n", encoding="utf-8")
        if not path.exists() or not any(path.iterdir()):
            os.replace(tmp, path)  # a rename may replace an empty directory
            return
        for name in ours - set(written):
            (path / name).unlink(missing_ok=True)
        for name in [*written, EXPORT_MARKER]:
            os.replace(tmp / name, path / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _exported_files(path: Path) -> set[str]:
    """The files an earlier koquality export wrote into `path` (none when it holds no export marker)."""
    try:
        files = json.loads((path / EXPORT_MARKER).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {name for name in files if isinstance(name, str) and "/" not in name and name not in ("", ".", "..")}
