"""Issue 10, the output side: koquality never deletes or overwrites what it did not create, writes what
sources hand it (bytes, nested values, infinities) in every format, and answers a full disk, a read-only
folder or a bad setting with one line (exit code 2) — checked up front, before any work is done."""

import errno
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import koquality

from koquality import cli
from koquality.tables import read_table


@pytest.fixture
def corpus(tmp_path):
    koquality("ingest", "koquality:demo/alpaca.json", "--output", tmp_path / "corpus.parquet")
    return tmp_path / "corpus.parquet"


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("koquality: ") and "warning" not in l]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_hf_export_never_replaces_a_folder_it_did_not_write(tmp_path, corpus):
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "thesis.txt").write_text("내 논문", encoding="utf-8")
    message = one_line_error(koquality("export", corpus, "--output", victim, check=False))
    assert "not empty and not a koquality export (holds sub, thesis.txt)" in message
    # from a subdirectory, `..` is the folder with the thesis: refused the same way, nothing deleted
    one_line_error(koquality("export", corpus, "--output", "..", cwd=victim / "sub", check=False))
    assert sorted(p.name for p in victim.iterdir()) == ["sub", "thesis.txt"]
    # --force writes beside the user's files and deletes none of them
    koquality("export", corpus, "--output", victim, "--force")
    assert (victim / "thesis.txt").read_text(encoding="utf-8") == "내 논문" and (victim / "sub").is_dir()
    from datasets import load_from_disk

    assert load_from_disk(str(victim)).num_rows == read_table(corpus).num_rows


def test_hf_export_replaces_only_its_own_earlier_export(tmp_path, corpus):
    out = tmp_path / "out"
    koquality("export", corpus, "--output", out)
    written = json.loads((out / ".koquality-export.json").read_text(encoding="utf-8"))["files"]
    assert "dataset_info.json" in written
    (out / "data-00099-of-00100.arrow").write_bytes(b"")  # pretend an earlier, bigger export wrote this
    marker = json.loads((out / ".koquality-export.json").read_text(encoding="utf-8"))
    (out / ".koquality-export.json").write_text(json.dumps({"files": marker["files"] + ["data-00099-of-00100.arrow"]}))
    (out / "README.md").write_text("mine", encoding="utf-8")
    assert "holds README.md" in one_line_error(koquality("export", corpus, "--output", out, check=False))
    (out / "README.md").unlink()
    koquality("export", corpus, "--output", out)  # over its own export: no --force needed
    assert not (out / "data-00099-of-00100.arrow").exists()  # listed as its own, so replaced
    # --force never replaces a file of someone else's that has the name of one it writes
    (out / ".koquality-export.json").unlink()
    message = one_line_error(koquality("export", corpus, "--output", out, "--force", check=False))
    assert "would replace" in message and "which koquality did not write" in message


