import math

import numpy as np
import pyarrow as pa
import pytest

from koquality import dedup
from koquality.dedup import THRESHOLDS, float32_above, semantic_duplicates
from koquality.errors import KoqualityError
from koquality.tables import VectorFile, save_vectors


def table(n, len_group=None, cluster=None, ppl=None, ifd=None):
    columns = {
        "id": [f"r{i}" for i in range(n)],
        "len_group": pa.array(len_group if len_group is not None else [0] * n, pa.int32()),
        "cluster": pa.array(cluster if cluster is not None else [0] * n, pa.int32()),
        "ppl": pa.array(ppl if ppl is not None else [float(i) for i in range(n)], pa.float64()),
    }
    if ifd is not None:
        columns["ifd"] = pa.array(ifd, pa.float64())
    return pa.table(columns)


def at_angle(cosine: float, dims: int = 3) -> np.ndarray:
    """A unit vector at the given cosine from e0, in the e0-e1 plane."""
    v = np.zeros(dims)
    v[0], v[1] = cosine, math.sqrt(1 - cosine**2)
    return v


def dropped(result) -> dict[str, str]:
    return dict(zip(result.duplicates.column("id").to_pylist(), result.duplicates.column("kept_id").to_pylist()))


def brute_force(vectors: np.ndarray, order, threshold: float):
    """The rule spelled out: rows visited in `order`, each compared (float64 cosine) with the rows kept so far.
    Returns the kept mask and, per dropped row, the kept row it is most similar to."""
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    x = x / np.where(norms == 0, 1.0, norms)[:, None]
    kept_mask = np.zeros(len(x), dtype=bool)
    matched = {}
    kept: list[int] = []
    for i in order:
        sims = x[kept] @ x[i] if kept else np.zeros(0)
        if len(sims) and sims.max() > threshold:
            matched[int(i)] = kept[int(np.argmax(sims))]
        else:
            kept_mask[i] = True
            kept.append(int(i))
    return kept_mask, matched


# ------------------------------------------------------------------------------------------ the rule

def test_duplicates_inside_a_cell_go_and_the_same_vectors_in_other_cells_stay():
    a, b, far = [1.0, 0, 0], at_angle(0.97), [0, 0, 1.0]
    vectors = np.array([a, b, far, a, b, a])
    # cell (0,0): r0, r1, r2 → r1 ~ r0; cell (0,1): r3 alone; cell (1,0): r4, r5 → ~ each other
    t = table(6, len_group=[0, 0, 0, 0, 1, 1], cluster=[0, 0, 0, 1, 0, 0])
    result = semantic_duplicates(t, vectors, threshold=0.95, keep="first")
    assert dropped(result) == {"r1": "r0", "r5": "r4"}
    assert result.keep_mask.tolist() == [True, False, True, True, True, False]
    assert result.duplicates.column("similarity").to_pylist() == pytest.approx([0.97, 0.97], abs=1e-6)
    assert result.duplicates.column("len_group").to_pylist() == [0, 1]
    assert result.duplicates.column("cluster").to_pylist() == [0, 0]
    assert result.details()[0].startswith("cosine 0.9700 > 0.95 to kept row r0 (keep: ")


@pytest.mark.parametrize("keep, ppl, ifd, survivor", [
    ("first", [3, 1, 2], [0.5, 0.9, 0.7], "r0"),
    ("lowest_ppl", [3, 1, 2], [0.5, 0.9, 0.7], "r1"),
    ("highest_ifd", [3, 1, 2], [0.9, 0.5, 0.7], "r0"),
    ("highest_ifd", [3, 1, 2], [float("nan"), 0.2, 0.3], "r2"),  # no ifd: visited last
    ("highest_ifd", [3, 1, 2], [None, None, None], "r0"),  # nobody has one: table order
    ("lowest_ppl", [2, 2, 2], None, "r0"),  # ties in table order
    ("lowest_ppl", [None, 5, 4], None, "r2"),  # no ppl: last
])
def test_keep_order_picks_the_survivor(keep, ppl, ifd, survivor):
    vectors = np.array([[1.0, 0], [2.0, 0], [3.0, 0.01]])  # all the same direction (up to 0.99999)
    result = semantic_duplicates(table(3, ppl=ppl, ifd=ifd), vectors, threshold=0.95, keep=keep)
    assert [i for i, k in zip(["r0", "r1", "r2"], result.keep_mask) if k] == [survivor]
    assert set(dropped(result).values()) == {survivor}


