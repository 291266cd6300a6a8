"""Semantic dedup (dedup.py) at 400,000 rows × 256 dims, L=5, K=100: wall time and peak memory.

Two sources of rows, each measured in a child process (its `ru_maxrss` is the dedup's alone, the vectors read
from the .npy through `tables.VectorFile` as `koquality run` does):
- real (default): the offline pipeline's own run on the replicated Korean instructions (bench_offline.py's rows:
  TF-IDF/SVD 256-d vectors, Kiwi perplexity, clusters L=5 K=100). `--run-dir` reuses a run directory that
  bench_offline.py left (`--keep`); without it the run is made first (~4 minutes on 2 cores, not timed).
- `--synthetic`: clustered random vectors, L × K cells of uneven (log-normal) sizes, with near-duplicates
  planted at cosines 0.85 … 1 for `--planted` of the rows; `--max-cell` makes the first cell that large (the
  worst case: exact search in one cell costs its rows squared).

    python benchmarks/bench_dedup.py [--run-dir RUN]          # real vectors
    python benchmarks/bench_dedup.py --synthetic [--rows 400000] [--max-cell 50000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def per_row_loop(x: np.ndarray, order: np.ndarray, threshold: float) -> np.ndarray:
    """The per-sample way (one row at a time, as a SemDeDup notebook loops): each row in keep order against the
    rows kept so far in its cell; True where kept."""
    kept_rows: list[int] = []
    keep_mask = np.zeros(len(x), dtype=bool)
    for i in order:
        if not kept_rows or float(np.max(x[kept_rows] @ x[i])) <= threshold:
            kept_rows.append(i)
            keep_mask[i] = True
    return keep_mask


def compare_with_loop(table, vectors, threshold: float, keep: str, reference_rows: int) -> dict:
    """koquality's dedup against the per-row loop on whole cells holding about `reference_rows` rows."""
    import pyarrow as pa

    from koquality.dedup import keep_order_key, semantic_duplicates

    cells = np.stack([table.column("len_group").to_numpy(), table.column("cluster").to_numpy()], 1)
    _, cell_of = np.unique(cells, axis=0, return_inverse=True)
    rows = np.flatnonzero(cell_of < np.searchsorted(np.cumsum(np.bincount(cell_of)), reference_rows) + 1)
    sub = table.take(pa.array(rows))
    x = np.asarray(vectors.rows(rows), dtype=np.float32)
    start = time.perf_counter()
    fast = semantic_duplicates(sub, x, threshold=threshold, keep=keep).keep_mask
    fast_seconds = time.perf_counter() - start
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    key = keep_order_key(sub, keep)
    start = time.perf_counter()
    slow = np.zeros(len(rows), dtype=bool)
    for c in np.unique(cell_of[rows]):
        members = np.flatnonzero(cell_of[rows] == c)
        order = members if key is None else members[np.argsort(key[members], kind="stable")]
        slow |= per_row_loop(unit, order, threshold)
    slow_seconds = time.perf_counter() - start
    return {"rows": int(len(rows)), "koquality_seconds": fast_seconds, "loop_seconds": slow_seconds,
            "disagree": int((fast != slow).sum()), "removed": int((~fast).sum())}


def measure(run_dir: Path, threshold: float, keep: str, reference_rows: int = 20_000) -> None:
    """The child: dedup one run directory's clustered rows, print one JSON line."""
    import pyarrow.parquet as pq

    from koquality.dedup import semantic_duplicates
    from koquality.tables import VectorFile

    clusters = next((run_dir / "clusters").glob("len*_k*.parquet"))
    table = pq.read_table(clusters, columns=["id", "len_group", "cluster"])
    corpus = pq.read_table(run_dir / "corpus.parquet", columns=["id", "ppl"])
    if not corpus.column("id").equals(table.column("id")):
        raise SystemExit(f"{clusters} and corpus.parquet list other rows")
    table = table.append_column("ppl", corpus.column("ppl"))
    vectors = VectorFile(next((run_dir / "vectors").glob("*.npy")))
    sizes = np.unique(np.stack([table.column("len_group").to_numpy(), table.column("cluster").to_numpy()]), axis=1,
                      return_counts=True)[1].astype(np.float64)
    start = time.perf_counter()
    result = semantic_duplicates(table, vectors, threshold=threshold, keep=keep)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    reference = compare_with_loop(table, vectors, threshold, keep, reference_rows)
    print(json.dumps({"reference": reference, "rows": table.num_rows, "dims": vectors.shape[1], "cells": len(sizes),
                      "largest_cell": int(sizes.max()), "pairs": float((sizes * (sizes - 1) / 2).sum()),
                      "seconds": seconds, "removed": result.removed,
                      "by_threshold": {e["threshold"]: e["removed"] for e in result.by_threshold},
                      "cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_rss_gb": usage.ru_maxrss / 1024**2}))


