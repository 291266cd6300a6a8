"""Issue 13 end to end: decontamination, IFD, semantic dedup and the new selectors inside `koquality run`,
`sweep` and the single-stage commands — each row accounted for in dropped.parquet with its reason."""

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import koquality
from test_engines import kill_once_sealed

from koquality.pipeline import run
from koquality.recipe import load_recipe, parse_recipe
from koquality.tables import read_table

BENCHMARK_LINE = "철수는 아침 일찍 일어나서 공원을 세 바퀴 달린 뒤 집에 돌아와 따뜻한 우유 한 잔을 마시고 신문을 읽었다"


@pytest.fixture()
def planted(tmp_path):
    """A benchmark file and the demo corpus plus three rows that copy the benchmark's sentence, dressed up
    (full-width punctuation, other spacing) in the instruction, the input and the output."""
    bench = tmp_path / "bench.txt"
    bench.write_text("다른 문항입니다\n" + BENCHMARK_LINE + "\n", encoding="utf-8")
    rows = [
        {"instruction": f"다음 글을 요약하세요: {BENCHMARK_LINE.replace(' 공원을', '  공원을')}！", "output": "요약입니다."},
        {"instruction": "이 문장의 주어는?", "input": BENCHMARK_LINE + ".", "output": "철수"},
        {"instruction": "짧은 일기를 써 주세요.", "output": "오늘은 " + BENCHMARK_LINE + "."},
        {"instruction": "철수는 아침 일찍 일어났나요?", "output": "네, 일찍 일어났습니다."},  # shares fewer than 13
    ]
    path = tmp_path / "planted.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return bench, path


def repeated(rows_file, n, path):
    """`n` rows cycling through those of `rows_file`, each output made distinct (so no two share an id)."""
    rows = [json.loads(line) for line in rows_file.read_text(encoding="utf-8").splitlines()]
    path.write_text("".join(json.dumps({**rows[i % len(rows)], "output": f"{rows[i % len(rows)]['output']} {i}"},
                                       ensure_ascii=False) + "\n" for i in range(n)), encoding="utf-8")
    return path


def demo_with(**sections):
    data = load_recipe("demo").model_dump()
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_recipe(data)


def test_a_run_drops_contaminated_rows_with_the_item_and_the_shared_ngram(planted, tmp_path):
    bench, extra = planted
    data = load_recipe("demo").model_dump()
    data["sources"].append({"path": str(extra), "source": "planted"})
    data["decontaminate"] = {"benchmarks": [str(bench)]}
    result = run(parse_recipe(data), tmp_path / "run", report=True)
    assert "<h2>decontamination</h2>" in (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    dropped = read_table(tmp_path / "run" / "dropped.parquet").to_pylist()
    contaminated = [r for r in dropped if r["reason"] == "contaminated"]
    assert sorted(r["source"] for r in contaminated) == ["planted"] * 3
    fields = sorted(r["detail"].split(" shares ")[0] for r in contaminated)
    assert fields == ["input", "instruction", "output"]
    assert all(f"{bench} line 2" in r["detail"] and "13 morphemes" in r["detail"] for r in contaminated)
    rows = result.manifest["rows"]
    assert rows["read"] == rows["dropped"] + rows["corpus"] and result.manifest["dropped_by_reason"]["contaminated"] == 3
    corpus = read_table(tmp_path / "run" / "corpus.parquet")
    assert "contaminated_by" not in corpus.column_names
    assert "철수는 아침 일찍 일어났나요?" in corpus.column("instruction").to_pylist()
    assert result.manifest["stages"]["decontaminate"]["contaminated"] == 3
    # the recipe keeps the section, and a second run takes the filter from its cache
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text(encoding="utf-8"))["decontaminate"]["benchmarks"] == [str(bench)]
    again = run(parse_recipe(data), tmp_path / "run", report=False)
    assert again.manifest["stages"]["decontaminate"]["computed"] == 0


def test_decontaminate_command_splits_rows_and_resumes_after_sigkill(planted, tmp_path):
    bench, extra = planted
    koquality("decontaminate", extra, "--against", bench, "--output", tmp_path / "clean.jsonl")
    assert len(read_table(tmp_path / "clean.jsonl")) == 1
    gone = read_table(tmp_path / "clean.dropped.parquet")
    assert gone.column("reason").to_pylist() == ["contaminated"] * 3
    assert not (tmp_path / "clean.jsonl.koquality-cache").exists()

    many = repeated(extra, 4000, tmp_path / "many.jsonl")
    options = ["--against", bench, "--shard-rows", "100"]
    koquality("decontaminate", many, "--output", tmp_path / "whole.jsonl", *options)
    cache = tmp_path / "cache"
    kill_once_sealed(["decontaminate", many, "--output", tmp_path / "killed.jsonl", "--cache", cache, *options], cache)
    out = koquality("decontaminate", many, "--output", tmp_path / "killed.jsonl", "--cache", cache, *options).stdout
    from_cache = int(next(line for line in out.splitlines() if "from cache" in line).split("│")[2].replace(",", ""))
    assert 0 < from_cache < 4000
    assert read_table(tmp_path / "whole.jsonl").equals(read_table(tmp_path / "killed.jsonl"))
    assert read_table(tmp_path / "whole.dropped.parquet").num_rows == 3000


