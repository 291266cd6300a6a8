"""The local engine against the Ray engine on one machine: the score stage (Kiwi, offline) over real rows.

Rows: the four shared instruction files replicated with edits to --rows (as bench_offline.py). Each engine
scores the same rows into a fresh shard cache through `pipeline.map_table`, the code path of `koquality run`
and `koquality score`. Ray's start-up (`ray.init`) is timed separately, then the stage; the driver's peak RSS
is printed after each. A plain per-text loop (one Kiwi call per text, the paper's way) over a slice gives the
reference rate. The point of Ray is more machines, not this one; what this measures is its per-shard
overhead on one.

    python benchmarks/bench_engine.py [--rows 100000] [--shard-rows 8192] [--actors N]
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
    parser.add_argument("--shard-rows", type=int, default=8192)
    parser.add_argument("--actors", type=int, default=None)
    args = parser.parse_args()
    from koquality.engines.ray import connect
    from koquality.pipeline import map_table
    from koquality.recipe import EngineConfig
    from koquality.scoring import make_scorer
    from koquality.threads import available_cpus

    rows = real_rows()
    texts = [edit(rows[i % len(rows)]["instruction"], i // len(rows)) for i in range(args.rows)]
    table = pa.table({"instruction": texts})
    print(f"{args.rows:,} rows, kiwi scorer, shards of {args.shard_rows:,}; {available_cpus()} CPUs available")
    work = Path(tempfile.mkdtemp(prefix="koquality-bench-engine-"))

    start = time.perf_counter()
    map_table(table, "score", "kiwi", {}, "instruction", work / "local", EngineConfig(), shard_rows=args.shard_rows)
    local = time.perf_counter() - start
    print(f"local engine: {local:7.2f} s  {args.rows / local:,.0f} rows/s  driver peak RSS {rss_gb():.2f} GB")

    engine = EngineConfig(name="ray", actors=args.actors)
    start = time.perf_counter()
    ray = connect(engine)
    startup = time.perf_counter() - start
    start = time.perf_counter()
    map_table(table, "score", "kiwi", {}, "instruction", work / "ray", engine, shard_rows=args.shard_rows)
    remote = time.perf_counter() - start
    print(f"ray start-up: {startup:7.2f} s  (cluster: {ray.cluster_resources()})")
    print(f"ray engine:   {remote:7.2f} s  {args.rows / remote:,.0f} rows/s  driver peak RSS {rss_gb():.2f} GB  "
          f"→ {remote / local:.2f}× the local wall time after start-up (target ≤ 1.5×)")

    scorer, sample = make_scorer("kiwi"), texts[:2000]
    start = time.perf_counter()
    for text in sample:
        scorer.score([text])
    loop = time.perf_counter() - start
    print(f"per-text loop (paper-style, 2,000 rows): {len(sample) / loop:,.0f} rows/s; "
          f"local engine {args.rows / local / (len(sample) / loop):.1f}×, ray {args.rows / remote / (len(sample) / loop):.1f}×")


if __name__ == "__main__":
    main()
