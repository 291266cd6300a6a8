"""The sweep over the paper's grid, its summary, and the report: files, contents, and a real render."""

import csv
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import koquality

from koquality.recipe import load_recipe
from koquality.sweep import sweep


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    return sweep(load_recipe("demo"), out, len_groups=[1, 5], k=[1, 10], method=["rand", "ppl", "ppl_h"],
                 ratio=[0.1, 0.05])


def test_sweep_writes_every_selection_and_a_summary_row(small_sweep):
    out = small_sweep.run_dir
    with open(out / "sweep.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 3 * 2 == small_sweep.manifest["stages"]["sweep"]["selections"]
    expected_columns = {"len_groups", "k", "method", "ratio", "rows", "share_demo_alpaca", "share_demo_chat", "share_demo_qa",
                        "mean_ppl", "median_ppl", "mean_len", "cells_covered", "duplicate_instructions", "file"}
    assert set(rows[0]) == expected_columns
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
    assert "<script" not in page and "<link" not in page
    assert page.count("data:image/png;base64,") == 8  # 5 run figures + 3 sweep heatmaps
    for name in ("perplexity_by_source", "length_groups", "cluster_sizes", "embedding_map", "selected_vs_all",
                 "sweep_rows", "sweep_mean_ppl", "sweep_source_share"):
        assert (small_sweep.run_dir / "figures" / f"{name}.png").stat().st_size > 5000
    assert "Lowest and highest perplexity per source" in page and "A few rows of the largest clusters" in page
    assert len(re.findall("[가-힣]", page)) > 200  # example rows show the corpus's Korean text


def test_run_writes_the_report_and_inspect_prints_the_summary(tmp_path):
    koquality("run", "--output", tmp_path / "demo")
    assert (tmp_path / "demo" / "report.html").exists()
    assert json.loads((tmp_path / "demo" / "manifest.json").read_text(encoding="utf-8"))["stages"]["report"]["seconds"] > 0
    proc = koquality("inspect", tmp_path / "demo")
    assert "rows read" in proc.stdout and "selected" in proc.stdout and "len5_k10_mppl_n0.1.jsonl" in proc.stdout
    missing = koquality("inspect", tmp_path / "nothing", check=False)
    assert missing.returncode == 2 and "not a koquality run directory" in missing.stderr


def test_report_renders_in_headless_chromium(small_sweep, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("no chromium installed (Debian package 'chromium')")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={shot}",
                    (small_sweep.run_dir / "report.html").as_uri()], check=True, capture_output=True, timeout=120)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert pixels.shape[:2] == (2400, 1280)
    assert not_white > 0.05 and pixels.std() > 0.05  # text, tables and figures, not a blank page
