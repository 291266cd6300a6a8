"""Stage 4b — semantic dedup: inside each (length group, cluster) cell, drop the rows whose embedding is nearly
the same as a row kept before them (NeMo Curator's SemDeDup, exact within a cell).

Reads the clustered table (`len_group`, `cluster`, `id`, and `ppl` or `ifd` as the keep order needs) and the
row vectors (the embed stage's .npy; row i ↔ table row i), one length group at a time. Writes nothing itself:
`semantic_duplicates` returns a keep mask, the dropped rows (reason `semantic_duplicate`) each with the kept
row that made it one, and how many rows every threshold 0.85, 0.86 … 0.99 would remove, from the same search.

The rule (recipe `dedup: {threshold: 0.95, keep: lowest_ppl}`):
- Keep order, per cell: `lowest_ppl` (`ppl` ascending), `highest_ifd` (`ifd` descending), `first` (table
  order). Ties go in table order; rows without the value (null or NaN) come last.
- Greedy: visit the cell's rows in that order; a row is kept unless its cosine similarity to a row already
  kept exceeds the threshold (strictly), and then it is dropped, naming the kept row it is most similar to
  (the earliest in keep order on a tie). A row similar only to dropped rows is kept: with A~B and B~C but
  not A~C, A and C stay. (NeMo Curator's SemDeDup compares a row with every earlier one, dropped ones
  included, so it would drop C as well; here a row goes only when something kept covers it.)
- Rows in different cells are never compared: the cells are the clusters the sampling will read, and
  exact search inside them stays affordable (a 50K-row cell is 1.25G pairs).
- Zero vectors (an empty text's TF-IDF) have no direction: their similarity to everything is 0, so they are
  never a duplicate and never make one.

The similarity, to the bit. Each vector is L2-normalised (norm in float64, the quotient rounded to float32);
a pair's similarity is the float32 entry of a single-threaded sgemm (numpy's BLAS, pinned by
`threads.one_thread`) over fixed tiles of `TILE` rows of the cell in keep order: the later row's tile times the
earlier row's tile transposed (within one tile, its own product, which numpy computes with syrk). "Exceeds t"
compares that float32 value with t as real numbers (`float32_above`). Every tile's shape and contents depend
only on the cell and the keep order, so the result does not depend on the thread count, on how many cells run
side by side or on how the vectors are read, and a float32 similarity sitting exactly at a threshold goes the
same way on every run. (An sgemm's last bits can depend on where a row sits in its block — clustering.py
measured that in faiss's flat search — so the tiles are fixed, not sized by memory; faiss's blocking is its own
and has changed between versions, which is why the products are not left to it.) Two keep orders tile a cell
differently, so a pair's similarity may differ between them in the last bit.

One search, every threshold. The tiles are compared with the lowest threshold asked for; each threshold then
runs its own greedy pass over the same similarities, so `by_threshold` counts are exactly those of separate
runs. Cells run side by side on `threads.threads()` workers, each single-threaded (as clustering's length
groups): the results are those of one cell after another. The vectors are read one length group at a time (the
next while the current one's cells run): memory holds two groups' vectors, not the file. On 400K rows × 256
(the offline pipeline's TF-IDF/SVD vectors, L=5, K=100, largest cell 5.5K rows) the stage took 11.6 s and
0.61 GB on 2 shared cores; with one 50K-row cell, 22 s (benchmarks/bench_dedup.py).
"""

from __future__ import annotations

import numbers
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from . import progress
from .errors import KoqualityError
from .tables import check_finite, require_columns
from .threads import one_thread, threads

KEEP_ORDERS = ("lowest_ppl", "highest_ifd", "first")
REASON = "semantic_duplicate"
THRESHOLDS = tuple(round(0.85 + i / 100, 2) for i in range(15))  # 0.85, 0.86 … 0.99: the report's sweep
TILE = 1024  # rows per sgemm operand; fixed, since the similarities' bits depend on it (module docstring)
EXAMPLES = 3  # example pairs per threshold


