"""Reading and writing row tables, chosen by file extension, always atomically.

Every stage exchanges `pyarrow.Table`s; on disk they are `.parquet` (the run directory's own format),
`.jsonl`, `.json` (an array of objects) or `.csv`. A write goes to a temporary file beside the target and is
renamed into place, so an interrupted run never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import decimal
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import KoqualityError

TABLE_FORMATS = (".jsonl", ".json", ".parquet", ".csv")


def table_format(path: str | os.PathLike, allowed: tuple[str, ...] = TABLE_FORMATS) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in allowed:
        shown = suffix or "no extension"
        raise KoqualityError(f"{path}: unknown format '{shown}' (expected one of: {', '.join(allowed)})")
    return suffix


def as_table(data: Any) -> pa.Table:
    """Accept what users have in hand: an Arrow table, a `datasets.Dataset`, a list of dicts or a dict of lists."""
    if isinstance(data, pa.Table):
        return data
    if hasattr(data, "data") and hasattr(data.data, "table"):  # datasets.Dataset without importing datasets
        table = data.data.table
        indices = getattr(data, "_indices", None)
        return table.take(indices.column(0)) if indices is not None else table
    if isinstance(data, list):
        return pa.Table.from_pylist(data)
    if isinstance(data, dict):
        return pa.table(data)
    raise TypeError(f"expected a pyarrow.Table, datasets.Dataset, list of dicts or dict of lists, got {type(data).__name__}")


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read a table written by koquality (or any tidy file of the same shape)."""
    path = Path(path)
    fmt = table_format(path)
    if not path.exists():
        raise KoqualityError(f"{path}: no such file")
    try:
        if fmt == ".parquet":
            return pq.read_table(path)
        if fmt == ".csv":
            import pyarrow.csv as pacsv

            return pacsv.read_csv(path)
        with open(path, encoding="utf-8") as f:
            if fmt == ".json":
                rows = json.load(f)
            else:
                rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError, pa.ArrowException) as e:
        raise KoqualityError(f"{path}: cannot be read as {fmt[1:]} ({e})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise KoqualityError(f"{path}: expected a list of JSON objects")
    # every key of every row (from_pylist would keep only the first row's, losing a later row's `input`)
    keys = dict.fromkeys(key for row in rows for key in row)
    return pa.table({key: [row.get(key) for row in rows] for key in keys})


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _default_mode()  # what open() would give; mkstemp's private 0600 would otherwise survive the rename


# Every temporary koquality makes is named `.{target}.{8 random characters}.tmp` (tempfile's mkstemp/mkdtemp
# with these prefix/suffix), so that one killed by SIGKILL can be recognised, and removed, at the next start.
TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def temporary(path: Path, directory: bool = False) -> Path:
    """A new temporary file (or directory) beside `path`, named as TEMPORARY."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A directory at `path` is never replaced: that is someone's folder, not a file koquality wrote."""
    path = Path(path)
    if path.is_dir():
        raise KoqualityError(f"{path}: is a directory (expected a file name, e.g. {path.name}.jsonl inside it)")
    tmp_path = temporary(path)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _json_value(value: Any) -> Any:
    """JSON has no NaN or infinity (Parquet keeps them): they are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    """Values a source may carry in its own columns that JSON has no type for."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime.date, datetime.time, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _flat_for_csv(table: pa.Table) -> pa.Table:
    """CSV holds scalars: nested columns (a chat's `messages`, a source's lists) become JSON text and binary
    columns base64, instead of the CSV writer's `Unsupported Type`."""
    for i, f in enumerate(table.schema):
        t = f.type
        if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            values = [None if v is None else (to_json(v) if pa.types.is_nested(t) else _json_default(v))
                      for v in table.column(i).to_pylist()]
            table = table.set_column(i, f.name, pa.array(values, type=pa.string()))
    return table


def write_table(table: pa.Table, path: str | os.PathLike) -> Path:
    path = Path(path)
    fmt = table_format(path)
    with atomic_path(path) as tmp:
        if fmt == ".parquet":
            pq.write_table(table, tmp)
        elif fmt == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(_flat_for_csv(table), tmp)
        else:
            rows = table.to_pylist()
            with open(tmp, "w", encoding="utf-8") as f:
                if fmt == ".json":
                    json.dump([{k: _json_value(v) for k, v in r.items()} for r in rows], f, ensure_ascii=False, indent=1,
                              default=_json_default)
                else:
                    for r in rows:
                        f.write(to_json({k: _json_value(v) for k, v in r.items()}))
                        f.write("\n")
    return path


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    return Path(path)


def save_vectors(vectors: np.ndarray, path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix != ".npy":
        raise KoqualityError(f"{path}: vectors are written as .npy")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    return path


def load_vectors(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise KoqualityError(f"{path}: no such file")
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise KoqualityError(f"{path}: not a .npy array ({e})") from None
    if vectors.ndim != 2:
        raise KoqualityError(f"{path}: expected a 2-D array of vectors, got shape {vectors.shape}")
    check_finite(vectors, str(path))
    return vectors


def check_finite(vectors: np.ndarray, what: str, first_row: int = 0) -> None:
    """k-means and similarity are meaningless on NaN/inf (faiss returns garbage, sklearn raises deep inside)."""
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise KoqualityError(f"{what}: {len(rows):,} vector(s) hold NaN or infinity (first: row {first_row + int(rows[0])}); "
                             "re-create them (a model in float16 can overflow: use --dtype float32 or bfloat16)")


def file_digest(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()[:32]


def require_columns(table: pa.Table, columns: tuple[str, ...] | list[str], what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise KoqualityError(
            f"{what}: column(s) {', '.join(missing)} missing (found: {', '.join(table.column_names)})"
        )


def empty_columns(table: pa.Table, names: tuple[str, ...] | list[str]) -> pa.Table:
    """A table with no rows has every column, vacuously: an empty selection read back from a 0-byte JSONL
    (which cannot carry a schema) gets the text columns it lacks, so the stages after it run as usual."""
    if table.num_rows:
        return table
    for name in names:
        if name not in table.column_names:
            table = table.append_column(name, pa.array([], pa.string()))
    return table


def with_optional_input(table: pa.Table, columns: list[str]) -> pa.Table:
    """`input` is optional in every source: a stage that reads it gets nulls where a table has none."""
    if "input" in columns and "input" not in table.column_names:
        return table.append_column("input", pa.nulls(table.num_rows, pa.string()))
    return table


def set_column(table: pa.Table, name: str, values: Any) -> pa.Table:
    """Add `name`, replacing an existing column of that name in place (stages may be re-run on their output)."""
    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, array)
    return table.append_column(name, array)


class VectorWriter:
    """Write a (rows × dims) .npy batch by batch, atomically: the matrix never has to be in memory whole."""

    def __init__(self, path: str | os.PathLike, rows: int, dims: int, dtype=np.float32):
        self.path, self.rows, self.dims, self.dtype = Path(path), rows, dims, np.dtype(dtype)
        self.written = 0

    def __enter__(self) -> "VectorWriter":
        self._atomic = atomic_path(self.path)
        self._file = open(self._atomic.__enter__(), "wb")
        np.lib.format.write_array_header_1_0(self._file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                          "fortran_order": False, "shape": (self.rows, self.dims)})
        self._offset = self._file.tell()
        return self

    def write(self, batch: np.ndarray) -> None:
        """The next rows, in order."""
        self._file.write(np.ascontiguousarray(batch, dtype=self.dtype).tobytes())
        self.written += len(batch)

    def write_at(self, positions: np.ndarray, batch: np.ndarray) -> None:
        """Rows that arrive out of order (cached shards), each at its own position; every position once.
        Not to be mixed with `write`."""
        data = np.ascontiguousarray(batch, dtype=self.dtype)
        row_bytes = self.dims * self.dtype.itemsize
        order = np.argsort(positions, kind="stable")
        for position, row in zip(np.asarray(positions)[order], data[order]):
            self._file.seek(self._offset + int(position) * row_bytes)
            self._file.write(row.tobytes())
        self.written += len(data)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if exc_type is None and self.written != self.rows:  # never rename a short file into place
            exc = RuntimeError(f"{self.path}: wrote {self.written} of {self.rows} rows")
            self._atomic.__exit__(RuntimeError, exc, None)
            raise exc
        self._atomic.__exit__(exc_type, exc, tb)


class VectorFile:
    """A (rows × dims) .npy on disk whose rows are read on demand with plain reads, not a memory map, so
    the file's pages are never counted as this process's memory (k-means reads one length group at a time)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise KoqualityError(f"{self.path}: no such file")
        with open(self.path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
            except ValueError as e:
                raise KoqualityError(f"{self.path}: not a .npy array ({e})") from None
            self.offset = f.tell()
        if len(shape) != 2 or fortran:
            raise KoqualityError(f"{self.path}: expected a 2-D array of vectors, got shape {shape}")
        expected = self.offset + shape[0] * shape[1] * dtype.itemsize
        if self.path.stat().st_size != expected:
            raise KoqualityError(f"{self.path}: {self.path.stat().st_size:,} bytes where a {shape[0]:,} × {shape[1]} "
                                 f"{dtype} array needs {expected:,} (truncated or damaged)")
        self.shape, self.dtype = shape, dtype

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, indices: np.ndarray | None = None, chunk_rows: int = 65536) -> np.ndarray:
        """The rows at `indices` (all rows when None), in the order given."""
        indices = np.arange(self.shape[0]) if indices is None else np.asarray(indices)
        out = np.empty((len(indices), self.shape[1]), dtype=self.dtype)
        order = np.argsort(indices, kind="stable")
        wanted = indices[order]
        row_bytes = self.shape[1] * self.dtype.itemsize
        with open(self.path, "rb") as f:
            for start in range(0, self.shape[0], chunk_rows):
                lo, hi = np.searchsorted(wanted, [start, start + chunk_rows])
                if lo == hi:
                    continue
                f.seek(self.offset + start * row_bytes)
                count = min(chunk_rows, self.shape[0] - start)
                block = np.frombuffer(f.read(count * row_bytes), dtype=self.dtype).reshape(count, self.shape[1])
                out[order[lo:hi]] = block[wanted[lo:hi] - start]
        return out


class VectorRows:
    """Some rows of a vectors file or array (`positions`), seen as a vectors object of their own: row i is
    row `positions[i]` of `vectors` (the rows semantic dedup kept, for sampling by embeddings)."""

    def __init__(self, vectors, positions: np.ndarray):
        self.vectors, self.positions = vectors, np.asarray(positions, dtype=np.int64)
        self.shape = (len(self.positions), vectors.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, indices: np.ndarray | None = None) -> np.ndarray:
        wanted = self.positions if indices is None else self.positions[np.asarray(indices)]
        return self.vectors.rows(wanted) if hasattr(self.vectors, "rows") else np.asarray(self.vectors[wanted])
