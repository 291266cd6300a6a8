"""k-means: koquality (k-means++ seeding + faiss/torch Lloyd, n_init=10) against
`sklearn.cluster.KMeans(n_init=10)`, the paper's call, on the same vectors: time and inertia.

Vectors: a Gaussian mixture with K well-spread centres plus per-cluster scale (sentence-embedding-like).
Targets: ≥ 10× sklearn at 400K × 768, K=100, inertia within 1 %.

    python benchmarks/bench_kmeans.py [--rows 400000] [--dims 768] [--k 100] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse

import numpy as np

from common import Timer


def mixture(rows: int, dims: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, dims)).astype(np.float32)
    scales = rng.uniform(0.5, 1.5, k).astype(np.float32)
    labels = rng.integers(0, k, rows)
    x = centres[labels] + rng.normal(0, 1, (rows, dims)).astype(np.float32) * scales[labels, None]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-sklearn", action="store_true", help="only time koquality")
    args = parser.parse_args()
    from sklearn.cluster import KMeans

    from koquality.clustering import kmeans

    x = mixture(args.rows, args.dims, args.k)
    print(f"{args.rows:,} x {args.dims}, K={args.k}, n_init=10, device {args.device}")
    with Timer() as ours_t:
        ours = kmeans(x, args.k, seed=0, n_init=10, device=args.device)
    print(f"koquality: {ours_t.seconds:.1f}s, inertia {ours.inertia:,.1f}")
    if not args.skip_sklearn:
        with Timer() as ref_t:
            ref = KMeans(args.k, n_init=10, random_state=0).fit(x)
        print(f"sklearn:   {ref_t.seconds:.1f}s, inertia {ref.inertia_:,.1f}")
        print(f"ratio {ref_t.seconds / ours_t.seconds:.1f}x; inertia {ours.inertia / ref.inertia_ - 1:+.3%} vs sklearn")


if __name__ == "__main__":
    main()