@dataclass
class DedupResult:
    """`keep_mask`: one bool per table row. `duplicates`: the dropped rows in table order (id, kept_id,
    similarity, len_group, cluster). `by_threshold`: per threshold (ascending, the configured one included),
    `{"threshold", "removed", "examples": [{"id", "kept_id", "similarity"}, …]}`; the examples are the dropped
    rows with the lowest similarity to their kept row — the pairs that threshold only just catches."""
    keep_mask: np.ndarray
    duplicates: pa.Table
    by_threshold: list[dict[str, Any]]
    threshold: float
    keep: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def removed(self) -> int:
        return self.duplicates.num_rows

    def details(self) -> list[str]:
        """One line per dropped row, for the ledger (`dropped.parquet`'s `detail`)."""
        d = self.duplicates
        return [f"cosine {s:.4f} > {self.threshold:g} to kept row {k} (keep: {self.keep}; length group {g}, cluster {c})"
                for s, k, g, c in zip(*(d.column(name).to_pylist() for name in ("similarity", "kept_id", "len_group", "cluster")))]

    def summary(self) -> dict[str, Any]:
        """The manifest's and the report's entry."""
        return {"threshold": self.threshold, "keep": self.keep, "removed": self.removed, **self.info,
                "by_threshold": self.by_threshold}


def float32_above(threshold: float) -> np.float32:
    """The smallest float32 strictly greater than `threshold`: `s > threshold` ⟺ `s >= float32_above(...)` for
    every float32 s, so the comparison runs in float32 with no rounding of the threshold."""
    bound = np.float32(threshold)
    return bound if float(bound) > threshold else np.nextafter(bound, np.float32(np.inf))


def check_threshold(threshold: float, what: str = "dedup: threshold") -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0 < threshold <= 1:
        raise KoqualityError(f"{what} {threshold!r}: expected a cosine similarity in (0, 1], e.g. 0.95")
    return float(threshold)


def check_keep(keep: str) -> str:
    if keep not in KEEP_ORDERS:
        raise KoqualityError(f"dedup: keep {keep!r}: expected one of {', '.join(KEEP_ORDERS)}")
    return keep


def keep_order_key(table: pa.Table, keep: str) -> np.ndarray | None:
    """The values the keep order sorts ascending (NaN last), or None for table order."""
    check_keep(keep)
    if keep == "first":
        return None
    column = "ppl" if keep == "lowest_ppl" else "ifd"
    if column not in table.column_names:
        how = ("score the rows first (koquality run's score stage, or koquality score)" if column == "ppl" else
               "score it with `koquality run` and an `ifd:` recipe section, or `koquality score --scorer ifd`")
        article = "a" if column == "ppl" else "an"
        raise KoqualityError(f"dedup: keep {keep} needs {article} `{column}` column, which the table lacks "
                             f"(found: {', '.join(table.column_names)}); {how}, or use keep: first")
    values = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)  # null → NaN
    return values if keep == "lowest_ppl" else -values


