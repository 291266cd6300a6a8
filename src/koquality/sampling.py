"""Stage 5 — sample: keep a ratio N of every (length group, cluster) cell.

The paper's three methods, within each length group:
- `rand`: a seeded uniform sample of round(N × rows in the group), ignoring clusters.
- `ppl`: order the group by `ppl` ascending (stable); in each cluster keep the rows at positions
  0, s, 2s, … of its ordered rows, s = int(1/N) — a systematic sample across the perplexity range
  (ceil(n/s) rows per cell).
- `ppl_h`: order by `ppl` descending; in each cluster keep the first m = int(N × rows in the cell) rows
  after dropping repeated instructions (m is counted before de-duplication, as the paper).
Python's `round` and `int` are used exactly as written. On identical clusters the selection equals the
paper's code (gen_dataset_curation/proceed_sampling_dataset.py) row for row only where no two rows of a length
group tie in perplexity as the original sorted it, rounded to 2 decimals (which makes ties common): it sorted
with pandas' default quicksort, which is not stable, so the order of tied rows, and with it which of them land
on the kept positions, is its sort's; koquality sorts the unrounded `ppl`, ties in table order.
`reproduce="original"` sorts by `ppl_rounded` (round(ppl, 2)) with ties ordered as a stable
sort of the original's tables orders them (by `len`, then table order), for the original's selections up to
its unstable sort's tie order; `rand` stays seeded (the original's `df.sample(frac=N)` had no seed).
The selection is sorted by (`len_group`, `cluster`, `ppl`, `len`) (`ppl_rounded`, then table order, with
`reproduce="original"`).

Beyond the paper, within each cell (its rows in table order), with the paper's budgets (`cell_budget`):
- `ifd`: the m = int(N × rows in the cell) rows of highest IFD (instruction-following difficulty, the `ifd`
  column) among those with ifd < 1 — Cherry LLM's rule: at IFD ≥ 1 the instruction does not help the model
  predict the answer — ties in table order. Rows without an ifd (null, NaN) are never chosen. Top-m, as
  `ppl_h`, so a cell smaller than 1/N keeps none.
- `ppl_ifd`: `ppl`'s systematic sample across the perplexity range, taken from the rows with ifd < 1 only,
  budget b = ceil(n/s) rows computed from the whole cell (n rows, s = int(1/N)), as `ppl`. With p rows passing,
  p ≥ b: the rows at positions ⌊i·s·p/n⌋, i = 0 … b−1, of the passing rows in `ppl` order — the paper's
  positions i·s scaled to the passing rows (the same quantiles of the perplexity order; exactly `ppl`'s rows
  when every row passes). p < b: all p passing rows, and `cell_summary(..., ifd=...)` counts the cells and rows
  short of their budget.
- `diverse`: greedy k-center (farthest-point) on the embeddings up to b = ceil(n/s) rows (`ppl`'s budget, so
  the two compare at equal size): the first centre drawn by `np.random.default_rng([seed, len_group, cluster])`,
  then, repeatedly, the row farthest from every centre chosen so far (squared L2 in float32, computed row by row
  without BLAS, so no thread count moves a bit; ties to the row first in table order). Needs the vectors
  (`sample(..., vectors=...)`). Rows with the same vector as a centre are at distance 0 and come last.
`reproduce="original"` changes only the perplexity order (`ppl_rounded`, ties by `len`), which `ppl_ifd` uses.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from .errors import MAX_SEED, KoqualityError, check_range
from .tables import check_finite, require_columns, set_column
from .threads import threads

PAPER_METHODS = ("rand", "ppl", "ppl_h")
METHODS = PAPER_METHODS + ("ifd", "ppl_ifd", "diverse")
IFD_METHODS = ("ifd", "ppl_ifd")  # need the `ifd` column
VECTOR_METHODS = ("diverse",)  # need the vectors
REQUIRED = ("ppl", "len_group", "cluster", "instruction")


def _stable_order(values: np.ndarray, descending: bool = False, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Stable sort: ties keep table order, in both directions; with `tiebreak`, ties go by it (ascending) first."""
    if tiebreak is not None:
        return np.lexsort((tiebreak, -values if descending else values))
    return np.argsort(-values if descending else values, kind="stable")


