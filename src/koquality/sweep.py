"""The paper's experiment grid in one call: every (L, K, method, N) selection from one scored, embedded corpus.

The paper compared L ∈ {1, 5, 10, 20} length groups, K ∈ {1, 10, 20, 50, 100} clusters, methods rand /
ppl / ppl_h and ratios N ∈ {0.1, 0.05, 0.01}: 180 selections. Scoring and embedding happen once (and come
from the run directory's caches when they can), clustering once per (L, K), and every selection is written
as `selections/len{L}_k{K}_m{M}_n{N}.jsonl` (the texts fetched by one streaming pass over the corpus per
(L, K), so memory follows the selections, not the corpus). `sweep.csv` summarises each selection in one row.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .pipeline import cluster_into, corpus_rows, dedup_into, finish_run, ifd_values, log, selection_rows, started_run
from .recipe import Recipe
from .errors import KoqualityError
from .sampling import IFD_METHODS, METHODS, PAPER_METHODS, cell_summary, missing_ifd, sample
from .tables import atomic_path, write_table

PAPER_GRID = {"len_groups": [1, 5, 10, 20], "k": [1, 10, 20, 50, 100], "method": list(PAPER_METHODS),
              "ratio": [0.1, 0.05, 0.01]}


@dataclass
class SweepResult:
    run_dir: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]  # one per selection, as in sweep.csv


def selection_stats(selection: pa.Table, sources: list[str]) -> dict[str, Any]:
    """What a person wants to compare across a grid: size, source mix, perplexity, length, coverage, repeats."""
    n = selection.num_rows
    counts = Counter(selection.column("source").to_pylist())
    ppl = selection.column("ppl").to_numpy() if n else np.array([])
    instructions = selection.column("instruction").to_pylist()
    stats = {"rows": n}
    stats.update({f"share_{s}": round(counts.get(s, 0) / n, 4) if n else 0.0 for s in sources})
    stats.update({
        "mean_ppl": round(float(ppl.mean()), 3) if n else None,
        "median_ppl": round(float(np.median(ppl)), 3) if n else None,
        "mean_len": round(float(np.mean(selection.column("len").to_numpy())), 2) if n else None,
        "cells_covered": len(set(zip(selection.column("len_group").to_pylist(), selection.column("cluster").to_pylist()))),
        "duplicate_instructions": n - len(set(instructions)),
        "mean_ifd": (round(float(np.nanmean(selection.column("ifd").to_numpy(zero_copy_only=False).astype(float))), 4)
                     if n and "ifd" in selection.column_names else None),
    })
    return stats


def _warn_collapsed(rows: list[dict[str, Any]], corpus: int) -> None:
    """The grid's selections that the per-cell rule emptied or filled with the whole corpus, in one line."""
    empty = sum(1 for r in rows if r["rows"] == 0)
    whole = sum(1 for r in rows if r["rows"] == corpus)
    far = sum(1 for r in rows if r["rows"] and not r["ratio"] / 2 <= r["effective_ratio"] <= r["ratio"] * 2)
    if empty or far:
        log.warning("sweep: %d of %d selections are empty and %d are more than 2× off their ratio N (%d of them the "
                    "whole corpus): their cells hold fewer than 1/N rows (see effective_ratio and "
                    "cells_below_1_over_n in sweep.csv)", empty, len(rows), far, whole)


def _listed_selections(run_dir: Path) -> set[str]:
    """The selection files an earlier sweep into `run_dir` wrote, as its sweep.csv lists them."""
    try:
        with open(run_dir / "sweep.csv", encoding="utf-8", newline="") as f:
            files = {row.get("file") or "" for row in csv.DictReader(f)}
    except (OSError, csv.Error):
        return set()
    return {name for name in files if name.startswith("selections/") and "/" not in name[len("selections/"):]
            and name.endswith(".jsonl")}


