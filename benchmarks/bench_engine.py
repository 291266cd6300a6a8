"""The local engine against the Ray engine on one machine: the score stage (Kiwi, offline) over real rows.

Rows: the four shared instruction files replicated with edits to --rows (as bench_offline.py). Each engine
scores the same rows into a fresh shard cache through `stage_commands.map_table`, the code path of `koquality run`
and `koquality score`. Ray's start-up (`ray.init`) is timed separately, then the stage; the driver's peak RSS
is printed after each. A plain per-text loop (one Kiwi call per text, the paper's way) over a slice gives the
reference rate. The point of Ray is more machines, not this one; what this measures is its per-shard
overhead on one.

`--driver-rows N` instead times what stays at the driver whatever the engine, on N synthetic rows of 256-dim
vectors (the offline encoder's width) in L=5 length groups, K=100: fitting each group's centroids, assigning
every row (which the Ray engine spreads over tasks), and sampling — the figures behind the scaling model in
RESULTS.md.

    python benchmarks/bench_engine.py [--rows 100000] [--shard-rows 8192,2048] [--actors N]
    python benchmarks/bench_engine.py --driver-rows 2000000
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_offline import edit, real_rows  # noqa: E402


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--shard-rows", default="8192", help="comma-separated: one Ray run per shard size")
    parser.add_argument("--actors", type=int, default=None)
    parser.add_argument("--driver-rows", type=int, default=0)
    parser.add_argument("--fit-rows", type=int, default=0, help="--driver-rows: fit each group on this many rows (cluster.fit_rows)")
    args = parser.parse_args()
    if args.driver_rows:
        return driver_stages(args.driver_rows, fit_rows=args.fit_rows or None)
    shard_sizes = [int(s) for s in args.shard_rows.split(",")]
    from koquality.engines.ray import connect
    from koquality.stage_commands import map_table
    from koquality.recipe import EngineConfig
    from koquality.scoring import make_scorer
    from koquality.threads import available_cpus

    rows = real_rows()
    texts = [edit(rows[i % len(rows)]["instruction"], i // len(rows)) for i in range(args.rows)]
    table = pa.table({"instruction": texts})
    print(f"{args.rows:,} rows, kiwi scorer; {available_cpus()} CPUs available")
    work = Path(tempfile.mkdtemp(prefix="koquality-bench-engine-"))

    start = time.perf_counter()
    map_table(table, "score", "kiwi", {}, "instruction", work / "local", EngineConfig(), shard_rows=shard_sizes[0])
    local = time.perf_counter() - start
    print(f"local engine (shards of {shard_sizes[0]:,}): {local:7.2f} s  {args.rows / local:,.0f} rows/s  "
          f"driver peak RSS {rss_gb():.2f} GB")

    engine = EngineConfig(name="ray", actors=args.actors)
    start = time.perf_counter()
    ray = connect(engine)
    print(f"ray start-up: {time.perf_counter() - start:7.2f} s  (cluster: {ray.cluster_resources()})")
    for shard_rows in shard_sizes:
        start = time.perf_counter()
        map_table(table, "score", "kiwi", {}, "instruction", work / f"ray-{shard_rows}", engine, shard_rows=shard_rows)
        remote = time.perf_counter() - start
        print(f"ray engine, shards of {shard_rows:,}: {remote:7.2f} s  {args.rows / remote:,.0f} rows/s  driver peak RSS "
              f"{rss_gb():.2f} GB → {remote / local:.2f}× the local wall time after start-up (target ≤ 1.5×)")

    scorer, sample = make_scorer("kiwi"), texts[:2000]
    start = time.perf_counter()
    for text in sample:
        scorer.score([text])
    loop = time.perf_counter() - start
    print(f"per-text loop (paper-style, 2,000 rows): {len(sample) / loop:,.0f} rows/s; "
          f"local engine {args.rows / local / (len(sample) / loop):.1f}×")


def driver_stages(n: int, dims: int = 256, len_groups: int = 5, k: int = 100, fit_rows: int | None = None) -> None:
    """The stages the driver runs at `n` rows: k-means fit per length group, the assignment, sampling."""
    import numpy as np

    from koquality.clustering import assign, assign_len_groups, fit_centroids, fit_sample_rows
    from koquality.sampling import sample
    from koquality.threads import one_thread

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, dims)).astype(np.float32)
    vectors = np.empty((n, dims), np.float32)
    for start in range(0, n, 200_000):  # clustered vectors, written in slices to bound the temporaries
        m = min(200_000, n - start)
        vectors[start:start + m] = centres[rng.integers(0, len(centres), m)] + 0.5 * rng.normal(size=(m, dims)).astype(np.float32)
    lengths = rng.lognormal(3.5, 0.9, n).astype(np.int64) + 1
    groups, _ = assign_len_groups(lengths, len_groups)
    print(f"driver stages at {n:,} rows × {dims} dims, L={len_groups}, K={k}; vectors {vectors.nbytes / 1e9:.2f} GB; "
          f"fit on {f'{fit_rows:,} sampled rows' if fit_rows else 'whole groups'} per group")
    fit = assign_time = 0.0
    assign_inertia = 0.0
    labels = np.empty(n, np.int32)
    for g in range(len_groups):
        rows = np.flatnonzero(groups == g)
        x = vectors[rows]
        start = time.perf_counter()
        fit_on = x if not fit_rows or len(rows) <= fit_rows else x[fit_sample_rows(len(rows), k, g, 10, fit_rows)]
        with one_thread():
            centroids = fit_centroids(fit_on, k, seed=g)
        fit += time.perf_counter() - start
        start = time.perf_counter()
        found, distances = assign(x, centroids)
        labels[rows] = found
        assign_inertia += distances.sum(dtype=np.float64)
        assign_time += time.perf_counter() - start
        print(f"  group {g}: {len(rows):,} rows  fit {fit:6.1f} s so far, assign {assign_time:6.1f} s so far")
    table = pa.table({"ppl": rng.lognormal(3, 1, n), "len_group": pa.array(groups, pa.int32()),
                      "cluster": pa.array(labels, pa.int32()), "instruction": [f"t{i}" for i in range(n)]})
    start = time.perf_counter()
    chosen = sample(table, "ppl", 0.01, seed=0)
    sampling = time.perf_counter() - start
    print(f"k-means fit (driver, one thread per group, groups one after another): {fit:.1f} s; inertia "
          f"{float(assign_inertia):.6g}")
    print(f"assignment of every row (one thread; spread over Ray tasks by the Ray engine): {assign_time:.1f} s "
          f"= {n / assign_time:,.0f} rows/s")
    print(f"sampling (ppl, N=0.01): {sampling:.2f} s, {chosen.num_rows:,} rows; driver peak RSS {rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
