import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from koquality.tables import read_table

from conftest import koquality


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "demo"
    proc = koquality("run", "--output", out)
    return out, proc


def test_run_demo_writes_the_run_directory(demo_run):
    out, proc = demo_run
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    rows = manifest["rows"]
    assert rows["read"] == rows["dropped"] + rows["corpus"]
    assert 0 < rows["selected"] < rows["corpus"]
    dropped = pq.read_table(out / "dropped.parquet")
    assert dropped.num_rows == rows["dropped"] and set(dropped.column("reason").to_pylist()) >= {"duplicate", "empty_output"}
    assert sum(manifest["dropped_by_reason"].values()) == rows["dropped"]
    corpus = pq.read_table(out / "corpus.parquet")
    assert corpus.num_rows == rows["corpus"] and corpus.column("ppl").null_count == 0
    selection = read_table(out / "selections" / "len5_k10_mppl_n0.1.jsonl")
    assert selection.num_rows == rows["selected"]
    assert set(selection.column("id").to_pylist()) <= set(corpus.column("id").to_pylist())
    train = read_table(out / "export" / "train.jsonl")
    assert all(t.startswith("### 질문: ") and "### 답변: " in t for t in train.column("text").to_pylist())
    assert {"ingest", "score", "embed", "cluster", "sample", "export"} <= set(manifest["stages"])
    assert manifest["versions"]["kiwipiepy"] and (out / "recipe.yaml").exists() and (out / "run.log").exists()
    assert "selected" in proc.stdout and "rows read" in proc.stdout


def test_run_twice_is_byte_identical_and_uses_the_cache(demo_run, tmp_path):
    out, _ = demo_run
    koquality("run", "--output", tmp_path / "again")
    for name in ("corpus.parquet", "selections/len5_k10_mppl_n0.1.jsonl", "export/train.jsonl"):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    koquality("run", "--output", out)  # into the same directory: scores and vectors come from the cache
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stages"]["score"]["scored"] == 0 and manifest["stages"]["embed"]["from_cache"] is True


def test_a_different_recipe_into_the_same_directory_needs_force(demo_run, tmp_path):
    out, _ = demo_run
    recipe = tmp_path / "other.yaml"
    recipe.write_text((out / "recipe.yaml").read_text(encoding="utf-8").replace("ratio: 0.1", "ratio: 0.2"), encoding="utf-8")
    proc = koquality("run", "--recipe", recipe, "--output", out, check=False)
    assert proc.returncode == 2 and "holds a run of a different recipe" in proc.stderr and "Traceback" not in proc.stderr


def test_stage_commands_chain_like_run(tmp_path):
    d = tmp_path
    koquality("ingest", "koquality:demo/alpaca.json", "koquality:demo/qa.csv", "--output", d / "corpus.jsonl")
    assert (d / "corpus.dropped.parquet").exists()
    koquality("score", d / "corpus.jsonl", "--output", d / "scored.parquet")
    koquality("embed", d / "scored.parquet", "--output", d / "vectors.npy", "--dims", "64")
    koquality("cluster", d / "scored.parquet", "--vectors", d / "vectors.npy", "--len-groups", "3", "--k", "4",
              "--output", d / "clustered.parquet")
    koquality("sample", d / "clustered.parquet", "--method", "ppl_h", "--ratio", "0.2", "--output", d / "sel.jsonl")
    koquality("export", d / "sel.jsonl", "--output", d / "train.parquet")
    corpus, clustered, train = (read_table(d / n) for n in ("corpus.jsonl", "clustered.parquet", "train.parquet"))
    assert np.load(d / "vectors.npy").shape == (corpus.num_rows, 64)
    assert set(clustered.column("len_group").to_pylist()) == {0, 1, 2}
    assert {"id", "source", "len", "ppl", "n_tokens", "len_group", "cluster", "text"} <= set(train.column_names)
    assert 0 < train.num_rows < corpus.num_rows


@pytest.mark.parametrize("args, message", [
    (["ingest", "nope.jsonl", "--output", "o.jsonl"], "koquality: nope.jsonl: no such file"),
    (["ingest", "notes.txt", "--output", "o.jsonl"], "koquality: notes.txt: unknown format '.txt' (expected .jsonl, .json, .csv, .tsv (also as .gz/.bz2/.xz/.zst), .parquet, .arrow, or a datasets save_to_disk directory)"),
    (["score", "in.jsonl", "--output", "o.xlsx"], "koquality: o.xlsx: unknown format '.xlsx' (expected one of: .jsonl, .json, .parquet, .csv)"),
    (["run", "--recipe", "missing.yaml"], "koquality: missing.yaml: no such file"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    proc = koquality(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == message
    assert "Traceback" not in proc.stderr


def test_missing_field_error_names_file_and_line(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n', encoding="utf-8")
    proc = koquality("ingest", "x.jsonl", "--output", "o.jsonl", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ('koquality: x.jsonl line 2: field "output" is missing (expected one of: output, '
                                   'answer, A, response, completion; use --map output=FIELD)')


def test_hf_scorer_option_exists(tmp_path):
    proc = koquality("score", "--help", check=True)
    assert "--scorer" in proc.stdout and "--model" in proc.stdout