@pytest.mark.parametrize("args, expected", [
    (["export", "{corpus}", "--output", "{file}"], "exists and is a file; an hf export is a directory"),
    (["export", "{corpus}", "--output", "{dir}.jsonl", "--format", "jsonl"], "is a directory (expected a file name"),
    (["ingest", "koquality:demo/qa.csv", "--output", "{dir}.parquet"], "is a directory (expected a file name"),
    (["run", "--output", "{file}"], "exists and is not a directory"),
    (["run", "--output", "{dir}"], "not empty and not a koquality run directory"),
    (["train", "{corpus}", "--model", "x", "--output", "{dir}"], "not empty and not a koquality training run"),
    (["ingest", "koquality:demo/qa.csv", "--output", "{file}.parquet", "--dropped", "{file}.parquet"],
     "the same file as --output"),
])
def test_outputs_that_belong_to_someone_else(tmp_path, corpus, args, expected):
    (tmp_path / "file").write_text("someone's file", encoding="utf-8")
    (tmp_path / "file.parquet").write_text("someone's parquet", encoding="utf-8")
    for d in ("dir", "dir.jsonl", "dir.parquet"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "keep.txt").write_text("keep", encoding="utf-8")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    filled = [a.format(corpus=corpus, file=tmp_path / "file", dir=tmp_path / "dir") for a in args]
    assert expected in one_line_error(koquality(*filled, check=False))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_binary_extra_columns_and_nested_values_in_every_format(tmp_path):
    source = tmp_path / "src.parquet"
    pq.write_table(pa.table({"instruction": ["물은 몇 도에서 끓나요?", "하늘은 왜 파란가요?"],
                             "output": ["100도에서 끓습니다.", "빛의 산란 때문입니다."],
                             "blob": pa.array([b"\x00\xff", None], pa.binary())}), source)
    recipe = {"name": "bin", "sources": [{"path": str(source)}], "embed": {"dims": 8},
              "cluster": {"len_groups": 1, "k": 1, "n_init": 1}, "sample": {"method": "ppl", "ratio": 1.0},
              "export": {"format": "csv", "template": "chat"}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    koquality("run", "--recipe", tmp_path / "r.yaml", "--output", tmp_path / "run", "--no-report")
    rows = [json.loads(l) for l in (tmp_path / "run/selections/len1_k1_mppl_n1.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["blob"] or "" for r in rows) == ["", "AP8="]  # base64 of the bytes
    import pyarrow.csv as pacsv

    exported = pacsv.read_csv(tmp_path / "run/export/train.csv")
    messages = [json.loads(m) for m in exported.column("messages").to_pylist()]
    assert {m[1]["content"] for m in messages} == {"100도에서 끓습니다.", "빛의 산란 때문입니다."}


def test_garbled_instruction_scores_infinite_perplexity_and_the_run_goes_on(tmp_path):
    random.seed(3)
    garbled = "".join(chr(random.randint(0xAC00, 0xD7A3)) for _ in range(200))  # log-perplexity past 709
    rows = [{"instruction": garbled, "output": "무슨 말인지 모르겠어요."}]
    rows += [{"instruction": f"{i}번째 질문에 답해 주세요.", "output": f"{i}번째 답입니다."} for i in range(20)]
    source = tmp_path / "g.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    recipe = {"name": "g", "sources": [{"path": str(source)}], "embed": {"dims": 8},
              "cluster": {"len_groups": 1, "k": 2, "n_init": 1}, "sample": {"method": "ppl_h", "ratio": 0.5}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    koquality("run", "--recipe", tmp_path / "r.yaml", "--output", tmp_path / "run")
    corpus = pq.read_table(tmp_path / "run/corpus.parquet")
    ppl = dict(zip(corpus.column("instruction").to_pylist(), corpus.column("ppl").to_pylist()))
    assert ppl[garbled] == float("inf") and all(np.isfinite(v) for k, v in ppl.items() if k != garbled)
    assert (tmp_path / "run/report.html").exists()


@pytest.mark.parametrize("errno_, text", [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system"),
                                          (errno.EACCES, "Permission denied")])
def test_a_full_disk_or_read_only_folder_is_one_line(tmp_path, monkeypatch, capsys, errno_, text):
    import koquality.tables as tables

    def refuse(table, path):
        raise OSError(errno_, text, str(path))

    monkeypatch.setattr(tables, "write_table", refuse)
    monkeypatch.setattr("sys.argv", ["koquality", "ingest", "koquality:demo/qa.csv", "--output", str(tmp_path / "c.parquet")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"koquality: {tmp_path / 'c.parquet'}: {text} (errno {errno_})" in err and "Traceback" not in err


def recipe_with(tmp_path, **sections) -> str:
    recipe = {"name": "bad", "sources": [{"path": "koquality:demo/qa.csv"}]}
    recipe.update(sections)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("sections, expected", [
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"seed": 1e20}, "seed: Input should be a valid integer"),
    ({"embed": {"dims": 0}}, "embed.dims: Input should be greater than or equal to 1"),
    ({"cluster": {"k": True}}, "cluster.k: Input should be a valid integer"),
    ({"ingest": {"max_chars": -5}}, "ingest.max_chars: Input should be greater than or equal to 1"),
])
def test_bad_settings_stop_before_any_work(tmp_path, sections, expected):
    proc = koquality("run", "--recipe", recipe_with(tmp_path, **sections), "--output", tmp_path / "run", check=False)
    assert expected in one_line_error(proc)
    assert not (tmp_path / "run").exists()


def test_bad_command_line_numbers(tmp_path, corpus):
    assert "--dims 0: expected a number at least 1" in one_line_error(
        koquality("embed", corpus, "--output", tmp_path / "v.npy", "--dims", "0", check=False))
    assert "--max-chars -5: expected a number at least 1" in one_line_error(
        koquality("ingest", "koquality:demo/qa.csv", "--output", tmp_path / "c.jsonl", "--max-chars", "-5", check=False))
    assert "--seed -1: expected a number between 0 and" in one_line_error(
        koquality("sample", corpus, "--method", "rand", "--ratio", "0.1", "--output", tmp_path / "s.jsonl", "--seed", "-1", check=False))


def test_unknown_text_field_and_non_utf8_recipe(tmp_path):
    proc = koquality("run", "--recipe", recipe_with(tmp_path, score={"field": "nope"}), "--output", tmp_path / "run", check=False)
    assert "score.field: 'nope' is not a column of the corpus (columns: id, source, instruction" in one_line_error(proc)
    path = tmp_path / "cp949.yaml"
    path.write_bytes("name: 한글\nsources: [{path: a.jsonl}]\n".encode("cp949"))
    message = one_line_error(koquality("run", "--recipe", path, check=False))
    assert message == f"koquality: {path}: byte 0xc7 at offset 6 is not UTF-8 (save the recipe as UTF-8)"


def test_nan_vectors_are_refused_in_one_line(tmp_path, corpus):
    vectors = np.random.default_rng(0).normal(size=(read_table(corpus).num_rows, 4)).astype(np.float32)
    vectors[7, 2] = np.nan
    np.save(tmp_path / "v.npy", vectors)
    message = one_line_error(koquality("cluster", corpus, "--vectors", tmp_path / "v.npy", "--len-groups", "2", "--k", "2",
                                       "--output", tmp_path / "c.parquet", check=False))
    assert "1 vector(s) hold NaN or infinity (first: row 7)" in message


def test_model_with_custom_code_is_refused_in_one_line(tmp_path, corpus):
    pytest.importorskip("torch")
    from tiny_models import build_causal_lm

    model = build_causal_lm(tmp_path / "lm")
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config.update(model_type="evil", auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                              "AutoModelForCausalLM": "modeling_evil.Evil"})
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (model / name).write_text("open('ran', 'w')\n", encoding="utf-8")
    proc = koquality("score", corpus, "--scorer", "hf", "--model", model, "--output", tmp_path / "s.parquet",
                     cwd=tmp_path, check=False)
    assert "ships its own Python code, which koquality runs only with --trust-remote-code" in one_line_error(proc)
    assert not (tmp_path / "ran").exists()
