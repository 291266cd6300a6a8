import numpy as np
import pyarrow as pa
import pytest

from koquality.errors import KoqualityError
from koquality.sampling import sample


def table(ppl, len_group=None, cluster=None, instruction=None, length=None):
    n = len(ppl)
    return pa.table({
        "id": [f"r{i}" for i in range(n)],
        "instruction": instruction or [f"q{i}" for i in range(n)],
        "ppl": pa.array(ppl, pa.float64()),
        "len_group": pa.array(len_group or [0] * n, pa.int32()),
        "cluster": pa.array(cluster or [0] * n, pa.int32()),
        "len": pa.array(length or [10] * n, pa.int32()),
    })


def ids(t):
    return t.column("id").to_pylist()


def test_ppl_keeps_every_s_th_row_by_ascending_ppl():
    # ascending: r6(.5) r1(1) r3(2) r4(3) r2(4) r0(5) r5(6); N=0.5 → s=2 → positions 0,2,4,6
    t = table([5, 1, 4, 2, 3, 6, 0.5])
    assert ids(sample(t, "ppl", 0.5)) == ["r6", "r3", "r2", "r5"]


def test_ppl_works_per_cluster_and_ceil_rows_per_cell():
    # cluster 0: r0..r4 (5 rows), cluster 1: r5..r7 (3 rows); N=0.34 → s=int(2.94)=2
    t = table([1, 2, 3, 4, 5, 9, 8, 7], cluster=[0, 0, 0, 0, 0, 1, 1, 1])
    out = sample(t, "ppl", 0.34)
    assert ids(out) == ["r0", "r2", "r4", "r7", "r5"]  # ceil(5/2)=3 and ceil(3/2)=2, sorted by (cluster, ppl)


def test_ppl_ties_keep_table_order():
    t = table([2, 1, 1, 1], length=[1, 9, 8, 7])
    # ascending stable: r1 r2 r3 r0; N=0.5 → r1, r3; output sorted by (ppl, len): r3 (len 7) before r1 (len 9)
    assert ids(sample(t, "ppl", 0.5)) == ["r3", "r1"]


def test_ppl_h_takes_highest_after_dedup_with_m_counted_before():
    # descending: r4(9,A) r0(8,A) r2(7,B) r1(6,C) r3(5,D); m = int(0.6*5) = 3; dedup drops r0 → r4 r2 r1
    t = table([8, 6, 7, 5, 9], instruction=["A", "C", "B", "D", "A"])
    out = sample(t, "ppl_h", 0.6)
    assert ids(out) == ["r1", "r2", "r4"]  # sorted by ppl ascending in the output


def test_ppl_h_truncates_m_to_zero_for_small_cells():
    t = table([1, 2, 3], cluster=[0, 1, 1])
    # cell 0: int(0.5*1)=0; cell 1: int(0.5*2)=1 → the higher ppl of r1, r2
    assert ids(sample(t, "ppl_h", 0.5)) == ["r2"]


def test_rand_samples_round_n_times_rows_per_group_ignoring_clusters():
    n0, n1 = 45, 7  # round(0.1*45)=round(4.5)=4 (half to even), round(0.1*7)=1
    t = table(list(np.linspace(1, 2, n0 + n1)), len_group=[0] * n0 + [1] * n1,
              cluster=[i % 3 for i in range(n0 + n1)])
    out = sample(t, "rand", 0.1, seed=7)
    groups = out.column("len_group").to_pylist()
    assert groups.count(0) == 4 and groups.count(1) == 1
    assert ids(sample(t, "rand", 0.1, seed=7)) == ids(out)
    draws = {tuple(ids(sample(t, "rand", 0.1, seed=s))) for s in range(5)}
    assert len(draws) > 1


def test_output_sorted_by_group_cluster_ppl_len():
    t = table([3, 1, 2, 1], len_group=[1, 1, 0, 0], cluster=[0, 0, 1, 0], length=[5, 5, 5, 2])
    out = sample(t, "ppl", 1.0)
    keys = list(zip(*(out.column(c).to_pylist() for c in ("len_group", "cluster", "ppl", "len"))))
    assert keys == sorted(keys) and len(keys) == 4


def test_sample_keeps_all_columns():
    t = table([1, 2]).append_column("extra", pa.array(["x", "y"]))
    assert "extra" in sample(t, "ppl", 1.0).column_names


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "best", "ratio": 0.1}, "--method best: expected one of rand, ppl, ppl_h"),
    ({"method": "ppl", "ratio": 0}, r"--ratio 0: must be in \(0, 1\]"),
    ({"method": "ppl", "ratio": 1.5}, r"--ratio 1.5: must be in \(0, 1\]"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(KoqualityError, match=message):
        sample(table([1.0, 2.0]), **kwargs)


def test_missing_columns_and_null_ppl_are_errors():
    with pytest.raises(KoqualityError, match="column\\(s\\) cluster missing"):
        sample(table([1.0]).drop(["cluster"]), "ppl", 0.5)
    t = table([1.0, 2.0]).set_column(2, "ppl", pa.array([1.0, None]))
    with pytest.raises(KoqualityError, match="1 rows have no ppl"):
        sample(t, "ppl", 0.5)
