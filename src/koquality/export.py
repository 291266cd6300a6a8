"""Stage 6 — export: a selection as training data.

`paper` renders the paper's training text `### 질문: {instruction}### 답변: {output}` (no newline between the
parts, as the paper). `chat` adds a `messages` column (user/assistant turns, the conversational format TRL
and chat templates take) and a readable `text`. When a row has an `input`, it follows the instruction
after a blank line. Formats: jsonl, parquet, csv, `hf` (`datasets.Dataset.save_to_disk`), `text` (the
rendered texts, one blank line between examples).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa

from .errors import KoqualityError
from .tables import atomic_path, require_columns, set_column, write_table

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


def export(table: pa.Table, path: str | Path, format: str | None = None, template: str = "paper") -> Path:
    """Render and write; `format` defaults to the extension (a path without one means `hf`)."""
    path = Path(path)
    format = format or {"": "hf", ".txt": "text"}.get(path.suffix, path.suffix.lstrip("."))
    if format not in FORMATS:
        raise KoqualityError(f"--format {format}: expected one of {', '.join(FORMATS)}")
    rendered = render(table, template)
    if format == "hf":
        from datasets import Dataset

        tmp = path.with_name(f".{path.name}.tmp")  # a directory: written beside, then swapped in
        shutil.rmtree(tmp, ignore_errors=True)
        Dataset(rendered).save_to_disk(str(tmp))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    elif format == "text":
        with atomic_path(path) as tmp:
            tmp.write_text("\n\n".join(rendered.column("text").to_pylist()) + "\n", encoding="utf-8")
    else:
        if path.suffix != f".{format}":
            raise KoqualityError(f"{path}: --format {format} needs a .{format} file name")
        write_table(rendered, path)
    return path
