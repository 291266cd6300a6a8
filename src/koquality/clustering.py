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
iterations took 2.4 s on one thread, 1.5 s on two. The cores are used instead by fitting the length groups side
by side (one single-threaded k-means per available CPU, `threads.threads()`): the labels are the same as one
after another, and the 400K-row cluster stage (L=5, K=100) went from 42 s to 26.5 s on 2 cores (benchmarks/RESULTS.md).

Fit, then assign. `fit_centroids` finds a group's centroids; `assign` gives rows their nearest centroid. They are
two steps because a Ray engine labels rows batch by batch in other processes, never holding a whole group: it
fits on a seeded sample (`fit_sample_rows`: the rows the restarts compete on) and sends the centroids to the
workers. The centroids are also kept (`ClusterResult.centroids`, clusters/len{L}_k{K}.centroids.npy) so that a
selection can be explained (how far a row lies from its cluster's centre) and new rows can join the same
clusters without another fit. `cluster()` takes its labels and inertia from `assign` over the group's rows,
bit for bit what faiss's one search over the whole group gave before the split. That needs care: faiss's flat
search runs an sgemm over blocks of 4,096 queries (`distance_compute_blas_query_bs`), a direct loop instead
below 128,000 query floats (`distance_compute_blas_threshold`), and a row's last bits depend on its place in
its block: on 20K shared vectors, batches of 1,000 rows gave other distance bits for 5 % (K=100) to 22 % (K=20)
of the rows (no label moved there; at a near-tie one would). So `assign` lays each batch out as the search over
all rows saw it, padding with zero rows up to its blocks' edges; its results do not depend on the batching, and
a slice of a group (`offset`, `total_rows`) gets the same bits as the whole group.

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

import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from . import progress
from .errors import KoqualityError
from .tables import check_finite, require_columns, set_column
from .threads import one_thread, threads


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
           backend: str = "auto", fit_rows: int | None = None) -> KMeansResult:
    """`fit_centroids`, then every row assigned to its nearest centroid (`assign`; torch's own assignment on the
    torch backend). The inertia is the sum of those squared distances, in float64. `fit_rows`: more rows than
    this are fitted on a seeded sample of that many (`fit_sample_rows`), every row still assigned."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    fit_on = x if fit_rows is None or len(x) <= fit_rows else x[fit_sample_rows(len(x), k, seed, n_init, fit_rows)]
    centroids = fit_centroids(fit_on, k, seed=seed, n_init=n_init, niter=niter, init_sample=init_sample,
                              restart_sample=restart_sample, device=device, backend=backend)
    _, assign_rows = _kmeans_backend(device, backend)
    labels, distances = assign_rows(x, centroids)
    return KMeansResult(labels, centroids, float(distances.sum(dtype=np.float64)))


def fit_sample_rows(n_rows: int, k: int, seed: int = 0, n_init: int = 10,
                    restart_sample: int | None = None) -> np.ndarray:
    """The rows (sorted positions in the group) that `fit_centroids`'s restarts compete on: all of them up to
    `restart_sample` rows (default 256 × k), else a sample drawn from `seed`.

    A driver that cannot hold a group reads only these rows: `fit_centroids(group[rows], k, seed, n_init)` runs
    the same restarts as `fit_centroids(group, ...)` and stops before its last refinement over every row."""
    restart_sample = restart_sample or 256 * k
    if n_rows <= restart_sample:
        return np.arange(n_rows)
    rng = np.random.default_rng(int(_restart_seeds(seed, n_init)[-1]))
    return np.sort(rng.choice(n_rows, restart_sample, replace=False))


def _restart_seeds(seed: int, n_init: int) -> np.ndarray:
    """One seed per restart, then one for the sample the restarts share and the final refinement."""
    return np.random.SeedSequence(seed).generate_state(max(n_init, 1) + 1)


def fit_centroids(vectors: np.ndarray, k: int, seed: int = 0, n_init: int = 10, niter: int = 25,
                  init_sample: int | None = None, restart_sample: int | None = None, device: str = "cpu",
                  backend: str = "auto") -> np.ndarray:
    """K centroids (float32, k × dims) by k-means++ seeding and Lloyd iterations, best of `n_init` restarts by
    inertia.

    k-means++ runs on a seeded sample of `init_sample` rows (default 40 × k, at least 1,024): its cost
    grows with rows × k, and on 40K×256 sentence vectors, K=100, a 4K-row sample seeded restarts as good as
    a 20K-row one (inertia within 0.2 %) in half the time. The restarts then compete on a seeded sample of
    `restart_sample` rows (default 256 × k, faiss's own training cap; `fit_sample_rows`), and only the winner is
    refined by Lloyd iterations over every row: one full-data run instead of `n_init`. k = 1 is the rows' mean
    and k = rows the rows themselves. Backends: faiss on CPU; on a CUDA device faiss's GPU build when it is
    installed, else torch (`backend="torch"` also runs on CPU, which is how it is tested).
    """
    from sklearn.cluster import kmeans_plusplus

    lloyd, assign_rows = _kmeans_backend(device, backend)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be between 1 and the number of rows ({n})")
    if k == 1:
        return x.mean(axis=0, keepdims=True)
    if k == n:
        return x.copy()
    init_sample = init_sample or max(1024, 40 * k)
    seeds = _restart_seeds(seed, n_init)
    rows = fit_sample_rows(n, k, seed, n_init, restart_sample)
    arena = x[rows] if len(rows) < n else x
    best, best_inertia = None, None
    with one_thread():
        for restart_seed in seeds[:-1]:
            rng = np.random.default_rng(int(restart_seed))
            sample = arena[np.sort(rng.choice(len(arena), init_sample, replace=False))] if len(arena) > init_sample else arena
            # float64: sklearn upcasts float32 on a slow path (1.5-3× slower for the same picks' quality)
            init, _ = kmeans_plusplus(sample.astype(np.float64), k, random_state=int(restart_seed) % (2**31))
            centroids = lloyd(arena, np.ascontiguousarray(init, dtype=np.float32), niter, int(restart_seed) % (2**31))
            _, distances = assign_rows(arena, centroids)
            inertia = float(distances.sum(dtype=np.float64))
            if best is None or inertia < best_inertia:
                best, best_inertia = centroids, inertia
        if arena is x:
            return best
        return lloyd(x, best, niter, int(seeds[-1]) % (2**31))


def assign(vectors: np.ndarray, centroids: np.ndarray, batch_rows: int = 65536, offset: int = 0,
           total_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid (int64) and squared L2 distance to it (float32), by faiss's flat search at one
    thread, `batch_rows` rows at a time (rounded up to whole blocks of faiss's 4,096 queries).

    The bits are those of one search over all rows, whatever `batch_rows` (see the module docstring). For a
    slice of a larger set, e.g. a batch of a length group, give its place: `vectors` = rows `offset` …
    `offset + len(vectors)` of `total_rows`; the labels and distances are then those of `assign(all rows)`.
    Without its place a slice is a set of its own: the same nearest centroids up to float32 rounding (a near-tie
    may go either way), with other last bits in the distances."""
    # imported where used, as before the split: faiss brings its own OpenMP and OpenBLAS, loaded only by the
    # processes that cluster
    import faiss

    x = np.asarray(vectors)
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1] or not len(c):
        raise KoqualityError(f"assign: vectors {x.shape} and centroids {c.shape} must be rows × dims and k × dims "
                             "with the same dims and at least one centroid")
    n, d = x.shape
    total_rows = offset + n if total_rows is None else total_rows
    if batch_rows < 1 or offset < 0 or total_rows < offset + n:
        raise KoqualityError(f"assign: batch_rows={batch_rows}, offset={offset}, total_rows={total_rows} for {n} "
                             "rows: expected batch_rows ≥ 1 and 0 ≤ offset ≤ offset + rows ≤ total_rows")
    block = faiss.cvar.distance_compute_blas_query_bs
    blas_rows = _faiss_blas_rows(d)
    blas = total_rows >= blas_rows  # the search over all rows used its sgemm, not the direct loop
    step = -(-batch_rows // block) * block
    labels = np.empty(n, dtype=np.int64)
    distances = np.empty(n, dtype=np.float32)
    index = faiss.IndexFlatL2(d)
    index.add(c)
    with one_thread():
        start = offset
        while start < offset + n:
            end = min((start // step + 1) * step, offset + n)
            queries, lead = _as_searched(x[start - offset:end - offset], start, total_rows, block,
                                         blas_rows if blas else None)
            found_distances, found_labels = index.search(queries, 1)
            labels[start - offset:end - offset] = found_labels[lead:lead + end - start, 0]
            distances[start - offset:end - offset] = found_distances[lead:lead + end - start, 0]
            start = end
    if n and labels.min() < 0:  # faiss's answer when every distance is NaN
        raise KoqualityError(f"assign: {int((labels < 0).sum())} rows have no nearest centroid "
                             "(NaN or infinite values)")
    return labels, distances


def _faiss_blas_rows(d: int) -> int:
    """The fewest queries faiss's flat search computes with its sgemm; fewer go through a direct loop, whose
    distances have other last bits. faiss 1.14.2 made the threshold count query floats (rows × d), not rows."""
    import faiss

    threshold = faiss.cvar.distance_compute_blas_threshold
    version = tuple(int(part) for part in re.findall(r"\d+", faiss.__version__)[:3])
    return -(-threshold // d) if version >= (1, 14, 2) else threshold


def _as_searched(rows: np.ndarray, start: int, total_rows: int, block: int,
                 blas_rows: int | None) -> tuple[np.ndarray, int]:
    """`rows` (positions `start` … of `total_rows`) laid out as faiss's search over all the rows saw them, and
    where they begin: zero rows fill their first and last blocks, and whole zero blocks go in front when the
    batch alone would be too small for the sgemm that search used (`blas_rows` queries; None: that search
    used the direct loop). A row's bits depend on its block."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if blas_rows is None:  # the direct loop computes each row on its own
        return rows, 0
    n, d = rows.shape
    first = start // block * block
    size = min(-(-(start + n) // block) * block, total_rows) - first
    lead = start - first
    missing = blas_rows - size
    if missing > 0:
        extra = -(-missing // block) * block
        lead, size = lead + extra, size + extra
    if lead == 0 and size == n:
        return rows, 0
    laid_out = np.zeros((size, d), dtype=np.float32)
    laid_out[lead:lead + n] = rows
    return laid_out, lead


def _kmeans_backend(device: str, backend: str):
    """(Lloyd iterations: rows, initial centroids, iterations, seed → centroids; assignment: rows, centroids →
    labels, squared distances) for the backend that runs on `device`."""
    if backend not in KMEANS_BACKENDS:
        raise KoqualityError(f"k-means backend {backend}: expected one of {', '.join(KMEANS_BACKENDS)}")
    on_gpu = device.startswith("cuda")
    if backend == "torch" or (backend == "auto" and on_gpu and not _faiss_has_gpu()):
        return (lambda x, init, niter, seed: _lloyd_torch(x, init, niter, device),
                lambda x, centroids: _assign_torch(x, centroids, device))
    return lambda x, init, niter, seed: _lloyd_faiss(x, init, niter, seed, gpu=on_gpu), assign


def _faiss_has_gpu() -> bool:
    import faiss

    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _lloyd_faiss(x: np.ndarray, init: np.ndarray, niter: int, seed: int, gpu: bool = False) -> np.ndarray:
    import faiss

    n, d = x.shape
    km = faiss.Kmeans(d, init.shape[0], niter=niter, seed=seed, max_points_per_centroid=n,
                      min_points_per_centroid=1, verbose=False, gpu=gpu)
    km.train(x, init_centroids=init)
    return km.centroids.copy()


def _lloyd_torch(x: np.ndarray, init: np.ndarray, niter: int, device: str) -> np.ndarray:
    """Lloyd iterations in torch; an emptied cluster keeps its previous centroid."""
    from .torch_utils import import_torch

    torch = import_torch("k-means on a GPU without faiss-gpu")
    xt = torch.from_numpy(x).to(device)
    centroids = torch.from_numpy(init).to(device)
    x_sq = (xt * xt).sum(1)
    for _ in range(niter):
        labels, _ = _nearest_torch(xt, x_sq, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, labels, xt)
        counts = torch.bincount(labels, minlength=centroids.shape[0]).to(xt.dtype)
        filled = counts > 0
        updated = centroids.clone()
        updated[filled] = sums[filled] / counts[filled, None]
        if torch.equal(updated, centroids):
            break
        centroids = updated
    return centroids.cpu().numpy()


def _assign_torch(x: np.ndarray, centroids: np.ndarray, device: str) -> tuple[np.ndarray, np.ndarray]:
    """The torch backend's `assign`: the same distances its Lloyd iterations minimise."""
    from .torch_utils import import_torch

    torch = import_torch("k-means on a GPU without faiss-gpu")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    labels, distances = _nearest_torch(xt, (xt * xt).sum(1), torch.from_numpy(centroids).to(device))
    return labels.cpu().numpy(), distances.cpu().numpy()


def _nearest_torch(xt, x_sq, centroids, chunk: int = 65536):
    """Nearest centroid and squared distance per row, `chunk` rows at a time (bounded GPU memory)."""
    import torch

    labels = torch.empty(xt.shape[0], dtype=torch.long, device=xt.device)
    distances = torch.empty(xt.shape[0], dtype=torch.float32, device=xt.device)
    c_sq = (centroids * centroids).sum(1)
    for start in range(0, xt.shape[0], chunk):
        block = x_sq[start:start + chunk, None] - 2 * xt[start:start + chunk] @ centroids.T + c_sq[None]
        distances[start:start + chunk], labels[start:start + chunk] = block.min(dim=1)
    return labels, distances.clamp_min_(0)


@dataclass
class ClusterResult:
    table: pa.Table
    info: dict[str, Any] = field(default_factory=dict)
    # every length group's centroids, in group order (info["groups"][g]["centroids"]: group g's rows of it)
    centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))


# (group, the group's row indices, its centroids) for every group → each group's (labels, squared distances)
Assigner = Callable[[list[tuple[int, np.ndarray, np.ndarray]]], list[tuple[np.ndarray, np.ndarray]]]


def cluster(table: pa.Table, vectors, len_groups: int, k: int, seed: int = 0, n_init: int = 10,
            niter: int = 25, device: str = "cpu", reproduce: str | None = None,
            assigner: Assigner | None = None, fit_rows: int | None = None) -> ClusterResult:
    """Add `len_group` and `cluster` (numbered within its length group) to `table`.

    `vectors`: an array, or a `tables.VectorFile` read one length group at a time (bounded memory). Group g's
    centroids are fitted with seed `seed + g` (`fit_centroids`) and its rows labelled by `assign`.
    `reproduce="original"`: the original code's k-means (see the module docstring); also adds `ppl_rounded`.
    The result's `centroids` stack every group's centroids in group order; `info["groups"][g]["centroids"]` is
    [first, end), group g's rows of that array ([x, x] for an empty group).

    `assigner` (the Ray engine's, engines/ray.py): the groups' centroids are fitted here and every row is
    assigned by it, in batches in other processes, with the bits of `assign` over the group (faiss on CPU
    only; the original's k-means and the torch backend assign here).

    `fit_rows`: a group larger than this is fitted on a seeded sample of that many rows (`fit_sample_rows`), then
    every row assigned: the fit's cost and the driver's memory stop growing with the corpus (2M rows × 256
    dims, K=100: the fit took 116 s on whole groups; see benchmarks/RESULTS.md). None (the default): whole
    groups, as before."""
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
    members = [order[groups[order] == g] if reproduce else np.flatnonzero(groups == g) for g in range(len_groups)]
    centroids: list[np.ndarray] = []
    centroid_rows = 0

    def read(rows: np.ndarray, g: int) -> np.ndarray:
        found = vectors.rows(rows) if hasattr(vectors, "rows") else vectors[rows]  # VectorFile or array
        check_finite(found, f"cluster: length group {g}")
        return found

    def fit(g: int) -> KMeansResult | None:
        # the original's rows: the group's rows in its (len, rounded ppl) order, labels assigned back by position
        rows = members[g]
        if not len(rows):
            return None
        k_used = min(k, len(rows))
        if reproduce:
            return kmeans_original(read(rows, g), k_used, random_state=seed, n_init=n_init)
        if not remote:
            return kmeans(read(rows, g), k_used, seed=seed + g, n_init=n_init, niter=niter, device=device,
                          fit_rows=fit_rows)
        # labels and inertia come from the assigner, after every group is fitted: only the rows the fit uses are
        # read here (with fit_rows, its seeded sample, as `kmeans` draws it)
        if fit_rows is not None and len(rows) > fit_rows:
            rows = rows[fit_sample_rows(len(rows), k_used, seed + g, n_init, fit_rows)]
        fitted = fit_centroids(np.ascontiguousarray(read(rows, g), dtype=np.float32), k_used, seed=seed + g,
                               n_init=n_init, niter=niter, device=device)
        return KMeansResult(np.empty(0, np.int64), fitted, math.nan)

    remote = assigner is not None and not reproduce and _kmeans_backend(device, "auto")[1] is assign

    # Length groups are independent and each k-means runs on one thread (its bits must not depend on the
    # core count), so the groups share the available CPUs instead: same labels, 1.8× faster on 2 cores.
    workers = 1 if device.startswith("cuda") else max(1, min(threads(), sum(len(m) > 0 for m in members)))
    with progress.stage("cluster", table.num_rows) as advance, one_thread(), \
            ThreadPoolExecutor(workers, thread_name_prefix="koquality-kmeans") as pool:
        results = list(pool.map(fit, range(len_groups)))
        if remote:
            fitted = [(g, members[g], r.centroids) for g, r in enumerate(results) if r is not None]
            for (g, _, centroids_g), (labels, distances) in zip(fitted, assigner(fitted)):
                results[g] = KMeansResult(labels, centroids_g, float(distances.sum(dtype=np.float64)))
        for g, result in enumerate(results):
            rows = members[g]
            k_used = min(k, len(rows))
            entry = {"len_group": g, "rows": int(len(rows)), "k": int(k_used),
                     "centroids": [centroid_rows, centroid_rows + (0 if result is None else len(result.centroids))]}
            centroid_rows = entry["centroids"][1]
            if result is not None:
                clusters[rows] = result.labels
                centroids.append(np.asarray(result.centroids, dtype=np.float32))
                entry["inertia"] = result.inertia
            if k_used < k:
                info["clamped"].append({"len_group": g, "rows": int(len(rows)), "k_requested": k, "k_used": int(k_used)})
            info["groups"].append(entry)
            advance(len(rows))
    table = set_column(table, "len_group", pa.array(groups, type=pa.int32()))
    table = set_column(table, "cluster", pa.array(clusters, type=pa.int32()))
    if reproduce:
        table = set_column(table, "ppl_rounded", pa.array(ppl_rounded, type=pa.float64()))
    stacked = np.concatenate(centroids) if centroids else np.zeros((0, vectors.shape[1]), dtype=np.float32)
    return ClusterResult(table, info, stacked)
