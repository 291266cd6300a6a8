"""Stage 4 — cluster: split rows into L length-quantile groups, then K-means with K clusters inside each group.

Reproduces the paper: with q_i the i/L quantile of `len` (linear interpolation, numpy's default), group i
(i < L−1) holds q_i ≤ len < q_{i+1} and group L−1 holds len ≥ q_{L−1}; groups may be uneven or empty when
lengths tie at a boundary. K is clamped to a group's row count (recorded in the returned info).

K-means: the paper used `sklearn.cluster.KMeans(n_init=10)`. faiss's own random initialisation lands far
from that optimum (~15 % higher inertia on clustered sentence vectors), so each restart seeds fast Lloyd
iterations (faiss, or torch on a GPU without faiss-gpu) with k-means++ centroids; the restart with the
lowest inertia wins.

Thread counts: k-means++ and the Lloyd iterations run with BLAS and OpenMP pinned to one thread
(`threads.one_thread`), so the clusters do not depend on the core count or on OMP_NUM_THREADS / OPENBLAS_NUM_THREADS. faiss computes
distances with an sgemm in its bundled OpenMP-threaded OpenBLAS, and 2 threads gave other last bits than 1: on
the same 28K vectors every inertia in clusters/*.json moved (up to 2e-6 relative) and some restarts converged to
other centroids, so a near-tie between restarts could pick another winner. k-means++ gave the same bits at 1 and
2 threads; it is pinned too because the whole stage is then faster: restarts alternate between numpy's BLAS
threads (k-means++) and faiss's OpenMP threads, which wait on each other. On a 2-core machine the cluster stage
of that 28K-row run (L=5) took 0.9 s (K=10) / 2.1 s (K=20) / 12 s (K=100) pinned against 4-5 / 6-7 / 13-21 s
with 2 threads per library, and 12-50 s at K=20 when other processes kept the cores busy. The cost is for one
large Lloyd run on an idle many-core machine, where faiss no longer parallelises: 113K rows × K=100 × 25
iterations took 2.4 s on one thread, 1.5 s on two.

`reproduce="original"` (recipe `reproduce: original`, `--reproduce original`): the original KoQuality code's
partitions. Its generate_perplexity.py stored `round(ppl, 2)` and sorted the rows by (`len`, rounded `ppl`)
(pandas `sort_values` on two columns: stable); generate_sentence_embedding_clustering.py split that table
into the same length groups, embedded each group in that row order and fitted
`sklearn.cluster.KMeans(random_state=42, n_clusters=K, n_init=10)` per group, its labels assigned back by
position. This mode does exactly that: the group's vectors in the original's row order (ties in length and
rounded perplexity in table order, which is the original's on identical inputs), `KMeans(n_clusters=K,
random_state=seed, n_init=n_init)` with the recipe's seed (42, the original's constant) for every group,
labels mapped back to the table's rows, BLAS and OpenMP at one thread. It adds `ppl_rounded`, the perplexity
the original sorted and sampled by (`ppl` itself stays as scored). K is still clamped to a group's rows, where
the original's KMeans would have raised. sklearn's k-means is far slower than the default's on large groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from . import progress
from .errors import KoqualityError
from .tables import check_finite, require_columns, set_column
from .threads import one_thread


def len_group_boundaries(lengths: np.ndarray, len_groups: int) -> np.ndarray:
    """q_0 … q_{L−1}: the lower boundary of each group."""
    if len_groups < 1:
        raise KoqualityError(f"--len-groups {len_groups}: must be at least 1")
    if len(lengths) == 0:
        return np.zeros(len_groups)
    return np.quantile(np.asarray(lengths, dtype=np.float64), [i / len_groups for i in range(len_groups)])


def assign_len_groups(lengths: np.ndarray, len_groups: int) -> tuple[np.ndarray, np.ndarray]:
    boundaries = len_group_boundaries(lengths, len_groups)
    # Group = how many of q_1 … q_{L−1} the length reaches: len < q_1 → 0, len ≥ q_{L−1} → L−1.
    groups = np.searchsorted(boundaries[1:], np.asarray(lengths, dtype=np.float64), side="right")
    return groups.astype(np.int32), boundaries


@dataclass
class KMeansResult:
    labels: np.ndarray
    centroids: np.ndarray
    inertia: float


KMEANS_BACKENDS = ("auto", "faiss", "torch")
REPRODUCE = ("original",)  # `reproduce:` values; None is koquality's own k-means


def check_reproduce(reproduce: str | None) -> None:
    if reproduce is not None and reproduce not in REPRODUCE:
        raise KoqualityError(f"--reproduce {reproduce}: expected {', '.join(REPRODUCE)} (or leave it out)")


def round_ppl(ppl) -> np.ndarray:
    """`round(ppl, 2)` row by row with Python's correctly rounded `round`, as the original stored perplexity."""
    return np.array([round(float(p), 2) for p in np.asarray(ppl, dtype=np.float64)], dtype=np.float64)


