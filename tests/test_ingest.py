import csv
import json

import pytest

from koquality.errors import KoqualityError
from koquality.ingest import SourceSpec, ingest, row_id
from koquality.sources import read_source


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_alpaca_strip_empty_and_duplicates_are_accounted_for(tmp_path):
    src = tmp_path / "a.json"
    src.write_text(json.dumps([
        {"instruction": "  김치찌개 끓이는 법 ", "input": "", "output": "먼저 김치를 볶습니다.\n"},
        {"instruction": "김치찌개 끓이는 법", "input": "", "output": "먼저 김치를 볶습니다."},  # duplicate after strip
        {"instruction": "   ", "input": "", "output": "답"},
        {"instruction": "번역해 줘", "input": "Hello", "output": "  "},
        {"instruction": "요약해 줘", "input": "긴 글", "output": "짧은 글", "topic": "요약"},
    ], ensure_ascii=False), encoding="utf-8")
    result = ingest([str(src)])
    assert result.counts == {"read": 5, "dropped": 3, "corpus": 2}
    assert result.dropped.column("reason").to_pylist() == ["duplicate", "empty_instruction", "empty_output"]
    assert result.dropped.column("location").to_pylist() == ["record 2", "record 3", "record 4"]
    rows = result.corpus.to_pylist()
    assert rows[0]["instruction"] == "김치찌개 끓이는 법" and rows[0]["output"] == "먼저 김치를 볶습니다."
    assert rows[0]["len"] == len("김치찌개 끓이는 법") == 10
    assert rows[0]["id"] == row_id("a", "김치찌개 끓이는 법", "", "먼저 김치를 볶습니다.")
    assert rows[0]["source"] == "a"
    assert rows[1]["topic"] == "요약" and rows[0]["topic"] is None  # extra columns are kept
    assert result.mappings == {"a": "instruction=instruction, input=input, output=output"}


def test_ids_are_stable_across_runs(tmp_path):
    src = write_jsonl(tmp_path / "q.jsonl", [{"question": "하늘은 왜 파래?", "answer": "레일리 산란 때문이에요."}])
    assert ingest([str(src)]).corpus.column("id").to_pylist() == ingest([str(src)]).corpus.column("id").to_pylist()


def test_qa_csv_and_chat_detection(tmp_path):
    qa = tmp_path / "qa.csv"
    with open(qa, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Q", "A", "label"])
        w.writerow(["밥 먹었어?", "네, 방금 먹었어요.", "0"])
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [
        {"role": "system", "content": "친절한 비서"}, {"role": "user", "content": "안녕"},
        {"role": "assistant", "content": "안녕하세요!"}, {"role": "user", "content": "잘 가"},
        {"role": "assistant", "content": "또 봐요"}]}])
    result = ingest([str(qa), str(chat)])
    rows = result.corpus.to_pylist()
    assert (rows[0]["instruction"], rows[0]["output"], rows[0]["label"]) == ("밥 먹었어?", "네, 방금 먹었어요.", "0")
    assert (rows[1]["instruction"], rows[1]["output"], rows[1]["system"]) == ("안녕", "안녕하세요!", "친절한 비서")
    assert result.mappings["qa"] == "instruction=Q, output=A"
    assert result.mappings["chat"].startswith("messages (role/content)")


def test_map_joins_fields_and_renames_colliding_columns(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [{"id": "x_1", "input": "질문", "label": "답", "reason": "풀이"}])
    result = ingest([SourceSpec(str(src), map={"instruction": "input", "output": "reason+label"})])
    row = result.corpus.to_pylist()[0]
    assert (row["instruction"], row["input"], row["output"]) == ("질문", "", "풀이\n답")
    assert row["orig_id"] == "x_1" and row["id"] != "x_1"


def test_errors_name_file_line_and_field(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "a", "output": "b"}, {"instruction": "c"}])
    with pytest.raises(KoqualityError) as e:
        read_source(bad)
    assert str(e.value) == (f'{bad} line 2: field "output" is missing '
                            '(expected one of: output, answer, A, response, completion; use --map output=FIELD)')
    nofield = write_jsonl(tmp_path / "n.jsonl", [{"text": "a", "meta": 1}])
    with pytest.raises(KoqualityError, match=r"cannot tell which field holds the instruction \(fields found: text, meta\)"):
        read_source(nofield)
    noresp = write_jsonl(tmp_path / "r.jsonl", [{"instruction": "a"}])
    with pytest.raises(KoqualityError, match="no response field"):
        read_source(noresp)
    with pytest.raises(KoqualityError, match="unknown format '.txt'"):
        read_source(tmp_path / "x.txt")
    with pytest.raises(KoqualityError, match="no such file"):
        read_source(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n', encoding="utf-8")
    with pytest.raises(KoqualityError, match="broken.jsonl line 2: not valid JSON"):
        read_source(broken)
    typed = write_jsonl(tmp_path / "t.jsonl", [{"instruction": "a", "output": 3}])
    with pytest.raises(KoqualityError, match='line 1: field "output" is a number \\(expected text\\)'):
        read_source(typed)


def test_demo_corpus_drops_are_counted():
    result = ingest(["koquality:demo/alpaca.json", "koquality:demo/qa.csv", "koquality:demo/chat.jsonl"])
    reasons = result.dropped.column("reason").to_pylist()
    assert result.read == result.corpus.num_rows + result.dropped.num_rows
    assert result.corpus.num_rows >= 300
    assert reasons.count("duplicate") >= 3 and reasons.count("empty_output") >= 3
    assert set(result.corpus.column("source").to_pylist()) == {"alpaca", "qa", "chat"}


SHARED = {  # file → (rows in the file per shared/data/README.md, --map needed)
    "koalpaca_v1.0_partial.json": (12761, None),
    "chatbotdata.csv": (11823, None),
    "kor_mwp_train.jsonl": (3000, {"output": "reason+answer"}),
    "skku_every.jsonl": (991, {"instruction": "input", "output": "label"}),
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_instruction_files(shared_instructions, name):
    rows, field_map = SHARED[name]
    path = shared_instructions / name
    result = ingest([SourceSpec(str(path), map=field_map)])
    assert result.read == rows
    # independent count of what must be dropped: empty after strip, then exact duplicates
    src = read_source(path, field_map=field_map)
    seen, expected_dropped = set(), 0
    for t in zip(src.instruction, src.input, src.output):
        t = tuple(s.strip() for s in t)
        if not t[0] or not t[2] or t in seen:
            expected_dropped += 1
        else:
            seen.add(t)
    assert result.dropped.num_rows == expected_dropped
    assert result.corpus.num_rows == rows - expected_dropped
    assert result.corpus.column("id").unique().__len__() == result.corpus.num_rows


def test_all_shared_files_together(shared_instructions):
    specs = [SourceSpec(str(shared_instructions / n), map=m) for n, (_, m) in SHARED.items()]
    result = ingest(specs)
    assert result.read == sum(r for r, _ in SHARED.values()) == 28575
    assert result.read == result.corpus.num_rows + result.dropped.num_rows