def test_threshold_is_strict_on_the_float32_similarity():
    # e0 and (3, 4)/5: the similarity is float32(0.6) = 0.6000000238…, which exceeds 0.6 as a real number
    vectors = np.array([[1.0, 0], [3.0, 4.0]])
    similarity = float(np.float32(0.6))
    assert similarity > 0.6
    assert semantic_duplicates(table(2), vectors, threshold=0.6, keep="first").removed == 1
    assert semantic_duplicates(table(2), vectors, threshold=similarity, keep="first").removed == 0  # equal: stays
    assert semantic_duplicates(table(2), vectors, threshold=np.nextafter(similarity, 0), keep="first").removed == 1
    assert float32_above(0.6) == np.float32(0.6) and float32_above(similarity) > np.float32(0.6)


def test_greedy_chain_keeps_a_row_similar_only_to_a_dropped_one():
    # A~B and B~C at cosine 0.96, A·C = cos(2θ) = 0.8432: below 0.95
    theta = math.acos(0.96)
    vectors = np.array([[1.0, 0], [math.cos(theta), math.sin(theta)], [math.cos(2 * theta), math.sin(2 * theta)]])
    first = semantic_duplicates(table(3, ppl=[1, 2, 3]), vectors, threshold=0.95)
    assert dropped(first) == {"r1": "r0"}  # C (r2) stays: its only near row, B, was dropped
    middle = semantic_duplicates(table(3, ppl=[2, 1, 3]), vectors, threshold=0.95)
    assert dropped(middle) == {"r0": "r1", "r2": "r1"}


def test_a_dropped_row_names_its_most_similar_kept_row():
    # r0 and r1 are kept (0.9 apart at threshold 0.95); r2 is 0.97 to r0 and 0.99 to r1
    theta0, theta1 = 0.0, math.acos(0.9)
    target = theta1 - math.acos(0.99)
    vectors = np.array([[math.cos(t), math.sin(t)] for t in (theta0, theta1, target)])
    result = semantic_duplicates(table(3), vectors, threshold=0.95, keep="first")
    assert dropped(result) == {"r2": "r1"}


def test_zero_vectors_are_never_duplicates():
    vectors = np.array([[0.0, 0], [0.0, 0], [1.0, 0], [1.0, 0]])
    result = semantic_duplicates(table(4), vectors, threshold=0.5, keep="first")
    assert dropped(result) == {"r3": "r2"}
    assert result.info["zero_vectors"] == 2


def test_examples_and_by_threshold_shape():
    vectors = np.array([[1.0, 0], at_angle(0.9, 2), at_angle(0.97, 2), [0, 1.0]])
    result = semantic_duplicates(table(4), vectors, threshold=0.95, keep="first")
    levels = [entry["threshold"] for entry in result.by_threshold]
    assert levels == sorted(set(THRESHOLDS) | {0.95}) and levels[0] == 0.85 and levels[-1] == 0.99
    at = {entry["threshold"]: entry for entry in result.by_threshold}
    assert at[0.85]["removed"] == 2 and at[0.95]["removed"] == 1 and at[0.99]["removed"] == 0
    # the examples: the pairs the threshold only just catches, lowest similarity first
    assert [(e["id"], e["kept_id"]) for e in at[0.85]["examples"]] == [("r1", "r0"), ("r2", "r0")]
    assert at[0.85]["examples"][0]["similarity"] == pytest.approx(0.9, abs=1e-6)
    assert at[0.99]["examples"] == []
    summary = result.summary()
    assert summary["removed"] == 1 and summary["keep"] == "first" and summary["cells"] == 1


