"""Each hostile input from issue 4, with the exact message a user sees (CLI: one line, exit code 2)."""

import json

import pyarrow.parquet as pq
import pytest

from conftest import koquality

from koquality.errors import KoqualityError
from koquality.ingest import SourceSpec, ingest


def ingest_error(path, **kwargs) -> str:
    with pytest.raises(KoqualityError) as e:
        ingest([SourceSpec(str(path), **kwargs)])
    return str(e.value)


def write(tmp_path, name, content: bytes | str):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_malformed_json_line(tmp_path):
    p = write(tmp_path, "a.jsonl", '{"instruction": "안녕", "output": "네"}\n{"instruction": "x", "output": \n')
    assert ingest_error(p) == f"{p} line 2: not valid JSON: Expecting value at column 32 (expected one JSON object per line)"


def test_plain_text_named_jsonl(tmp_path):
    p = write(tmp_path, "notes.jsonl", "오늘 회의록\n참석자: 김철수\n")
    assert ingest_error(p) == (f"{p} line 1: not valid JSON: Expecting value at column 1 "
                               "(expected one JSON object per line; the file looks like plain text)")


def test_json_top_level_not_a_list(tmp_path):
    p = write(tmp_path, "a.json", '{"data": [], "version": 1}')
    assert ingest_error(p) == f"{p}: top level is a JSON object with keys data, version (expected a list of objects)"
    q = write(tmp_path, "b.json", '[{"instruction": "a", "output": "b"}, 3]')
    assert ingest_error(q) == f"{q} record 2: a JSON number (expected an object)"
    r = write(tmp_path, "c.json", '{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n')
    assert ingest_error(r) == (f"{r} line 2: not valid JSON: Extra data at column 1 "
                               "(expected a JSON array of objects; this looks like JSON Lines: name it .jsonl)")


def test_json_line_that_is_not_an_object(tmp_path):
    p = write(tmp_path, "a.jsonl", '["instruction", "output"]\n')
    assert ingest_error(p) == f"{p} line 1: a JSON list (expected a JSON object)"


def test_missing_field(tmp_path):
    p = write(tmp_path, "a.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    assert ingest_error(p) == (f'{p} line 2: field "output" is missing (expected one of: output, answer, A, '
                               'response, completion; use --map output=FIELD)')


@pytest.mark.parametrize("value, kind", [(3, "number"), (2.5, "number"), (["a"], "list"), ({"t": "a"}, "object"), (True, "boolean")])
def test_wrong_types(tmp_path, value, kind):
    p = write(tmp_path, "a.jsonl", json.dumps({"instruction": "질문", "output": value}) + "\n")
    assert ingest_error(p) == f'{p} line 1: field "output" is a {kind} (expected text)'


def test_null_and_nan_are_counted_drops(tmp_path):
    p = write(tmp_path, "a.jsonl", '{"instruction": "a", "output": null}\n{"instruction": NaN, "output": "b"}\n'
                                   '{"instruction": "c", "output": "d"}\n')
    result = ingest([str(p)])
    assert result.counts == {"read": 3, "dropped": 2, "corpus": 1}
    assert result.dropped.column("reason").to_pylist() == ["empty_output", "empty_instruction"]
    assert result.dropped.column("detail").to_pylist()[0] == "output is empty or null after cleaning"


def test_non_utf8_bytes_name_line_and_encoding(tmp_path):
    text = '{"instruction": "안녕하세요", "output": "반갑습니다"}\n'
    p = write(tmp_path, "a.jsonl", text.encode("utf-8") + text.encode("cp949"))
    assert ingest_error(p) == (f"{p} line 2: byte 0xbe at column 18 is not valid utf-8 "
                               "(expected utf-8 text; use --encoding to read another, e.g. --encoding cp949)")
    cp = write(tmp_path, "b.csv", "question,answer\n밥 먹었어?,네\n".encode("cp949"))
    assert ingest([SourceSpec(str(cp), encoding="cp949")]).corpus.column("instruction").to_pylist() == ["밥 먹었어?"]
    bad_csv = write(tmp_path, "c.csv", "question,answer\n".encode() + "밥 먹었어?,네\n".encode("cp949"))
    assert ingest_error(bad_csv).startswith(f"{bad_csv} line 2: byte 0xb9 at column 1 is not valid utf-8")