def sweep(recipe: Recipe, run_dir: str | Path, len_groups: list[int] | None = None, k: list[int] | None = None,
          method: list[str] | None = None, ratio: list[float] | None = None, force: bool = False,
          report: bool = True) -> SweepResult:
    """Every combination of the grid (default: the paper's) into `run_dir`; the recipe's own cluster and
    sample settings (else the paper's final L=5, K=100, ppl, N=0.01) pick the selection the report shows."""
    grid = {"len_groups": len_groups or PAPER_GRID["len_groups"], "k": k or PAPER_GRID["k"],
            "method": method or PAPER_GRID["method"], "ratio": ratio or PAPER_GRID["ratio"]}
    unknown = [m for m in grid["method"] if m not in METHODS]
    if unknown:
        raise KoqualityError(f"--method {','.join(unknown)}: expected methods among {', '.join(METHODS)}")
    if recipe.ifd is None and any(m in IFD_METHODS for m in grid["method"]):
        raise KoqualityError(missing_ifd(next(m for m in grid["method"] if m in IFD_METHODS)).replace(
            "an `ifd:` recipe section", "an `ifd:` recipe section (or --ifd-model)"))
    run_dir = Path(run_dir)
    with started_run(recipe, run_dir, force) as (stages, prepared, started):
        sources = sorted(set(prepared.corpus.column("source").to_pylist()))
        contaminated = prepared.drops.by_reason().get("contaminated", 0)
        rows: list[dict[str, Any]] = []
        # The selection the report and summary show: the recipe's own setting, else the paper's final one.
        preference = [(recipe.cluster.len_groups, recipe.cluster.k, recipe.sample.method, recipe.sample.ratio),
                      (5, 100, "ppl", 0.01)]
        shown = None
        start = time.perf_counter()
        for L in grid["len_groups"]:
            for K in grid["k"]:
                clustered, cluster_path = cluster_into(run_dir, prepared, recipe, L, K)
                kept = dedup_into(run_dir, prepared, recipe, clustered, L, K)
                chosen_by = {(m, n): sample(kept.table, m, n, seed=recipe.seed, reproduce=recipe.reproduce, vectors=kept.vectors)
                             for m in grid["method"] for n in grid["ratio"]}
                groups, clusters = kept.table.column("len_group").to_numpy(), kept.table.column("cluster").to_numpy()
                ifd = ifd_values(kept.table)
                # one streaming pass over the corpus per (L, K) fetches the texts of all its selections
                ids = [chunk for c in chosen_by.values() for chunk in c.column("id").chunks]
                wanted = pc.unique(pa.chunked_array(ids, type=pa.string()).combine_chunks())
                rows_lk = corpus_rows(prepared.corpus_path, wanted)
                for (m, n), chosen in chosen_by.items():
                    selection = selection_rows(rows_lk, chosen)
                    name = f"len{L}_k{K}_m{m}_n{n:g}"
                    path = run_dir / "selections" / f"{name}.jsonl"
                    write_table(selection, path)
                    cells = cell_summary(groups, clusters, m, n, selection.num_rows, ifd=ifd)
                    rows.append({"len_groups": L, "k": K, "method": m, "ratio": n, **selection_stats(selection, sources),
                                 "effective_ratio": cells["effective_ratio"], "cells_below_1_over_n": cells["cells_below_1_over_n"],
                                 "semantic_duplicates": kept.removed, "contaminated": contaminated,
                                 "file": str(path.relative_to(run_dir))})
                    rank = preference.index((L, K, m, n)) if (L, K, m, n) in preference else len(preference)
                    if shown is None or rank < shown[0]:
                        shown = (rank, path, cluster_path, clustered.info, cells, selection, kept.dedup)
                log.info("sweep: L=%d K=%d done", L, K)
        stages.note("sweep", seconds=round(time.perf_counter() - start, 3), selections=len(rows))
        earlier = _listed_selections(run_dir)
        with atomic_path(run_dir / "sweep.csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        stale = earlier - {row["file"] for row in rows}
        for name in sorted(stale):  # an earlier, larger grid's selections: sweep.csv no longer lists them
            (run_dir / name).unlink(missing_ok=True)
        if stale:
            log.info("sweep: removed %d selection(s) of an earlier grid", len(stale))
        _, path, cluster_path, info, cells, selection, dedup = shown
        stages.note("sweep", grid=grid)
        _warn_collapsed(rows, prepared.corpus.num_rows)
        manifest = finish_run(recipe, run_dir, prepared, stages, started, selection, info, cells, report, dedup=dedup,
                              clusters=cluster_path, selection=path, sweep=run_dir / "sweep.csv")
    return SweepResult(run_dir, manifest, rows)