def test_configured_threshold_outside_the_sweep_is_added():
    vectors = np.array([[1.0, 0], at_angle(0.8, 2)])
    result = semantic_duplicates(table(2), vectors, threshold=0.75, keep="first")
    assert result.by_threshold[0] == {"threshold": 0.75, "removed": 1,
                                      "examples": [{"id": "r1", "kept_id": "r0",
                                                    "similarity": pytest.approx(0.8, abs=1e-6)}]}
    assert result.removed == 1


# ----------------------------------------------------------------- against the brute-force reference

def planted(n=3000, dims=48, seed=0):
    """Random vectors with near-duplicates planted at cosines spread over 0.8 … 1, in 2 × 3 uneven cells."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dims))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    len_group = rng.integers(0, 2, n)
    cluster = np.minimum(rng.geometric(0.4, n) - 1, 2)
    for _ in range(n // 2):  # copies of a row at a random cosine, sometimes chained on a copy
        src, dst = rng.integers(0, n, 2)
        if len_group[src] != len_group[dst] or cluster[src] != cluster[dst]:
            continue
        noise = rng.normal(size=dims)
        noise -= (noise @ x[src]) * x[src]
        noise /= np.linalg.norm(noise)
        c = rng.uniform(0.8, 1.0)
        x[dst] = c * x[src] + math.sqrt(1 - c * c) * noise
    x *= rng.uniform(0.5, 2.0, (n, 1))  # not unit: the stage normalises
    ppl = np.round(rng.uniform(1, 50, n), 1)  # rounded: ties in the keep order
    ifd = np.where(rng.random(n) < 0.1, np.nan, rng.uniform(0.2, 1.5, n))
    return x.astype(np.float32), table(n, len_group.tolist(), cluster.tolist(), ppl.tolist(), ifd.tolist())


def keep_order(t, keep):
    if keep == "first":
        return np.arange(t.num_rows)
    values = t.column("ppl" if keep == "lowest_ppl" else "ifd").to_numpy(zero_copy_only=False).astype(float)
    return np.argsort(values if keep == "lowest_ppl" else -values, kind="stable")


def reference(vectors, t, keep, threshold):
    order = keep_order(t, keep)
    cells = np.stack([t.column("len_group").to_numpy(), t.column("cluster").to_numpy()], 1)
    kept = np.zeros(t.num_rows, dtype=bool)
    matched = {}
    for cell in np.unique(cells, axis=0):
        in_cell = (cells == cell).all(1)
        k, m = brute_force(vectors, order[in_cell[order]], threshold)
        kept |= k & in_cell
        matched.update(m)
    return kept, matched


def near_a_threshold(vectors, t, levels, margin=1e-5):
    """Whether some pair of a cell sits within `margin` of a level (float32 rounding could then go either way)."""
    x = vectors.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cells = np.stack([t.column("len_group").to_numpy(), t.column("cluster").to_numpy()], 1)
    for cell in np.unique(cells, axis=0):
        rows = np.flatnonzero((cells == cell).all(1))
        s = x[rows] @ x[rows].T
        s = s[np.triu_indices(len(rows), 1)]
        if any((np.abs(s - level) < margin).any() for level in levels):
            return True
    return False


@pytest.mark.parametrize("keep", ["lowest_ppl", "highest_ifd", "first"])
def test_matches_the_brute_force_rule_across_tiles(keep, monkeypatch):
    vectors, t = planted()
    assert not near_a_threshold(vectors, t, THRESHOLDS)
    monkeypatch.setattr(dedup, "TILE", 128)  # cells of ~300-1,000 rows: several tiles each
    result = semantic_duplicates(t, vectors, threshold=0.9, keep=keep)
    kept, matched = reference(vectors, t, keep, 0.9)
    assert 100 < result.removed < 1000
    assert (result.keep_mask == kept).all()
    assert dropped(result) == {f"r{i}": f"r{j}" for i, j in sorted(matched.items())}
    for entry in result.by_threshold:
        assert entry["removed"] == (~reference(vectors, t, keep, entry["threshold"])[0]).sum()


def test_bits_do_not_depend_on_threads_or_how_vectors_are_read(monkeypatch, tmp_path):
    vectors, t = planted(seed=1)
    monkeypatch.setattr(dedup, "TILE", 256)
    runs = []
    on_disk = VectorFile(save_vectors(vectors, tmp_path / "v.npy"))
    for threads, source in [("1", vectors), ("3", vectors), ("2", on_disk)]:
        monkeypatch.setenv("KOQUALITY_THREADS", threads)
        runs.append(semantic_duplicates(t, source, threshold=0.93, keep="lowest_ppl"))
    for other in runs[1:]:
        assert (other.keep_mask == runs[0].keep_mask).all()
        assert other.duplicates.equals(runs[0].duplicates)  # similarities to the bit
        assert other.by_threshold == runs[0].by_threshold
    # another tile size: the same decisions (no pair sits at a threshold), similarities to float32 rounding
    monkeypatch.setattr(dedup, "TILE", 1024)
    tiled = semantic_duplicates(t, vectors, threshold=0.93, keep="lowest_ppl")
    assert (tiled.keep_mask == runs[0].keep_mask).all()
    assert [e["removed"] for e in tiled.by_threshold] == [e["removed"] for e in runs[0].by_threshold]
    assert np.allclose(tiled.duplicates.column("similarity").to_numpy(),
                       runs[0].duplicates.column("similarity").to_numpy(), atol=1e-6)


def test_by_threshold_counts_equal_separate_runs():
    vectors, t = planted(n=1500, seed=2)
    result = semantic_duplicates(t, vectors, threshold=0.95, keep="highest_ifd")
    counts = [entry["removed"] for entry in result.by_threshold]
    assert len(set(counts)) > 5  # the planted cosines spread the counts over the thresholds
    for entry in result.by_threshold:
        alone = semantic_duplicates(t, vectors, threshold=entry["threshold"], keep="highest_ifd", thresholds=())
        assert alone.removed == entry["removed"]
        assert alone.by_threshold == [entry]


# ------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": 0}, r"threshold 0: expected a cosine similarity in \(0, 1\]"),
    ({"threshold": 1.5}, r"threshold 1.5: expected"),
    ({"threshold": float("nan")}, r"threshold nan: expected"),
    ({"threshold": True}, r"threshold True: expected"),
    ({"threshold": "0.9"}, r"threshold '0.9': expected"),
    ({"keep": "random"}, r"keep 'random': expected one of lowest_ppl, highest_ifd, first"),
    ({"keep": "highest_ifd"}, r"keep highest_ifd needs an `ifd` column.*koquality score --scorer ifd"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(KoqualityError, match=message):
        semantic_duplicates(table(2), np.eye(2), **{"threshold": 0.95, **kwargs})


def test_bad_inputs():
    with pytest.raises(KoqualityError, match="keep lowest_ppl needs a `ppl` column"):
        semantic_duplicates(table(2).drop(["ppl"]), np.eye(2))
    with pytest.raises(KoqualityError, match=r"column\(s\) cluster missing"):
        semantic_duplicates(table(2).drop(["cluster"]), np.eye(2))
    with pytest.raises(KoqualityError, match="vectors of shape \\(3, 2\\) for 2 rows"):
        semantic_duplicates(table(2), np.ones((3, 2)))
    with pytest.raises(KoqualityError, match="NaN or infinity"):
        semantic_duplicates(table(2), np.array([[1.0, np.nan], [1.0, 0]]))


def test_empty_table():
    result = semantic_duplicates(table(0), np.zeros((0, 4), dtype=np.float32))
    assert result.removed == 0 and result.keep_mask.shape == (0,) and result.info["cells"] == 0
    assert all(entry["removed"] == 0 for entry in result.by_threshold)