def test_bom_and_crlf(tmp_path):
    p = write(tmp_path, "a.csv", "\ufeffquestion,answer\r\n\"줄이\r\n두 줄\",답\r\n".encode("utf-8"))
    result = ingest([str(p)])
    assert result.corpus.column("instruction").to_pylist() == ["줄이\n두 줄"]
    assert result.cleaned == {"crlf": 1}
    j = write(tmp_path, "b.jsonl", '\ufeff{"instruction": "a", "output": "b"}\r\n'.encode("utf-8"))
    assert ingest([str(j)]).corpus.num_rows == 1


def test_empty_files(tmp_path):
    for name in ("a.jsonl", "a.csv", "a.json"):
        p = write(tmp_path, name, "")
        assert ingest_error(p) == f"{p}: empty file (expected at least one record)"
    blank = write(tmp_path, "blank.jsonl", "\n\n  \n")
    assert ingest_error(blank) == f"{blank}: no records (expected at least one)"


def test_control_characters_are_removed_and_counted(tmp_path):
    p = write(tmp_path, "a.jsonl", json.dumps({"instruction": "안녕\x00하세요\x1b", "output": "네\u200b"}) + "\n")
    result = ingest([str(p)])
    row = result.corpus.to_pylist()[0]
    assert (row["instruction"], row["output"]) == ("안녕하세요", "네")
    assert result.cleaned == {"control_characters": 2}


def test_very_long_rows_are_dropped_with_a_reason(tmp_path):
    p = write(tmp_path, "a.jsonl", json.dumps({"instruction": "가" * 30, "output": "나" * 25}) + "\n")
    result = ingest([str(p)], max_chars=50)
    assert result.dropped.column("reason").to_pylist() == ["too_long"]
    assert result.dropped.column("detail").to_pylist() == ["55 characters (limit 50; raise it with --max-chars)"]
    assert ingest([str(p)]).corpus.num_rows == 1  # the default limit is 20,000


def test_exact_duplicates_within_and_across_files(tmp_path):
    row = json.dumps({"instruction": "a", "output": "b"}) + "\n"
    p = write(tmp_path, "a.jsonl", row * 3)
    q = write(tmp_path, "b.csv", "instruction,output\na,b\n")
    result = ingest([str(p), str(q)])
    assert result.counts == {"read": 4, "dropped": 3, "corpus": 1}
    assert set(result.dropped.column("reason").to_pylist()) == {"duplicate"}


def test_csv_row_with_wrong_number_of_fields(tmp_path):
    p = write(tmp_path, "a.csv", "question,answer\n하나,둘,셋\n")
    assert ingest_error(p) == f"{p} line 2: 3 fields (expected 2, as the header: question, answer)"


def test_on_error_skip_counts_every_broken_record(tmp_path):
    p = write(tmp_path, "a.jsonl", '{"instruction": "a", "output": "b"}\nnot json\n{"instruction": "c", "output": 3}\n'
                                   '{"instruction": "d", "output": "e"}\n')
    result = ingest([str(p)], on_error="skip")
    assert result.counts == {"read": 4, "dropped": 2, "corpus": 2}
    dropped = result.dropped.to_pylist()
    assert [(d["location"], d["reason"]) for d in dropped] == [("line 2", "malformed"), ("line 3", "malformed")]
    assert dropped[1]["detail"] == 'field "output" is a number (expected text)' and dropped[1]["file"] == str(p)


