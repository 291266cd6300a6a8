"""Cache files a run can trust: completion markers with checksums, and shard names that cannot collide.

A cache file (a score shard, a vector shard, a whole vector matrix) is written atomically and then sealed
with a marker beside it, `<name>.done`, holding its size and checksum. A file is used only while its marker
vouches for it: one whose write was killed before the seal, one truncated or damaged on disk since, or one
left by a koquality that wrote no markers is removed (it is koquality's own: it lives in a run directory's
cache folders under a name koquality gave it) and recomputed, with a log line that says so.

Shards are named by a digest of the ids they hold, not by counting files: after a shard is lost, the rows it
held are recomputed into a shard of their own and no existing shard is ever overwritten.

`ShardCache` is the one cache of the map stages (score, embed; see backends.py): id-keyed Parquet shards of
a backend's output columns (a vector is a fixed-size list column) in a folder named by the backend's cache
key. `koquality run`, `sweep`, `score` and `embed` and both engines (engines/) read and write it, so each of
them resumes after a kill with the shards it finished, and two engines filling one folder cannot collide.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .rundir import remove_temporaries
from .tables import VectorWriter, atomic_path, file_digest, write_json

log = logging.getLogger("koquality")
MARKER = ".done"


def fingerprint(*parts: Any) -> str:
    """The key of a cache entry — score and vector shards, a trained model, an evaluation: what produced it,
    as canonical JSON, hashed short."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def library_version(module: str | None) -> str | None:
    """The installed version of the library a backend runs on, read without importing it (part of its key)."""
    if module is None:
        return None
    try:
        return metadata.version(module)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str]:
    """What a run's results depend on, for its manifest: the core libraries, and the optional ones it loaded."""
    import faiss  # the core's own heavy imports: loaded by the stages anyway, not worth loading for a key
    import kiwipiepy
    import sklearn

    from . import __version__

    found = {"koquality": __version__, "python": platform.python_version(), "numpy": np.__version__,
             "pyarrow": pa.__version__, "faiss": faiss.__version__, "kiwipiepy": kiwipiepy.__version__,
             "scikit-learn": sklearn.__version__}
    for name in ("torch", "transformers", "sentence_transformers", "accelerate", "peft", "deepspeed", "lm_eval", "ray"):
        if name in sys.modules:
            found[name] = getattr(sys.modules[name], "__version__", "unknown")
    return found


def marker(path: Path) -> Path:
    return path.with_name(path.name + MARKER)


def seal(path: Path, **info: Any) -> None:
    """Record that `path` is complete: its size and checksum (and whatever `info` adds) in its marker."""
    write_json({"bytes": path.stat().st_size, "blake2b": file_digest(path), **info}, marker(path))


