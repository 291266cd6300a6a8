import numpy as np
import pyarrow as pa
import pytest

from koquality.clustering import assign_len_groups, cluster, kmeans
from koquality.errors import KoqualityError


def test_len_groups_hand_computed():
    # quantiles at 0, .2, .4, .6, .8 of 1..10 (linear): 1, 2.8, 4.6, 6.4, 8.2
    groups, bounds = assign_len_groups(np.arange(1, 11), 5)
    np.testing.assert_allclose(bounds, [1, 2.8, 4.6, 6.4, 8.2])
    assert groups.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_len_groups_ties_at_a_boundary_leave_a_group_empty():
    # sorted [1,1,1,1,2,2,3,4]: q = 1, 1, 1.5, 2.25; group 0 needs 1 <= len < 1, so it is empty
    groups, bounds = assign_len_groups(np.array([1, 2, 1, 3, 1, 2, 4, 1]), 4)
    np.testing.assert_allclose(bounds, [1, 1, 1.5, 2.25])
    assert groups.tolist() == [1, 2, 1, 3, 1, 2, 3, 1]


def test_len_group_boundary_value_goes_up():
    # a length equal to q_i belongs to group i (q_i <= len), not i-1
    groups, bounds = assign_len_groups(np.array([10, 20, 30]), 2)
    assert bounds.tolist() == [10.0, 20.0]
    assert groups.tolist() == [0, 1, 1]


def test_one_len_group_holds_everything():
    groups, _ = assign_len_groups(np.array([5, 1, 100]), 1)
    assert groups.tolist() == [0, 0, 0]


def blobs(n_per=50, centers=((0, 0), (10, 0), (0, 10)), seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, 0.5, size=(n_per, 2)) for c in centers]).astype(np.float32)
    truth = np.repeat(np.arange(len(centers)), n_per)
    return x, truth


def test_kmeans_recovers_blobs_and_is_seeded():
    x, truth = blobs()
    a = kmeans(x, 3, seed=1)
    b = kmeans(x, 3, seed=1)
    assert np.array_equal(a.labels, b.labels)
    # each true blob maps to exactly one cluster
    assert all(len(set(a.labels[truth == t])) == 1 for t in range(3))
    assert len(set(a.labels)) == 3


def test_kmeans_inertia_close_to_sklearn():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(rng.normal(0, 3, 16), 1.0, size=(120, 16)) for _ in range(12)]).astype(np.float32)
    ours = kmeans(x, 12, seed=0, n_init=10)
    ref = KMeans(12, n_init=10, random_state=0).fit(x)
    assert ours.inertia <= ref.inertia_ * 1.01


def test_cluster_clamps_k_and_records_it():
    lengths = [1, 1, 1, 50, 70, 70, 80, 90, 95, 99]
    table = pa.table({"len": pa.array(lengths, pa.int32())})
    vectors = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    result = cluster(table, vectors, len_groups=2, k=5, seed=0)
    groups = result.table.column("len_group").to_pylist()
    clusters = result.table.column("cluster").to_pylist()
    assert groups == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]  # q_1 = median = 70, and 70 >= q_1 goes up
    sizes = {g["len_group"]: (g["rows"], g["k"]) for g in result.info["groups"]}
    assert sizes == {0: (4, 4), 1: (6, 5)}
    assert result.info["clamped"] == [{"len_group": 0, "rows": 4, "k_requested": 5, "k_used": 4}]
    assert sorted(clusters[:4]) == [0, 1, 2, 3]  # k == rows: one row per cluster
    assert set(clusters[4:]) == set(range(5))


def test_k_of_one_is_one_cluster():
    table = pa.table({"len": pa.array([3, 4, 5, 6], pa.int32())})
    result = cluster(table, np.eye(4, dtype=np.float32), len_groups=1, k=1)
    assert result.table.column("cluster").to_pylist() == [0, 0, 0, 0]


def test_cluster_rejects_misaligned_vectors():
    table = pa.table({"len": pa.array([3, 4], pa.int32())})
    with pytest.raises(KoqualityError, match="3 vectors for 2 rows"):
        cluster(table, np.zeros((3, 2), np.float32), 1, 1)
