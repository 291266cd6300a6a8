"""Claiming a run directory: only koquality's own, one process at a time, cleaned of what a killed run left.

- A run writes many files (corpus.parquet, model/, report.html, …); into a folder that holds someone else's
  files it would overwrite them, so a non-empty directory that is not a koquality run is refused.
- Two runs in one directory would delete each other's temporaries and both compute everything: a run holds
  an exclusive lock on `.koquality.lock` (flock, so the kernel releases it when the process dies, however it
  dies; the file keeps the holder's pid for the message). A second run is refused in one line; a lock left
  by a dead process is simply taken over.
- A run killed by SIGKILL leaves its temporaries (`.NAME.XXXXXXXX.tmp`); the next run removes them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Iterator

from .errors import KoqualityError
from .tables import TEMPORARY

log = logging.getLogger("koquality")
LOCK = ".koquality.lock"
# Files that only a koquality run directory holds (older versions wrote no lock file).
SIGNS = (LOCK, "recipe.yaml", "manifest.json")


def check_is_run_dir(run_dir: Path) -> None:
    """Refuse a path that is a file, or a non-empty directory with none of a run directory's files."""
    if run_dir.exists() and not run_dir.is_dir():
        raise KoqualityError(f"{run_dir}: exists and is not a directory (a run directory is a folder; choose another --output)")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not any((run_dir / name).exists() for name in SIGNS):
        shown = ", ".join(sorted(p.name for p in run_dir.iterdir())[:3])
        raise KoqualityError(f"{run_dir}: not empty and not a koquality run directory (holds {shown}…); koquality "
                             "never writes into folders it did not create: choose a new or empty --output")


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock for the duration of the block."""
    path = run_dir / LOCK
    if path.is_symlink():
        raise KoqualityError(f"{path}: is a symbolic link; remove it (koquality keeps its lock inside the run directory)")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = _holder(fd)
            raise KoqualityError(f"{run_dir}: another koquality is running in it ({holder}); wait for it to finish "
                                 "or use another --output") from None
        previous = _holder(fd)
        if previous:
            log.info("took over the lock of %s, which no longer runs", previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, marking the directory as koquality's


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}" if info else ""
    except (ValueError, KeyError, TypeError):
        return "pid unknown"


def remove_temporaries(run_dir: Path) -> int:
    """Remove the temporaries an interrupted run left anywhere in `run_dir`; returns how many. Only names
    koquality gives its temporaries are touched (see tables.TEMPORARY)."""
    removed = 0
    for parent, dirs, files in os.walk(run_dir):
        for name in [*files, *dirs]:
            if TEMPORARY.fullmatch(name):
                path = Path(parent) / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                    dirs.remove(name)
                else:
                    path.unlink()
                removed += 1
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", removed)
    return removed


@contextlib.contextmanager
def claimed(run_dir: Path) -> Iterator[None]:
    """Check, create and lock `run_dir` for one run or sweep."""
    check_is_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with locked(run_dir):
        yield