def select_indices(ppl: np.ndarray, len_group: np.ndarray, cluster: np.ndarray, instruction: list[str],
                   method: str, ratio: float, seed: int = 0, tiebreak: np.ndarray | None = None,
                   ifd: np.ndarray | None = None, vectors=None) -> np.ndarray:
    """Row indices the method keeps, unordered; the arrays are the table's columns (`tiebreak`: orders rows
    tied in `ppl` before table order; `ifd`: the ifd column, NaN where missing, for ifd / ppl_ifd; `vectors`:
    an array or `tables.VectorFile`, row i ↔ row i, for diverse)."""
    if method not in METHODS:
        raise KoqualityError(f"--method {method}: expected one of {', '.join(METHODS)}")
    if not 0 < ratio <= 1:
        raise KoqualityError(f"--ratio {ratio}: must be in (0, 1]")
    check_range("seed", seed, 0, MAX_SEED)
    if method not in PAPER_METHODS:
        return _select_beyond(ppl, len_group, cluster, method, ratio, seed, tiebreak, ifd, vectors)
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for g in np.unique(len_group):
        rows = np.flatnonzero(len_group == g)
        if method == "rand":
            size = round(ratio * len(rows))
            keep.append(np.sort(rng.choice(rows, size=size, replace=False)))
            continue
        ordered = rows[_stable_order(ppl[rows], descending=method == "ppl_h",
                                     tiebreak=None if tiebreak is None else tiebreak[rows])]
        for c in np.unique(cluster[ordered]):
            cell = ordered[cluster[ordered] == c]
            if method == "ppl":
                keep.append(cell[::int(1 / ratio)])
            else:
                m = int(ratio * len(cell))
                seen: set[str] = set()
                unique = []
                for i in cell:
                    if instruction[i] not in seen:
                        seen.add(instruction[i])
                        unique.append(i)
                keep.append(np.asarray(unique[:m], dtype=np.int64))
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


def cell_budget(method: str, size: int, ratio: float) -> int:
    """The rows a cell of `size` rows may give: ceil(size / int(1/N)) for the systematic samples (`ppl`,
    `ppl_ifd`, `diverse`), int(N × size) for the top-m rankings (`ppl_h`, `ifd`; `ppl_h` before dropping
    repeated instructions). `rand` samples length groups, not cells: round(N × size) of a group."""
    if method == "rand":
        return round(ratio * size)
    if method in ("ppl_h", "ifd"):
        return int(ratio * size)
    return len(range(0, size, int(1 / ratio)))


def ifd_passes(ifd: np.ndarray) -> np.ndarray:
    """Rows the IFD methods may choose: ifd < 1 (Cherry LLM's filter); null / NaN never."""
    with np.errstate(invalid="ignore"):
        return np.asarray(ifd, dtype=np.float64) < 1.0


def _cells(len_group: np.ndarray, cluster: np.ndarray):
    """(length group, cluster, the group's rows, the cell's positions among them), cell by cell in (group,
    cluster) order; rows in table order."""
    for g in np.unique(len_group):
        rows = np.flatnonzero(len_group == g)
        labels = cluster[rows]
        for c in np.unique(labels):
            yield g, c, rows, np.flatnonzero(labels == c)


