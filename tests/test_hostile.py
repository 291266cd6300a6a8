"""Each hostile input from issue 4, with the exact message a user sees (CLI: one line, exit code 2)."""

import bz2
import codecs
import gzip
import json
import lzma
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import koquality

from koquality.errors import KoqualityError
from koquality.ingest import SourceSpec, ingest, ingest_to_parquet


def ingest_error(path, **kwargs) -> str:
    with pytest.raises(KoqualityError) as e:
        ingest([SourceSpec(str(path), **kwargs)])
    return str(e.value)


def write(tmp_path, name, content: bytes | str):
    tmp_path.mkdir(parents=True, exist_ok=True)
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


# Issue: hostile input, second round. Each test names the defect it pins down.

def jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def column(result, name="instruction"):
    return result.corpus.column(name).to_pylist()


@pytest.mark.parametrize("before", [1, 1500])  # `input` first seen inside the detection sample, or after it
def test_input_field_first_seen_later_is_mapped(tmp_path, before):
    rows = [{"instruction": f"q{i}", "output": "a"} for i in range(before)]
    rows.append({"instruction": "q0", "input": "x", "output": "a"})
    p = write(tmp_path, "a.jsonl", jsonl(rows))
    result = ingest([str(p)])
    assert result.dropped.num_rows == 0 and "orig_input" not in result.corpus.column_names
    assert column(result, "input")[-1] == "x"
    assert result.mappings == {"a": "instruction=instruction, input=input, output=output"}
    streamed = ingest_to_parquet([str(p)], tmp_path / "c.parquet", chunk_rows=100)
    assert streamed.mappings == result.mappings and streamed.dropped.num_rows == 0
    backwards = ingest([str(write(tmp_path, "b.jsonl", jsonl(rows[::-1])))])
    assert sorted(zip(column(backwards), column(backwards, "input"))) == sorted(zip(column(result), column(result, "input")))


def test_field_after_the_sample_that_changes_the_mapping_is_an_error(tmp_path):
    rows = [{"question": f"q{i}", "answer": "a"} for i in range(1000)] + [{"question": "q", "answer": "a", "output": "o"}]
    p = write(tmp_path, "a.jsonl", jsonl(rows))
    assert ingest_error(p) == (f"{p} line 1001: fields 'output' and 'answer' could each be the output "
                               "(fields found: question, answer, output); choose one with --map output=FIELD")


@pytest.mark.parametrize("name, content, rows, drops", [
    ("a.tsv", 'Q\tA\n"q1\ta1\nq2\ta2\nq3\ta3\n', ['"q1', "q2", "q3"], []),  # TSV: a quote is text
    ("b.csv", 'Q,A\n"q1,a1\nq2,a2\nq3,a3\n', ["q2", "q3"], [("line 2", "a quote opened here is never closed")]),
    ("c.csv", 'Q,A\n"q1,a1\nq2,"a2"x\nq3,a3\n', ["q3"],
     [("line 2", "a quote opened here closes on line 3 and is followed by text"),
      ("line 3", "a quote opened here has text after its closing quote")]),
    ("d.csv", 'Q,A\n"q1,a1\nq2",a2,x\nq3,a3\n', ["q3"],
     [("line 2", "a quote opened here runs to line 3, making a record of 3 fields"), ("line 3", "3 fields")]),
    ("e.csv", 'Q,A\r"q1\rstill q1",a1\rq2,a2\r', ["q1\nstill q1", "q2"], []),  # CR-only line ends
    ("f.csv", 'Q,A\nq\r1,a1\n', ["q\n1"], []),  # a bare CR inside an unquoted field is text
])
def test_every_csv_and_tsv_line_is_a_row_or_a_counted_drop(tmp_path, name, content, rows, drops):
    result = ingest([str(write(tmp_path, name, content))], on_error="skip")
    assert column(result) == rows
    assert [(d["location"], d["detail"].split(" (")[0]) for d in result.dropped.to_pylist()] == drops


