"""The selectors beyond the paper: ifd, ppl_ifd, diverse (sampling.py)."""

import math

import numpy as np
import pyarrow as pa
import pytest

from koquality.errors import KoqualityError
from koquality.sampling import METHODS, PAPER_METHODS, cell_budget, cell_summary, k_center, sample
from koquality.tables import VectorFile, save_vectors


def table(ppl, ifd=None, len_group=None, cluster=None):
    n = len(ppl)
    columns = {
        "id": [f"r{i}" for i in range(n)],
        "instruction": [f"q{i}" for i in range(n)],
        "ppl": pa.array(ppl, pa.float64()),
        "len_group": pa.array(len_group if len_group is not None else [0] * n, pa.int32()),
        "cluster": pa.array(cluster if cluster is not None else [0] * n, pa.int32()),
        "len": pa.array([10] * n, pa.int32()),
    }
    if ifd is not None:
        columns["ifd"] = pa.array(ifd, pa.float64())
    return pa.table(columns)


def ids(t):
    return t.column("id").to_pylist()


def chosen(t):
    return sorted(int(i[1:]) for i in ids(t))


def random_table(seed, n=600, groups=3, clusters=6, nan_share=0.1):
    rng = np.random.default_rng(seed)
    ppl = np.round(rng.uniform(1, 30, n), 1)  # ties
    ifd = np.round(rng.uniform(0.3, 1.4, n), 2)  # ties, about a third at or above 1
    ifd[rng.random(n) < nan_share] = np.nan
    return table(ppl.tolist(), [None if np.isnan(v) else float(v) for v in ifd],
                 rng.integers(0, groups, n).tolist(), rng.integers(0, clusters, n).tolist())


def cells(t):
    keys = list(zip(t.column("len_group").to_pylist(), t.column("cluster").to_pylist()))
    out: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        out.setdefault(key, []).append(i)
    return out


def test_methods():
    assert PAPER_METHODS == ("rand", "ppl", "ppl_h")
    assert METHODS == ("rand", "ppl", "ppl_h", "ifd", "ppl_ifd", "diverse")
    budgets = [cell_budget(m, 250, 0.01) for m in ("rand", "ppl", "ppl_h", "ifd", "ppl_ifd", "diverse")]
    assert budgets == [2, 3, 2, 2, 3, 3]


# -------------------------------------------------------------------------------------------- ifd

def test_ifd_takes_the_highest_ifd_below_one():
    # m = int(0.5 × 6) = 3 of r0 (0.9), r2 (0.95), r3 (1.0: out), r4 (NaN: out), r5 (0.2), r1 (0.9 tie: r0 first)
    t = table([1, 2, 3, 4, 5, 6], ifd=[0.9, 0.9, 0.95, 1.0, None, 0.2])
    assert chosen(sample(t, "ifd", 0.5)) == [0, 1, 2]
    t = table([1, 2, 3, 4, 5, 6], ifd=[0.9, 0.9, 0.95, 1.0, None, 0.2])
    assert chosen(sample(t, "ifd", 0.34)) == [0, 2]  # int(0.34 × 6) = 2: the tie goes to the first row


def test_ifd_with_nothing_below_one_or_a_tiny_cell_keeps_nothing():
    assert sample(table([1, 2], ifd=[1.0, 3.0]), "ifd", 1.0).num_rows == 0
    assert sample(table([1, 2], ifd=[0.1, 0.2]), "ifd", 0.4).num_rows == 0  # int(0.4 × 2) = 0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.07])
def test_ifd_against_a_reference(seed, ratio):
    t = random_table(seed)
    ifd = t.column("ifd").to_numpy(zero_copy_only=False)
    expected = []
    for rows in cells(t).values():
        m = int(ratio * len(rows))
        passing = [i for i in rows if ifd[i] < 1.0]
        expected += sorted(passing, key=lambda i: (-ifd[i], i))[:m]
    assert chosen(sample(t, "ifd", ratio)) == sorted(expected)


# ---------------------------------------------------------------------------------------- ppl_ifd

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ratio", [0.5, 0.34, 0.1, 0.03])
def test_ppl_ifd_is_ppl_when_every_row_passes(seed, ratio):
    t = random_table(seed, nan_share=0)
    t = t.set_column(t.column_names.index("ifd"), "ifd", pa.array(np.full(t.num_rows, 0.5)))
    assert ids(sample(t, "ppl_ifd", ratio)) == ids(sample(t, "ppl", ratio))


def test_ppl_ifd_spreads_the_budget_over_the_passing_rows():
    # 10 rows, N = 0.34 → s = 2, budget ceil(10/2) = 5; 6 pass (r0..r5 by ascending ppl): positions ⌊i·2·6/10⌋
    t = table([float(i) for i in range(10)], ifd=[0.5] * 6 + [1.2] * 4)
    assert [0, 1, 2, 3, 4] == [i * 2 * 6 // 10 for i in range(5)]
    assert ids(sample(t, "ppl_ifd", 0.34)) == ["r0", "r1", "r2", "r3", "r4"]
    # 3 pass, fewer than the budget: all of them
    t = table([float(i) for i in range(10)], ifd=[None, 0.5, 1.0, 0.1, 2.0, 1.5, 0.99, 1.1, 1.2, 1.3])
    assert ids(sample(t, "ppl_ifd", 0.34)) == ["r1", "r3", "r6"]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.05])
