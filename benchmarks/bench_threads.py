"""Clustering on a machine that is not yours: k-means with faiss/BLAS at the machine's core count (the old
default), at one thread, and as koquality runs it now (pools sized from the CPUs this process may use; the
k-means itself pinned to one thread for determinism) — quiet, and with LOAD busy processes beside it. Then
the whole cluster stage (L=5 length groups) as a run does it: groups one after another (`--threads 1`) and
side by side, one single-threaded k-means per available CPU (the default).

    python benchmarks/bench_threads.py [--rows 28000] [--k 100] [--load 0,4] [--repeat 2]

Vectors: TF-IDF/SVD of the four shared instruction files when ../shared/data is present, else clustered
random vectors of the same shape. Prints seconds per setting and the ratio to the quiet time.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "instructions"


def vectors(rows: int, dims: int = 256) -> tuple[np.ndarray, np.ndarray, str]:
    """Vectors, the texts' lengths (for length groups) and what they are."""
    if SHARED.is_dir():
        from koquality.embedding.tfidf import TfidfEncoder
        from koquality.ingest import SourceSpec, ingest

        maps = {"kor_mwp_train.jsonl": {"output": "reason+answer"}, "skku_every.jsonl": {"instruction": "input", "output": "label"}}
        corpus = ingest([SourceSpec(str(p), map=maps.get(p.name)) for p in sorted(SHARED.iterdir())]).corpus
        texts = corpus.column("instruction").to_pylist()[:rows]
        lengths = np.array([len(t) for t in texts])
        return TfidfEncoder(dims=dims, seed=42).encode(texts), lengths, f"TF-IDF/SVD of {len(texts):,} shared rows"
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(200, dims)).astype(np.float32)
    x = centres[rng.integers(0, 200, rows)] + 0.3 * rng.normal(size=(rows, dims)).astype(np.float32)
    lengths = rng.integers(5, 300, rows)
    return x / np.linalg.norm(x, axis=1, keepdims=True), lengths, f"{rows:,} clustered random vectors"


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@contextlib.contextmanager
def load(processes: int, seconds: float = 600):
    workers = [multiprocessing.Process(target=busy, args=(seconds,), daemon=True) for _ in range(processes)]
    for w in workers:
        w.start()
    try:
        yield
    finally:
        for w in workers:
            w.terminate()


def timed(x: np.ndarray, k: int, setting: str) -> float:
    import faiss

    from koquality import clustering

    pinned = clustering.one_thread
    if setting == "cores":  # the old default: every pool at the machine's core count, k-means not pinned
        clustering.one_thread = contextlib.nullcontext
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(limits=os.cpu_count())
        faiss.omp_set_num_threads(os.cpu_count())
    else:
        limits = None
    try:
        start = time.perf_counter()
        clustering.kmeans(x, k, seed=42, n_init=10)
        return time.perf_counter() - start
    finally:
        clustering.one_thread = pinned
        if limits is not None:
            limits.restore_original_limits()


def timed_stage(x: np.ndarray, lengths: np.ndarray, k: int, workers: int) -> float:
    import pyarrow as pa

    from koquality import clustering
    from koquality.threads import set_threads

    set_threads(workers)
    start = time.perf_counter()
    clustering.cluster(pa.table({"len": lengths}), x, 5, k, seed=42)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=28_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--load", default="0,4")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from koquality.threads import available_cpus

    x, lengths, what = vectors(args.rows)
    print(f"{what}, K={args.k}, n_init=10; machine cores {os.cpu_count()}, available to this process {available_cpus()}")
    quiet = None
    for n_load in [int(v) for v in args.load.split(",")]:
        with load(n_load):
            time.sleep(1 if n_load else 0)
            for setting in ("cores", "koquality"):
                best = min(timed(x, args.k, setting) for _ in range(args.repeat))
                if n_load == 0 and setting == "koquality":
                    quiet = best
                ratio = f"{best / quiet:.1f}× koquality's quiet time" if quiet else ""
                print(f"load {n_load}: {setting:<10} {best:7.2f} s  {ratio}  (load average {os.getloadavg()[0]:.1f})")
    print(f"cluster stage, L=5, K={args.k}: length groups one after another (1) and side by side ({available_cpus()})")
    quiet = {}
    for n_load in [int(v) for v in args.load.split(",")]:
        with load(n_load):
            time.sleep(1 if n_load else 0)
            for workers in (1, available_cpus()):
                best = min(timed_stage(x, lengths, args.k, workers) for _ in range(args.repeat))
                quiet.setdefault(workers, best)
                print(f"load {n_load}: {workers} worker(s) {best:7.2f} s  {best / quiet[workers]:.1f}× its quiet time, "
                      f"{best / quiet[1]:.1f}× one worker's  (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
