"""Report: one self-contained HTML page (figures inline, no network requests) and the PNGs under figures/.

Reads a run (or sweep) directory and shows what a selection looks like before anyone spends GPU days on it:
perplexity per source and what the selection kept, the length distribution with the length-group
boundaries, cluster sizes, a 2-D map of the embeddings (PCA; UMAP when installed) with the selected rows
highlighted, selected vs all, heatmaps over (L, K) for a sweep, and example rows — the lowest- and
highest-perplexity instructions of each source and a few rows per cluster, so a person can see what
"high perplexity" means in this corpus. When the run trained and evaluated a model: the training loss curve
and the KoBEST table.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import KoqualityError
from .tables import VectorFile, atomic_path, read_table

MAP_POINTS = 20_000  # points drawn in the embedding map (a seeded sample beyond that)
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974", "#64B5CD"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "axes.spines.top": False, "axes.spines.right": False, "font.size": 9})
    return plt


def _load(run_dir: Path) -> dict[str, Any]:
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.exists():
        raise KoqualityError(f"{run_dir}: not a koquality run directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    files = manifest["files"]
    # no texts here: a 2M-row corpus's texts are gigabytes; example rows fetch theirs by id
    corpus = pq.read_table(run_dir / files["corpus"], columns=["id", "source", "len", "ppl"])
    clusters = pq.read_table(run_dir / files["clusters"])
    selection = read_table(run_dir / files["selection"]).select(["id"])
    # Arrow's hash lookup: numpy's isin on 2M string ids falls back to element-wise comparisons (minutes)
    selected = pc.is_in(corpus.column("id"), value_set=selection.column("id")).to_numpy(zero_copy_only=False)
    info = json.loads((run_dir / files["clusters"]).with_suffix(".json").read_text(encoding="utf-8"))
    return {"manifest": manifest, "corpus": corpus, "corpus_path": run_dir / files["corpus"], "clusters": clusters,
            "selected": selected, "cluster_info": info,
            "vectors": run_dir / files["vectors"], "sweep": run_dir / "sweep.csv"}


def _save(fig, name: str, figures_dir: Path) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    _plt().close(fig)
    data = buffer.getvalue()
    with atomic_path(figures_dir / f"{name}.png") as tmp:
        tmp.write_bytes(data)
    return base64.b64encode(data).decode("ascii")


def fig_perplexity(corpus: pa.Table, selected: np.ndarray):
    plt = _plt()
    sources = sorted(set(corpus.column("source").to_pylist()))
    log_ppl = np.log10(corpus.column("ppl").to_numpy())
    source = np.array(corpus.column("source").to_pylist())
    bins = np.linspace(log_ppl.min(), log_ppl.max() + 1e-9, 40)
    fig, axes = plt.subplots(1, len(sources), figsize=(min(4 * len(sources), 16), 3), squeeze=False, sharex=True)
    for ax, name, color in zip(axes[0], sources, COLORS * 10):
        mine = source == name
        ax.hist(log_ppl[mine], bins=bins, color=color, alpha=0.35, label=f"all ({mine.sum():,})")
        ax.hist(log_ppl[mine & selected], bins=bins, color=color, histtype="step", linewidth=2,
                label=f"selected ({(mine & selected).sum():,})")
        ax.set_title(name)
        ax.set_xlabel("log10 perplexity")
        ax.legend(frameon=False)
    axes[0][0].set_ylabel("rows")
    return fig


def fig_length(corpus: pa.Table, boundaries: list[float]):
    plt = _plt()
    lengths = corpus.column("len").to_numpy()
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.hist(lengths, bins=np.logspace(0, np.log10(max(lengths.max(), 2)), 50), color=COLORS[0], alpha=0.7)
    ax.set_xscale("log")
    top = ax.get_ylim()[1]
    for i, b in enumerate(boundaries[1:], start=1):
        ax.axvline(max(b, 1), color=COLORS[3], linestyle="--", linewidth=1)
        ax.text(max(b, 1), top * 0.98, f" q{i}={b:g}", color=COLORS[3], va="top", rotation=90, fontsize=8)
    ax.set_xlabel("instruction length (characters, log scale)")
    ax.set_ylabel("rows")
    ax.set_title(f"length distribution and the {len(boundaries)} length-group boundaries")
    return fig


def fig_cluster_sizes(clusters: pa.Table):
    plt = _plt()
    groups = clusters.column("len_group").to_numpy()
    labels = clusters.column("cluster").to_numpy()
    fig, ax = plt.subplots(figsize=(8, 3))
    for g in np.unique(groups):
        sizes = np.sort(np.bincount(labels[groups == g]))[::-1]
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


def fig_embedding_map(vectors: VectorFile, clusters: pa.Table, selected: np.ndarray, seed: int = 0):
    plt = _plt()
    rng = np.random.default_rng(seed)
    shown = np.sort(rng.choice(len(vectors), MAP_POINTS, replace=False)) if len(vectors) > MAP_POINTS else np.arange(len(vectors))
    xy, method = _project(vectors.rows(shown).astype(np.float32), seed)
    cells = clusters.column("len_group").to_numpy()[shown] * 1000 + clusters.column("cluster").to_numpy()[shown]
    fig, ax = plt.subplots(figsize=(7, 6))
    size = 14 if len(shown) <= 5000 else 4
    ax.scatter(xy[:, 0], xy[:, 1], c=cells % 20, cmap="tab20", s=size, alpha=0.8, linewidths=0)
    chosen = selected[shown]
    ax.scatter(xy[chosen, 0], xy[chosen, 1], facecolors="none", edgecolors="black", s=22, linewidths=0.8,
               label=f"selected ({chosen.sum():,} shown)")
    ax.set_title(f"embeddings ({method}, {len(shown):,} of {len(vectors):,} rows), coloured by cell")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(frameon=False, loc="upper right")
    return fig


def fig_selected_vs_all(corpus: pa.Table, selected: np.ndarray):
    plt = _plt()
    source = np.array(corpus.column("source").to_pylist())
    names = sorted(set(source.tolist()))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3))
    share_all = [np.mean(source == n) for n in names]
    share_sel = [np.mean(source[selected] == n) if selected.any() else 0 for n in names]
    pos = np.arange(len(names))
    axes[0].bar(pos - 0.2, share_all, 0.4, label="all", color=COLORS[7])
    axes[0].bar(pos + 0.2, share_sel, 0.4, label="selected", color=COLORS[0])
    axes[0].set_xticks(pos, names, rotation=20, ha="right")
    axes[0].set_ylabel("share of rows")
    axes[0].set_title("source mix")
    for ax, column, label, log in ((axes[1], "len", "instruction length (log10 chars)", True),
                                   (axes[2], "ppl", "log10 perplexity", True)):
        values = np.log10(np.maximum(corpus.column(column).to_numpy().astype(float), 1))
        bins = np.linspace(values.min(), values.max() + 1e-9, 40)
        ax.hist(values, bins=bins, density=True, color=COLORS[7], alpha=0.5, label="all")
        ax.hist(values[selected], bins=bins, density=True, histtype="step", color=COLORS[0], linewidth=2, label="selected")
        ax.set_xlabel(label)
        ax.legend(frameon=False)
    axes[1].set_title("length")
    axes[2].set_title("perplexity")
    return fig


def fig_training_loss(log: list[dict[str, Any]]):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.2))
    steps = [r["step"] for r in log]
    ax.plot(steps, [r["loss"] for r in log], color=COLORS[0], marker="." if len(log) < 60 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss", color=COLORS[0])
    if all("learning_rate" in r for r in log):
        lr = ax.twinx()
        lr.plot(steps, [r["learning_rate"] for r in log], color=COLORS[1], linewidth=1)
        lr.set_ylabel("learning rate", color=COLORS[1])
        lr.spines["right"].set_visible(True)
    return fig


def _kobest_table(run_dir: Path) -> str:
    from .evaluate import LABELS, TASKS, load_results, model_label, score_cells

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


def read_sweep(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def fig_sweep(rows: list[dict[str, Any]], metric: str, title: str, log: bool = False):
    """A heatmap over (L, K) per method × ratio; `log` colours on a log scale (perplexity is heavy-tailed)."""
    plt = _plt()
    from matplotlib.colors import LogNorm

    values = [float(r[metric]) for r in rows if r[metric] not in ("", None) and float(r[metric]) > 0]
    norm = LogNorm(min(values), max(values)) if log and values else None
    methods = list(dict.fromkeys(r["method"] for r in rows))
    ratios = sorted({float(r["ratio"]) for r in rows}, reverse=True)
    ls = sorted({int(r["len_groups"]) for r in rows})
    ks = sorted({int(r["k"]) for r in rows})
    fig, axes = plt.subplots(len(methods), len(ratios), figsize=(3.2 * len(ratios), 2.6 * len(methods)), squeeze=False)
    for i, method in enumerate(methods):
        for j, ratio in enumerate(ratios):
            grid = np.full((len(ls), len(ks)), np.nan)
            for r in rows:
                if r["method"] == method and float(r["ratio"]) == ratio:
                    grid[ls.index(int(r["len_groups"])), ks.index(int(r["k"]))] = float(r[metric] or "nan")
            ax = axes[i][j]
            image = ax.imshow(grid, cmap="viridis", aspect="auto", norm=norm)
            for (a, b), value in np.ndenumerate(grid):
                if not np.isnan(value):  # dark text on the bright end of viridis, white on the dark end
                    bright = image.norm(value) > 0.6
                    ax.text(b, a, f"{value:.3g}", ha="center", va="center", color="black" if bright else "white", fontsize=7)
            ax.set_xticks(range(len(ks)), ks)
            ax.set_yticks(range(len(ls)), ls)
            ax.set_title(f"{method}, N={ratio:g}")
            if j == 0:
                ax.set_ylabel("L (length groups)")
            if i == len(methods) - 1:
                ax.set_xlabel("K (clusters)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _examples(corpus: pa.Table, corpus_path: Path, clusters: pa.Table, per_source: int = 3, per_cluster: int = 2,
              clusters_shown: int = 3) -> str:
    """Choose example rows from the ppl/source/cell columns, then read only their texts from the corpus."""
    source = np.array(corpus.column("source").to_pylist())
    ppl = corpus.column("ppl").to_numpy()
    groups, labels = clusters.column("len_group").to_numpy(), clusters.column("cluster").to_numpy()
    by_source = {}
    for name in sorted(set(source.tolist())):
        mine = np.flatnonzero(source == name)
        ordered = mine[np.argsort(ppl[mine], kind="stable")]
        by_source[name] = list(ordered[:per_source]) + (list(ordered[-per_source:]) if len(ordered) > per_source else [])
    by_cell = []
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        sizes = np.bincount(labels[rows])
        for c in np.argsort(-sizes, kind="stable")[:clusters_shown]:
            by_cell.append((int(g), int(c), int(sizes[c]), list(rows[labels[rows] == c][:per_cluster])))
    wanted = sorted({int(i) for rows in by_source.values() for i in rows} | {int(i) for *_, rows in by_cell for i in rows})
    texts = _texts(corpus_path, corpus.column("id").take(pa.array(wanted, pa.int64())))

    def row(i):
        rid = corpus.column("id")[int(i)].as_py()
        return {"ppl": float(ppl[i]), "source": source[i], **texts[rid]}

    parts = ["<h3>Lowest and highest perplexity per source</h3>"]
    for name, rows in by_source.items():
        parts.append(f"<h4>{html.escape(name)}</h4>" + _table([row(i) for i in rows], ["ppl", "instruction", "output"]))
    parts.append("<h3>A few rows of the largest clusters</h3>")
    for g, c, size, rows in by_cell:
        parts.append(f"<h4>length group {g}, cluster {c} ({size:,} rows)</h4>"
                     + _table([row(i) for i in rows], ["ppl", "source", "instruction"]))
    return "\n".join(parts)


def _texts(corpus_path: Path, ids: pa.Array) -> dict[str, dict[str, str]]:
    """instruction/output of the rows with these ids, streamed from the corpus file."""
    found = {}
    for batch in pq.ParquetFile(corpus_path).iter_batches(batch_size=65536, columns=["id", "instruction", "output"]):
        hits = pa.Table.from_batches([batch]).filter(pc.is_in(batch.column("id"), value_set=ids))
        for r in hits.to_pylist():
            found[r["id"]] = {"instruction": r["instruction"], "output": r["output"]}
    return found


def _table(rows: list[dict], columns: list[str], limit: int = 300) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:,.1f}"
        text = str(value)
        return html.escape(text if len(text) <= limit else text[:limit] + "…")

    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r[c])}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


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
        rows += [(f"KoBEST {name}: mean acc / macro-F1", f"{average['acc']:.4f} / {average['f1']:.4f}")]
    return rows


CSS = """body{font-family:-apple-system,'Noto Sans KR','Apple SD Gothic Neo','Malgun Gothic',sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
img{max-width:100%;border:1px solid #eee}table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px;width:100%}
td,th{border:1px solid #e3e3e3;padding:4px 6px;text-align:left;vertical-align:top}th{background:#f6f6f6}
.muted{color:#777}.summary td:last-child{text-align:right}"""


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    data = _load(run_dir)
    manifest, corpus, clusters, selected = data["manifest"], data["corpus"], data["clusters"], data["selected"]
    if not clusters.column("id").equals(corpus.column("id")):
        raise KoqualityError(f"{run_dir}: clusters and corpus rows differ; re-run koquality run")
    figures_dir = run_dir / "figures"
    images = {
        "perplexity_by_source": fig_perplexity(corpus, selected),
        "length_groups": fig_length(corpus, data["cluster_info"]["boundaries"]),
        "cluster_sizes": fig_cluster_sizes(clusters),
        "embedding_map": fig_embedding_map(VectorFile(data["vectors"]), clusters, selected, seed=manifest["seed"]),
        "selected_vs_all": fig_selected_vs_all(corpus, selected),
    }
    sweep_rows = read_sweep(data["sweep"]) if data["sweep"].exists() else []
    if sweep_rows:
        top = max(manifest["corpus_by_source"], key=manifest["corpus_by_source"].get)
        images["sweep_rows"] = fig_sweep(sweep_rows, "rows", "selected rows over (L, K)")
        images["sweep_mean_ppl"] = fig_sweep(sweep_rows, "mean_ppl", "mean perplexity of the selection (log colour scale)", log=True)
        images["sweep_source_share"] = fig_sweep(sweep_rows, f"share_{top}", f"share of source '{top}' in the selection")
    loss_log = run_dir / "model" / "loss.jsonl"
    if "train" in manifest and loss_log.exists():
        from .train import read_loss_log

        images["training_loss"] = fig_training_loss(read_loss_log(run_dir / "model"))
    encoded = {name: _save(fig, name, figures_dir) for name, fig in images.items()}
    captions = {
        "perplexity_by_source": "Perplexity of each instruction per source (filled: all rows; line: what the selection kept).",
        "length_groups": "Instruction lengths with the length-group boundaries q1…q(L−1).",
        "cluster_sizes": "Cluster sizes within each length group.",
        "embedding_map": "The instruction embeddings in 2-D; circles mark selected rows.",
        "selected_vs_all": "The selection against the whole corpus: source mix, length, perplexity.",
        "sweep_rows": "Sweep: selected rows for each (L, K), per method and ratio.",
        "sweep_mean_ppl": "Sweep: mean perplexity of each selection.",
        "sweep_source_share": "Sweep: share of the largest source in each selection.",
        "training_loss": "Training loss of the model fine-tuned on the selection, per optimizer step (and the learning rate).",
    }
    summary = "".join(f"<tr><td>{html.escape(k).replace('  ', '&nbsp;&nbsp;&nbsp;&nbsp;')}</td>"
                      f"<td>{f'{v:,}' if isinstance(v, int) else html.escape(str(v))}</td></tr>" for k, v in summary_rows(manifest))
    figures = "".join(f"<h2>{html.escape(captions[n].split(':')[0] if n.startswith('sweep') else n.replace('_', ' '))}</h2>"
                      f"<p class='muted'>{html.escape(captions[n])}</p><img alt='{n}' src='data:image/png;base64,{b64}'>"
                      for n, b64 in encoded.items())
    page = (f"<!doctype html><html lang='ko'><head><meta charset='utf-8'><title>koquality report: "
            f"{html.escape(manifest['name'])}</title><style>{CSS}</style></head><body>"
            f"<h1>koquality report: {html.escape(manifest['name'])}</h1>"
            f"<p class='muted'>{html.escape(str(run_dir))} · selection {html.escape(manifest['files']['selection'])}</p>"
            f"<h2>Summary</h2><table class='summary'>{summary}</table>{figures}"
            f"{'<h2>KoBEST</h2>' + _kobest_table(run_dir) if 'eval' in manifest else ''}"
            f"<h2>Example rows</h2>{_examples(corpus, data['corpus_path'], clusters)}</body></html>")
    path = run_dir / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
