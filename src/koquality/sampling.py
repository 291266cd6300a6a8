"""Stage 5 — sample: keep a ratio N of every (length group, cluster) cell.

The paper's three methods, within each length group:
- `rand`: a seeded uniform sample of round(N × rows in the group), ignoring clusters.
- `ppl`: order the group by `ppl` ascending (stable); in each cluster keep the rows at positions
  0, s, 2s, … of its ordered rows, s = int(1/N) — a systematic sample across the perplexity range
  (ceil(n/s) rows per cell).
- `ppl_h`: order by `ppl` descending; in each cluster keep the first m = int(N × rows in the cell) rows
  after dropping repeated instructions (m is counted before de-duplication, as the paper).
Python's `round` and `int` are used exactly as written, so results match the paper's code to the row.
The selection is sorted by (`len_group`, `cluster`, `ppl`, `len`).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .errors import MAX_SEED, KoqualityError, check_range
from .tables import require_columns

METHODS = ("rand", "ppl", "ppl_h")
REQUIRED = ("ppl", "len_group", "cluster", "instruction")


def _stable_order(values: np.ndarray, descending: bool = False) -> np.ndarray:
    """Stable sort: ties keep table order, in both directions."""
    return np.argsort(-values if descending else values, kind="stable")


def select_indices(ppl: np.ndarray, len_group: np.ndarray, cluster: np.ndarray, instruction: list[str],
                   method: str, ratio: float, seed: int = 0) -> np.ndarray:
    """Row indices the method keeps, unordered; the arrays are the table's columns."""
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
        ordered = rows[_stable_order(ppl[rows], descending=method == "ppl_h")]
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


def sample(table: pa.Table, method: str = "ppl", ratio: float = 0.01, seed: int = 0) -> pa.Table:
    require_columns(table, REQUIRED, "sample")
    if table.column("ppl").null_count:
        raise KoqualityError(f"sample: {table.column('ppl').null_count} rows have no ppl (unscorable); "
                             "drop them first (koquality run does this and records them in dropped.parquet)")
    ppl = table.column("ppl").to_numpy()
    len_group = table.column("len_group").to_numpy()
    cluster = table.column("cluster").to_numpy()
    chosen = select_indices(ppl, len_group, cluster, table.column("instruction").to_pylist(), method, ratio, seed)
    # Sort by (len_group, cluster, ppl, len); np.lexsort takes the primary key last.
    lengths = table.column("len").to_numpy() if "len" in table.column_names else np.zeros(table.num_rows)
    order = np.lexsort((lengths[chosen], ppl[chosen], cluster[chosen], len_group[chosen]))
    return table.take(pa.array(chosen[order], type=pa.int64()))