def synthetic(run_dir: Path, rows: int, dims: int, len_groups: int, k: int, planted: float, max_cell: int | None,
              seed: int = 0) -> None:
    """A run directory's worth of clustered rows: corpus.parquet (id, ppl), clusters/…parquet, vectors/….npy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from koquality.tables import VectorWriter

    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0, 1, len_groups * k)
    if max_cell:
        weights[0] = 0
    rest = rows - (max_cell or 0)
    sizes = np.floor(weights / weights.sum() * rest).astype(np.int64)
    sizes[np.argmax(weights)] += rest - sizes.sum()
    if max_cell:
        sizes[0] = max_cell
    (run_dir / "clusters").mkdir(parents=True)
    (run_dir / "vectors").mkdir()
    len_group = np.repeat(np.arange(len_groups * k) // k, sizes).astype(np.int32)
    cluster = np.repeat(np.arange(len_groups * k) % k, sizes).astype(np.int32)
    ids = pa.array([f"s{i:07d}" for i in range(rows)])
    pq.write_table(pa.table({"id": ids, "len_group": len_group, "cluster": cluster}),
                   run_dir / "clusters" / f"len{len_groups}_k{k}.parquet")
    pq.write_table(pa.table({"id": ids, "ppl": rng.uniform(1, 100, rows)}), run_dir / "corpus.parquet")
    with VectorWriter(run_dir / "vectors" / "synthetic.npy", rows, dims) as writer:
        for size in sizes:  # a cell: its centre plus noise (within-cell cosines ~0.5), then planted copies
            centre = rng.normal(size=dims)
            x = centre / np.linalg.norm(centre) + rng.normal(scale=1 / np.sqrt(dims), size=(size, dims))
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            copies = rng.random(size) < planted
            dst = np.flatnonzero(copies)
            src = rng.integers(0, size, len(dst))
            noise = rng.normal(size=(len(dst), dims))
            noise -= (noise * x[src]).sum(1, keepdims=True) * x[src]
            noise /= np.linalg.norm(noise, axis=1, keepdims=True)
            c = rng.uniform(0.85, 1.0, (len(dst), 1))
            x[dst] = c * x[src] + np.sqrt(1 - c * c) * noise
            writer.write(x.astype(np.float32))


def real_run(run_dir: Path, rows: int) -> None:
    """bench_offline.py's replicated rows through `koquality run` (L=5, K=100), not timed here."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_offline import SHARED, real_rows, replicate

    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared instruction data at {SHARED} (or use --synthetic)")
    source = run_dir.parent / "replicated.jsonl"
    replicate(real_rows(), rows, source)
    recipe = run_dir.parent / "bench.yaml"
    recipe.write_text(json.dumps({
        "name": "bench", "seed": 42, "sources": [{"path": str(source), "source": "replicated"}],
        "cluster": {"len_groups": 5, "k": 100, "n_init": 10}, "sample": {"method": "ppl", "ratio": 0.01},
    }), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "koquality", "run", "--recipe", str(recipe), "--output", str(run_dir),
                    "--force", "--no-report"], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, help="a run directory with corpus.parquet, clusters/, vectors/")
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument("--max-cell", type=int, default=None, help="synthetic: the first cell's rows")
    parser.add_argument("--planted", type=float, default=0.1, help="synthetic: share of rows planted as copies")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--keep", default="lowest_ppl")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.measure:
        return measure(args.measure, args.threshold, args.keep)

    run_dir = args.run_dir
    if run_dir is None:
        run_dir = Path(tempfile.mkdtemp(prefix="koquality-bench-dedup-")) / "run"
        start = time.perf_counter()
        if args.synthetic:
            synthetic(run_dir, args.rows, args.dims, 5, 100, args.planted, args.max_cell)
        else:
            real_run(run_dir, args.rows)
        print(f"prepared {run_dir} in {time.perf_counter() - start:.0f}s (not timed)")
    try:
        out = subprocess.run([sys.executable, __file__, "--measure", str(run_dir), "--threshold", str(args.threshold),
                              "--keep", args.keep], check=True, capture_output=True, text=True)
    finally:
        if args.run_dir is None:  # the rows this script made (400 MB of vectors)
            shutil.rmtree(run_dir.parent)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    kind = "synthetic clustered vectors, planted near-duplicates" if args.synthetic else "real TF-IDF/SVD vectors"
    print(f"semantic dedup, {r['rows']:,} rows × {r['dims']} ({kind}), {r['cells']} cells, largest "
          f"{r['largest_cell']:,} rows, {r['pairs'] / 1e9:.3f}G pairs compared; threshold {args.threshold}, "
          f"keep {args.keep}")
    print(f"  wall {r['seconds']:.1f}s ({r['rows'] / r['seconds']:,.0f} rows/s; the child's CPU time, reading the "
          f"tables included, {r['cpu_seconds']:.1f}s), peak RSS {r['peak_rss_gb']:.2f} GB "
          f"(targets ≤ 60 s, ≤ 2 GB); removed {r['removed']:,}")
    print("  removed by threshold: " + ", ".join(f"{t}: {n:,}" for t, n in r["by_threshold"].items()))
    ref = r["reference"]
    print(f"  against the per-row loop (each row vs the rows kept so far in its cell, numpy) on the {ref['rows']:,} rows "
          f"of the first cells: koquality {ref['koquality_seconds']:.2f}s, loop {ref['loop_seconds']:.2f}s → "
          f"{ref['loop_seconds'] / ref['koquality_seconds']:.1f}×; {ref['removed']:,} removed, rows decided "
          f"differently: {ref['disagree']} (float rounding at the threshold)")


if __name__ == "__main__":
    main()
