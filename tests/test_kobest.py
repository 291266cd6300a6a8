"""KoBEST TSVs → the `skt/kobest_v1` schema, checked against the hub card's own examples."""

import pytest

from conftest import SHARED_DATA

from koquality.errors import KoqualityError
from koquality.kobest import TASKS, kobest_rows

KOBEST = SHARED_DATA / "kobest"
# split → rows, from ../shared/data/README.md
ROWS = {"boolq": (3665, 700, 1404), "copa": (3076, 500, 1000), "hellaswag": (2029, 500, 500),
        "sentineg": (3649, 400, 397), "wic": (3318, 610, 1260)}


@pytest.fixture
def kobest():
    if not KOBEST.is_dir():
        pytest.skip(f"KoBEST not present at {KOBEST}")
    return KOBEST


def test_hub_card_examples(kobest):
    boolq = kobest_rows(kobest, "boolq", "validation")
    dua = next(r for r in boolq if r["question"] == "두아 리파는 영국인인가?")
    assert dua["label"] == 1 and dua["paragraph"].startswith("두아 리파(Dua Lipa, 1995년 8월 22일 ~ )는 잉글랜드의")
    copa = kobest_rows(kobest, "copa", "test")  # the card's COPA example is in the test split
    water = next(r for r in copa if r["premise"] == "물을 오래 끓였다.")
    assert water == {"premise": "물을 오래 끓였다.", "question": "결과", "alternative_1": "물의 양이 늘어났다.",
                     "alternative_2": "물의 양이 줄어들었다.", "label": 1}


@pytest.mark.parametrize("task", TASKS)
def test_every_split_converts_with_valid_labels(kobest, task):
    for split, expected in zip(("train", "validation", "test"), ROWS[task]):
        rows = kobest_rows(kobest, task, split)
        assert len(rows) == expected
        labels = {r["label"] for r in rows}
        assert labels == (set(range(4)) if task == "hellaswag" else {0, 1})


def test_sentineg_test_splits_and_mixed_case_answers(kobest):
    negated = kobest_rows(kobest, "sentineg", "test")
    original = kobest_rows(kobest, "sentineg", "test_originated")
    assert len(negated) == len(original) == 397 and negated[0]["sentence"] != original[0]["sentence"]
    wic = kobest_rows(kobest, "wic", "validation")
    assert sum(r["label"] for r in wic) == 257 + 4  # True + TRUE in dev.tsv


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "COPA").mkdir()
    (tmp_path / "COPA" / "dev.tsv").write_text("ID\tsentence\tquestion\t1\t2\tAnswer\n1\t가\t원인\t나\t다\t3\n", encoding="utf-8")
    with pytest.raises(KoqualityError, match=r"COPA/dev.tsv line 2: label '3' \(expected one of 1, 2\)"):
        kobest_rows(tmp_path, "copa", "validation")
    with pytest.raises(KoqualityError, match="expected the KoBEST v1.0 layout"):
        kobest_rows(tmp_path, "wic", "train")
