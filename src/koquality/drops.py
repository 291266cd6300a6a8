"""The ledger of dropped rows: every row a stage removes goes in with a reason and a detail, so that a run
accounts for every row it read (rows.read = rows.dropped + rows.corpus) whatever stages it ran, in any order.

A row is dropped by `Ledger.drop(rows, reason, details)` — the one way stages remove rows. Ingest, which
decides row by row while it reads files and knows each row's file and location, builds the same schema
itself and hands its rows over with `Ledger.add`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from .errors import KoqualityError
from .tables import write_table

DROPPED_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("file", pa.string()), ("location", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()),
    ("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()),
])
TEXTS = ("instruction", "input", "output")


def dropped_rows(rows: pa.Table, reason: str, details: str | Sequence[str | None]) -> pa.Table:
    """`rows` (corpus rows: id, and the source and texts it has) as ledger rows with `reason` and one detail per
    row (or one for all). Texts are kept so that a user can read what was dropped without the sources."""
    n = rows.num_rows
    if isinstance(details, str):
        details = [details] * n
    if len(details) != n:
        raise ValueError(f"{len(details)} details for {n} rows dropped as {reason!r}")
    columns = {
        "id": rows.column("id"),
        "source": rows.column("source") if "source" in rows.column_names else pa.nulls(n, pa.string()),
        "file": pa.nulls(n, pa.string()), "location": pa.nulls(n, pa.string()),
        "reason": pa.array([reason] * n, pa.string()), "detail": pa.array(details, pa.string()),
    }
    for text in TEXTS:
        columns[text] = rows.column(text) if text in rows.column_names else pa.nulls(n, pa.string())
    return pa.table(columns, schema=DROPPED_SCHEMA)


def dropped_file(output: Path, dropped: Path | None) -> Path:
    """Where a command puts the rows it drops: `dropped`, else `<output's stem>.dropped.parquet` beside the
    output — never the output itself."""
    path = dropped or output.with_name(f"{output.stem}.dropped.parquet")
    if path.resolve() == output.resolve():
        raise KoqualityError(f"--dropped {path}: the same file as --output; give the dropped rows a file of their own")
    return path


class Ledger:
    """The rows a run dropped, in the order its stages dropped them, against the number of rows it read."""

    def __init__(self, read: int, dropped: pa.Table | None = None):
        self.read = read
        self._parts: list[pa.Table] = [DROPPED_SCHEMA.empty_table()]
        if dropped is not None:
            self.add(dropped)

    def drop(self, rows: pa.Table, reason: str, details: str | Sequence[str | None]) -> int:
        """Record `rows` as dropped by a stage; returns how many."""
        if rows.num_rows:
            self._parts.append(dropped_rows(rows, reason, details))
        return rows.num_rows

    def add(self, dropped: pa.Table) -> None:
        """Rows already in the ledger's schema (ingest's, with their file and location)."""
        if not dropped.schema.equals(DROPPED_SCHEMA):
            raise ValueError(f"dropped rows must have the ledger's schema, not {dropped.schema}")
        if dropped.num_rows:
            self._parts.append(dropped)

    @property
    def table(self) -> pa.Table:
        if len(self._parts) > 1:
            self._parts = [pa.concat_tables(self._parts)]
        return self._parts[0]

    @property
    def count(self) -> int:
        return sum(p.num_rows for p in self._parts)

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(self.table.column("reason").to_pylist()))

    def rows(self, corpus: int) -> dict[str, int]:
        """The manifest's `rows`, checked: a row neither in the corpus nor here is a bug, not a result."""
        if self.read != self.count + corpus:
            raise RuntimeError(f"rows went missing: {self.read:,} read, {self.count:,} dropped, {corpus:,} in the corpus")
        return {"read": self.read, "dropped": self.count, "corpus": corpus}

    def write(self, path: Path) -> None:
        write_table(self.table, path)