def semantic_duplicates(table: pa.Table, vectors, threshold: float = 0.95, keep: str = "lowest_ppl",
                        thresholds: tuple[float, ...] = THRESHOLDS, examples: int = EXAMPLES) -> DedupResult:
    """Semantic dedup inside every (len_group, cluster) cell (see the module docstring).

    `vectors`: an array or a `tables.VectorFile` (read one length group at a time), row i ↔ table row i.
    `thresholds`: the others to count for `by_threshold` (the configured one is always among them)."""
    threshold = check_threshold(threshold)
    key = keep_order_key(table, keep)
    require_columns(table, ["id", "len_group", "cluster"], "dedup")
    for name in ("len_group", "cluster"):
        if table.column(name).null_count:
            raise KoqualityError(f"dedup: {table.column(name).null_count} rows have no {name}; cluster them first")
    shape = getattr(vectors, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != table.num_rows:
        raise KoqualityError(f"dedup: vectors of shape {shape} for {table.num_rows} rows (expected rows × dims, "
                             "row i of the vectors being row i of the table)")
    levels = sorted({threshold, *(check_threshold(t, "dedup: thresholds") for t in thresholds)})
    bounds = np.array([float32_above(t) for t in levels], dtype=np.float32)
    configured = levels.index(threshold)
    n_rows = table.num_rows
    len_group = table.column("len_group").to_numpy()
    cluster = table.column("cluster").to_numpy()

    dropped = np.zeros(n_rows, dtype=bool)
    match = np.full(n_rows, -1, dtype=np.int64)
    similarity = np.zeros(n_rows, dtype=np.float32)
    removed = np.zeros(len(levels), dtype=np.int64)
    candidates: list[list[np.ndarray]] = [[] for _ in levels]  # per threshold: (similarity, row, kept row) rows
    zero_vectors = 0
    cells = 0
    workers = max(1, threads())
    groups = [(g, np.flatnonzero(len_group == g)) for g in np.unique(len_group)]

    def read(i: int) -> np.ndarray:
        g, rows = groups[i]
        group_vectors = vectors.rows(rows) if hasattr(vectors, "rows") else np.asarray(vectors[rows])
        check_finite(group_vectors, f"dedup: length group {g}")
        return group_vectors

    # one length group in memory at a time, and the next one read while its cells are compared
    with progress.stage("dedup", n_rows) as advance, one_thread(), \
            ThreadPoolExecutor(workers, thread_name_prefix="koquality-dedup") as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="koquality-dedup-read") as reader:
        pending = reader.submit(read, 0) if groups else None
        for i, (g, rows) in enumerate(groups):
            group_vectors = pending.result()
            pending = reader.submit(read, i + 1) if i + 1 < len(groups) else None
            by_cluster = np.argsort(cluster[rows], kind="stable")
            _, starts = np.unique(cluster[rows][by_cluster], return_index=True)
            members = np.split(by_cluster, starts[1:])  # positions in the group, table order within each cell

            def run_cell(local: np.ndarray):
                order = np.arange(len(local)) if key is None else np.argsort(key[rows[local]], kind="stable")
                local = local[order]  # keep order
                x, zeros = _normalised(group_vectors[local])
                return local, zeros, _dedup_cell(x, bounds)

            by_size = sorted(range(len(members)), key=lambda j: -len(members[j]))  # largest first: shorter tail
            results = dict(zip(by_size, pool.map(run_cell, [members[j] for j in by_size])))
            for j in range(len(members)):
                local, zeros, (kept, best, best_match) = results[j]
                table_rows = rows[local]  # keep order
                zero_vectors += zeros
                cells += 1
                for k in range(len(levels)):
                    gone = np.flatnonzero(~kept[k])
                    removed[k] += len(gone)
                    if len(gone) and examples > 0:
                        pick = gone[np.lexsort((table_rows[gone], best[k, gone]))[:examples]]
                        candidates[k].append(np.stack([best[k, pick].astype(np.float64),
                                                       table_rows[pick], table_rows[best_match[k, pick]]], 1))
                gone = np.flatnonzero(~kept[configured])
                dropped[table_rows[gone]] = True
                match[table_rows[gone]] = table_rows[best_match[configured, gone]]
                similarity[table_rows[gone]] = best[configured, gone]
                advance(len(local))

    ids = table.column("id")
    gone = np.flatnonzero(dropped)
    duplicates = pa.table({
        "id": ids.take(pa.array(gone, pa.int64())),
        "kept_id": ids.take(pa.array(match[gone], pa.int64())),
        "similarity": pa.array(similarity[gone].astype(np.float64), pa.float64()),
        "len_group": pa.array(len_group[gone], pa.int32()),
        "cluster": pa.array(cluster[gone], pa.int32()),
    })
    by_threshold = []
    for k, t in enumerate(levels):
        shown = []
        if candidates[k]:
            found = np.concatenate(candidates[k])
            for s, row, kept_row in found[np.lexsort((found[:, 1], found[:, 0]))][:examples]:
                shown.append({"id": ids[int(row)].as_py(), "kept_id": ids[int(kept_row)].as_py(),
                              "similarity": float(s)})
        by_threshold.append({"threshold": t, "removed": int(removed[k]), "examples": shown})
    info = {"rows": n_rows, "cells": cells, "zero_vectors": zero_vectors, "tile": TILE}
    return DedupResult(~dropped, duplicates, by_threshold, threshold, keep, info)


