"""Issue 11: what a new user meets — empty selections, collapsed cells, a hub that cannot be reached, and the
dead ends of the docs and the CLI. Each test failed before the fix."""

import json

import numpy as np
import pytest
import yaml

from conftest import koquality

from koquality.recipe import load_recipe
from koquality.sampling import cell_summary


def demo_recipe(tmp_path, name="demo_copy", **sections):
    data = load_recipe("demo").model_dump(mode="json", exclude={"train", "eval"})
    data["name"] = name
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def warnings_of(proc) -> list[str]:
    return [l for l in proc.stderr.splitlines() if l.startswith("koquality: warning:")]


def test_cell_summary_counts_collapsed_cells_and_the_effective_ratio():
    # cells (group, cluster): (0,0) 150 rows, (0,1) 30, (1,0) 20 → with N = 0.01, two cells are below 1/N = 100
    groups = np.array([0] * 180 + [1] * 20)
    clusters = np.array([0] * 150 + [1] * 30 + [0] * 20)
    ppl = cell_summary(groups, clusters, "ppl", 0.01, selected=2 + 1 + 1)  # ceil(150/100) + 1 + 1
    assert (ppl["cells"], ppl["cells_below_1_over_n"], ppl["effective_ratio"]) == (3, 2, 0.02)
    assert ppl["warning"] is None  # 2 % against N = 1 %: within a factor of 2
    far = cell_summary(groups, clusters, "ppl", 0.001, selected=3)
    assert far["warning"].startswith("selected 1.50% of the corpus, 15.0× the ratio N = 0.001: 3 of 3 cells hold fewer "
                                     "than 1/N = 1000 rows (ppl keeps one row of each)")
    empty = cell_summary(groups, clusters, "ppl_h", 0.01, selected=0)
    assert empty["warning"].startswith("the selection is empty: 2 of 3 cells hold fewer than 1/N = 100 rows (ppl_h keeps none")


def test_an_empty_selection_is_written_reported_and_warned_about(tmp_path):
    proc = koquality("run", "--recipe", demo_recipe(tmp_path, sample={"method": "ppl_h", "ratio": 0.01}),
                     "--output", tmp_path / "run")
    assert any("the selection is empty: 50 of 50 cells hold fewer than 1/N = 100 rows" in w for w in warnings_of(proc))
    manifest = json.loads((tmp_path / "run/manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows"]["selected"] == 0 and manifest["cells"]["cells_below_1_over_n"] == 50
    assert (tmp_path / "run/export/train.jsonl").read_bytes() == b""
    assert "effective ratio" in proc.stdout and "0.00% (N = 0.01)" in proc.stdout
    assert (tmp_path / "run/report.html").exists()
    # the empty selection exports as an empty training file, with a warning, not an error
    export = koquality("export", tmp_path / "run/selections/len5_k10_mppl_h_n0.01.jsonl", "--output", tmp_path / "t.jsonl")
    assert (tmp_path / "t.jsonl").read_bytes() == b"" and "has no rows: the export is empty" in export.stderr


@pytest.mark.parametrize("methods", ["ppl_h,ppl", "ppl,ppl_h"])
def test_a_sweep_with_empty_selections_in_any_method_order(tmp_path, methods):
    proc = koquality("sweep", "--len-groups", "5", "--k", "10", "--method", methods, "--ratio", "0.01",
                     "--output", tmp_path / "s", "--no-report")
    rows = {r.split(",")[2]: r.split(",") for r in (tmp_path / "s/sweep.csv").read_text(encoding="utf-8").splitlines()[1:]}
    assert rows["ppl_h"][4] == "0" and rows["ppl"][4] == "50"
    assert any("1 of 2 selections are empty" in w for w in warnings_of(proc))


def test_collapsed_ppl_cells_are_reported(tmp_path):
    """N = 0.01 with cells of a few rows keeps one row per cell: 50 of 347 rows, 14 % instead of 1 %."""
    proc = koquality("run", "--recipe", demo_recipe(tmp_path, sample={"method": "ppl", "ratio": 0.01}),
                     "--output", tmp_path / "run", "--no-report")
    cells = json.loads((tmp_path / "run/manifest.json").read_text(encoding="utf-8"))["cells"]
    assert cells["selected"] == 50 and cells["effective_ratio"] == round(50 / 347, 6)
    assert any("14.4× the ratio N = 0.01" in w for w in warnings_of(proc))


def koquality_unreachable_hub(*args, cwd=None):
    """`koquality` as on a machine without the hub: its endpoint a closed local port (no traffic leaves)."""
    import os
    import subprocess
    import sys
    import time

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", COLUMNS="200")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "koquality", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env)
    return proc, time.monotonic() - started


@pytest.mark.parametrize("args", [
    ["run", "--recipe", "paper", "--output", "{tmp}/paper"],
    ["ingest", "beomi/KoAlpaca-v1.1a", "--output", "{tmp}/c.jsonl"],
    ["score", "{tmp}/in.jsonl", "--scorer", "hf", "--model", "EleutherAI/polyglot-ko-1.3b", "--output", "{tmp}/s.jsonl"],
    ["train", "{tmp}/in.jsonl", "--model", "EleutherAI/polyglot-ko-5.8b", "--output", "{tmp}/model"],
    ["eval", "EleutherAI/polyglot-ko-1.3b", "--output", "{tmp}/r.json"],
    ["run", "--ifd-model", "EleutherAI/polyglot-ko-1.3b", "--output", "{tmp}/model"],
    ["run", "--decontaminate", "kobest", "--output", "{tmp}/model"],
    ["score", "{tmp}/in.jsonl", "--scorer", "ifd", "--model", "EleutherAI/polyglot-ko-1.3b", "--output", "{tmp}/s.jsonl"],
    ["decontaminate", "{tmp}/in.jsonl", "--output", "{tmp}/clean.jsonl"],
])
def test_an_unreachable_hub_is_one_line_at_once(tmp_path, args):
    pytest.importorskip("torch")
    (tmp_path / "in.jsonl").write_text('{"instruction": "물은 몇 도에서 끓나요?", "output": "100도입니다."}\n', encoding="utf-8")
    proc, seconds = koquality_unreachable_hub(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "on the Hugging Face hub, which cannot be reached from here (127.0.0.1:9" in lines[0]
    assert all(hint in lines[0] for hint in ("HF_HUB_OFFLINE=1", "local paths", "koquality run --recipe demo"))
    assert seconds < 30  # the libraries' own retries took ~30-60 s and 11-20 lines
    assert not (tmp_path / "paper").exists() and not (tmp_path / "model").exists()


def test_hf_hub_offline_is_not_probed(monkeypatch):
    from koquality import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "unreachable", lambda: pytest.fail("probed the hub although HF_HUB_OFFLINE=1"))
    hub.require(models=["EleutherAI/polyglot-ko-1.3b"], datasets=["beomi/KoAlpaca-v1.1a"])
