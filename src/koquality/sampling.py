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
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .errors import MAX_SEED, KoqualityError, check_range
from .tables import require_columns, set_column

METHODS = ("rand", "ppl", "ppl_h")
REQUIRED = ("ppl", "len_group", "cluster", "instruction")


def _stable_order(values: np.ndarray, descending: bool = False, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Stable sort: ties keep table order, in both directions; with `tiebreak`, ties go by it (ascending) first."""
    if tiebreak is not None:
        return np.lexsort((tiebreak, -values if descending else values))
    return np.argsort(-values if descending else values, kind="stable")


def select_indices(ppl: np.ndarray, len_group: np.ndarray, cluster: np.ndarray, instruction: list[str],
                   method: str, ratio: float, seed: int = 0, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Row indices the method keeps, unordered; the arrays are the table's columns (`tiebreak`: orders rows
    tied in `ppl` before table order)."""
    if method not in METHODS:
        raise KoqualityError(f"--method {method}: expected one of {', '.join(METHODS)}")
    if not 0 < ratio <= 1:
        raise KoqualityError(f"--ratio {ratio}: must be in (0, 1]")
    check_range("seed", seed, 0, MAX_SEED)
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


def sample(table: pa.Table, method: str = "ppl", ratio: float = 0.01, seed: int = 0,
           reproduce: str | None = None) -> pa.Table:
    """`reproduce="original"`: sort by `ppl_rounded` (computed from `ppl` when the table lacks it, and added),
    ties by `len`, as the original's code (see the module docstring)."""
    from .clustering import check_reproduce, round_ppl

    check_reproduce(reproduce)
    require_columns(table, REQUIRED, "sample")
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
    chosen = select_indices(ppl, len_group, cluster, table.column("instruction").to_pylist(), method, ratio, seed,
                            tiebreak=lengths if reproduce else None)
    if reproduce:
        chosen = np.sort(chosen)  # the original's final sort leaves full ties in table order
    # Sort by (len_group, cluster, ppl, len); np.lexsort takes the primary key last.
    order = np.lexsort((lengths[chosen], ppl[chosen], cluster[chosen], len_group[chosen]))
    return table.take(pa.array(chosen[order], type=pa.int64()))


def cell_summary(len_group: np.ndarray, cluster: np.ndarray, method: str, ratio: float, selected: int) -> dict:
    """How the paper's per-cell rule played out, for the summary, the manifest and the report.

    A cell smaller than 1/N collapses: `ppl` keeps its row at position 0 (one row, more than N of it) and
    `ppl_h` keeps int(N × size) = 0 rows. That is the paper's rule and stays, but with many small cells the
    selection is far from N of the corpus (all of it, or nothing), and the user must be told."""
    rows = len(len_group)
    _, sizes = np.unique(np.stack([len_group, cluster]), axis=1, return_counts=True) if rows else (None, np.zeros(0))
    below = int((sizes * ratio < 1).sum())
    effective = selected / rows if rows else 0.0
    summary = {"method": method, "ratio": ratio, "cells": int(len(sizes)), "cells_below_1_over_n": below,
               "selected": selected, "effective_ratio": round(effective, 6), "warning": None}
    why = (f"{below:,} of {len(sizes):,} cells hold fewer than 1/N = {1 / ratio:g} rows "
           f"({'ppl keeps one row of each' if method == 'ppl' else 'ppl_h keeps none of them' if method == 'ppl_h' else 'rand samples whole length groups'})")
    if selected == 0:
        summary["warning"] = f"the selection is empty: {why}; raise the ratio or lower K"
    elif not ratio / 2 <= effective <= ratio * 2:
        summary["warning"] = (f"selected {effective:.2%} of the corpus, {effective / ratio:.1f}× the ratio N = {ratio:g}: "
                              f"{why}; lower K (or L) for cells of at least 1/N rows")
    return summary