def test_unclosed_quote_names_its_line(tmp_path):
    p = write(tmp_path, "a.csv", 'Q,A\nq1,a1\n"q2,a2\nq3,a3\n')
    assert ingest_error(p) == (f'{p} line 3: a quote opened here is never closed (expected a closing quote before the end '
                               'of the file; write a quote inside a quoted field as ""; if quotes are plain text in this '
                               'file, read it with quoting none)')


def test_quoting_option(tmp_path):
    tsv = write(tmp_path, "a.tsv", 'Q\tA\n"two\nlines"\ta\n')
    assert column(ingest([SourceSpec(str(tsv), quoting="quotes")])) == ["two\nlines"]
    quoted = write(tmp_path, "b.csv", 'Q,A\n"he said "hi"",a\n')
    assert column(ingest([SourceSpec(str(quoted), quoting="none")])) == ['"he said "hi""']
    assert ingest_error(quoted, quoting="maybe") == "--quoting maybe: expected one of auto, quotes, none"


def test_csv_field_over_the_csv_module_limit_is_dropped_as_too_long(tmp_path):
    p = write(tmp_path, "a.csv", "Q,A\n" + "가" * 200_000 + ",b\n")
    assert ingest([str(p)]).dropped.column("reason").to_pylist() == ["too_long"]


@pytest.mark.parametrize("encoding, bom, option", [
    ("utf-16", b"", "utf-8"),  # Python's utf-16 writes a BOM, as Windows "Unicode" export does
    ("utf-16-le", codecs.BOM_UTF16_LE, "utf-8"),
    ("utf-16-be", codecs.BOM_UTF16_BE, "utf-8"),
    ("utf-16-le", b"", "utf-16-le"),
    ("utf-16-be", b"", "utf-16-be"),
])
def test_utf16_files(tmp_path, encoding, bom, option):
    question = "갊 먹었어?"  # 갊 is U+AC0A: a 0x0a byte that is not a line end
    files = {"a.csv": f"question,answer\n{question},네\n", "b.jsonl": jsonl([{"instruction": question, "output": "네"}]),
             "c.json": json.dumps([{"instruction": question, "output": "네"}], ensure_ascii=False)}
    for name, content in files.items():
        p = write(tmp_path, name, bom + content.encode(encoding))
        assert column(ingest([SourceSpec(str(p), encoding=option)])) == [question], name


@pytest.mark.parametrize("name, pack", [("a.jsonl.gz", gzip.compress), ("a.json.bz2", bz2.compress),
                                        ("a.csv.xz", lzma.compress),
                                        ("a.tsv.zst", lambda b: pa.compress(b, codec="zstd", asbytes=True))])
def test_compressed_sources(tmp_path, name, pack):
    content = {".jsonl": jsonl([{"instruction": "q", "output": "a"}]), ".json": '[{"instruction": "q", "output": "a"}]',
               ".csv": "instruction,output\nq,a\n", ".tsv": "instruction\toutput\nq\ta\n"}[Path(name).suffixes[0]]
    write(tmp_path / "d", name, pack(content.encode()))
    for source in (tmp_path / "d" / name, tmp_path / "d"):
        result = ingest([str(source)])
        assert (column(result, "source"), column(result), result.skipped) == (["a"], ["q"], [])


