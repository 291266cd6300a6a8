"""A run killed with SIGKILL mid-way resumes from its shards, and ends byte-identical to an uninterrupted
run; a changed recipe needs --force and invalidates only the caches it affects."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import koquality

from koquality.tables import read_table


def corpus_file(tmp_path, rows=6000):
    """Real demo instructions with numbered variations: enough rows for many small shards."""
    koquality("ingest", "koquality:demo/alpaca.json", "koquality:demo/qa.csv", "--output", tmp_path / "demo.jsonl")
    demo = read_table(tmp_path / "demo.jsonl").to_pylist()
    path = tmp_path / "big.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            row = demo[i % len(demo)]
            f.write(json.dumps({"instruction": f"{row['instruction']} ({i // len(demo)}번째)", "output": row["output"]},
                               ensure_ascii=False) + "\n")
    return path


def recipe_file(tmp_path, source, name="resume", **sections):
    recipe = {"name": name, "sources": [{"path": str(source)}], "score": {"shard_rows": 100},
              "embed": {"dims": 32}, "cluster": {"len_groups": 3, "k": 4, "n_init": 2}, "sample": {"ratio": 0.1}}
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


def kill_when(shard_dir_glob, run_dir, recipe, minimum=3, timeout=120):
    """Start `koquality run`, SIGKILL it once `minimum` shards exist; return how many there were."""
    proc = subprocess.Popen([sys.executable, "-m", "koquality", "run", "--recipe", str(recipe), "--output", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        shards = list(run_dir.glob(shard_dir_glob))
        if len(shards) >= minimum:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return len(list(run_dir.glob(shard_dir_glob)))
        time.sleep(0.005)
    proc.kill()
    pytest.fail("the run finished (or hung) before it could be killed mid-way")


OUTPUTS = ("corpus.parquet", "dropped.parquet", "selections/len3_k4_mppl_n0.1.jsonl", "export/train.jsonl")


def test_sigkill_during_scoring_resumes_to_identical_output(tmp_path):
    source = corpus_file(tmp_path)
    recipe = recipe_file(tmp_path, source)
    koquality("run", "--recipe", recipe, "--output", tmp_path / "whole")
    shards_at_kill = kill_when("scores/*/shard-*.parquet", tmp_path / "killed", recipe)
    assert 3 <= shards_at_kill < 60 and not (tmp_path / "killed" / "manifest.json").exists()
    assert not list((tmp_path / "killed").rglob("*.tmp"))  # atomic writes leave no half-written files
    koquality("run", "--recipe", recipe, "--output", tmp_path / "killed")
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stages"]["score"]["from_cache"] >= shards_at_kill * 100
    assert manifest["stages"]["score"]["scored"] == 6000 - manifest["stages"]["score"]["from_cache"]
    for name in OUTPUTS:
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes(), name


def test_sigkill_during_hf_embedding_resumes(tmp_path):
    pytest.importorskip("torch")
    from tiny_models import build_encoder

    model = build_encoder(tmp_path / "enc")
    source = corpus_file(tmp_path, rows=4000)
    recipe = recipe_file(tmp_path, source, embed={"encoder": "hf", "model": str(model), "device": "cpu",
                                                  "shard_rows": 100, "dims": 256})
    koquality("run", "--recipe", recipe, "--output", tmp_path / "whole")
    kill_when("vectors/*/shard-*.npz", tmp_path / "killed", recipe)
    koquality("run", "--recipe", recipe, "--output", tmp_path / "killed")
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text(encoding="utf-8"))
    assert 0 < manifest["stages"]["embed"]["embedded"] < 4000
    for name in OUTPUTS:
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "killed" / name).read_bytes(), name


def test_changed_recipe_needs_force_and_reuses_unaffected_caches(tmp_path):
    source = corpus_file(tmp_path, rows=800)
    run = tmp_path / "run"
    koquality("run", "--recipe", recipe_file(tmp_path, source), "--output", run)
    changed = recipe_file(tmp_path, source, name="resume2", sample={"ratio": 0.2})
    proc = koquality("run", "--recipe", changed, "--output", run, check=False)
    assert proc.returncode == 2 and "holds a run of a different recipe" in proc.stderr
    koquality("run", "--recipe", changed, "--output", run, "--force")
    stages = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["stages"]
    assert stages["score"]["scored"] == 0 and stages["embed"]["from_cache"] is True  # sampling only changed
    rescored = recipe_file(tmp_path, source, name="resume3", embed={"dims": 16})
    koquality("run", "--recipe", rescored, "--output", run, "--force")
    stages = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["stages"]
    assert stages["score"]["scored"] == 0 and stages["embed"]["from_cache"] is False  # new embedding, same scores