def original_order(lengths: np.ndarray, ppl_rounded: np.ndarray) -> np.ndarray:
    """Row indices in the original's order: by (`len`, rounded `ppl`), ties in table order (np.lexsort is stable,
    like pandas' sort on two columns)."""
    return np.lexsort((np.asarray(ppl_rounded), np.asarray(lengths)))


def kmeans_original(vectors: np.ndarray, k: int, random_state: int = 42, n_init: int = 10) -> KMeansResult:
    """The original's `KMeans(random_state=42, n_clusters=K, n_init=10).fit_predict(vectors)`, on the vectors
    as given (float32 stays float32, as the original's embeddings), with BLAS and OpenMP at one thread."""
    from sklearn.cluster import KMeans

    with one_thread():
        model = KMeans(n_clusters=k, random_state=random_state, n_init=n_init)
        labels = model.fit_predict(np.asarray(vectors))
    return KMeansResult(labels.astype(np.int64), model.cluster_centers_, float(model.inertia_))


def kmeans(vectors: np.ndarray, k: int, seed: int = 0, n_init: int = 10, niter: int = 25,
           init_sample: int | None = None, restart_sample: int | None = None, device: str = "cpu",
           backend: str = "auto") -> KMeansResult:
    """K-means with k-means++ seeding and Lloyd iterations, best of `n_init` restarts by inertia.

    k-means++ runs on a seeded sample of `init_sample` rows (default 40 × k, at least 1,024): its cost
    grows with rows × k, and on 40K×256 sentence vectors, K=100, a 4K-row sample seeded restarts as good as
    a 20K-row one (inertia within 0.2 %) in half the time. The restarts then compete on a seeded sample of
    `restart_sample` rows (default 256 × k, faiss's own training cap), and only the winner is refined by
    Lloyd iterations over every row: one full-data run instead of `n_init`. Backends: faiss on CPU; on a CUDA device faiss's GPU build when it is
    installed, else torch (`backend="torch"` also runs on CPU, which is how it is tested).
    """
    from sklearn.cluster import kmeans_plusplus

    if backend not in KMEANS_BACKENDS:
        raise KoqualityError(f"k-means backend {backend}: expected one of {', '.join(KMEANS_BACKENDS)}")
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of rows ({n})")
    if k == 1 or k == n:
        labels = np.zeros(n, dtype=np.int64) if k == 1 else np.arange(n)
        centroids = x.mean(axis=0, keepdims=True) if k == 1 else x.copy()
        inertia = float(((x - centroids[labels]) ** 2).sum())
        return KMeansResult(labels, centroids, inertia)
    lloyd = _lloyd_backend(device, backend)
    init_sample = init_sample or max(1024, 40 * k)
    restart_sample = restart_sample or 256 * k
    seeds = np.random.SeedSequence(seed).generate_state(max(n_init, 1) + 1)
    rng = np.random.default_rng(int(seeds[-1]))
    arena = x[np.sort(rng.choice(n, restart_sample, replace=False))] if n > restart_sample else x
    best: KMeansResult | None = None
    with one_thread():
        for restart_seed in seeds[:-1]:
            rng = np.random.default_rng(int(restart_seed))
            sample = arena[np.sort(rng.choice(len(arena), init_sample, replace=False))] if len(arena) > init_sample else arena
            # float64: sklearn upcasts float32 on a slow path (1.5-3× slower for the same picks' quality)
            init, _ = kmeans_plusplus(sample.astype(np.float64), k, random_state=int(restart_seed) % (2**31))
            result = lloyd(arena, np.ascontiguousarray(init, dtype=np.float32), niter, int(restart_seed) % (2**31))
            if best is None or result.inertia < best.inertia:
                best = result
        if arena is x:
            return best
        return lloyd(x, np.ascontiguousarray(best.centroids, dtype=np.float32), niter, int(seeds[-1]) % (2**31))


def _lloyd_backend(device: str, backend: str):
    on_gpu = device.startswith("cuda")
    if backend == "torch" or (backend == "auto" and on_gpu and not _faiss_has_gpu()):
        return lambda x, init, niter, seed: _lloyd_torch(x, init, niter, device)
    return lambda x, init, niter, seed: _lloyd_faiss(x, init, niter, seed, gpu=on_gpu)


def _faiss_has_gpu() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _lloyd_faiss(x: np.ndarray, init: np.ndarray, niter: int, seed: int, gpu: bool = False) -> KMeansResult:
    import faiss

    n, d = x.shape
    km = faiss.Kmeans(d, init.shape[0], niter=niter, seed=seed, max_points_per_centroid=n,
                      min_points_per_centroid=1, verbose=False, gpu=gpu)
    km.train(x, init_centroids=init)
    distances, labels = km.index.search(x, 1)
    return KMeansResult(labels[:, 0].astype(np.int64), km.centroids.copy(), float(distances.sum(dtype=np.float64)))