def test_truncated_compressed_file_is_a_one_line_error(tmp_path):
    data = gzip.compress(jsonl({"instruction": str(i * 7919 % 10007), "output": "a"} for i in range(20_000)).encode())
    p = write(tmp_path, "a.jsonl.gz", data[:len(data) // 2])
    assert re.fullmatch(rf"{re.escape(str(p))}: cannot be read after line \d+ \(EOFError: Compressed file ended "
                        r"before the end-of-stream marker was reached\)", ingest_error(p))


def test_arrow_files_and_saved_datasets(tmp_path):
    import datasets

    d = tmp_path / "d"
    d.mkdir()
    table = pa.table({"prompt": ["ipc file"], "response": ["a"]})
    with pa.ipc.new_file(d / "f.arrow", table.schema) as writer:
        writer.write_table(table)
    with pa.ipc.new_stream(d / "s.arrow", table.schema) as writer:
        writer.write_table(pa.table({"prompt": ["ipc stream"], "response": ["a"]}))
    datasets.Dataset.from_dict({"instruction": ["saved"], "output": ["a"]}).save_to_disk(str(d / "one"))
    split = lambda text: datasets.Dataset.from_dict({"instruction": [text], "output": ["a"]})  # noqa: E731
    datasets.DatasetDict({"train": split("train split"), "test": split("test split")}).save_to_disk(str(d / "both"))
    result = ingest([str(d)])  # the saved directories' own .arrow files are not read again
    assert sorted(zip(column(result, "source"), column(result))) == [
        ("both", "train split"), ("f", "ipc file"), ("one", "saved"), ("s", "ipc stream")]
    assert column(ingest([SourceSpec(str(d / "both"), split="test")])) == ["test split"]


def test_directory_lists_what_it_skips_and_follows_links_once(tmp_path):
    d, other = tmp_path / "d", tmp_path / "other"
    write(d, "a.jsonl", jsonl([{"instruction": "a", "output": "a"}]))
    write(other, "b.jsonl", jsonl([{"instruction": "b", "output": "b"}]))
    write(d, ".hidden.jsonl", "{}")
    write(d, "notes.txt", "x")
    write(d, "sheet.xlsx", b"PK")
    (d / "again.jsonl").symlink_to(d / "a.jsonl")
    (d / "linked").symlink_to(other)
    (d / "loop").symlink_to(d)
    result = ingest([str(d)])
    assert sorted(column(result, "source")) == ["a", "b"] and result.read == 2
    assert {Path(s["path"]).name: s["reason"].split(" (")[0] for s in result.skipped} == {
        ".hidden.jsonl": "hidden", "again.jsonl": f"same file as {d / 'a.jsonl'}", "loop": f"same directory as {d}",
        "notes.txt": "unsupported format .txt", "sheet.xlsx": "unsupported format .xlsx"}
    assert ingest_to_parquet([str(d)], tmp_path / "c.parquet").skipped == result.skipped
    assert ingest([str(d / "**" / "*.jsonl")]).read == 2  # the glob goes round the loop; each file is read once


@pytest.mark.parametrize("name, content, location, field, code", [
    ("a.jsonl", '{"instruction": "a\\ud800", "output": "b"}\n', "line 1", "instruction", "d800"),
    ("b.jsonl", '{"instruction": "a", "output": "b", "meta": {"k": ["\\uDC00"]}}\n', "line 1", "meta", "dc00"),
    ("c.json", '[{"instruction": "a", "output": "\\udfff"}]', "record 1", "output", "dfff"),
])
def test_lone_surrogate_is_a_broken_field(tmp_path, name, content, location, field, code):
    p = write(tmp_path, name, content)
    assert ingest_error(p) == (f'{p} {location}: field "{field}" holds a lone surrogate \\u{code}, half of a UTF-16 pair '
                               "(expected text that is valid Unicode)")
    assert ingest([str(p)], on_error="skip").dropped.column("reason").to_pylist() == ["malformed"]
    pair = write(tmp_path, "pair.jsonl", '{"instruction": "\\ud83d\\ude00", "output": "b"}\n')  # a whole pair is fine
    assert column(ingest([str(pair)])) == ["😀"]


def test_deeply_nested_json(tmp_path):
    p = write(tmp_path, "a.jsonl", jsonl([{"instruction": "a", "output": "b"}]) + "[" * 100_000 + "\n")
    assert ingest_error(p) == f"{p} line 2: JSON nested too deeply to read (expected one JSON object per line)"
    assert ingest([str(p)], on_error="skip").counts == {"read": 2, "dropped": 1, "corpus": 1}
    q = write(tmp_path, "b.json", "[" * 100_000)
    assert ingest_error(q) == f"{q}: JSON nested too deeply to read (expected a JSON array of objects)"


def test_json_array_named_jsonl_is_read_as_an_array(tmp_path):
    p = write(tmp_path, "a.jsonl", json.dumps([{"instruction": f"q{i}", "output": "a"} for i in range(3)] + [3], indent=2))
    result = ingest([str(p)], on_error="skip")
    assert result.counts == {"read": 4, "dropped": 1, "corpus": 3}
    assert result.dropped.to_pylist()[0]["location"] == "record 4"


def test_corrupt_parquet_names_the_row_reached(tmp_path):
    p = tmp_path / "a.parquet"
    numbers = range(30_000)
    pq.write_table(pa.table({"instruction": [f"q{i}" for i in numbers], "output": [str(i * 7919 % 10007) for i in numbers]}),
                   p, row_group_size=5000)
    data = bytearray(p.read_bytes())
    data[len(data) // 2:len(data) // 2 + 200] = random.Random(0).randbytes(200)
    p.write_bytes(data)
    assert re.fullmatch(rf"{re.escape(str(p))}: cannot be read after row [\d,]+ \(OSError: [^\n]+\)", ingest_error(p))


@pytest.mark.parametrize("char", ["\u200d", "\u200e", "\u202e", "\u2060", "\u2066", "\u00ad", "\u180e", "\u3164",
                                  "\uffa0", "\u115f", "\u1160", "\U000e0001", "\U000e007f"])
def test_invisible_characters_are_removed(tmp_path, char):
    p = write(tmp_path, "a.jsonl", jsonl([{"instruction": f"안{char}녕", "output": "❤\ufe0f"}]))  # a variation selector stays
    result = ingest([str(p)])
    assert (column(result), column(result, "output"), result.cleaned) == (["안녕"], ["❤\ufe0f"], {"control_characters": 1})


def test_extra_columns_never_share_a_name(tmp_path):
    p = write(tmp_path, "a.jsonl", jsonl([{"id": "1", "orig_id": "2", "instruction": "a", "output": "b"}]))
    row = ingest([str(p)]).corpus.to_pylist()[0]
    assert (row["orig_id"], row["orig_orig_id"]) == ("1", "2")


@pytest.mark.parametrize("user, assistant", [("human", "ChatGPT"), ("human", "model"), ("prompter", "bot"), ("User", "AI")])
def test_chat_role_names(tmp_path, user, assistant):
    chat = {"conversations": [{"from": user, "value": "질문"}, {"from": assistant, "value": "답"}]}
    result = ingest([str(write(tmp_path, "a.jsonl", jsonl([chat])))])
    assert (column(result), column(result, "output")) == (["질문"], ["답"])


def test_unknown_role_and_missing_reply_say_so(tmp_path):
    turn = lambda role, text: {"role": role, "content": text}  # noqa: E731
    p = write(tmp_path, "a.jsonl", jsonl([{"messages": [turn("user", "q"), turn("narrator", "x")]},
                                          {"messages": [turn("user", "q2")]}]))
    unknown = ('turn 2 of "messages": role \'narrator\' (field "role") is not one koquality knows (expected one of: system, '
               "user, human, prompter, assistant, gpt, chatgpt, bot, model, ai)")
    assert ingest_error(p) == f"{p} line 1: {unknown}"
    dropped = ingest([str(p)], on_error="skip").dropped.to_pylist()
    assert [(d["reason"], d["detail"]) for d in dropped] == [
        ("malformed", unknown), ("empty_output", "the conversation has no assistant reply to the user's turn")]


def test_parquet_parts_of_two_runs_do_not_collide(tmp_path):
    theirs = tmp_path / ".c.parquet.parts"  # another run's parts, where ingest used to put its own
    write(theirs, "part-00000.parquet", b"theirs")
    p = write(tmp_path, "a.jsonl", jsonl([{"instruction": "a", "output": "b"}]))
    ingest_to_parquet([str(p)], tmp_path / "c.parquet")
    assert (theirs / "part-00000.parquet").read_bytes() == b"theirs"
    assert sorted(f.name for f in tmp_path.iterdir()) == [".c.parquet.parts", "a.jsonl", "c.parquet"]