def _normalised(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows scaled to unit L2 norm (norm in float64, rounded to float32 once); zero rows stay zero. Row by row,
    so a row's bits do not depend on the rows read with it."""
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.sqrt((x64 * x64).sum(axis=1))
    zero = norms == 0
    out = (x64 / np.where(zero, 1.0, norms)[:, None]).astype(np.float32)
    return np.ascontiguousarray(out), int(zero.sum())


KEPT, DROPPED, UNDECIDED = 1, 2, 0


def _dedup_cell(x: np.ndarray, bounds: np.ndarray, tile: int | None = None):
    """The greedy pass of every threshold over one cell whose unit vectors `x` are in keep order.

    Returns (kept: thresholds × rows bool; best: the highest similarity of each row to a row kept before it,
    float32, −inf when none reaches the lowest threshold; best_match: that row's position, −1 when none). A row
    is dropped at threshold k iff best[k] >= bounds[k] (`float32_above` of the threshold)."""
    tile = tile or TILE
    n = len(x)
    m = len(bounds)
    kept = np.zeros((m, n), dtype=bool)
    best = np.full((m, n), -np.inf, dtype=np.float32)
    best_match = np.full((m, n), -1, dtype=np.int64)
    low = bounds[0]
    for a0 in range(0, n, tile):
        a1 = min(a0 + tile, n)
        xa = x[a0:a1]
        tile_best, tile_match = best[:, a0:a1], best_match[:, a0:a1]  # views: updated in place
        if a0:
            earlier = kept[:, :a0]
            always = earlier.all(axis=0)  # kept at every threshold: one max serves them all
            sometimes = np.flatnonzero(earlier.any(axis=0) & ~always)
            for b0 in range(0, a0, tile):
                b1 = b0 + tile
                s = xa @ x[b0:b1].T  # (this tile's rows, earlier rows)
                hot = np.flatnonzero(s.max(axis=1) >= low)  # rows that an earlier row reaches at all
                if not len(hot):
                    continue  # below every threshold: no drop, and no match worth keeping
                s = s[hot]
                some = sometimes[(sometimes >= b0) & (sometimes < b1)] - b0
                by_some = s[:, some]
                hot_best, hot_match = tile_best[:, hot], tile_match[:, hot]
                if always[b0:b1].any():
                    s[:, ~always[b0:b1]] = -np.inf
                    _take_best(hot_best, hot_match, s, b0)
                for k in range(m) if len(some) else ():
                    chosen = kept[k, some + b0]
                    if chosen.any():
                        _take_best(hot_best[k:k + 1], hot_match[k:k + 1], by_some[:, chosen], some[chosen] + b0)
                tile_best[:, hot], tile_match[:, hot] = hot_best, hot_match
        s = xa @ xa.T  # the diagonal tile (numpy computes it with syrk: the same call every time)
        r, e = np.nonzero(np.tril(s >= low, -1))  # e earlier than r, both in this tile
        sv = s[r, e]
        for k in range(m):
            live = sv >= bounds[k]
            tile_kept = _greedy(tile_best[k] >= bounds[k], e[live], r[live])
            kept[k, a0:a1] = tile_kept
            by_kept = live & tile_kept[e]
            if by_kept.any():
                ek, rk, sk = e[by_kept], r[by_kept], sv[by_kept]
                first = np.lexsort((ek, -sk, rk))  # per later row: highest similarity, then earliest
                rk, start = np.unique(rk[first], return_index=True)
                ek, sk = ek[first][start], sk[first][start]
                better = sk > tile_best[k, rk]  # an earlier tile's row wins a tie: it comes first
                tile_best[k, rk[better]] = sk[better]
                tile_match[k, rk[better]] = ek[better] + a0
    return kept, best, best_match


def _take_best(best: np.ndarray, match: np.ndarray, s: np.ndarray, positions) -> None:
    """Fold the similarities `s` (the tile's rows × candidate rows at `positions`, or from position `positions`
    on) into every row of `best` / `match`: a higher similarity wins, an equal one goes to the earlier position."""
    top = s.argmax(axis=1)  # the first maximum: the earliest of the candidates
    value = s[np.arange(len(s)), top]
    where = top + positions if np.isscalar(positions) else positions[top]
    better = (value > best) | ((value == best) & (where < match))
    np.copyto(best, np.broadcast_to(value, best.shape), where=better)
    np.copyto(match, np.broadcast_to(where, match.shape), where=better)


def _greedy(dropped: np.ndarray, e: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The greedy keep of one tile's rows at one threshold: `dropped` rows are already covered by rows kept in
    earlier tiles; every other row is kept unless an edge (e → r, e earlier, similar above the threshold)
    comes from a kept row. Decided in rounds over all edges at once: a row is kept once every earlier neighbour
    is decided and none is kept, dropped as soon as one is kept. The earliest undecided row is always decided,
    so the rounds end (in practice after a few: a round settles every row whose earlier neighbours settled)."""
    n = len(dropped)
    status = np.where(dropped, DROPPED, UNDECIDED).astype(np.int8)
    has_earlier = np.zeros(n, dtype=bool)
    has_earlier[r] = True
    status[(status == UNDECIDED) & ~has_earlier] = KEPT
    live = status[r] == UNDECIDED
    e, r = e[live], r[live]
    while len(r):
        from_e = status[e]
        killed = np.zeros(n, dtype=bool)
        killed[r[from_e == KEPT]] = True
        waiting = np.zeros(n, dtype=bool)
        waiting[r[from_e == UNDECIDED]] = True
        open_rows = status == UNDECIDED
        status[open_rows & killed] = DROPPED
        status[open_rows & ~killed & ~waiting] = KEPT
        live = status[r] == UNDECIDED
        e, r = e[live], r[live]
    return status == KEPT