def damage(path: Path) -> str | None:
    """Why `path` cannot be trusted, or None when its marker vouches for it."""
    if not path.exists():
        return "missing"
    try:
        info = json.loads(marker(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no completion marker (its write never finished)"
    except (OSError, ValueError):
        return "its completion marker is damaged"
    size = path.stat().st_size
    if size != info.get("bytes"):
        return f"{size:,} bytes where {info.get('bytes'):,} were written (truncated or damaged)"
    if file_digest(path) != info.get("blake2b"):
        return "its checksum does not match what was written (damaged)"
    return None


def trusted(path: Path) -> bool:
    """True when `path` is intact; otherwise it (and its marker) are removed so that it is recomputed."""
    why = damage(path)
    if why is None:
        return True
    if path.exists():
        log.warning("%s: %s; recomputing it", path, why)
        path.unlink()
    marker(path).unlink(missing_ok=True)
    return False


def shard_name(ids: Sequence[str], suffix: str) -> str:
    digest = hashlib.blake2b("\x1f".join(ids).encode("utf-8"), digest_size=10).hexdigest()
    return f"shard-{digest}{suffix}"


def valid_shards(directory: Path, suffix: str, vouched: set[Path] | None = None) -> list[Path]:
    """The shards of `directory` that are intact, in name order; damaged ones and stray markers are removed.
    Shards in `vouched` were checked already and are not read again; the ones checked now are added to it."""
    vouched = set() if vouched is None else vouched
    shards = [p for p in sorted(directory.glob(f"shard-*{suffix}")) if p in vouched or trusted(p)]
    vouched.update(shards)
    for stray in directory.glob(f"shard-*{suffix}{MARKER}"):
        if not stray.with_name(stray.name[:-len(MARKER)]).exists():
            stray.unlink()
    return shards


def write_shard(directory: Path, ids: Sequence[str], suffix: str, write: Callable[[Path], None]) -> Path:
    """Write a shard holding `ids` with `write(temporary_path)`, atomically, then seal it."""
    path = directory / shard_name(ids, suffix)
    with atomic_path(path) as tmp:
        write(tmp)
    seal(path, rows=len(ids))
    return path


class ShardCache:
    """The shards of one map stage's output: `id` plus the columns of `schema`, under `directory`."""

    SUFFIX = ".parquet"

    def __init__(self, directory: Path, schema: pa.Schema | None = None):
        """`schema`: id first, then the output columns; None where it is known only once computed (a vector's
        dimensions): then it is the first shard's."""
        self.directory = Path(directory)
        self._schema = schema
        # shards whose checksum this cache has checked (or written): a stage lists its shards several times
        # (what is missing, then the values), and re-hashing gigabytes of vectors each time would double its I/O
        self._vouched: set[Path] = set()

    @property
    def schema(self) -> pa.Schema:
        if self._schema is None:
            shards = self.shards()
            if not shards:  # nothing computed yet, here or by another process (a Ray actor): not remembered
                return pa.schema([("id", pa.string())])
            self._schema = pq.read_schema(shards[0])
        return self._schema

    def shards(self) -> list[Path]:
        return valid_shards(self.directory, self.SUFFIX, self._vouched) if self.directory.is_dir() else []

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Every intact shard, concatenated (an id in two shards has the same values in both)."""
        schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        return pa.concat_tables([schema.empty_table(), *(pq.read_table(p, columns=schema.names, schema=schema)
                                                         for p in self.shards())])

    def missing(self, ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """True where no intact shard holds the id."""
        return pc.invert(pc.is_in(ids, value_set=self.read(["id"]).column("id")))

    def write(self, table: pa.Table) -> Path:
        """One new shard of `table` (its ids and output columns), atomically, sealed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._schema is None:
            self._schema = table.schema
        table = table.select(self.schema.names).cast(self.schema)
        path = write_shard(self.directory, table.column("id").to_pylist(), self.SUFFIX,
                           lambda tmp: pq.write_table(table, tmp))
        self._vouched.add(path)
        return path

    def remove(self) -> None:
        """Delete this cache's shards, their markers and koquality's temporaries, then the folder if that
        left it empty: only what koquality wrote goes, never a file someone else put there."""
        if not self.directory.is_dir():
            return
        for path in self.directory.glob(f"shard-*{self.SUFFIX}*"):  # shards and their .done markers
            path.unlink()
        remove_temporaries(self.directory)
        remove_if_empty(self.directory)

    def take(self, ids: pa.Array | pa.ChunkedArray) -> pa.Table:
        """The cached rows of `ids`, in that order (nulls where an id is not cached)."""
        cached = self.read()
        return cached.take(pc.index_in(ids, value_set=cached.column("id")))

    def write_npy(self, ids: Sequence[str], path: Path, column: str = "vector") -> None:
        """The vectors of `ids` into the .npy `path` (row i ↔ ids[i]; an id may repeat), read shard by shard:
        they are never all in memory. Shards may hold rows of an earlier, larger corpus: those are skipped."""
        positions: dict[str, list[int]] = {}
        for i, rid in enumerate(ids):
            positions.setdefault(rid, []).append(i)
        dims = self.schema.field(column).type.list_size
        with VectorWriter(path, len(ids), dims) as writer:
            for shard in self.shards():
                table = pq.read_table(shard, columns=["id", column])
                rows = [(j, at) for j, rid in enumerate(table.column("id").to_pylist()) for at in positions.pop(rid, ())]
                if rows:
                    keep, at = zip(*rows)
                    flat = table.column(column).combine_chunks().flatten().to_numpy()
                    writer.write_at(np.array(at), flat.reshape(-1, dims)[list(keep)])
        if positions:
            raise RuntimeError(f"{self.directory}: {len(positions)} of the rows have no vector in any shard")


def remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
