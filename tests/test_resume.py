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
    # sealed shards (a shard renamed into place but killed before its marker is recomputed, as it should be)
    shards_at_kill = kill_when("scores/*/shard-*.parquet.done", tmp_path / "killed", recipe)
    assert 3 <= shards_at_kill < 60 and not (tmp_path / "killed" / "manifest.json").exists()
    koquality("run", "--recipe", recipe, "--output", tmp_path / "killed")
    assert not list((tmp_path / "killed").rglob("*.tmp"))  # what the kill left half-written is gone
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
    kill_when("vectors/*/shard-*.parquet.done", tmp_path / "killed", recipe)
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


# Issue 10: state that recovers by itself.

def small_run(tmp_path, rows=800, **sections):
    source = corpus_file(tmp_path, rows=rows)
    recipe = recipe_file(tmp_path, source, **sections)
    run = tmp_path / "run"
    koquality("run", "--recipe", recipe, "--output", run, "--no-report")
    return recipe, run


def outputs(run):
    return {name: (run / name).read_bytes() for name in OUTPUTS}


def test_a_lost_score_shard_is_recomputed_without_overwriting_another(tmp_path):
    recipe, run = small_run(tmp_path)
    before = outputs(run)
    shards = sorted(run.glob("scores/*/shard-*.parquet"))
    assert len(shards) == 8
    shards[2].unlink()
    kept = {p: p.read_bytes() for p in shards if p.exists()}
    proc = koquality("run", "--recipe", recipe, "--output", run, "--no-report")
    assert all(p.read_bytes() == data for p, data in kept.items())  # no surviving shard was overwritten
    assert len(list(run.glob("scores/*/shard-*.parquet"))) == 8
    score = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["stages"]["score"]
    assert (score["scored"], score["from_cache"]) == (100, 700)
    assert outputs(run) == before
    assert "recomputing" not in proc.stderr  # a shard that is simply gone needs no warning: its rows are just missing


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_caches_are_detected_and_recomputed(tmp_path, damage):
    recipe, run = small_run(tmp_path)
    before = outputs(run)
    shard = sorted(run.glob("scores/*/shard-*.parquet"))[0]
    vectors = next(run.glob("vectors/tfidf-*.npy"))
    for path in (shard, vectors):
        data = bytearray(path.read_bytes())
        if damage == "truncate":
            del data[len(data) * 2 // 3:]
        else:  # same size, different numbers: only a checksum can tell
            data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    proc = koquality("run", "--recipe", recipe, "--output", run, "--no-report")
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("koquality: warning:")]
    assert len(warnings) == 2 and all("recomputing it" in w for w in warnings), proc.stderr
    stages = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["stages"]
    assert stages["score"]["scored"] == 100 and stages["embed"]["from_cache"] is False
    assert outputs(run) == before


def test_a_second_run_in_the_same_directory_is_refused(tmp_path):
    from koquality.rundir import locked

    recipe, run = small_run(tmp_path, rows=300)
    with locked(run):
        proc = koquality("run", "--recipe", recipe, "--output", run, "--no-report", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"koquality: {run}: another koquality is running in it (pid {os.getpid()} on " in proc.stderr
    # the lock died with its holder: a lock file naming a process that is gone is taken over
    (run / ".koquality.lock").write_text('{"pid": 999999, "host": "x", "started": "then"}')
    koquality("run", "--recipe", recipe, "--output", run, "--no-report")


def test_temporaries_of_a_killed_run_are_removed_at_the_next_start(tmp_path):
    recipe, run = small_run(tmp_path, rows=300)
    left = [run / ".ingested.parquet.k3j_x9a2.tmp", run / "vectors" / ".tfidf-0123.npy.ab12cd34.tmp"]
    for path in left:
        path.write_bytes(b"half")
    (run / ".corpus.parquet.zz99yy88.tmp").mkdir()
    (run / ".corpus.parquet.zz99yy88.tmp" / "part-00000.parquet").write_bytes(b"x")
    (run / "notes.tmp").write_text("mine", encoding="utf-8")  # not a name koquality gives its temporaries
    koquality("run", "--recipe", recipe, "--output", run, "--no-report")
    assert not any(p.exists() for p in left) and not (run / ".corpus.parquet.zz99yy88.tmp").exists()
    assert (run / "notes.tmp").read_text(encoding="utf-8") == "mine"
    assert "removed 3 temporary file(s)" in (run / "run.log").read_text(encoding="utf-8")


def test_run_log_is_never_followed_out_of_the_run_directory(tmp_path):
    recipe, run = small_run(tmp_path, rows=300)
    outside = tmp_path / "outside.txt"
    outside.write_text("do not append here\n", encoding="utf-8")
    (run / "run.log").unlink()
    (run / "run.log").symlink_to(outside)
    proc = koquality("run", "--recipe", recipe, "--output", run, "--no-report", check=False)
    assert proc.returncode == 2 and "run.log: is a link or not a regular file" in proc.stderr
    assert outside.read_text(encoding="utf-8") == "do not append here\n"


def test_a_damaged_recipe_in_the_run_directory(tmp_path):
    recipe, run = small_run(tmp_path, rows=300)
    (run / "recipe.yaml").write_bytes(b"\xff\xfe garbage: [")
    proc = koquality("run", "--recipe", recipe, "--output", run, "--no-report", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "recipe.yaml: damaged, so the run it belongs to is unknown" in proc.stderr and "--force" in proc.stderr
    koquality("run", "--recipe", recipe, "--output", run, "--no-report", "--force")


def test_a_smaller_sweep_removes_the_selections_it_no_longer_lists(tmp_path):
    source = corpus_file(tmp_path, rows=300)
    grid = ["--len-groups", "1,2", "--k", "2", "--method", "ppl,rand", "--ratio", "0.1", "--no-report"]
    koquality("sweep", "--recipe", recipe_file(tmp_path, source), "--output", tmp_path / "s", *grid)
    assert len(list((tmp_path / "s/selections").iterdir())) == 4
    (tmp_path / "s/selections/mine.jsonl").write_text("{}\n", encoding="utf-8")  # not a sweep's: kept
    grid[1] = "1"
    koquality("sweep", "--recipe", recipe_file(tmp_path, source), "--output", tmp_path / "s", *grid)
    listed = {row.split(",")[-1] for row in (tmp_path / "s/sweep.csv").read_text(encoding="utf-8").splitlines()[1:]}
    on_disk = {f"selections/{p.name}" for p in (tmp_path / "s/selections").iterdir()}
    assert on_disk == listed | {"selections/mine.jsonl"} and len(listed) == 2