def _lloyd_torch(x: np.ndarray, init: np.ndarray, niter: int, device: str, chunk: int = 65536) -> KMeansResult:
    """Lloyd iterations in torch; an emptied cluster keeps its previous centroid."""
    from .torch_utils import import_torch

    torch = import_torch("k-means on a GPU without faiss-gpu")
    xt = torch.from_numpy(x).to(device)
    centroids = torch.from_numpy(init).to(device)
    x_sq = (xt * xt).sum(1)

    def assign(c):
        labels = torch.empty(xt.shape[0], dtype=torch.long, device=device)
        dist = torch.empty(xt.shape[0], dtype=torch.float32, device=device)
        c_sq = (c * c).sum(1)
        for start in range(0, xt.shape[0], chunk):
            block = x_sq[start:start + chunk, None] - 2 * xt[start:start + chunk] @ c.T + c_sq[None]
            dist[start:start + chunk], labels[start:start + chunk] = block.min(dim=1)
        return labels, dist.clamp_min_(0)

    for _ in range(niter):
        labels, _ = assign(centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, xt)
        counts = torch.bincount(labels, minlength=centroids.shape[0]).to(xt.dtype)
        filled = counts > 0
        updated = centroids.clone()
        updated[filled] = sums[filled] / counts[filled, None]
        if torch.equal(updated, centroids):
            break
        centroids = updated
    labels, dist = assign(centroids)
    return KMeansResult(labels.cpu().numpy(), centroids.cpu().numpy(), float(dist.double().sum()))


@dataclass
class ClusterResult:
    table: pa.Table
    info: dict[str, Any] = field(default_factory=dict)


def cluster(table: pa.Table, vectors, len_groups: int, k: int, seed: int = 0, n_init: int = 10,
            niter: int = 25, device: str = "cpu", reproduce: str | None = None) -> ClusterResult:
    """Add `len_group` and `cluster` (numbered within its length group) to `table`.

    `vectors`: an array, or a `tables.VectorFile` read one length group at a time (bounded memory).
    `reproduce="original"`: the original code's k-means (see the module docstring); also adds `ppl_rounded`."""
    check_reproduce(reproduce)
    require_columns(table, ["len", "ppl"] if reproduce else ["len"], "cluster")
    if reproduce and table.column("ppl").null_count:
        raise KoqualityError(f"cluster: {table.column('ppl').null_count} rows have no ppl; the original's row order "
                             "needs every row's perplexity (the original dropped such rows first)")
    if k < 1:
        raise KoqualityError(f"--k {k}: must be at least 1")
    if vectors.shape[0] != table.num_rows:
        raise KoqualityError(f"cluster: {vectors.shape[0]} vectors for {table.num_rows} rows (row i of the vectors must be row i of the table)")
    lengths = table.column("len").to_numpy()
    groups, boundaries = assign_len_groups(lengths, len_groups)
    clusters = np.zeros(table.num_rows, dtype=np.int32)
    info: dict[str, Any] = {"len_groups": len_groups, "k": k, "seed": seed, "n_init": n_init, "niter": niter,
                            "boundaries": boundaries.tolist(), "groups": [], "clamped": []}
    if reproduce:
        ppl_rounded = round_ppl(table.column("ppl").to_numpy())
        order = original_order(lengths, ppl_rounded)
        info.update(reproduce=reproduce, kmeans=f"sklearn.cluster.KMeans(n_clusters=K, random_state={seed}, n_init={n_init})",
                    row_order="len, ppl rounded to 2 decimals, table order")
    with progress.stage("cluster", table.num_rows) as advance:
        for g in range(len_groups):
            # the original's rows: the group's rows in its (len, rounded ppl) order, labels assigned back by position
            rows = order[groups[order] == g] if reproduce else np.flatnonzero(groups == g)
            k_used = min(k, len(rows))
            entry = {"len_group": g, "rows": int(len(rows)), "k": int(k_used)}
            if len(rows):
                group_vectors = vectors.rows(rows) if hasattr(vectors, "rows") else vectors[rows]  # VectorFile or array
                check_finite(group_vectors, f"cluster: length group {g}")
                if reproduce:
                    result = kmeans_original(group_vectors, k_used, random_state=seed, n_init=n_init)
                else:
                    result = kmeans(group_vectors, k_used, seed=seed + g, n_init=n_init, niter=niter, device=device)
                clusters[rows] = result.labels
                entry["inertia"] = result.inertia
            if k_used < k:
                info["clamped"].append({"len_group": g, "rows": int(len(rows)), "k_requested": k, "k_used": int(k_used)})
            info["groups"].append(entry)
            advance(len(rows))
    table = set_column(table, "len_group", pa.array(groups, type=pa.int32()))
    table = set_column(table, "cluster", pa.array(clusters, type=pa.int32()))
    if reproduce:
        table = set_column(table, "ppl_rounded", pa.array(ppl_rounded, type=pa.float64()))
    return ClusterResult(table, info)
