"""The sweep over the paper's grid, its summary, and the report: files, contents, fonts, the interactive map,
empty selections, and a real render in headless Chromium."""

import csv
import html
import json
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import koquality

from koquality import report
from koquality.recipe import load_recipe
from koquality.report_clusters import TOP_TERMS
from koquality.report_map import CSS as MAP_CSS, map_html
from koquality.sweep import sweep
from koquality.tables import VectorFile

MAX_PAGE = 10_000_000  # bytes: the page at 20,000 map points stays under this


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    return sweep(load_recipe("demo"), out, len_groups=[1, 5], k=[1, 10], method=["rand", "ppl", "ppl_h"],
                 ratio=[0.1, 0.05])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "demo"
    koquality("run", "--output", out)
    return out


def _copy(run_dir, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns(".koquality.lock"))
    return target


def _section(page: str, start: str, end: str) -> str:
    return page[page.index(start):page.index(end, page.index(start))]


def test_sweep_writes_every_selection_and_a_summary_row(small_sweep):
    out = small_sweep.run_dir
    with open(out / "sweep.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 3 * 2 == small_sweep.manifest["stages"]["sweep"]["selections"]
    expected_columns = {"len_groups", "k", "method", "ratio", "rows", "share_demo_alpaca", "share_demo_chat", "share_demo_qa",
                        "mean_ppl", "median_ppl", "mean_len", "cells_covered", "duplicate_instructions", "file"}
    assert expected_columns <= set(rows[0])
    for row in rows:
        path = out / row["file"]
        assert path.name == f"len{row['len_groups']}_k{row['k']}_m{row['method']}_n{float(row['ratio']):g}.jsonl"
        selected = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(selected) == int(row["rows"])
        if selected:
            assert abs(sum(float(row[f"share_{s}"]) for s in ("demo_alpaca", "demo_chat", "demo_qa")) - 1) < 1e-3
            ppl = [r["ppl"] for r in selected]
            assert float(row["mean_ppl"]) == pytest.approx(np.mean(ppl), rel=1e-3)
            assert int(row["cells_covered"]) == len({(r["len_group"], r["cluster"]) for r in selected})
            assert int(row["cells_covered"]) <= int(row["len_groups"]) * int(row["k"])
            assert int(row["duplicate_instructions"]) == len(selected) - len({r["instruction"] for r in selected})
    # scoring and embedding happened once; clustering once per (L, K)
    assert small_sweep.manifest["stages"]["score"]["scored"] == small_sweep.manifest["rows"]["corpus"]
    assert sorted(p.name for p in (out / "clusters").glob("*.parquet")) == [
        "len1_k1.parquet", "len1_k10.parquet", "len5_k1.parquet", "len5_k10.parquet"]
    # the same selection as koquality run gives for that setting
    assert small_sweep.manifest["files"]["selection"] == "selections/len5_k10_mppl_n0.1.jsonl"


def test_paper_grid_is_the_default(tmp_path):
    proc = koquality("sweep", "--output", tmp_path / "grid", "--no-report")
    assert len(list((tmp_path / "grid" / "selections").glob("*.jsonl"))) == 180
    with open(tmp_path / "grid" / "sweep.csv", encoding="utf-8") as f:
        assert sum(1 for _ in f) == 181
    assert "selections in sweep" in proc.stdout


def test_report_is_self_contained_with_figures(small_sweep):
    page = (small_sweep.run_dir / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no network requests
    assert not re.search(r"<script[^>]*\bsrc\s*=", page) and "<link" not in page and "@import" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page  # and the browser enforces it
    assert "data:font/woff;base64," in page  # the Korean font, cut to the page's characters
    sweep_figures = ["sweep_rows", "sweep_median_ppl", "sweep_source_share"]
    with open(small_sweep.run_dir / "sweep.csv", encoding="utf-8") as f:
        if "effective_ratio" in f.readline():
            sweep_figures.append("sweep_effective_ratio")
    names = ["perplexity_by_source", "selected_vs_all", "length_groups", "cluster_sizes", "embedding_map", *sweep_figures]
    assert page.count("data:image/png;base64,") == len(names)  # the map's PNG only in <noscript>
    for name in names:
        assert (small_sweep.run_dir / "figures" / f"{name}.png").stat().st_size > 5000
        assert f"alt='{name}'" in page
    assert {p.stem for p in (small_sweep.run_dir / "figures").glob("*.png")} == set(names)
    assert "Lowest and highest perplexity per source" in page and "A few rows of the largest clusters" in page
    assert len(re.findall("[가-힣]", page)) > 200  # example rows show the corpus's Korean text


def test_run_writes_the_report_and_inspect_prints_the_summary(demo_run):
    assert (demo_run / "report.html").exists()
    assert json.loads((demo_run / "manifest.json").read_text(encoding="utf-8"))["stages"]["report"]["seconds"] > 0
    proc = koquality("inspect", demo_run)
    assert "rows read" in proc.stdout and "selected" in proc.stdout and "len5_k10_mppl_n0.1.jsonl" in proc.stdout
    missing = koquality("inspect", demo_run.parent / "nothing", check=False)
    assert missing.returncode == 2 and "not a koquality run directory" in missing.stderr


def test_the_top_of_the_report_says_what_was_selected_and_why(demo_run):
    page = (demo_run / "report.html").read_text(encoding="utf-8")
    manifest = json.loads((demo_run / "manifest.json").read_text(encoding="utf-8"))
    glance = _section(page, "<section class='glance'>", "</section>")
    assert page.index("<section class='glance'>") < page.index("<img")  # before any figure
    text = html.unescape(re.sub(r"<[^>]+>", " ", glance))
    assert f"Selected {manifest['rows']['selected']} of {manifest['rows']['corpus']} corpus rows" in " ".join(text.split())
    for key, value in (("L", "5"), ("K", "10"), ("method", "ppl"), ("N", "0.1")):
        assert f"<div class='key'>{key}</div><div class='value'>{value}</div>" in glance
    assert "kiwi" in text and "tfidf (256 dims" in text  # scorer and encoder
    for source, path in (("demo_alpaca", "koquality:demo/alpaca.json"), ("demo_qa", "koquality:demo/qa.csv"),
                         ("demo_chat", "koquality:demo/chat.jsonl")):
        n, kept = manifest["corpus_by_source"][source], manifest["selected_by_source"][source]
        assert re.search(rf"<td>{source}</td><td>{re.escape(path)}</td><td>{n:,}</td><td>{kept:,}</td>", glance)
    if "cells" in manifest:  # the sampling's note on cells smaller than 1/N
        assert f"{manifest['cells']['cells']:,} cells" in text


def test_the_manifests_cells_note_and_warning_are_shown(demo_run, tmp_path):
    run = _copy(demo_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["cells"] = {"method": "ppl", "ratio": 0.1, "cells": 50, "cells_below_1_over_n": 37, "selected": 61,
                         "effective_ratio": 0.175793, "warning": "selected 17.58% of the corpus, 1.8× the ratio N"}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    page = report.write_report(run).read_text(encoding="utf-8")
    glance = _section(page, "<section class='glance'>", "</section>")
    assert "50 cells; 37 of them hold fewer than 1/N = 10 rows; effective ratio (selected / corpus) 0.1758" in glance
    assert page.index("<div class='warning'><b>Warning.</b> selected 17.58% of the corpus") < page.index("<section")


def test_every_figure_has_a_legend_and_axis_labels(demo_run, small_sweep):
    data = report._load(demo_run)
    corpus, clusters, selected = data["corpus"], data["clusters"], data["selected"]
    xy = np.random.default_rng(0).normal(size=(corpus.num_rows, 2))
    groups = clusters.column("len_group").to_numpy()
    with open(small_sweep.run_dir / "sweep.csv", encoding="utf-8", newline="") as f:
        sweep_rows = list(csv.DictReader(f))
    figures = {
        "perplexity": report.fig_perplexity(corpus, selected),
        "selected_vs_all": report.fig_selected_vs_all(corpus, selected),
        "length": report.fig_length(corpus, data["cluster_info"]["boundaries"], selected),
        "cluster_sizes": report.fig_cluster_sizes(clusters),
        "map": report.fig_embedding_map(xy, "PCA", groups, selected, corpus.num_rows),
        "loss": report.fig_training_loss([{"step": i, "loss": 2 - i / 10, "learning_rate": 1e-4} for i in range(1, 10)]),
        **report._sweep_figures(sweep_rows, small_sweep.manifest),
    }
    for name, fig in figures.items():
        colorbars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
        plots = [ax for ax in fig.axes if ax not in colorbars]
        assert any(ax.get_legend() is not None for ax in plots) or colorbars, f"{name}: no legend or colour bar"
        for ax in plots:
            twin = ax.get_shared_x_axes().get_siblings(ax) != [ax] and not ax.get_xlabel()
            assert ax.get_xlabel() or twin, f"{name}: an axes without an x label"
            assert ax.get_ylabel(), f"{name}: an axes without a y label"
        for bar in colorbars:
            assert bar.get_ylabel() or bar.get_xlabel(), f"{name}: a colour bar without a label"


def test_sweep_heatmaps_share_one_colour_scale_and_grey_out_empty_selections():
    rows = []
    for method in ("ppl", "ppl_h"):
        for ratio in (0.1, 0.01):
            for L in (1, 5):
                for K in (1, 10):
                    empty = method == "ppl_h" and ratio == 0.01 and K == 10
                    median = "" if empty else str(10 ** (1 + L / 5 + K / 10 + ratio))
                    rows.append({"method": method, "ratio": str(ratio), "len_groups": str(L), "k": str(K),
                                 "rows": "0" if empty else "40", "median_ppl": median, "share_a": "0.0" if empty else "0.5"})
    for metric, log in (("median_ppl", True), ("share_a", False)):
        fig = report.fig_sweep(rows, metric, metric, log=log, limits=None if log else (0.0, 1.0))
        images = [image for ax in fig.axes for image in ax.get_images()]
        assert len(images) == 4  # 2 methods × 2 ratios
        assert len({(image.norm.vmin, image.norm.vmax) for image in images}) == 1  # one scale for all panels
        assert sum(hasattr(ax, "_colorbar") for ax in fig.axes) == 1  # one colour bar per metric
        empty = [image for image in images if np.ma.getmaskarray(image.get_array())[:, 1].all()]
        assert len(empty) == 1  # ppl_h at N=0.01, K=10: no perplexity, no share (grey), not 0
    values = [float(r["median_ppl"]) for r in rows if r["median_ppl"]]
    fig = report.fig_sweep(rows, "median_ppl", "median", log=True)
    assert fig.axes[0].get_images()[0].norm.vmin == pytest.approx(min(values))
    assert fig.axes[0].get_images()[0].norm.vmax == pytest.approx(max(values))


def test_hangul_in_figures_renders_without_missing_glyphs(demo_run, tmp_path):
    """Issue: source names and Korean text in figures were tofu boxes (DejaVu Sans has no Hangul)."""
    import matplotlib

    run = _copy(demo_run, tmp_path)
    korean = {"demo_alpaca": "알파카_지시문", "demo_qa": "질문답변", "demo_chat": "대화_의지"}
    corpus = pq.read_table(run / "corpus.parquet")
    renamed = pa.array([korean[s] for s in corpus.column("source").to_pylist()])
    pq.write_table(corpus.set_column(corpus.schema.get_field_index("source"), "source", renamed), run / "corpus.parquet")
    before = {key: matplotlib.rcParams[key] for key in ("font.family", "font.size", "axes.spines.top", "backend")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = report.write_report(run).read_text(encoding="utf-8")
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing[:3]
    family, origin, path = report.korean_font()
    assert family and path, origin
    assert f"Figures drawn with {family}" in page
    # the report sets its font inside an rc_context: a caller's matplotlib settings are as they were
    assert {key: matplotlib.rcParams[key] for key in before} == before
    assert "koreanize_matplotlib" not in sys.modules  # its import would rewrite the global rcParams
    assert "<td>알파카_지시문</td>" in page


def _empty_selection(run, how):
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    selection = run / manifest["files"]["selection"]
    if how == "zero bytes":
        selection.write_bytes(b"")
    else:  # a selection file with its columns and no row
        table = pq.read_table(run / "corpus.parquet").slice(0, 0)
        pq.write_table(table, selection.with_suffix(".parquet"))
        manifest["files"]["selection"] = str(selection.with_suffix(".parquet").relative_to(run))
        (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize("how", ["zero bytes", "zero rows"])
def test_an_empty_selection_is_reported_not_a_traceback(demo_run, tmp_path, how):
    run = _copy(demo_run, tmp_path)
    _empty_selection(run, how)
    page = report.write_report(run).read_text(encoding="utf-8")
    warning = page.index("<div class='warning' id='empty-selection'><b>Empty selection.</b>")
    assert warning < page.index("<section class='glance'>") < page.index("<img")
    assert "Selected <b>0</b> of 347 corpus rows" in page
    assert "✓ selected" not in page and "✗ not selected" in page
    assert re.search(r"<canvas data-points='347' data-drawn='0'", page)
    for name in ("perplexity_by_source", "selected_vs_all", "length_groups", "cluster_sizes", "embedding_map"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 5000
    if how == "zero bytes":  # the command as well
        assert "report" in koquality("report", run).stdout


def test_a_run_whose_recipe_selects_nothing_is_reported(demo_run, tmp_path):
    """The demo corpus's cells hold ~7 rows: ppl_h with N = 0.01 keeps int(0.07) = 0 of each."""
    import yaml

    recipe = yaml.safe_load((demo_run / "recipe.yaml").read_text(encoding="utf-8"))
    recipe["sample"] = {"method": "ppl_h", "ratio": 0.01}
    (tmp_path / "empty.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    koquality("run", "--recipe", tmp_path / "empty.yaml", "--output", tmp_path / "empty")
    page = (tmp_path / "empty" / "report.html").read_text(encoding="utf-8")
    assert "<b>Empty selection.</b>" in page and "Selected <b>0</b> of 347 corpus rows" in page
    assert "<div class='key'>method</div><div class='value'>ppl_h</div>" in page


def test_clusters_have_a_size_kept_count_and_top_terms(demo_run):
    page = (demo_run / "report.html").read_text(encoding="utf-8")
    manifest = json.loads((demo_run / "manifest.json").read_text(encoding="utf-8"))
    table = _section(page, "<table class='cells'>", "</table>")
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr><td>.*?</tr>", table)]
    clusters = pq.read_table(demo_run / manifest["files"]["clusters"])
    cells = {(g, c) for g, c in zip(clusters.column("len_group").to_pylist(), clusters.column("cluster").to_pylist())}
    assert len(rows) == len(cells)
    assert sum(int(r[2].replace(",", "")) for r in rows) == manifest["rows"]["corpus"]
    assert sum(int(r[3].replace(",", "")) for r in rows) == manifest["rows"]["selected"]
    named = [r for r in rows if re.search("[가-힣]{2,}", html.unescape(r[6]))]
    assert len(named) >= 0.8 * len(rows)  # Kiwi nouns, Korean
    assert all(len(html.unescape(r[6]).split(" · ")) <= TOP_TERMS for r in rows)


def test_cluster_terms_rank_a_clusters_own_nouns_first():
    from koquality.report_clusters import _nouns, cluster_terms

    food = ["김치찌개 끓이는 방법 알려줘", "된장찌개 레시피와 김치 보관법", "김치볶음밥 만드는 법"]
    code = ["파이썬 리스트 정렬 코드", "파이썬 딕셔너리 정렬", "Python 함수 작성 방법"]
    terms = cluster_terms({(0, 0): _nouns(food), (0, 1): _nouns(code)})
    assert "김치" in terms[(0, 0)][:2] and "파이썬" in terms[(0, 1)][:2]
    assert not set(terms[(0, 0)]) & {"파이썬", "정렬"}


def test_example_rows_are_marked_selected_or_not(demo_run):
    page = (demo_run / "report.html").read_text(encoding="utf-8")
    manifest = json.loads((demo_run / "manifest.json").read_text(encoding="utf-8"))
    chosen = {json.loads(line)["instruction"] for line in
              (demo_run / manifest["files"]["selection"]).read_text(encoding="utf-8").splitlines()}
    examples = page[page.index("<h2>Example rows</h2>"):]
    marked = re.findall(r"<tr><td><span class='(yes|no)'>[^<]*</span></td><td>[^<]*</td><td>([^<]*)</td>", examples)
    sources = [(mark, html.unescape(text)) for mark, text in marked]
    assert len(sources) >= 15 and {"yes", "no"} == {mark for mark, _ in sources}
    for mark, instruction in sources:  # the source tables: selected, ppl, instruction
        if len(instruction) < 300 and not instruction.startswith("demo_"):
            assert (instruction in chosen) == (mark == "yes"), instruction


def test_the_map_page_stays_small_at_20k_points():
    rng = np.random.default_rng(0)
    syllables = np.array([chr(c) for c in rng.integers(0xAC00, 0xD7A4, 2000)])
    n = 20_000
    texts = ["".join(row) for row in syllables[rng.integers(0, 2000, (n, 400))]]  # long Korean instructions: the worst case
    texts[0] = "</script><script>alert(1)</script> & <!--"
    part = map_html(rng.normal(size=(n, 2)), [f"소스_{i % 7}" for i in range(n)], rng.integers(0, 20, n),
                    rng.integers(0, 100, n), rng.lognormal(4, 2, n), rng.random(n) < 0.1, texts,
                    {(g, c): "이름 · 주제" for g in range(20) for c in range(100)})
    size = len(part.encode("utf-8"))
    assert size < 8_000_000, size  # leaves room for the figures and the font under MAX_PAGE
    data = json.loads(re.search(r"<script type='application/json' id='kq-map-data'>(.*?)</script>", part, re.S)[1])
    assert len(data["x"]) == len(data["t"]) == n and min(data["x"]) == 0 and max(data["x"]) == 10000
    assert part.count("</script>") == 2  # the hostile instruction stays inside the JSON
    assert data["t"][0].startswith("</script>")


def _synthetic_run(root, n=20_000, seed=0):
    """A run directory written directly (no scoring): n rows of Korean text, 5 length groups × 20 clusters."""
    rng = np.random.default_rng(seed)
    words = ["".join(chr(c) for c in rng.integers(0xAC00, 0xD7A4, rng.integers(2, 4))) for _ in range(600)]
    topics = rng.integers(0, 20, n)
    instructions = [" ".join([words[t * 30 + j] for j in rng.integers(0, 30, 3)] + list(rng.choice(words, rng.integers(5, 40))))
                    for t in topics]
    lengths = np.array([len(t) for t in instructions])
    boundaries = np.quantile(lengths, [i / 5 for i in range(5)])
    groups = np.searchsorted(boundaries[1:], lengths, side="right").astype(np.int32)
    ids = [f"{i:016x}" for i in range(n)]
    sources = [f"출처_{i % 3}" for i in range(n)]
    ppl = rng.lognormal(4, 1.5, n)
    (root / "clusters").mkdir(parents=True)
    (root / "selections").mkdir()
    (root / "vectors").mkdir()
    pq.write_table(pa.table({"id": ids, "source": sources, "instruction": instructions,
                             "output": ["답변 " + t[:50] for t in instructions], "len": lengths, "ppl": ppl}),
                   root / "corpus.parquet")
    pq.write_table(pa.table({"id": ids, "len_group": groups, "cluster": topics.astype(np.int32)}),
                   root / "clusters" / "len5_k20.parquet")
    (root / "clusters" / "len5_k20.json").write_text(json.dumps(
        {"len_groups": 5, "k": 20, "boundaries": boundaries.tolist(), "clamped": []}), encoding="utf-8")
    vectors = (np.eye(20)[topics] + rng.normal(scale=0.3, size=(n, 20))).astype(np.float32)
    np.save(root / "vectors" / "v.npy", vectors)
    chosen = rng.random(n) < 0.05
    with open(root / "selections" / "len5_k20_mppl_n0.05.jsonl", "w", encoding="utf-8") as f:
        for i in np.flatnonzero(chosen):
            f.write(json.dumps({"id": ids[i], "instruction": instructions[i]}, ensure_ascii=False) + "\n")
    by_source = {s: sources.count(s) for s in sorted(set(sources))}
    manifest = {"name": "synthetic", "seed": seed, "rows": {"read": n, "dropped": 0, "corpus": n, "selected": int(chosen.sum())},
                "dropped_by_reason": {}, "corpus_by_source": by_source, "stages": {},
                "files": {"corpus": "corpus.parquet", "clusters": "clusters/len5_k20.parquet", "vectors": "vectors/v.npy",
                          "selection": "selections/len5_k20_mppl_n0.05.jsonl"}}
    (root / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    run = _synthetic_run(tmp_path_factory.mktemp("big") / "run")
    report.write_report(run)
    return run


def test_the_page_stays_under_10_mb_at_20k_points(big_run):
    page = (big_run / "report.html").read_text(encoding="utf-8")
    assert len(page.encode("utf-8")) < MAX_PAGE
    assert re.search(r"<canvas data-points='20000'", page)
    assert len(VectorFile(big_run / "vectors" / "v.npy")) == 20_000
    assert "<div class='key'>method</div><div class='value'>ppl</div>" in page  # parameters from the file name
    assert "<div class='key'>scorer</div><div class='value'>?</div>" in page  # no recipe.yaml: unknown, no crash


def _browser():
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        pytest.skip("no chromium installed (Debian package 'chromium')")
    return browser


def _chromium(browser, url, profile, *args):
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args, url],
                          check=True, capture_output=True, text=True, timeout=180)
    return proc.stdout


def _canvas(dom):
    tag = re.search(r"<canvas[^>]*>", dom)[0]
    return int(re.search(r'data-points="(\d+)"', tag)[1]), int(re.search(r'data-drawn="(\d+)"', tag)[1])


def test_report_renders_in_headless_chromium(small_sweep, tmp_path):
    browser = _browser()
    page = small_sweep.run_dir / "report.html"
    shot = tmp_path / "report.png"
    _chromium(browser, page.as_uri(), tmp_path / "profile", "--window-size=1280,2400", f"--screenshot={shot}")
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert pixels.shape[:2] == (2400, 1280)
    assert not_white > 0.05 and pixels.std() > 0.05  # text, tables and figures, not a blank page
    # the map itself (the report's own map markup on a page of its own: headless screenshots ignore #anchors)
    text = page.read_text(encoding="utf-8")
    start = text.index("<div class='kq-map'")
    alone = tmp_path / "map.html"
    alone.write_text(f"<!doctype html><meta charset='utf-8'><style>{MAP_CSS}</style>"
                     + text[start:text.index("</script></div>", start) + len("</script></div>")], encoding="utf-8")
    _chromium(browser, alone.as_uri(), tmp_path / "profile", "--window-size=1280,800", f"--screenshot={shot}")
    pixels = (matplotlib.image.imread(str(shot))[..., :3] * 255).astype(np.uint8)
    plot = pixels[100:700]  # below the controls
    assert (plot < 240).any(axis=-1).mean() > 0.005  # points, not a blank canvas
    assert len(np.unique(plot.reshape(-1, 3), axis=0)) > 50  # three source colours, blended

    # every point drawn; the filters (set here through the URL hash) draw what they say; hover shows the row
    data = json.loads(re.search(r"<script type='application/json' id='kq-map-data'>(.*?)</script>",
                                page.read_text(encoding="utf-8"), re.S)[1])
    n = len(data["x"])
    assert _canvas(_chromium(browser, page.as_uri(), tmp_path / "profile", "--dump-dom")) == (n, n)
    group = sum(1 for g in data["g"] if g == 1)
    assert _canvas(_chromium(browser, page.as_uri() + "#map?group=1", tmp_path / "profile", "--dump-dom")) == (n, group)
    qa = data["sources"].index("demo_qa")
    both = sum(1 for s, k in zip(data["s"], data["k"]) if s == qa and k)
    point = next(i for i, (s, k) in enumerate(zip(data["s"], data["k"])) if s == qa and k)
    url = page.as_uri() + f"#map?source=demo_qa&selected=1&hover={point}"
    dom = _chromium(browser, url, tmp_path / "profile", "--dump-dom")
    assert _canvas(dom) == (n, both)
    tip = re.search(r'<div class="kq-tip"[^>]*data-point="(\d+)"[^>]*>(.*?)</div>', dom, re.S)
    text = html.unescape(re.sub(r"<[^>]+>", "", tip[2]))
    assert int(tip[1]) == point and data["t"][point] in text and "source: demo_qa" in text
    assert float(re.search(r"perplexity: (\S+)", text)[1]) == pytest.approx(data["p"][point])
    assert "\nselected\n" in text and "not selected" not in text


def test_the_20k_point_map_renders_in_headless_chromium(big_run, tmp_path):
    browser = _browser()
    dom = _chromium(browser, (big_run / "report.html").as_uri(), tmp_path / "profile", "--dump-dom")
    assert _canvas(dom) == (20_000, 20_000)


def test_without_koreanize_an_installed_hangul_font_is_chosen(monkeypatch):
    from koquality import report_font

    path = report_font.korean_font()[2]  # registers Nanum Gothic with matplotlib, as an installed font would be
    if not path:
        pytest.skip("no font with Hangul here")
    report_font.korean_font.cache_clear()
    monkeypatch.setattr(report_font.importlib.util, "find_spec", lambda name: None)
    try:
        family, origin, found = report_font.korean_font()
        assert family in report_font.HANGUL_FONTS and origin.startswith("installed font") and found
    finally:
        report_font.korean_font.cache_clear()