def test_ambiguous_and_unknown_schemas_list_fields_and_show_map(tmp_path):
    p = write(tmp_path, "a.jsonl", json.dumps({"question": "q", "output": "o", "answer": "a"}) + "\n")
    assert ingest_error(p) == (f"{p}: fields 'output' and 'answer' could each be the output "
                               "(fields found: question, output, answer); choose one with --map output=FIELD")
    q = write(tmp_path, "b.jsonl", json.dumps({"text": "t", "label": 1}) + "\n")
    assert ingest_error(q) == (f"{q}: cannot tell which field holds the instruction (fields found: text, label); "
                               "use --map instruction=FIELD --map output=FIELD (and --map input=FIELD)")
    r = write(tmp_path, "c.jsonl", json.dumps({"instruction": "t", "category": "x"}) + "\n")
    assert ingest_error(r) == (f"{r}: no response field (expected one of: output, answer, A, response, completion; "
                               "fields found: instruction, category); use --map output=FIELD")


def test_sharegpt_and_all_turns(tmp_path):
    chat = {"conversations": [{"from": "human", "value": "안녕"}, {"from": "gpt", "value": "안녕하세요"},
                              {"from": "human", "value": "이름이 뭐야?"}, {"from": "gpt", "value": "저는 도우미예요."}]}
    p = write(tmp_path, "s.jsonl", json.dumps(chat, ensure_ascii=False) + "\n")
    first = ingest([str(p)])
    assert first.mappings == {"s": "conversations (from/value) → instruction, output"}
    assert first.corpus.select(["instruction", "output"]).to_pylist() == [{"instruction": "안녕", "output": "안녕하세요"}]
    everything = ingest([SourceSpec(str(p), turns="all")]).corpus.to_pylist()
    assert [(r["instruction"], r["input"], r["output"]) for r in everything] == [
        ("안녕", "", "안녕하세요"), ("이름이 뭐야?", "user: 안녕\nassistant: 안녕하세요", "저는 도우미예요.")]


def test_directories_globs_and_tsv(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write(d, "a.jsonl", json.dumps({"prompt": "p1", "completion": "c1"}) + "\n")
    write(d, "b.tsv", "Q\tA\nq1\ta1\n")
    write(d, "notes.txt", "ignored")
    by_dir = ingest([str(d)])
    assert sorted(by_dir.corpus.column("source").to_pylist()) == ["a", "b"]
    assert by_dir.mappings == {"a": "instruction=prompt, output=completion", "b": "instruction=Q, output=A"}
    assert ingest([str(d / "*.tsv")]).corpus.column("instruction").to_pylist() == ["q1"]


def test_source_names_cannot_escape(tmp_path):
    p = write(tmp_path, "a.jsonl", json.dumps({"instruction": "a", "output": "b"}) + "\n")
    assert ingest_error(p, source="../../etc") == ("--source '../../etc': use letters, digits, '_', '-' or '.' "
                                                   "(not starting with '.' or '-')")


def test_cli_errors_and_per_source_options(tmp_path):
    write(tmp_path, "bad.jsonl", '{"instruction": "a", "output": "b"}\nnot json\n')
    proc = koquality("ingest", "bad.jsonl", "--output", "o.jsonl", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("koquality: bad.jsonl line 2: not valid JSON: Expecting value at column 1 "
                                   "(expected one JSON object per line)")
    koquality("ingest", "bad.jsonl", "--output", "o.jsonl", "--on-error", "skip", cwd=tmp_path)
    assert pq.read_table(tmp_path / "o.dropped.parquet").column("reason").to_pylist() == ["malformed"]
    write(tmp_path, "m.jsonl", json.dumps({"id": "x_1", "input": "질문", "label": "답"}) + "\n")
    write(tmp_path, "q.csv", "Q,A\n하나,둘\n")
    koquality("ingest", "m.jsonl", "q.csv", "--source", "skku", "--source", "chat", "--map", "skku:instruction=input",
              "--map", "skku:output=label", "--output", "c.jsonl", cwd=tmp_path)
    rows = [json.loads(l) for l in (tmp_path / "c.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["source"], r["instruction"], r["output"]) for r in rows] == [("skku", "질문", "답"), ("chat", "하나", "둘")]
    proc = koquality("ingest", "m.jsonl", "--map", "nope:output=label", "--output", "c.jsonl", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "no source is named 'nope'" in proc.stderr
