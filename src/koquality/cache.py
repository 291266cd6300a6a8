"""Cache files a run can trust: completion markers with checksums, and shard names that cannot collide.

A cache file (a score shard, a vector shard, a whole vector matrix) is written atomically and then sealed
with a marker beside it, `<name>.done`, holding its size and checksum. A file is used only while its marker
vouches for it: one whose write was killed before the seal, one truncated or damaged on disk since, or one
left by a koquality that wrote no markers is removed (it is koquality's own: it lives in a run directory's
cache folders under a name koquality gave it) and recomputed, with a log line that says so.

Shards are named by a digest of the ids they hold, not by counting files: after a shard is lost, the rows it
held are recomputed into a shard of their own and no existing shard is ever overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from .tables import atomic_path, file_digest, write_json

log = logging.getLogger("koquality")
MARKER = ".done"


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


def valid_shards(directory: Path, suffix: str) -> list[Path]:
    """The shards of `directory` that are intact, in name order; damaged ones and stray markers are removed."""
    shards = [p for p in sorted(directory.glob(f"shard-*{suffix}")) if trusted(p)]
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