def test_ppl_ifd_against_a_reference(seed, ratio):
    t = random_table(seed)
    ppl = t.column("ppl").to_numpy()
    ifd = t.column("ifd").to_numpy(zero_copy_only=False)
    s = int(1 / ratio)
    expected, short = [], 0
    for rows in cells(t).values():
        budget = math.ceil(len(rows) / s)
        passing = sorted((i for i in rows if ifd[i] < 1.0), key=lambda i: (ppl[i], i))
        if len(passing) < budget:
            expected += passing
            short += budget - len(passing)
        else:
            expected += [passing[i * s * len(passing) // len(rows)] for i in range(budget)]
    out = sample(t, "ppl_ifd", ratio)
    assert chosen(out) == sorted(expected)
    summary = cell_summary(t.column("len_group").to_numpy(), t.column("cluster").to_numpy(), "ppl_ifd", ratio,
                           out.num_rows, ifd=ifd)
    assert summary["ifd"]["rows_short"] == short
    assert summary["ifd"]["rows_passing"] == int((ifd < 1).sum())


def test_missing_ifd_column_names_the_ways_to_score_it():
    for method in ("ifd", "ppl_ifd"):
        with pytest.raises(KoqualityError, match=rf"--method {method} needs an `ifd` column.*`koquality run` and an "
                                                 r"`ifd:` recipe section, or `koquality score --scorer ifd`"):
            sample(table([1.0, 2.0]), method, 0.5)


def test_cell_summary_warns_about_cells_short_of_ifd_rows():
    groups, clusters = np.zeros(300, int), np.repeat([0, 1, 2], 100)
    ifd = np.r_[np.full(100, 0.5), np.full(100, 1.5), np.full(97, np.nan), np.full(3, 0.2)]
    summary = cell_summary(groups, clusters, "ppl_ifd", 0.1, selected=13, ifd=ifd)
    assert summary["ifd"] == {"rows_passing": 103, "rows_filtered": 197, "cells_short": 2, "rows_short": 17}
    assert summary["warning"] == ("selected 4.33% of the corpus, 0.4× the ratio N = 0.1: 0 of 3 cells hold fewer than "
                                  "1/N = 10 rows (ppl_ifd keeps one row of each that has a row with ifd < 1); 2 cells "
                                  "have fewer rows with ifd < 1 than their budget, 17 rows short; lower K (or L) for "
                                  "cells of at least 1/N rows")


# ---------------------------------------------------------------------------------------- diverse

def k_center_reference(x, budget, first):
    """Farthest-point in float64 (the planted vectors leave no near-ties)."""
    x = x.astype(np.float64)
    picked = [first]
    nearest = ((x - x[first]) ** 2).sum(1)
    while len(picked) < budget:
        nearest[picked] = -1
        picked.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ((x - x[picked[-1]]) ** 2).sum(1))
    return picked


def vectors_for(n, seed=0, dims=8):
    return np.random.default_rng(seed).normal(size=(n, dims)).astype(np.float32)


@pytest.mark.parametrize("ratio", [0.5, 0.1, 0.04])
def test_diverse_is_farthest_point_per_cell_from_a_seeded_start(ratio):
    t = random_table(0, n=500, groups=2, clusters=3)
    x = vectors_for(t.num_rows)
    expected = []
    for (g, c), rows in cells(t).items():
        budget = math.ceil(len(rows) / int(1 / ratio))
        first = int(np.random.default_rng([7, g, c]).integers(len(rows)))
        expected += [rows[i] for i in k_center_reference(x[rows], budget, first)]
    out = sample(t, "diverse", ratio, seed=7, vectors=x)
    assert chosen(out) == sorted(expected)
    keys = list(zip(*(out.column(c).to_pylist() for c in ("len_group", "cluster", "ppl"))))
    assert keys == sorted(keys)  # sorted as every selection


def test_diverse_depends_on_the_seed_only(tmp_path):
    t = random_table(1, n=300, groups=2, clusters=2)
    x = vectors_for(t.num_rows, seed=1)
    first = ids(sample(t, "diverse", 0.1, seed=3, vectors=x))
    assert ids(sample(t, "diverse", 0.1, seed=3, vectors=x)) == first
    assert ids(sample(t, "diverse", 0.1, seed=3, vectors=VectorFile(save_vectors(x, tmp_path / "v.npy")))) == first
    assert len({tuple(ids(sample(t, "diverse", 0.1, seed=s, vectors=x))) for s in range(4)}) > 1


def test_k_center_never_repeats_a_row_and_breaks_ties_by_row():
    x = np.array([[0.0, 0], [0, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    # from row 0: rows 2, 3 and 4 are all at distance 1 → row 2; then row 4 (at 1 from both); then rows at 0
    assert k_center(x, 5, 0).tolist() == [0, 2, 4, 1, 3]
    assert k_center(x, 0, 0).tolist() == []


def test_diverse_needs_the_vectors():
    t = table([1.0, 2.0, 3.0])
    with pytest.raises(KoqualityError, match="--method diverse needs the row vectors"):
        sample(t, "diverse", 0.5)
    with pytest.raises(KoqualityError, match=r"vectors of shape \(2, 4\) for 3 rows"):
        sample(t, "diverse", 0.5, vectors=np.zeros((2, 4)))
    with pytest.raises(KoqualityError, match="NaN or infinity"):
        sample(t, "diverse", 0.5, vectors=np.array([[0.0, 1], [np.inf, 0], [1, 1]]))