def _select_beyond(ppl, len_group, cluster, method, ratio, seed, tiebreak, ifd, vectors) -> np.ndarray:
    """`ifd`, `ppl_ifd` and `diverse` (module docstring)."""
    n_rows = len(len_group)
    if method in IFD_METHODS:
        if ifd is None:
            raise KoqualityError(missing_ifd(method))
        ifd = np.asarray(ifd, dtype=np.float64)
        passes = ifd_passes(ifd)
    if method in VECTOR_METHODS:
        if vectors is None:
            raise KoqualityError(f"--method {method} needs the row vectors (sample(..., vectors=...): the embed "
                                 "stage's .npy, row i being row i of the table); koquality run passes its own")
        shape = getattr(vectors, "shape", None)
        if shape is None or len(shape) != 2 or shape[0] != n_rows:
            raise KoqualityError(f"--method {method}: vectors of shape {shape} for {n_rows} rows (expected rows "
                                 "× dims, row i of the vectors being row i of the table)")
    if method == "diverse":
        return _select_diverse(len_group, cluster, ratio, seed, vectors)
    keep: list[np.ndarray] = []
    for g, c, rows, positions in _cells(len_group, cluster):
        cell = rows[positions]
        budget = cell_budget(method, len(cell), ratio)
        candidates = cell[passes[cell]]
        if method == "ifd":
            keep.append(candidates[np.argsort(-ifd[candidates], kind="stable")[:budget]])
        else:
            ordered = candidates[_stable_order(ppl[candidates],
                                               tiebreak=None if tiebreak is None else tiebreak[candidates])]
            p, n, s = len(ordered), len(cell), int(1 / ratio)
            keep.append(ordered if p < budget else ordered[np.arange(budget) * s * p // n])
    return np.concatenate(keep).astype(np.int64) if keep else np.zeros(0, dtype=np.int64)


def _select_diverse(len_group, cluster, ratio, seed, vectors) -> np.ndarray:
    """k-center per cell; the vectors read one length group at a time (a VectorFile reads rows in passes over
    the file), the group's cells side by side on `threads.threads()` workers (each cell's result its own)."""
    keep: list[np.ndarray] = []
    by_group: dict = {}
    for g, c, rows, positions in _cells(len_group, cluster):
        by_group.setdefault(g, (rows, []))[1].append((c, positions))
    with ThreadPoolExecutor(max(1, threads()), thread_name_prefix="koquality-diverse") as pool:
        for g, (rows, cells) in by_group.items():
            group_vectors = vectors.rows(rows) if hasattr(vectors, "rows") else np.asarray(vectors[rows])
            check_finite(group_vectors, f"sample: length group {g}")

            def one(cell):
                c, positions = cell
                first = int(np.random.default_rng([seed, int(g), int(c)]).integers(len(positions)))
                return rows[positions][k_center(group_vectors[positions], cell_budget("diverse", len(positions), ratio),
                                                first)]

            keep.extend(pool.map(one, cells))
    return np.concatenate(keep).astype(np.int64) if keep else np.zeros(0, dtype=np.int64)


def k_center(vectors: np.ndarray, budget: int, first: int) -> np.ndarray:
    """Greedy farthest-point: `first`, then repeatedly the row with the largest squared L2 distance (float32)
    to its nearest chosen row, ties to the lowest index; `budget` positions in the order chosen."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    budget = min(budget, len(x))
    chosen = np.empty(budget, dtype=np.int64)
    if not budget:
        return chosen
    nearest = np.full(len(x), np.inf, dtype=np.float32)
    diff = np.empty_like(x)
    pick = first
    for i in range(budget):
        chosen[i] = pick
        np.subtract(x, x[pick], out=diff)
        np.multiply(diff, diff, out=diff)
        np.minimum(nearest, diff.sum(axis=1), out=nearest)  # numpy's pairwise sum, row by row: no BLAS
        nearest[pick] = -1.0  # chosen: never again, even when every row left is at distance 0
        if i + 1 < budget:
            pick = int(np.argmax(nearest))
    return chosen


def missing_ifd(method: str) -> str:
    return (f"--method {method} needs an `ifd` column (instruction-following difficulty), which the table lacks: "
            "score it with `koquality run` and an `ifd:` recipe section, or `koquality score --scorer ifd`")


def sample(table: pa.Table, method: str = "ppl", ratio: float = 0.01, seed: int = 0,
           reproduce: str | None = None, vectors=None) -> pa.Table:
    """`reproduce="original"`: sort by `ppl_rounded` (computed from `ppl` when the table lacks it, and added),
    ties by `len`, as the original's code (see the module docstring). `vectors` (an array or a
    `tables.VectorFile`, row i ↔ table row i): the embeddings, for `diverse`."""
    from .clustering import check_reproduce, round_ppl

    check_reproduce(reproduce)
    require_columns(table, REQUIRED, "sample")
    if method in IFD_METHODS and "ifd" not in table.column_names:
        raise KoqualityError(missing_ifd(method))
    if table.column("ppl").null_count:
        raise KoqualityError(f"sample: {table.column('ppl').null_count} rows have no ppl (unscorable); "
                             "drop them first (koquality run does this and records them in dropped.parquet)")
    ppl = table.column("ppl").to_numpy()
    len_group = table.column("len_group").to_numpy()
    cluster = table.column("cluster").to_numpy()
    lengths = table.column("len").to_numpy() if "len" in table.column_names else np.zeros(table.num_rows)
    if reproduce:
        if "ppl_rounded" not in table.column_names:
            table = set_column(table, "ppl_rounded", pa.array(round_ppl(ppl), type=pa.float64()))
        ppl = table.column("ppl_rounded").to_numpy()
    ifd = table.column("ifd").to_numpy(zero_copy_only=False).astype(np.float64) if method in IFD_METHODS else None
    instruction = table.column("instruction").to_pylist() if method == "ppl_h" else []  # only ppl_h reads it
    chosen = select_indices(ppl, len_group, cluster, instruction, method, ratio, seed,
                            tiebreak=lengths if reproduce else None, ifd=ifd, vectors=vectors)
    if reproduce:
        chosen = np.sort(chosen)  # the original's final sort leaves full ties in table order
    # Sort by (len_group, cluster, ppl, len); np.lexsort takes the primary key last.
    order = np.lexsort((lengths[chosen], ppl[chosen], cluster[chosen], len_group[chosen]))
    return table.take(pa.array(chosen[order], type=pa.int64()))


COLLAPSE = {  # what a cell smaller than 1/N gives, per method, for cell_summary's warning
    "rand": "rand samples whole length groups", "ppl": "ppl keeps one row of each",
    "ppl_h": "ppl_h keeps none of them", "ifd": "ifd keeps none of them",
    "ppl_ifd": "ppl_ifd keeps one row of each that has a row with ifd < 1", "diverse": "diverse keeps one row of each",
}


def cell_summary(len_group: np.ndarray, cluster: np.ndarray, method: str, ratio: float, selected: int,
                 ifd: np.ndarray | None = None) -> dict:
    """How the paper's per-cell rule played out, for the summary, the manifest and the report.

    A cell smaller than 1/N collapses: `ppl` keeps its row at position 0 (one row, more than N of it) and
    `ppl_h` keeps int(N × size) = 0 rows. That is the paper's rule and stays, but with many small cells the
    selection is far from N of the corpus (all of it, or nothing), and the user must be told.
    With `ifd` (the column, NaN where missing) for `ifd` / `ppl_ifd`: `summary["ifd"]` counts the rows the
    filter (ifd < 1) lets through and the cells with fewer passing rows than their budget (`cell_budget`),
    which then give all they have."""
    rows = len(len_group)
    _, sizes = np.unique(np.stack([len_group, cluster]), axis=1, return_counts=True) if rows else (None, np.zeros(0))
    below = int((sizes * ratio < 1).sum())
    effective = selected / rows if rows else 0.0
    summary = {"method": method, "ratio": ratio, "cells": int(len(sizes)), "cells_below_1_over_n": below,
               "selected": selected, "effective_ratio": round(effective, 6), "warning": None}
    why = (f"{below:,} of {len(sizes):,} cells hold fewer than 1/N = {1 / ratio:g} rows "
           f"({COLLAPSE.get(method, COLLAPSE['rand'])})")
    if method in IFD_METHODS and ifd is not None:
        passes = ifd_passes(ifd)
        short_cells = short_rows = 0
        for _, _, group_rows, positions in _cells(np.asarray(len_group), np.asarray(cluster)):
            budget = cell_budget(method, len(positions), ratio)
            passing = int(passes[group_rows[positions]].sum())
            if passing < budget:
                short_cells += 1
                short_rows += budget - passing
        summary["ifd"] = {"rows_passing": int(passes.sum()), "rows_filtered": int(rows - passes.sum()),
                          "cells_short": short_cells, "rows_short": short_rows}
        if short_rows:
            why += (f"; {short_cells:,} {'cell has' if short_cells == 1 else 'cells have'} fewer rows with ifd < 1 "
                    f"than {'its' if short_cells == 1 else 'their'} budget, {short_rows:,} rows short")
    if selected == 0:
        summary["warning"] = f"the selection is empty: {why}; raise the ratio or lower K"
    elif not ratio / 2 <= effective <= ratio * 2:
        summary["warning"] = (f"selected {effective:.2%} of the corpus, {effective / ratio:.1f}× the ratio N = {ratio:g}: "
                              f"{why}; lower K (or L) for cells of at least 1/N rows")
    return summary
