
import pyarrow as pa
import pytest

from koquality.errors import KoqualityError
from koquality.export import export, render
from koquality.tables import read_table


def selection():
    return pa.table({"id": ["a", "b"], "instruction": ["한국의 수도는?", "다음 문장을 번역하세요."],
                     "input": ["", "I am happy."], "output": ["서울입니다.", "나는 행복하다."]})


def test_paper_template_has_no_newline():
    texts = render(selection(), "paper").column("text").to_pylist()
    assert texts[0] == "### 질문: 한국의 수도는?### 답변: 서울입니다."
    assert texts[1] == "### 질문: 다음 문장을 번역하세요.\n\nI am happy.### 답변: 나는 행복하다."


def test_chat_template_adds_messages():
    rendered = render(selection(), "chat")
    assert rendered.column("messages").to_pylist()[0] == [
        {"role": "user", "content": "한국의 수도는?"}, {"role": "assistant", "content": "서울입니다."}]


@pytest.mark.parametrize("name", ["out.jsonl", "out.parquet", "out.csv"])
def test_table_formats_round_trip(tmp_path, name):
    path = export(selection(), tmp_path / name)
    back = read_table(path)
    assert back.column("text").to_pylist()[0] == "### 질문: 한국의 수도는?### 답변: 서울입니다."
    assert back.column("id").to_pylist() == ["a", "b"]


def test_hf_and_text_formats(tmp_path):
    from datasets import load_from_disk

    export(selection(), tmp_path / "ds", format="hf")
    assert load_from_disk(str(tmp_path / "ds"))["text"][0].startswith("### 질문: 한국의 수도는?")
    export(selection(), tmp_path / "train.txt", format="text")
    assert (tmp_path / "train.txt").read_text(encoding="utf-8").split("\n\n")[0] == "### 질문: 한국의 수도는?### 답변: 서울입니다."


def test_unknown_template_and_format():
    with pytest.raises(KoqualityError, match="--template alpaca: expected one of paper, chat"):
        render(selection(), "alpaca")
    with pytest.raises(KoqualityError, match="--format xml"):
        export(selection(), "x.xml", format="xml")
