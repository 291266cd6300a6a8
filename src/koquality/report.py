"""Report: one self-contained HTML page (figures inline, no network requests) and the PNGs under figures/.

Reads a run (or sweep) directory and shows what a selection looks like before anyone spends GPU days on it.
At the top, what was selected and why: the recipe's parameters (sources, scorer, encoder, L, K, method, N),
how many rows were kept of each source, the manifest's `cells` note when it has one, and a warning when the
selection is empty. Then perplexity per source and what the selection kept, the selection against the whole
corpus, the length distribution with the length-group boundaries, cluster sizes, an interactive map of the
embeddings (report_map.py), one row per cluster with its size, kept rows and top terms (Kiwi nouns ranked by
TF-IDF over the clusters, so a cluster has a name), heatmaps over (L, K) for a sweep, and example rows — the
lowest- and highest-perplexity instructions of each source and a few rows per cluster, each marked selected
or not. When the run trained and evaluated a model: the training loss curve and the KoBEST table.

Figures are drawn on matplotlib `Figure` objects (no pyplot, no backend switch) inside an `rc_context` that
sets a Hangul font, so the report never changes a caller's matplotlib state (report_font.py says which font
and why). The per-cluster table is report_clusters.py, the interactive map report_map.py.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from .errors import KoqualityError
from .evaluate import LABELS, TASKS, load_results, model_label, score_cells
from .report_clusters import cell_names, cell_table, term_sample
from .report_map import CSS as MAP_CSS, map_html
from .report_font import figure as _figure, korean_font, page_font_css, png_bytes, styled as _styled
from .tables import VectorFile, atomic_path, read_table
from .train import read_loss_log

log = logging.getLogger("koquality")

MAP_POINTS = 20_000  # points in the embedding map (a seeded sample beyond that: see _map_sample)
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]
METHODS = {  # what each method keeps, in words, for the top of the page
    "rand": "a seeded uniform sample of N of each length group (clusters are not looked at)",
    "ppl": "each cell ordered by perplexity and every {step}th row kept: a systematic sample across the perplexity range",
    "ppl_h": "the int(N × cell size) highest-perplexity rows of each cell, repeated instructions dropped",
}
FIGURES = {"perplexity_by_source", "selected_vs_all", "length_groups", "cluster_sizes", "embedding_map", "sweep_rows",
           "sweep_median_ppl", "sweep_mean_ppl", "sweep_source_share", "sweep_effective_ratio", "training_loss"}  # the PNGs a report writes (or wrote)
SELECTION_NAME = re.compile(r"len(?P<L>\d+)_k(?P<K>\d+)_m(?P<method>[a-z_]+)_n(?P<ratio>[0-9.e+-]+)\.[a-z.]+$")


# ------------------------------------------------------------------------------------------- loading

def _selection_ids(path: Path) -> tuple[pa.Array, str | None]:
    """The selected ids, and a problem to show (or None). An empty selection (0 rows, or a 0-byte file) is valid."""
    empty = pa.array([], pa.string())
    if not path.exists():
        return empty, f"the selection file {path.name} does not exist"
    if path.stat().st_size == 0:
        return empty, None
    table = read_table(path)
    if "id" not in table.column_names:
        if table.num_rows == 0:
            return empty, None
        raise KoqualityError(f"{path}: the selection has no id column")
    return table.column("id").combine_chunks(), None


def _load(run_dir: Path) -> dict[str, Any]:
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise KoqualityError(f"{run_dir}: not a koquality run directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    files = manifest["files"]
    # no texts here: a 2M-row corpus's texts are gigabytes; example rows fetch theirs by id
    columns = ["id", "source", "len", "ppl"] + (["ifd"] if "ifd" in pq.read_schema(run_dir / files["corpus"]).names else [])
    corpus = pq.read_table(run_dir / files["corpus"], columns=columns)
    clusters = pq.read_table(run_dir / files["clusters"])
    ids, problem = _selection_ids(run_dir / files["selection"])
    # Arrow's hash lookup: numpy's isin on 2M string ids falls back to element-wise comparisons (minutes)
    id_type = corpus.schema.field("id").type
    selected = pc.is_in(corpus.column("id"), value_set=ids.cast(id_type) if len(ids) else pa.array([], id_type))
    info = json.loads((run_dir / files["clusters"]).with_suffix(".json").read_text(encoding="utf-8"))
    recipe_path = run_dir / files.get("recipe", "recipe.yaml")
    recipe = {}
    if recipe_path.exists():

        recipe = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}
    return {"manifest": manifest, "corpus": corpus, "corpus_path": run_dir / files["corpus"], "clusters": clusters,
            "dropped": run_dir / files.get("dropped", "dropped.parquet"),
            "selected": selected.to_numpy(zero_copy_only=False).astype(bool), "selection_rows": len(ids),
            "selection_problem": problem, "cluster_info": info, "recipe": recipe,
            "vectors": run_dir / files["vectors"], "sweep": run_dir / "sweep.csv"}


def _fetch_texts(corpus_path: Path, ids: pa.Array, with_output: set[str]) -> dict[str, dict[str, str]]:
    """instruction (and, for ids in `with_output`, output) of the rows with these ids, streamed from the corpus."""
    found: dict[str, dict[str, str]] = {}
    if not len(ids):
        return found
    for batch in pq.ParquetFile(corpus_path).iter_batches(batch_size=65536, columns=["id", "instruction", "output"]):
        hits = pa.Table.from_batches([batch]).filter(pc.is_in(batch.column("id"), value_set=ids))
        for r in hits.to_pylist():
            found[r["id"]] = {"instruction": r["instruction"] or "",
                              "output": (r["output"] or "") if r["id"] in with_output else ""}
    return found


# ------------------------------------------------------------------------------------------- figures

@_styled
def fig_perplexity(corpus: pa.Table, selected: np.ndarray):
    sources = sorted(set(corpus.column("source").to_pylist()))
    log_ppl = np.log10(corpus.column("ppl").to_numpy())
    source = np.array(corpus.column("source").to_pylist())
    bins = np.linspace(log_ppl.min(), log_ppl.max() + 1e-9, 40)
    fig = _figure(figsize=(min(4 * len(sources), 16), 3))
    axes = fig.subplots(1, len(sources), squeeze=False, sharex=True)
    for ax, name, color in zip(axes[0], sources, COLORS * 10):
        mine = source == name
        ax.hist(log_ppl[mine], bins=bins, color=color, alpha=0.35, label=f"all ({mine.sum():,})")
        ax.hist(log_ppl[mine & selected], bins=bins, color=color, histtype="step", linewidth=2,
                label=f"selected ({(mine & selected).sum():,})")
        ax.set_title(name)
        ax.set_xlabel("log10 perplexity")
        ax.set_ylabel("rows")
        ax.legend(frameon=False)
    return fig


@_styled
def fig_length(corpus: pa.Table, boundaries: list[float], selected: np.ndarray | None = None):
    lengths = corpus.column("len").to_numpy()
    fig = _figure(figsize=(8, 3))
    ax = fig.subplots()
    bins = np.logspace(0, np.log10(max(lengths.max(), 2)), 50)
    ax.hist(lengths, bins=bins, color=COLORS[0], alpha=0.7, label=f"all rows ({len(lengths):,})")
    if selected is not None:
        ax.hist(lengths[selected], bins=bins, color=COLORS[1], histtype="step", linewidth=1.5,
                label=f"selected ({int(selected.sum()):,})")
    ax.set_xscale("log")
    top = ax.get_ylim()[1]
    for i, b in enumerate(boundaries[1:], start=1):
        ax.axvline(max(b, 1), color=COLORS[3], linestyle="--", linewidth=1,
                   label="length-group boundary" if i == 1 else None)
        ax.text(max(b, 1), top * 0.98, f" q{i}={b:g}", color=COLORS[3], va="top", rotation=90, fontsize=8)
    ax.set_xlabel("instruction length (characters, log scale)")
    ax.set_ylabel("rows")
    ax.set_title(f"length distribution and the {len(boundaries)} length-group boundaries")
    ax.legend(frameon=False, loc="upper left")
    return fig


@_styled
def fig_cluster_sizes(clusters: pa.Table):
    groups = clusters.column("len_group").to_numpy()
    labels = clusters.column("cluster").to_numpy()
    fig = _figure(figsize=(8, 3))
    ax = fig.subplots()
    for g in np.unique(groups):
        sizes = np.sort(np.bincount(labels[groups == g]))[::-1]
        sizes = sizes[sizes > 0]
        ax.plot(np.arange(1, len(sizes) + 1), sizes, marker="o", markersize=3, label=f"length group {g}",
                color=COLORS[int(g) % len(COLORS)])
    ax.set_xlabel("cluster rank (largest first)")
    ax.set_ylabel("rows in cluster")
    ax.set_yscale("log")
    ax.legend(frameon=False, ncol=2)
    ax.set_title("cluster sizes per length group")
    return fig


def _project(x: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates: UMAP when installed, else PCA; fewer than three points are drawn as they are."""
    if len(x) < 3:
        return np.pad(x, ((0, 0), (0, max(0, 2 - x.shape[1]))))[:, :2], "raw"
    try:
        import umap  # optional: pip install umap-learn

        return umap.UMAP(random_state=seed).fit_transform(x), "UMAP"
    except ImportError:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x), "PCA"