def test_dedup_and_diverse_in_a_run_and_a_sweep(tmp_path):
    recipe = demo_with(dedup={"threshold": 0.8, "keep": "lowest_ppl"}, sample={"method": "diverse"})
    result = run(recipe, tmp_path / "run", report=True)
    m = result.manifest
    duplicates = pq.read_table(tmp_path / "run" / m["dedup"]["file"])
    assert m["dedup"]["removed"] == duplicates.num_rows > 0
    assert m["dropped_by_reason"]["semantic_duplicate"] == duplicates.num_rows
    assert m["rows"]["read"] == m["rows"]["dropped"] + m["rows"]["corpus"]
    dropped = read_table(tmp_path / "run" / "dropped.parquet").to_pylist()
    details = {r["id"]: r["detail"] for r in dropped if r["reason"] == "semantic_duplicate"}
    for rid, kept in zip(duplicates.column("id").to_pylist(), duplicates.column("kept_id").to_pylist()):
        assert f"to kept row {kept} (keep: lowest_ppl; length group" in details[rid]
    selected = set(result.selection.column("id").to_pylist())
    assert not selected & set(details)  # a duplicate is never selected
    counts = {b["threshold"]: b["removed"] for b in m["dedup"]["by_threshold"]}
    assert counts[0.8] == duplicates.num_rows and counts[0.85] <= counts[0.8]
    assert "<h2>semantic dedup</h2>" in (tmp_path / "run" / "report.html").read_text(encoding="utf-8")

    from koquality.sweep import sweep

    swept = sweep(demo_with(dedup={"threshold": 0.8}), tmp_path / "sweep", [5], [10], ["ppl", "diverse"], [0.1], report=False)
    assert [r["method"] for r in swept.rows] == ["ppl", "diverse"]
    assert all(r["semantic_duplicates"] == duplicates.num_rows for r in swept.rows)
    with open(tmp_path / "sweep" / "sweep.csv", encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert {"semantic_duplicates", "contaminated", "mean_ifd"} <= set(header)


def test_ifd_in_a_run_selects_below_the_ceiling_and_drops_unscorable_answers(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_models import build_causal_lm

    model = build_causal_lm(tmp_path / "lm")
    recipe = demo_with(ifd={"model": str(model), "device": "cpu", "max_length": 96}, sample={"method": "ifd", "ratio": 0.5})
    result = run(recipe, tmp_path / "run", report=True)
    corpus = read_table(tmp_path / "run" / "corpus.parquet")
    for column in ("ppl_answer", "ppl_answer_alone", "ifd", "n_answer_tokens", "answer_tokens_cut"):
        assert column in corpus.column_names
    ifd = corpus.column("ifd").to_numpy()
    np.testing.assert_allclose(ifd, corpus.column("ppl_answer").to_numpy() / corpus.column("ppl_answer_alone").to_numpy(), rtol=1e-12)
    chosen = result.selection.column("ifd").to_numpy()
    assert len(chosen) and (chosen < 1.0).all()
    m = result.manifest
    assert m["rows"]["read"] == m["rows"]["dropped"] + m["rows"]["corpus"]
    unscorable = [r for r in read_table(tmp_path / "run" / "dropped.parquet").to_pylist()
                  if r["reason"] == "unscorable" and r["detail"].startswith("IFD")]
    # at max_length 96 (the tiny tokenizer's tokens are short) long prompts leave no answer token: dropped with
    # why, counted in the manifest
    assert unscorable and all("cut at ifd.max_length 96" in r["detail"] for r in unscorable)
    assert m["stages"]["ifd"]["answers_truncated"] >= len(unscorable)
    assert "instruction-following difficulty" in (tmp_path / "run" / "report.html").read_text(encoding="utf-8")

    from koquality.sweep import sweep

    swept = sweep(recipe, tmp_path / "run", [5], [10], ["ppl", "ifd", "ppl_ifd", "diverse"], [0.5], report=False)
    means = {r["method"]: r["mean_ifd"] for r in swept.rows}
    passing = ifd[ifd < 1.0]
    assert passing.mean() < means["ifd"] < 1.0  # the highest IFD below the ceiling of each cell


def test_score_command_writes_ifd_columns(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_models import build_causal_lm

    model = build_causal_lm(tmp_path / "lm")
    koquality("ingest", "koquality:demo/alpaca.json", "--output", tmp_path / "demo.jsonl")
    out = koquality("score", tmp_path / "demo.jsonl", "--scorer", "ifd", "--model", model, "--device", "cpu",
                    "--output", tmp_path / "ifd.parquet").stdout
    table = read_table(tmp_path / "ifd.parquet")
    assert {"ppl_answer", "ppl_answer_alone", "ifd"} <= set(table.column_names)
    assert table.column("ifd").null_count < table.num_rows
    assert "computed" in out
    proc = koquality("sample", tmp_path / "ifd.parquet", "--method", "ifd", "--ratio", "0.1", "--output",
                     tmp_path / "x.jsonl", check=False)
    assert proc.returncode != 0 and "len_group" in proc.stderr and "Traceback" not in proc.stderr


def test_recipes_that_need_ifd_without_it_are_refused(tmp_path):
    proc = koquality("run", "--method", "ppl_ifd", "--output", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "ifd" in proc.stderr and "Traceback" not in proc.stderr
    proc = koquality("run", "--dedup", "0.9", "--dedup-keep", "highest_ifd", "--output", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "ifd" in proc.stderr
    proc = koquality("run", "--dedup", "1.5", "--output", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "threshold" in proc.stderr


def test_dedup_command_keeps_one_of_each_near_duplicate_group(tmp_path):
    import pyarrow as pa

    from koquality.tables import save_vectors, write_table

    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 16)).astype(np.float32)
    vectors = np.concatenate([base, base[:10] + 1e-3 * rng.normal(size=(10, 16)).astype(np.float32)])  # 10 near-copies
    ppl = np.r_[np.full(50, 10.0), np.full(10, 5.0)]  # the copies have the lower ppl: they are kept
    table = pa.table({"id": [f"r{i}" for i in range(60)], "instruction": [f"문장 {i}" for i in range(60)],
                      "len_group": pa.array([0] * 60, pa.int32()), "cluster": pa.array([i % 10 for i in range(50)] + list(range(10)), pa.int32()),
                      "ppl": ppl})
    write_table(table, tmp_path / "clustered.parquet")
    save_vectors(vectors, tmp_path / "v.npy")
    out = koquality("dedup", tmp_path / "clustered.parquet", "--vectors", tmp_path / "v.npy", "--threshold", "0.99",
                    "--output", tmp_path / "kept.parquet").stdout
    assert "duplicates (cosine > 0.99)" in out
    kept = read_table(tmp_path / "kept.parquet").column("id").to_pylist()
    gone = read_table(tmp_path / "kept.dropped.parquet")
    assert sorted(gone.column("id").to_pylist()) == sorted(f"r{i}" for i in range(10))
    assert set(kept) == {f"r{i}" for i in range(10, 60)}
    detail = dict(zip(gone.column("id").to_pylist(), gone.column("detail").to_pylist()))
    assert detail["r3"].startswith("cosine ") and "to kept row r53 (keep: lowest_ppl" in detail["r3"]
    assert gone.column("reason").to_pylist() == ["semantic_duplicate"] * 10


def test_ifd_command_resumes_after_sigkill(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_models import build_causal_lm

    model = build_causal_lm(tmp_path / "lm")
    koquality("ingest", "koquality:demo/alpaca.json", "koquality:demo/qa.csv", "--output", tmp_path / "demo.jsonl")
    options = ["--scorer", "ifd", "--model", model, "--device", "cpu", "--max-length", "128", "--shard-rows", "10"]
    koquality("score", tmp_path / "demo.jsonl", "--output", tmp_path / "whole.parquet", *options)
    cache = tmp_path / "cache"
    kill_once_sealed(["score", tmp_path / "demo.jsonl", "--output", tmp_path / "killed.parquet", "--cache", cache, *options],
                     cache)
    out = koquality("score", tmp_path / "demo.jsonl", "--output", tmp_path / "killed.parquet", "--cache", cache, *options).stdout
    from_cache = int(next(line for line in out.splitlines() if "from cache" in line).split("│")[2].replace(",", ""))
    assert from_cache >= 30
    assert read_table(tmp_path / "whole.parquet").equals(read_table(tmp_path / "killed.parquet"))


@pytest.mark.timeout(600)
def test_decontaminate_on_ray_finds_what_the_local_engine_finds(planted, tmp_path):
    """A filter is a map stage like a scorer: Ray actors (one benchmark index each) flag the same rows."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    bench, extra = planted
    many = repeated(extra, 400, tmp_path / "many.jsonl")
    options = ["--against", bench, "--shard-rows", "50"]
    koquality("decontaminate", many, "--output", tmp_path / "local.jsonl", *options)
    koquality("decontaminate", many, "--output", tmp_path / "ray.jsonl", "--engine", "ray", *options)
    assert read_table(tmp_path / "local.jsonl").equals(read_table(tmp_path / "ray.jsonl"))
    assert read_table(tmp_path / "local.dropped.parquet").equals(read_table(tmp_path / "ray.dropped.parquet"))
    assert read_table(tmp_path / "ray.dropped.parquet").num_rows == 300
