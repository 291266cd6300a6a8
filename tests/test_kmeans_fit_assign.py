"""k-means as two steps: `fit_centroids` per length group, then `assign` rows to the nearest centroid.

A Ray engine assigns batch by batch in other processes, so `assign` must give every row the same bits however
the rows are batched or sliced (faiss's search changes a row's last bits with its place in a 4,096-query block),
and `cluster()` must take its labels and inertia from it.
"""

import numpy as np
import pyarrow as pa
import pytest

from koquality import clustering
from koquality.clustering import assign, cluster, fit_centroids, fit_sample_rows, kmeans
from koquality.errors import KoqualityError


def clustered_vectors(rows=10_000, dims=64, centres=40, seed=0):
    """Rows around random centres: more than two of faiss's 4,096-query blocks and over its sgemm threshold."""
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, dims)).astype(np.float32)
    return middle[rng.integers(0, centres, rows)] + 0.4 * rng.normal(size=(rows, dims)).astype(np.float32)


@pytest.fixture(scope="module")
def x():
    return clustered_vectors()


@pytest.fixture(scope="module")
def centroids(x):
    return fit_centroids(x, 30, seed=3, n_init=2)


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("batch_rows", [1, 1000, 4096, 4097, 5000, 9999, 10**6])
def test_assign_in_batches_equals_one_assign(x, centroids, batch_rows):
    labels, distances = assign(x, centroids, batch_rows=len(x))
    batched_labels, batched_distances = assign(x, centroids, batch_rows=batch_rows)
    assert labels.dtype == np.int64 and distances.dtype == np.float32 and labels.shape == (len(x),)
    assert same_bits(batched_labels, labels) and same_bits(batched_distances, distances)


def test_a_slice_given_its_place_gets_the_whole_sets_bits(x, centroids):
    labels, distances = assign(x, centroids)
    rng = np.random.default_rng(1)
    for start, end in [(0, 1), (5, 105), (4095, 4097), (4000, 9000), (9990, 10_000), (1, 10_000)] + \
            [tuple(sorted(rng.integers(0, len(x), 2))) for _ in range(10)]:
        end = max(end, start + 1)
        part_labels, part_distances = assign(x[start:end], centroids, batch_rows=int(rng.integers(1, 9000)),
                                             offset=int(start), total_rows=len(x))
        assert same_bits(part_labels, labels[start:end]), (start, end)
        assert same_bits(part_distances, distances[start:end]), (start, end)


def test_assign_is_the_float64_nearest_centroid_up_to_rounding(x, centroids):
    labels, distances = assign(x, centroids)
    exact = ((x.astype(np.float64)[:, None, :] - centroids.astype(np.float64)[None]) ** 2).sum(-1)
    nearest = exact.argmin(1)
    best = exact[np.arange(len(x)), nearest]
    chosen = exact[np.arange(len(x)), labels]
    # a row may go to another centroid only when float32 cannot tell the two apart
    assert np.all(chosen - best <= 1e-5 * best)
    assert (labels != nearest).sum() <= len(x) // 1000
    np.testing.assert_allclose(distances, best, rtol=1e-4, atol=1e-4)


def test_exact_ties_go_to_the_first_centroid():
    rows = np.array([[0, 0], [1, 1], [2, 0]], dtype=np.float32)
    doubled = np.array([[1, 0], [1, 0], [5, 5]], dtype=np.float32)  # centroids 0 and 1 coincide
    labels, distances = assign(rows, doubled)
    assert labels.tolist() == [0, 0, 0]
    np.testing.assert_allclose(distances, [1, 1, 1])


def test_assign_says_what_is_wrong():
    with pytest.raises(KoqualityError, match="same dims"):
        assign(np.zeros((4, 3), np.float32), np.zeros((2, 5), np.float32))
    with pytest.raises(KoqualityError, match="total_rows"):
        assign(np.zeros((4, 3), np.float32), np.zeros((2, 3), np.float32), offset=2, total_rows=5)
    with pytest.raises(KoqualityError, match="NaN or infinite"):
        assign(np.full((3, 3), np.nan, np.float32), np.zeros((2, 3), np.float32))
    labels, distances = assign(np.zeros((0, 3), np.float32), np.zeros((2, 3), np.float32))
    assert labels.shape == distances.shape == (0,)


def table_of(lengths):
    return pa.table({"len": pa.array(lengths, pa.int32())})


def test_cluster_keeps_every_groups_centroids():
    # quantiles 10, 10, 15, 20: no rows (ties at the boundary), 5,000, 3 (K clamped to 3) and 5,000
    x = clustered_vectors(rows=10_003, dims=32, seed=4)
    lengths = np.concatenate([np.full(5000, 10), np.full(3, 15), np.full(5000, 20)])
    result = cluster(table_of(lengths), x, len_groups=4, k=8, seed=5, n_init=2)
    groups = result.info["groups"]
    assert [g["rows"] for g in groups] == [0, 5000, 3, 5000]
    assert [g["k"] for g in groups] == [0, 8, 3, 8]
    assert [g["centroids"] for g in groups] == [[0, 0], [0, 8], [8, 11], [11, 19]]
    assert "inertia" not in groups[0]
    assert result.centroids.shape == (19, 32) and result.centroids.dtype == np.float32
    # a clamped group's centroids are its rows, each its own cluster
    np.testing.assert_array_equal(result.centroids[8:11], x[5000:5003])
    assert np.asarray(result.table.column("cluster"))[5000:5003].tolist() == [0, 1, 2]