def _map_sample(rows: int, selected: np.ndarray, seed: int, points: int = MAP_POINTS) -> np.ndarray:
    """Rows the map shows: all of them up to `points`; beyond that up to half the points from the selected rows
    (a 1% selection of 2M rows would otherwise be 200 dots), the rest a seeded sample of the others."""
    if rows <= points:
        return np.arange(rows)
    rng = np.random.default_rng(seed)
    chosen, others = np.flatnonzero(selected), np.flatnonzero(~selected)
    if len(chosen) > points // 2:
        chosen = rng.choice(chosen, points // 2, replace=False)
    rest = rng.choice(others, min(len(others), points - len(chosen)), replace=False)
    return np.sort(np.concatenate([chosen, rest]))


@_styled
def fig_embedding_map(xy: np.ndarray, method: str, len_group: np.ndarray, selected: np.ndarray, total: int):
    """The static map (figures/embedding_map.png): coloured by length group, selected rows ringed."""
    import matplotlib

    fig = _figure(figsize=(7, 6))
    ax = fig.subplots()
    size = 14 if len(xy) <= 5000 else 4
    cmap = matplotlib.colormaps["tab10" if len(np.unique(len_group)) <= 10 else "tab20"]
    for g in np.unique(len_group):
        mine = len_group == g
        ax.scatter(xy[mine, 0], xy[mine, 1], color=cmap(int(g) % cmap.N), s=size, alpha=0.7, linewidths=0,
                   label=f"length group {g}")
    ax.scatter(xy[selected, 0], xy[selected, 1], facecolors="none", edgecolors="black", s=22, linewidths=0.8,
               label=f"selected ({int(selected.sum()):,} shown)")
    ax.set_title(f"embeddings ({method}, {len(xy):,} of {total:,} rows)")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    return fig


@_styled
def fig_selected_vs_all(corpus: pa.Table, selected: np.ndarray):
    source = np.array(corpus.column("source").to_pylist())
    names = sorted(set(source.tolist()))
    fig = _figure(figsize=(13, 3))
    axes = fig.subplots(1, 3)
    share_all = [np.mean(source == n) for n in names]
    share_sel = [np.mean(source[selected] == n) if selected.any() else 0 for n in names]
    pos = np.arange(len(names))
    axes[0].bar(pos - 0.2, share_all, 0.4, label="all", color=COLORS[7])
    axes[0].bar(pos + 0.2, share_sel, 0.4, label="selected" if selected.any() else "selected (none)", color=COLORS[0])
    axes[0].set_xticks(pos, names, rotation=20, ha="right")
    axes[0].set_xlabel("source")
    axes[0].set_ylabel("share of rows")
    axes[0].set_title("source mix")
    axes[0].legend(frameon=False)
    for ax, column, label in ((axes[1], "len", "instruction length (log10 chars)"), (axes[2], "ppl", "log10 perplexity")):
        values = np.log10(np.maximum(corpus.column(column).to_numpy().astype(float), 1))
        bins = np.linspace(values.min(), values.max() + 1e-9, 40)
        ax.hist(values, bins=bins, density=True, color=COLORS[7], alpha=0.5, label="all")
        if selected.any():
            ax.hist(values[selected], bins=bins, density=True, histtype="step", color=COLORS[0], linewidth=2, label="selected")
        else:
            ax.plot([], [], color=COLORS[0], label="selected (none)")
        ax.set_xlabel(label)
        ax.set_ylabel("density")
        ax.legend(frameon=False)
    axes[1].set_title("length")
    axes[2].set_title("perplexity")
    return fig


@_styled
def fig_training_loss(log: list[dict[str, Any]]):
    fig = _figure(figsize=(9, 3.2))
    ax = fig.subplots()
    steps = [r["step"] for r in log]
    lines = ax.plot(steps, [r["loss"] for r in log], color=COLORS[0], marker="." if len(log) < 60 else None,
                    label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss", color=COLORS[0])
    if all("learning_rate" in r for r in log):
        lr = ax.twinx()
        lines += lr.plot(steps, [r["learning_rate"] for r in log], color=COLORS[1], linewidth=1, label="learning rate")
        lr.set_ylabel("learning rate", color=COLORS[1])
        lr.spines["right"].set_visible(True)
    ax.legend(lines, [line.get_label() for line in lines], frameon=False, loc="upper right")
    return fig


def read_sweep(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


@_styled
def fig_sweep(rows: list[dict[str, Any]], metric: str, title: str, log: bool = False, label: str | None = None,
              limits: tuple[float, float] | None = None):
    """Heatmaps over (L, K), one per method × ratio, on one colour scale (`limits`, else the metric's range
    over all of them) with one colour bar; `log` colours on a log scale. Missing values (an empty selection
    has no perplexity, no source share) are grey and marked "–"."""
    import matplotlib
    from matplotlib.colors import LogNorm, Normalize

    def value(r: dict[str, Any]) -> float:  # an empty selection has no share, perplexity or length: grey, not 0
        return float("nan") if metric != "rows" and _number(r.get("rows")) == 0 else _number(r.get(metric))

    values = np.array([value(r) for r in rows])
    finite = values[np.isfinite(values) & ((values > 0) if log else True)]
    low, high = limits if limits else ((finite.min(), finite.max()) if len(finite) else (0.0, 1.0))
    if low >= high:  # one value everywhere: a range around it
        low, high = (low / 2, high * 2) if log and low > 0 else (low - 0.5, high + 0.5)
    norm = LogNorm(low, high) if log and low > 0 else Normalize(low, high)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#e6e6e6")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    ratios = sorted({float(r["ratio"]) for r in rows}, reverse=True)
    ls = sorted({int(r["len_groups"]) for r in rows})
    ks = sorted({int(r["k"]) for r in rows})
    fig = _figure(figsize=(3.2 * len(ratios) + 1.4, 2.6 * len(methods) + 0.6), layout="constrained")
    axes = fig.subplots(len(methods), len(ratios), squeeze=False)
    image = None
    for i, method in enumerate(methods):
        for j, ratio in enumerate(ratios):
            grid = np.full((len(ls), len(ks)), np.nan)
            for r in rows:
                if r["method"] == method and float(r["ratio"]) == ratio:
                    grid[ls.index(int(r["len_groups"])), ks.index(int(r["k"]))] = value(r)
            shown = np.ma.masked_invalid(np.where(grid > 0, grid, np.nan) if log else grid)
            ax = axes[i][j]
            image = ax.imshow(shown, cmap=cmap, norm=norm, aspect="auto")
            for (a, b), v in np.ndenumerate(grid):
                if np.isnan(v):
                    ax.text(b, a, "–", ha="center", va="center", color="#555", fontsize=7)
                else:  # dark text on the bright end of viridis, white on the dark end
                    bright = np.ma.is_masked(shown[a, b]) or norm(v) > 0.6
                    ax.text(b, a, f"{v:.3g}", ha="center", va="center", color="black" if bright else "white", fontsize=7)
            ax.set_xticks(range(len(ks)), ks)
            ax.set_yticks(range(len(ls)), ls)
            ax.set_title(f"{method}, N={ratio:g}")
            ax.set_ylabel("L (length groups)")
            ax.set_xlabel("K (clusters)")
    fig.colorbar(image, ax=axes, label=label or metric, shrink=0.9)
    fig.suptitle(title)
    return fig


def _sweep_figures(rows: list[dict[str, Any]], manifest: dict[str, Any]) -> dict[str, Any]:
    images = {"sweep_rows": fig_sweep(rows, "rows", "selected rows over (L, K)", label="selected rows")}
    if "median_ppl" in rows[0]:
        images["sweep_median_ppl"] = fig_sweep(rows, "median_ppl", "median perplexity of the selection (log colour scale)",
                                               log=True, label="median perplexity")
    shares = [k for k in rows[0] if k.startswith("share_")]
    by_source = manifest.get("corpus_by_source") or {}
    top = max(by_source, key=by_source.get) if by_source else (shares[0][len("share_"):] if shares else None)
    if top is not None and f"share_{top}" in rows[0]:
        images["sweep_source_share"] = fig_sweep(rows, f"share_{top}", f"share of source '{top}' in the selection",
                                                 label=f"share of {top}", limits=(0.0, 1.0))
    if "effective_ratio" in rows[0]:
        images["sweep_effective_ratio"] = fig_sweep(rows, "effective_ratio", "selected / corpus (log colour scale)",
                                                    log=True, label="effective ratio")
    return images


# ------------------------------------------------------------------------------------------- HTML parts

def _kobest_table(run_dir: Path) -> str:

    results = [load_results(p) for p in sorted((run_dir / "eval").glob("*.json"))]
    header = "".join(f"<th>{LABELS[t]}</th>" for t in TASKS)
    rows = ""
    for r in results:
        for metric, title in (("f1", "macro-F1"), ("acc", "accuracy")):
            cells = "".join(f"<td>{cell}</td>" for cell in score_cells(r, metric))
            rows += f"<tr><td>{html.escape(model_label(r))}</td><td>{title}</td>{cells}</tr>"
    limits = {r.get("limit") for r in results} - {None}
    note = (f"<p class='muted'>Zero-shot KoBEST test splits, lm-evaluation-harness; ×100. "
            f"{'Limited to the first ' + ', '.join(map(str, limits)) + ' examples per task: not comparable with full runs.' if limits else ''}</p>")
    return f"<table><tr><th>model</th><th>metric</th>{header}<th>avg</th></tr>{rows}</table>{note}"


def _signals_section(data: dict[str, Any], source: np.ndarray, selected: np.ndarray) -> str:
    """IFD by source and in the selection against all rows, what semantic dedup removed at each threshold (with
    example pairs), and what decontamination dropped — for the signals the recipe used; '' for none."""
    manifest, corpus, parts = data["manifest"], data["corpus"], []
    if "ifd" in corpus.column_names:
        ifd = corpus.column("ifd").to_numpy(zero_copy_only=False).astype(np.float64)

        def stats(name: str, mask: np.ndarray) -> dict[str, Any]:
            values, chosen = ifd[mask], ifd[mask & selected]
            return {"rows": name, "count": f"{int(mask.sum()):,}", "median IFD": f"{np.nanmedian(values):.4f}" if len(values) else "–",
                    "IFD < 1": f"{np.mean(values < 1):.1%}" if len(values) else "–",
                    "selected": f"{len(chosen):,}", "median IFD selected": f"{np.nanmedian(chosen):.4f}" if len(chosen) else "–"}

        rows = [stats("all rows", np.ones(len(ifd), bool))] + [stats(n, source == n) for n in sorted(set(source.tolist()))]
        parts.append("<h2>IFD: instruction-following difficulty</h2><p class='muted'>ppl(answer | instruction) / "
                     "ppl(answer alone) per row (Cherry-LLM): below 1 the instruction helps the model predict the "
                     "answer; at 1 or above it does not. By source, and the selection against all rows.</p>"
                     + _table(rows, list(rows[0])))
    dedup = manifest.get("dedup")
    if dedup:
        pairs = [(e["id"], e["kept_id"], e["similarity"], b["threshold"]) for b in dedup["by_threshold"] for e in b["examples"]]
        ids = pa.array(sorted({i for p in pairs for i in p[:2]}), pa.string())
        texts = _fetch_texts(data["corpus_path"], ids, set())
        counts = [{"cosine above": f"{b['threshold']:g}", "rows removed": f"{b['removed']:,}"} for b in dedup["by_threshold"]]
        examples = [{"threshold": f"{t:g}", "cosine": f"{sim:.4f}", "removed": texts.get(a, {}).get("instruction", a),
                     "kept": texts.get(b, {}).get("instruction", b)} for a, b, sim, t in pairs[-6:]]
        parts.append(f"<h2>semantic dedup</h2><p class='muted'>Inside each (length group, cluster) cell, a row whose "
                     f"embedding has cosine similarity above {dedup['threshold']:g} with a row kept before it "
                     f"(keep: {html.escape(dedup['keep'])}) was removed: {dedup['removed']:,} rows "
                     f"({html.escape(dedup['file'])}). What each threshold would remove, and pairs near the top:</p>"
                     + _table(counts, ["cosine above", "rows removed"])
                     + (_table(examples, ["threshold", "cosine", "removed", "kept"], limit=160) if examples else ""))
    contaminated = manifest.get("dropped_by_reason", {}).get("contaminated", 0)
    if contaminated and data["dropped"].exists():
        dropped = pq.read_table(data["dropped"], columns=["reason", "source", "detail"])
        shown = dropped.filter(pc.equal(dropped.column("reason"), "contaminated")).slice(0, 8).to_pylist()
        parts.append(f"<h2>decontamination</h2><p class='muted'>{contaminated:,} rows shared a long n-gram with a "
                     "benchmark item and were dropped (dropped.parquet, reason contaminated). The first ones:</p>"
                     + _table(shown, ["source", "detail"], limit=240))
    return "".join(parts)


def _table(rows: list[dict], columns: list[str], limit: int = 300) -> str:
    def cell(column, value):
        if column == "selected":
            return "<span class='yes'>✓ selected</span>" if value else "<span class='no'>✗ not selected</span>"
        if isinstance(value, float):
            return f"{value:,.1f}"
        text = str(value)
        return html.escape(text if len(text) <= limit else text[:limit] + "…")

    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(c, r[c])}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _example_choice(source: np.ndarray, ppl: np.ndarray, cells: list[dict[str, Any]], selected: np.ndarray,
                    per_source: int = 3, per_cluster: int = 2, clusters_shown: int = 3):
    """Rows to show: the lowest and highest perplexity of each source, and of the largest clusters of each
    length group a selected row and an unselected one where the cluster has both."""
    by_source = {}
    for name in sorted(set(source.tolist())):
        mine = np.flatnonzero(source == name)
        ordered = mine[np.argsort(ppl[mine], kind="stable")]
        by_source[name] = list(ordered[:per_source]) + (list(ordered[-per_source:]) if len(ordered) > per_source else [])
    by_cell = []
    for g in sorted({c["len_group"] for c in cells}):
        mine = sorted((c for c in cells if c["len_group"] == g), key=lambda c: (-c["size"], c["cluster"]))
        for c in mine[:clusters_shown]:
            rows = np.sort(c["rows"])
            kept, other = rows[selected[rows]], rows[~selected[rows]]
            first = list(kept[:1]) + list(other[:per_cluster - min(1, len(kept))])
            by_cell.append((c, (first + [r for r in rows[:per_cluster + 1] if r not in first])[:per_cluster]))
    return by_source, by_cell


def _examples(by_source, by_cell, row, names: dict[tuple[int, int], list[str]]) -> str:
    parts = ["<h3>Lowest and highest perplexity per source</h3>"]
    for name, rows in by_source.items():
        parts.append(f"<h4>{html.escape(name)}</h4>"
                     + _table([row(i) for i in rows], ["selected", "ppl", "instruction", "output"]))
    parts.append("<h3>A few rows of the largest clusters</h3>")
    for c, rows in by_cell:
        terms = names.get((c["len_group"], c["cluster"])) or []
        parts.append(f"<h4>length group {c['len_group']}, cluster {c['cluster']}"
                     f"{' — ' + html.escape(' · '.join(terms[:3])) if terms else ''} "
                     f"({c['size']:,} rows, {c['kept']:,} selected)</h4>"
                     + _table([row(i) for i in rows], ["selected", "ppl", "source", "instruction"]))
    return "\n".join(parts)


def _cluster_section(cells: list[dict[str, Any]], terms: dict[tuple[int, int], list[str]], sampled: int) -> str:
    body = "".join(
        f"<tr><td>{c['len_group']}</td><td>{c['cluster']}</td><td>{c['size']:,}</td><td>{c['kept']:,}</td>"
        f"<td>{c['kept'] / c['size']:.1%}</td><td>{c['median_ppl']:,.1f}</td>"
        f"<td>{html.escape(' · '.join(terms.get((c['len_group'], c['cluster'])) or []) or '–')}</td></tr>"
        for c in sorted(cells, key=lambda c: (c["len_group"], -c["size"], c["cluster"])))
    return (f"<p class='muted'>Each (length group, cluster) cell: its rows, how many the selection kept, their median "
            f"perplexity and its top terms — Kiwi's nouns ranked by TF-IDF with each cell as one document "
            f"({sampled:,} instructions read; a seeded sample of a large cell).</p>"
            f"<div class='scroll'><table class='cells'><tr><th>length group</th><th>cluster</th><th>rows</th>"
            f"<th>selected</th><th>kept</th><th>median ppl</th><th>top terms</th></tr>{body}</table></div>")


def _parameters(manifest: dict[str, Any], recipe: dict[str, Any], info: dict[str, Any], selection_file: str,
                n_selected: int, n_corpus: int, selected_by_source: dict[str, int], corpus_by_source: dict[str, int],
                cells: int) -> str:
    """What was selected and why, at a glance: the headline, the recipe's parameters, the sources, the cells note."""
    match = SELECTION_NAME.search(selection_file)
    manifest_cells = manifest.get("cells") if isinstance(manifest.get("cells"), dict) else {}
    sample = recipe.get("sample") or {}
    method = match["method"] if match else manifest_cells.get("method", sample.get("method", "?"))
    ratio = float(match["ratio"]) if match else manifest_cells.get("ratio", sample.get("ratio"))
    L = info.get("len_groups", match["L"] if match else "?")
    K = info.get("k", match["K"] if match else "?")
    score, embed = recipe.get("score") or {}, recipe.get("embed") or {}

    def model(settings, name):
        m = settings.get("model")
        if not m:
            return name
        return f"{name}: {m}" + (f" @ {str(settings['revision'])[:12]}" if settings.get("revision") else "")

    scorer = model(score, score.get("scorer", "?")) + (" (Kiwi's Korean language model)" if score.get("scorer") == "kiwi" else "")
    encoder = model(embed, embed.get("encoder", "?"))
    if embed.get("encoder") == "tfidf":
        encoder += f" ({embed.get('dims', '?')} dims, SVD of Kiwi-morpheme TF-IDF)"
    elif embed.get("encoder") == "hf":
        encoder += f" ({embed.get('pooling', '?')} pooling)"
    step = f"{int(1 / ratio)}" if isinstance(ratio, (int, float)) and ratio > 0 else "1/N"
    why = METHODS.get(method, "").format(step=step)
    clamped = info.get("clamped") or []
    cards = [("L", f"{L}", "length groups"), ("K", f"{K}", "clusters per group"),
             ("method", html.escape(str(method)), html.escape(why)),
             ("N", f"{ratio:g}" if isinstance(ratio, (int, float)) else "?", "kept of each cell"),
             ("scorer", html.escape(scorer), "perplexity of each instruction"),
             ("encoder", html.escape(encoder), "vectors for k-means")]
    card_html = "".join(f"<div class='card'><div class='key'>{k}</div><div class='value{' long' if len(v) > 12 else ''}'>{v}</div>"
                        f"<div class='muted'>{note}</div></div>" for k, v, note in cards)
    share = f"{n_selected / n_corpus:.2%}" if n_corpus else "–"
    headline = (f"<p class='headline'>Selected <b>{n_selected:,}</b> of {n_corpus:,} corpus rows ({share}): "
                f"method <b>{html.escape(str(method))}</b> with N = {ratio if ratio is not None else '?'} in each of "
                + (f"the L = {L} length groups" if method == "rand" else
                   f"{cells:,} cells (L = {L} length groups × up to K = {K} clusters)")
                + f", seed {manifest.get('seed', '?')}.</p>")
    paths = {s.get("source"): s.get("path") for s in recipe.get("sources") or [] if isinstance(s, dict)}
    names = sorted(set(corpus_by_source) | set(paths) - {None})
    rows = "".join(
        f"<tr><td>{html.escape(str(n))}</td><td>{html.escape(str(paths.get(n) or '–'))}</td>"
        f"<td>{corpus_by_source.get(n, 0):,}</td><td>{selected_by_source.get(n, 0):,}</td>"
        f"<td>{selected_by_source.get(n, 0) / corpus_by_source[n]:.1%}</td></tr>" if corpus_by_source.get(n) else
        f"<tr><td>{html.escape(str(n))}</td><td>{html.escape(str(paths.get(n) or '–'))}</td><td>0</td><td>0</td><td>–</td></tr>"
        for n in names)
    sources = (f"<table class='sources'><tr><th>source</th><th>input</th><th>corpus rows</th><th>selected</th>"
               f"<th>kept</th></tr>{rows}</table>")
    extra = []
    note = None
    try:  # the sampling's own note on its cells (sampling.cell_summary); shown as it is when its shape is new
        parts = []
        if "cells" in manifest_cells:
            parts.append(f"{manifest_cells['cells']:,} cells")
        if "cells_below_1_over_n" in manifest_cells:
            below = f"1/N = {1 / ratio:g}" if isinstance(ratio, (int, float)) and ratio > 0 else "1/N"
            parts.append(f"{manifest_cells['cells_below_1_over_n']:,} of them hold fewer than {below} rows")
        if "effective_ratio" in manifest_cells:
            parts.append(f"effective ratio (selected / corpus) {manifest_cells['effective_ratio']:.4g}")
        note = "; ".join(parts) or None
    except (TypeError, ValueError):
        pass
    if note is None and manifest.get("cells") is not None:
        note = json.dumps(manifest["cells"], ensure_ascii=False)
    if note:
        extra.append(f"<p><b>cells</b>: {html.escape(note)}</p>")
    if clamped:
        extra.append(f"<p class='muted'>K was lowered where a length group had fewer rows than K: "
                     f"{html.escape(json.dumps(clamped))}</p>")
    return (f"<section class='glance'><h2>What was selected and why</h2>{headline}<div class='cards'>{card_html}</div>"
            f"{''.join(extra)}{sources}</section>")


def summary_rows(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    """The summary table of a run, shared by the report, `koquality run` and `koquality inspect`."""
    rows = [("rows read", manifest["rows"]["read"]), ("dropped", manifest["rows"]["dropped"])]
    rows += [(f"  {reason}", n) for reason, n in sorted(manifest["dropped_by_reason"].items())]
    rows += [(f"cleaned: {what}", n) for what, n in sorted(manifest.get("cleaned", {}).items())]
    rows += [("corpus", manifest["rows"]["corpus"])]
    if "selected" in manifest["rows"]:
        rows += [("selected", manifest["rows"]["selected"])]
        rows += [(f"  {source}", n) for source, n in sorted(manifest.get("selected_by_source", {}).items())]
    if "sweep" in manifest["stages"]:
        rows += [("selections in sweep", manifest["stages"]["sweep"]["selections"])]
    rows += [(f"{stage} (s)", f"{info['seconds']:.2f}") for stage, info in manifest["stages"].items() if "seconds" in info]
    if "train" in manifest:
        t = manifest["train"]
        rows += [("train steps", t["steps"]), ("train loss: first → last", f"{t['first_loss']:.4f} → {t['final_loss']:.4f}")]
    for name, average in manifest.get("eval", {}).items():
        rows += [(f"KoBEST {name}: mean acc / macro-F1 (×100)", f"{100 * average['acc']:.2f} / {100 * average['f1']:.2f}")]
    return rows


CSS = """body{font-family:-apple-system,'Noto Sans KR','Noto Sans CJK KR','Apple SD Gothic Neo','Malgun Gothic','NanumGothic',
'koquality-hangul',sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:2em}img{max-width:100%;border:1px solid #eee}table{border-collapse:collapse;
margin:.5em 0 1em;font-size:13px;width:100%}td,th{border:1px solid #e3e3e3;padding:4px 6px;text-align:left;
vertical-align:top}th{background:#f6f6f6}.muted{color:#777}.summary td:last-child{text-align:right}
.warning{background:#fff4e5;border:2px solid #e8590c;border-radius:6px;padding:.7em 1em;margin:1em 0;font-size:15px}
.warning b{color:#c92a2a}.headline{font-size:17px}.cards{display:grid;grid-template-columns:repeat(auto-fit,
minmax(170px,1fr));gap:.6em;margin:.6em 0}.card{border:1px solid #dde3ea;border-radius:6px;padding:.5em .7em;
background:#f8fafc}.card .key{font-size:12px;color:#555;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:20px;font-weight:600;word-break:break-word}.card .value.long{font-size:14px}.card .muted{font-size:12px}
.yes{color:#2b8a3e;font-weight:600;white-space:nowrap}.no{color:#868e96;white-space:nowrap}
.scroll{max-height:520px;overflow:auto;border:1px solid #eee}.scroll table{margin:0}"""


# ------------------------------------------------------------------------------------------- the page

def _csp() -> str:
    """Content-Security-Policy that forbids every network request: only inline styles, scripts and data: images."""
    return ("<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
            "font-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">")


def write_report(run_dir: str | Path) -> Path:

    run_dir = Path(run_dir)
    data = _load(run_dir)
    manifest, corpus, clusters, selected = data["manifest"], data["corpus"], data["clusters"], data["selected"]
    if not clusters.column("id").equals(corpus.column("id")):
        raise KoqualityError(f"{run_dir}: clusters and corpus rows differ; re-run koquality run")
    seed = int(manifest.get("seed", 0))
    source = np.array(corpus.column("source").to_pylist(), dtype=object)
    ppl = corpus.column("ppl").to_numpy()
    groups, labels = clusters.column("len_group").to_numpy(), clusters.column("cluster").to_numpy()
    n_selected, n_corpus = int(selected.sum()), corpus.num_rows
    cells = cell_table(groups, labels, selected, ppl)

    # every text the page needs, in one streaming pass over the corpus
    vectors = VectorFile(data["vectors"])
    shown = _map_sample(len(vectors), selected, seed)
    term_rows = term_sample(cells, seed)
    by_source, by_cell = _example_choice(source, ppl, cells, selected)
    example_rows = {int(i) for rows in by_source.values() for i in rows} | {int(i) for _, rows in by_cell for i in rows}
    wanted = sorted(example_rows | {int(i) for i in shown} | {int(i) for rows in term_rows.values() for i in rows})
    wanted_ids = corpus.column("id").take(pa.array(wanted, pa.int64())).combine_chunks()
    id_of = dict(zip(wanted, wanted_ids.to_pylist()))
    texts = _fetch_texts(data["corpus_path"], wanted_ids, {id_of[i] for i in example_rows})

    def instruction(i: int) -> str:
        return texts.get(id_of[int(i)], {}).get("instruction", "")

    terms = cell_names(term_rows, instruction)

    xy, projection = _project(vectors.rows(shown).astype(np.float32), seed) if len(shown) else (np.zeros((0, 2)), "PCA")
    figures_dir = run_dir / "figures"
    images = {
        "perplexity_by_source": fig_perplexity(corpus, selected),
        "selected_vs_all": fig_selected_vs_all(corpus, selected),
        "length_groups": fig_length(corpus, data["cluster_info"]["boundaries"], selected),
        "cluster_sizes": fig_cluster_sizes(clusters),
        "embedding_map": fig_embedding_map(xy, projection, groups[shown], selected[shown], len(vectors)),
    }
    sweep_rows = read_sweep(data["sweep"]) if data["sweep"].exists() else []
    if sweep_rows:
        images.update(_sweep_figures(sweep_rows, manifest))
    loss_log = run_dir / "model" / "loss.jsonl"
    if "train" in manifest and loss_log.exists():

        images["training_loss"] = fig_training_loss(read_loss_log(run_dir / "model"))
    encoded = {}
    for name, fig in images.items():
        png = png_bytes(fig)
        with atomic_path(figures_dir / f"{name}.png") as tmp:
            tmp.write_bytes(png)
        encoded[name] = base64.b64encode(png).decode("ascii")
    for name in FIGURES - set(encoded):  # a figure an earlier report wrote that this one has not (e.g. no sweep now)
        (figures_dir / f"{name}.png").unlink(missing_ok=True)

    interactive = map_html(xy, source[shown].tolist(), groups[shown], labels[shown], ppl[shown], selected[shown],
                           [instruction(i) for i in shown], {k: " · ".join(v[:3]) for k, v in terms.items()},
                           axes=(f"{projection} 1", f"{projection} 2"), boundaries=data["cluster_info"]["boundaries"])
    sampled = (f"all {len(shown):,} rows" if len(shown) == len(vectors) else
               f"{len(shown):,} of {len(vectors):,} rows: {int(selected[shown].sum()):,} selected ones and a seeded sample of the rest")
    captions = {
        "perplexity_by_source": "Perplexity of each instruction per source (filled: all rows; line: what the selection kept).",
        "selected_vs_all": "The selection against the whole corpus: source mix, length, perplexity.",
        "length_groups": "Instruction lengths with the length-group boundaries q1…q(L−1), and the selected rows.",
        "cluster_sizes": "Cluster sizes within each length group.",
        "sweep_rows": "Sweep: selected rows for each (L, K), per method and ratio; one colour scale.",
        "sweep_median_ppl": "Sweep: median perplexity of each selection; one log colour scale, grey: empty selection.",
        "sweep_source_share": "Sweep: share of the largest source in each selection; colours 0 to 1.",
        "sweep_effective_ratio": "Sweep: selected / corpus rows of each selection (compare with N).",
        "training_loss": "Training loss of the model fine-tuned on the selection, per optimizer step (and the learning rate).",
    }

    def figure(name: str) -> str:
        title = name.replace("_", " ").replace("ppl", "perplexity").replace("sweep ", "sweep: ")
        return (f"<h2>{html.escape(title)}</h2><p class='muted'>{html.escape(captions[name])}</p>"
                f"<img alt='{name}' src='data:image/png;base64,{encoded[name]}'>")

    warnings_html = []
    problem = data["selection_problem"]
    if n_selected == 0:
        cause = (manifest.get("cells") or {}).get("warning") if isinstance(manifest.get("cells"), dict) else None
        warnings_html.append(
            f"<div class='warning' id='empty-selection'><b>Empty selection.</b> No row of the {n_corpus:,} in the corpus "
            f"was selected: {html.escape(problem) if problem else html.escape(manifest['files']['selection']) + ' has 0 rows'}."
            f"{' Why: ' + html.escape(cause) + '.' if cause else ''} The figures below show the corpus only.</div>")
    elif isinstance(manifest.get("cells"), dict) and manifest["cells"].get("warning"):
        warnings_html.append(f"<div class='warning'><b>Warning.</b> {html.escape(str(manifest['cells']['warning']))}</div>")
    recorded = manifest.get("rows", {}).get("selected")
    if recorded is not None and recorded != data["selection_rows"] and not problem:
        warnings_html.append(f"<div class='warning'><b>The selection file changed.</b> manifest.json records "
                             f"{recorded:,} selected rows; {html.escape(manifest['files']['selection'])} has "
                             f"{data['selection_rows']:,}. This page shows the file.</div>")
    selected_by_source = {n: int((source[selected] == n).sum()) for n in sorted(set(source.tolist()))}
    corpus_by_source = manifest.get("corpus_by_source") or {n: int((source == n).sum()) for n in selected_by_source}
    glance = _parameters(manifest, data["recipe"], data["cluster_info"], manifest["files"]["selection"], n_selected,
                         n_corpus, selected_by_source, corpus_by_source, len(cells))
    summary = "".join(f"<tr><td>{html.escape(k).replace('  ', '&nbsp;&nbsp;&nbsp;&nbsp;')}</td>"
                      f"<td>{f'{v:,}' if isinstance(v, int) else html.escape(str(v))}</td></tr>" for k, v in summary_rows(manifest))

    def row(i):
        rid = id_of[int(i)]
        return {"ppl": float(ppl[i]), "source": source[i], "selected": bool(selected[i]),
                **texts.get(rid, {"instruction": "", "output": ""})}

    family, origin, _ = korean_font()
    sweep = "".join(figure(n) for n in encoded if n.startswith("sweep"))
    body = (f"<h1>koquality report: {html.escape(manifest['name'])}</h1>"
            f"<p class='muted'>{html.escape(str(run_dir))} · selection {html.escape(manifest['files']['selection'])}</p>"
            f"{''.join(warnings_html)}{glance}"
            f"<h2>Summary</h2><table class='summary'>{summary}</table>"
            f"{figure('perplexity_by_source')}{figure('selected_vs_all')}{figure('length_groups')}{figure('cluster_sizes')}"
            f"<h2>embedding map</h2><p class='muted'>The instruction embeddings in 2-D ({projection}; {sampled}). "
            f"Hover a point for its instruction, source, perplexity and whether it was selected; filter by source and "
            f"length group. figures/embedding_map.png has the same map as an image.</p>{interactive}"
            f"<noscript><img alt='embedding_map' src='data:image/png;base64,{encoded['embedding_map']}'></noscript>"
            f"<h2>clusters</h2>{_cluster_section(cells, terms, sum(len(r) for r in term_rows.values()))}"
            f"{_signals_section(data, source, selected)}"
            f"{sweep}{figure('training_loss') if 'training_loss' in encoded else ''}"
            f"{'<h2>KoBEST</h2>' + _kobest_table(run_dir) if 'eval' in manifest else ''}"
            f"<h2>Example rows</h2>{_examples(by_source, by_cell, row, terms)}"
            f"<p class='muted'>Figures drawn with {html.escape(family or 'DejaVu Sans')} ({html.escape(origin)}).</p>"
            f"</body></html>")
    title = f"koquality report: {html.escape(manifest['name'])}"
    page = (f"<!doctype html><html lang='ko'><head><meta charset='utf-8'>{_csp()}<title>{title}</title>"
            f"<style>{CSS}{MAP_CSS}{page_font_css(title + body)}</style></head><body>{body}")
    path = run_dir / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
