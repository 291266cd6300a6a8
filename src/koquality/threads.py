"""Thread pools of the numerical libraries, pinned where the result must not depend on them.

A multithreaded BLAS (OpenBLAS, MKL) or OpenMP loop splits its sums across its threads, so the last bits of
an SVD or of faiss's distance products change with the core count and with OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS — enough to move rows between clusters (measured in embedding/tfidf.py and clustering.py).
The steps whose bits decide the selection run at one thread.

Every other pool is sized from the CPUs this process may use (`available_cpus`), not from the machine's
core count: on a shared machine a library that starts a thread per core oversubscribes it (`--threads`,
$KOQUALITY_THREADS to choose).
"""

from __future__ import annotations

import math
import os
import sys


def one_thread(user_api: str | None = None):
    """Every loaded BLAS (numpy's, scipy's, faiss's bundled OpenBLAS; MKL) and, with `user_api=None`, OpenMP
    at one thread for the duration of a `with` block: one summation order on every machine."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api=user_api)


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask (taskset, cgroup cpusets), capped by a cgroup v2 CPU
    quota (containers). `os.cpu_count()` counts the machine's cores, which on a shared machine is the
    oversubscription that made faiss 8× slower (issue 11: 311.9 s against 39.9 s with one thread)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def threads() -> int:
    """The worker threads koquality's parallel stages use (Kiwi's workers, torch on CPU): $KOQUALITY_THREADS
    (which `set_threads` writes), else the available CPUs."""
    try:
        return max(1, int(os.environ["KOQUALITY_THREADS"]))
    except (KeyError, ValueError):
        return available_cpus()


def set_threads(count: int | None) -> None:
    """Size every pool from `count` (None: the available CPUs) — Kiwi, torch, BLAS and faiss's OpenMP —
    so that no library starts one thread per core of a machine it shares."""
    n = max(1, int(count)) if count is not None else threads()
    os.environ["KOQUALITY_THREADS"] = str(n)  # child processes (torchrun) inherit it
    for name in POOL_VARIABLES:  # libraries loaded from now on read these; a user's own setting wins
        if count is not None or name not in os.environ:
            os.environ[name] = str(n)
    if "numpy" in sys.modules:  # runtimes already loaded
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