def test_the_kept_centroids_reproduce_clusters_labels_and_inertia():
    x = clustered_vectors(rows=9000, dims=48, seed=6)
    lengths = np.random.default_rng(6).integers(1, 200, len(x))
    result = cluster(table_of(lengths), x, len_groups=3, k=12, seed=7, n_init=3)
    groups = np.asarray(result.table.column("len_group"))
    labels = np.asarray(result.table.column("cluster"))
    for g, entry in enumerate(result.info["groups"]):
        rows = np.flatnonzero(groups == g)
        first, end = entry["centroids"]
        again, distances = assign(x[rows], result.centroids[first:end], batch_rows=1000)
        assert np.array_equal(again, labels[rows])
        assert float(distances.sum(dtype=np.float64)) == entry["inertia"]


def test_k_of_one_and_k_of_every_row():
    x = clustered_vectors(rows=50, dims=8, seed=8)
    one = kmeans(x, 1)
    np.testing.assert_array_equal(one.centroids, x.mean(axis=0, keepdims=True))
    assert one.labels.tolist() == [0] * 50
    every = kmeans(x, 50)
    np.testing.assert_array_equal(every.centroids, x)
    assert every.labels.tolist() == list(range(50))


def test_fit_on_the_sample_runs_the_same_restarts(monkeypatch):
    """A driver that reads only `fit_sample_rows` gets the restarts' winner, which the full fit then refines."""
    x = clustered_vectors(rows=3000, dims=16, seed=9)
    k, seed = 5, 11
    rows = fit_sample_rows(len(x), k, seed=seed, n_init=4)
    assert len(rows) == 256 * k and np.all(np.diff(rows) > 0) and rows[-1] < len(x)
    assert np.array_equal(rows, fit_sample_rows(len(x), k, seed=seed, n_init=4))
    assert np.array_equal(fit_sample_rows(1000, k, seed=seed), np.arange(1000))

    calls = []
    lloyd = clustering._lloyd_faiss

    def recorded(x, init, niter, seed, gpu=False):
        calls.append((len(x), init.copy()))
        return lloyd(x, init, niter, seed, gpu)

    monkeypatch.setattr(clustering, "_lloyd_faiss", recorded)
    full = fit_centroids(x, k, seed=seed, n_init=4)
    assert [n for n, _ in calls] == [len(rows)] * 4 + [len(x)]  # four restarts on the sample, one refinement
    winner = calls[-1][1]
    monkeypatch.setattr(clustering, "_lloyd_faiss", lloyd)
    assert same_bits(fit_centroids(x[rows], k, seed=seed, n_init=4), winner)
    assert not np.array_equal(full, winner)


def test_torch_backend_fits_then_assigns():
    pytest.importorskip("torch")
    x = clustered_vectors(rows=3000, dims=16, centres=6, seed=10)
    result = kmeans(x, 6, seed=0, n_init=3, backend="torch")
    assert result.centroids.shape == (6, 16) and result.labels.dtype == np.int64
    faiss_labels, faiss_distances = assign(x, result.centroids)
    assert (faiss_labels != result.labels).sum() <= 3  # torch's own assignment: other rounding, same clusters
    assert result.inertia == pytest.approx(float(faiss_distances.sum(dtype=np.float64)), rel=1e-5)


def test_fit_rows_fits_on_a_seeded_sample_and_assigns_every_row():
    """cluster.fit_rows: a group larger than it is fitted on a seeded sample of that many rows, then every row
    is assigned to its nearest centroid; the same as fitting on those rows by hand. Smaller groups are untouched."""
    import pyarrow as pa

    from koquality.clustering import assign, cluster, fit_centroids, fit_sample_rows

    rng = np.random.default_rng(11)
    centres = rng.normal(size=(8, 12)).astype(np.float32)
    x = (centres[rng.integers(0, 8, 6000)] + 0.2 * rng.normal(size=(6000, 12))).astype(np.float32)
    table = pa.table({"len": np.r_[np.ones(1000, int), np.full(5000, 50)]})  # group 0: 1,000 rows, group 1: 5,000
    whole = cluster(table, x, 2, 8, seed=3, n_init=2)
    sampled = cluster(table, x, 2, 8, seed=3, n_init=2, fit_rows=2000)
    groups = sampled.table.column("len_group").to_numpy()
    small, big = np.flatnonzero(groups == 0), np.flatnonzero(groups == 1)
    assert (len(small), len(big)) == (1000, 5000)
    rows = big[fit_sample_rows(len(big), 8, 3 + 1, 2, 2000)]  # group g is fitted with seed + g
    assert len(rows) == 2000
    centroids = fit_centroids(x[rows], 8, seed=3 + 1, n_init=2)
    labels, distances = assign(x[big], centroids)
    assert np.array_equal(sampled.table.column("cluster").to_numpy()[big], labels)
    assert sampled.info["groups"][1]["inertia"] == float(distances.sum(dtype=np.float64))
    assert np.array_equal(sampled.table.column("cluster").to_numpy()[small], whole.table.column("cluster").to_numpy()[small])
    # on well-separated data the sampled fit finds as good a partition (inertia within 1 %)
    assert sampled.info["groups"][1]["inertia"] <= 1.01 * whole.info["groups"][1]["inertia"]
