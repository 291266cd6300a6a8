"""Decontamination: planted benchmark spans are found — exactly those rows, with the right benchmark, split,
item and n-gram — through punctuation, spacing and full-width variations; 12-morpheme overlaps, spans cut
across two fields and clean rows are not; the char unit; bad benchmark files; row order."""

import json
import os
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import SHARED_DATA

from koquality import backends
from koquality.decontaminate import (BenchmarkIndex, Decontaminator, _P, benchmark_fingerprint, normalise,
                                     normalise_all, window_hashes)
from koquality.errors import KoqualityError
from koquality.kiwi import get_kiwi

KOBEST = SHARED_DATA / "kobest"

# Synthetic benchmark texts (one per file format) and clean Korean rows that share nothing long with them.
A = ("조선 시대의 궁궐 가운데 가장 먼저 지어진 경복궁은 태조 이성계가 1395년 한양으로 도읍을 옮긴 뒤 세운 법궁으로, "
     "임진왜란 때 불에 탄 뒤 오랫동안 폐허로 남아 있다가 고종 때 흥선대원군의 주도로 다시 지어졌다.")
B = ("바다거북은 알을 낳기 위해 수천 킬로미터를 헤엄쳐 자신이 태어난 해변으로 돌아오는데, 과학자들은 거북이 "
     "지구 자기장의 미세한 차이를 감지하여 길을 찾는다고 설명한다.")
C = ("도서관에서 빌린 책을 기한 안에 반납하지 않으면 연체료가 부과되며, 연체 기간이 길어지면 일정 기간 동안 "
     "새로운 책을 빌릴 수 없게 된다.")
CLEAN = [
    ("오늘 저녁 메뉴로 간단한 파스타를 만들고 싶은데 필요한 재료를 알려 주세요.", None,
     "토마토소스 파스타를 만들려면 면, 토마토, 마늘, 올리브유가 필요합니다. 면을 삶는 동안 소스를 준비하세요."),
    ("주말에 가족과 함께 갈 만한 근교 여행지를 추천해 줄 수 있나요?", "서울 근처",
     "가평이나 양평처럼 서울에서 한 시간 남짓 걸리는 곳이 좋습니다. 강가를 따라 산책하기에도 알맞습니다."),
    ("운동을 꾸준히 하려면 어떤 습관을 들이는 것이 좋을까요?", None,
     "작은 목표부터 세우고 같은 시간에 운동하는 습관을 들이면 오래 이어 가기 쉽습니다."),
    ("다음 문장을 영어로 번역하세요.", "나는 매일 아침 커피를 마신다.", "I drink coffee every morning."),
]
FULL_WIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}
BREAKS = ["  ", "\u3000", " ， ", "！ ", "\n", " ... ", " · "]  # what may stand between two words of a copy


def window(text: str, k: int, skip: int = 0) -> str:
    """The normalised surface of the first run of whole words (from the skip-th word) that Kiwi analyses into
    exactly k morphemes, word by word as the index does."""
    words = normalise(text).split(" ")
    counts = [len(get_kiwi().tokenize(w)) for w in words]
    for i in range(skip, len(words)):
        for j in range(i + 1, len(words) + 1):
            if sum(counts[i:j]) == k:
                return " ".join(words[i:j])
            if sum(counts[i:j]) > k:
                break
    raise AssertionError(f"no run of words with exactly {k} morphemes in {text!r}")


def disguise(span: str, rng: random.Random) -> str:
    """The same words with other punctuation and spacing between them, ASCII in full width."""
    words = "".join(FULL_WIDTH.get(c, c) for c in span).split(" ")
    return words[0] + "".join(rng.choice(BREAKS) + w for w in words[1:])


def table(rows):
    return pa.table({"id": [f"r{i}" for i in range(len(rows))], "instruction": [r[0] for r in rows],
                     "input": pa.array([r[1] for r in rows], pa.string()), "output": [r[2] for r in rows]})


@pytest.fixture
def bench_files(tmp_path):
    jsonl = tmp_path / "quiz.jsonl"
    jsonl.write_text(json.dumps({"id": "q0", "question": "짧은 질문", "choices": ["하나", "둘"]}, ensure_ascii=False)
                     + "\n\n" + json.dumps({"id": "q1", "question": "옛 궁궐", "choices": ["짧다", A]},
                                           ensure_ascii=False) + "\n", encoding="utf-8")
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(f"id\tpremise\thypothesis\np1\t짧은 전제\t짧은 가설\np2\t{B}\t거북\n", encoding="utf-8")
    txt = tmp_path / "lines.txt"
    txt.write_text(f"첫 줄은 짧다\n{C}\n", encoding="utf-8")
    return [str(jsonl), str(tsv), str(txt)]


def test_normalise_deletes_punctuation_and_collapses_whitespace():
    assert normalise("Ｈｅｌｌｏ，\u3000１２３ＡＢ！！가나_다\n\t라 ㈜ 🙂 ~₩") == "hello 123ab가나다 라 주"
    assert normalise("  …「인용」—   끝。 ") == "인용 끝"
    assert normalise("산의 [정기]를 받아 ‘사랑’이라는\u200b 말") == "산의 정기를 받아 사랑이라는 말"
    assert normalise("") == ""


def test_normalise_all_is_normalise_of_each():
    rng = random.Random(5)
    pool = ["가", "ᄀ", "ᅡ", "ᆨ", "ㄱ", "Σ", "Α", "\u0301", "e", "Ｅ", "，", " ", "\n", "\u3000", "_", "ﬁ", "①", "\u200b",
            "'", "[", "1", "\t", "😀", "\x1e"]
    texts = ["".join(rng.choice(pool) for _ in range(rng.randrange(8))) for _ in range(3000)] + [None, ""]
    assert normalise_all(texts) == [normalise(t or "") for t in texts]
    assert normalise_all(["a\x00b", "ΑΣ"]) == ["ab", "ας"] and normalise_all([]) == []


def test_window_hashes_are_the_polynomial_hash():
    values = np.random.default_rng(0).integers(0, 2**63, 60, dtype=np.uint64)
    for n in (1, 2, 5, 13, 20, 31):
        naive = []
        for i in range(len(values) - n + 1):
            h = 0
            for v in values[i:i + n]:
                h = (h * int(_P) + int(v)) % 2**64
            naive.append(h)
        assert window_hashes(values, n).tolist() == naive
    assert len(window_hashes(values[:3], 5)) == 0


def test_planted_spans_are_found_exactly(bench_files):
    jsonl, tsv, txt = bench_files
    rng = random.Random(7)
    a13, b13, c13 = window(A, 13), window(B, 13), window(C, 13, skip=3)
    a12 = window(A, 12, skip=2)
    rows = [list(r) for r in CLEAN * 3]
    rows[1][0] = f"다음 글을 요약해 주세요 {disguise(a13, rng)} 라는 내용입니다"  # instruction ← quiz.jsonl line 3
    rows[4][1] = f"참고 자료 {disguise(b13, rng)}"  # input ← pairs.tsv line 3
    rows[6][2] = f"제 생각은 이렇습니다. {disguise(c13, rng)} 그러니 조심하세요."  # output ← lines.txt line 2
    rows[8][2] = f"{disguise(a12, rng)} 라고 들었어요."  # only 12 morphemes of A: clean
    half = b13.split(" ")
    rows[9][0], rows[9][1] = " ".join(half[:4]), " ".join(half[4:])  # a span cut across two fields: clean
    flags = Decontaminator(bench_files).score_rows(table(rows))["contaminated_by"]
    assert flags[1] == f"instruction shares 13 morphemes with {jsonl} line 3: '{a13}'"
    assert flags[4] == f"input shares 13 morphemes with {tsv} line 3: '{b13}'"
    assert flags[6] == f"output shares 13 morphemes with {txt} line 2: '{c13}'"
    assert [i for i, f in enumerate(flags) if f] == [1, 4, 6]


def test_every_field_is_checked_and_the_first_one_names_the_row(bench_files):
    a13, c13 = window(A, 13), window(C, 13)
    rows = [(f"질문 {a13}", None, f"답 {c13}"), ("질문", None, f"답 {c13}")]
    flags = Decontaminator(bench_files).score_rows(table(rows))["contaminated_by"]
    assert flags[0].startswith("instruction shares") and "quiz.jsonl line 3" in flags[0]
    assert flags[1].startswith("output shares") and "lines.txt line 2" in flags[1]


def test_row_order_and_batching_do_not_change_the_result(bench_files):
    rng = random.Random(3)
    rows = [list(r) for r in CLEAN * 4]
    for i, text in zip((2, 7, 11), (A, B, C)):
        rows[i][2] = f"{rows[i][2]} {disguise(window(text, 14), rng)}"
    original = table(rows)
    expected = dict(zip(original.column("id").to_pylist(),
                        Decontaminator(bench_files).score_rows(original)["contaminated_by"]))
    assert sum(v is not None for v in expected.values()) == 3
    order = list(range(len(rows)))
    rng.shuffle(order)
    shuffled = original.take(order)
    flags = Decontaminator(bench_files, batch_rows=3).score_rows(shuffled)["contaminated_by"]
    assert dict(zip(shuffled.column("id").to_pylist(), flags)) == expected


def test_missing_input_column_and_empty_rows(bench_files):
    t = pa.table({"instruction": ["", window(A, 13)], "output": [" ", "끝"]})
    flags = Decontaminator(bench_files).score_rows(t)["contaminated_by"]
    assert flags[0] is None and flags[1].startswith("instruction shares 13 morphemes")
    assert Decontaminator(bench_files).score_rows(t.slice(0, 0)) == {"contaminated_by": []}


def test_first_item_with_the_ngram_is_named(tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text(f"다른 줄\n{B}\n", encoding="utf-8")
    second.write_text(f"{B}\n", encoding="utf-8")
    filt = Decontaminator([str(second), str(first)])
    (flag,) = filt.score_rows(table([("질문", None, B)]))["contaminated_by"]
    assert f"{second} line 1:" in flag


def test_char_unit(bench_files):
    jsonl, tsv, txt = bench_files
    a = normalise(A)
    span = a[10:40]  # 30 characters, cut inside words
    compact19 = a.replace(" ", "")[50:69]
    rows = [list(r) for r in CLEAN]
    rows[0][2] = f"답은 {span.replace(' ', '')} 입니다"  # spacing removed altogether
    rows[1][1] = f"{compact19} 맞나요"  # 19 characters only
    rows[3][0] = "".join(FULL_WIDTH.get(c, c) for c in normalise(B)[:30]).replace(" ", "\u3000")
    filt = Decontaminator(bench_files, unit="char")
    assert filt.n == 20 and filt.config()["unit"] == "char"
    flags = filt.score_rows(table(rows))["contaminated_by"]
    assert flags[0] == f"output shares 20 characters with {jsonl} line 3: '{span.replace(' ', '')[:20]}'"
    b = normalise(B)
    twenty = next(b[:end] for end in range(len(b)) if len(b[:end].replace(" ", "")) == 20)
    assert flags[3] == f"instruction shares 20 characters with {tsv} line 3: '{twenty}'"
    assert flags[1] is None and flags[2] is None
    assert Decontaminator(bench_files, unit="char", n=19).score_rows(table(rows))["contaminated_by"][1] is not None


def test_bad_benchmark_files(tmp_path):
    with pytest.raises(KoqualityError, match="nothing.jsonl: no such file"):
        Decontaminator([str(tmp_path / "nothing.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "좋다"}\n{"text": 좋다}\n', encoding="utf-8")
    with pytest.raises(KoqualityError, match=r"bad.jsonl line 2: not JSON"):
        Decontaminator([str(bad)])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("첫 줄\n".encode() + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(KoqualityError, match=r"latin1.txt line 2: not UTF-8"):
        Decontaminator([str(latin1)])
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(KoqualityError, match="empty.tsv: no benchmark text"):
        Decontaminator([str(empty)])
    csv = tmp_path / "b.csv"
    csv.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(KoqualityError, match="b.csv: expected kobest or a path ending in .jsonl, .tsv, .txt"):
        Decontaminator([str(csv)])
    with pytest.raises(KoqualityError, match=r"BoolQ/\w+\.tsv: no such file"):
        Decontaminator(["kobest"], kobest_dir=str(tmp_path))
    with pytest.raises(KoqualityError, match="unit word"):
        Decontaminator([str(latin1)], unit="word")


def test_backend_is_registered_and_keyed_by_the_benchmark_contents(bench_files, tmp_path):
    backend = backends.backend("filter", "decontaminate")
    assert backend.writes == ("contaminated_by",) and backend.reads == ("instruction", "input", "output")
    filt = backend.build({"benchmarks": bench_files, "n": 13, "unit": "morpheme"}, strict=True)
    assert isinstance(filt, Decontaminator) and filt.n == 13 and filt.config()["benchmarks"] == bench_files
    with pytest.raises(KoqualityError, match="--n 0: expected a number at least 1"):
        backend.build({"benchmarks": bench_files, "n": 0}, strict=True)
    with pytest.raises(KoqualityError, match="takes no setting ratio"):
        backend.build({"benchmarks": bench_files, "ratio": 0.1}, strict=True)
    section = {"benchmarks": bench_files, "n": None, "unit": "morpheme"}
    before = backend.cache_key(section)
    assert backend.cache_key(section) == before
    txt = tmp_path / "lines.txt"
    txt.write_text(txt.read_text(encoding="utf-8") + "한 줄 더\n", encoding="utf-8")
    assert backend.cache_key(section) != before
    assert benchmark_fingerprint({"benchmarks": ["kobest"]})["files"] == {"kobest": "hub:skt/kobest_v1"}


def test_index_cache_gives_the_same_index(bench_files):
    built = BenchmarkIndex.build(bench_files, cache=False)
    BenchmarkIndex.build(bench_files)  # writes the cache
    loaded = BenchmarkIndex.build(bench_files)
    assert loaded.items == built.items and np.array_equal(loaded.ngrams.keys, built.ngrams.keys)
    assert np.array_equal(loaded.anchors.keys, built.anchors.keys) and loaded.anchor_lengths == built.anchor_lengths
    texts = [f"요약: {window(B, 13)}", "깨끗한 문장"]
    assert loaded.find(texts) == built.find(texts)
    for path in (Path(os.environ["KOQUALITY_CACHE"]) / "decontaminate").glob("*.npz"):
        path.write_bytes(b"damaged")
    assert BenchmarkIndex.build(bench_files).find(texts) == built.find(texts)


# --- real KoBEST items ---------------------------------------------------------------------------------------

KEEP_ROWS = 60  # of each KoBEST TSV: the first rows keep their row numbers, and the index builds in seconds


@pytest.fixture
def mini_kobest(tmp_path):
    """The first KEEP_ROWS rows of every KoBEST TSV, in the release's layout."""
    if not KOBEST.is_dir():
        pytest.skip(f"KoBEST not present at {KOBEST}")
    for tsv in KOBEST.glob("*/*.tsv"):
        (tmp_path / "kobest" / tsv.parent.name).mkdir(parents=True, exist_ok=True)
        with open(tsv, encoding="utf-8", newline="") as f:
            lines = [next(f) for _ in range(KEEP_ROWS + 1)]
        (tmp_path / "kobest" / tsv.parent.name / tsv.name).write_text("".join(lines), encoding="utf-8")
    return tmp_path / "kobest"


def expected_item(kobest_dir, span):
    """The first item (index order) holding the span: what the index must name."""
    from koquality.decontaminate import benchmark_items

    return next(str(item) for item, texts in benchmark_items(["kobest"], str(kobest_dir))
                if any(span in normalise(t) for t in texts))


def test_planted_kobest_items(mini_kobest):
    from koquality.kobest import kobest_rows

    picks = [("boolq", "validation", "paragraph"), ("hellaswag", "test", "context"), ("wic", "train", "context_1"),
             ("sentineg", "test_originated", "sentence"), ("boolq", "test", "paragraph"), ("hellaswag", "train", "ending_2")]
    rng = random.Random(11)
    rows, spans = [list(r) for r in CLEAN * 3], {}
    for k, ((task, split, field), r) in enumerate(zip(picks, (0, 2, 5, 8, 10, 11))):
        for row in kobest_rows(mini_kobest, task, split)[20:]:
            try:
                spans[r] = window(row[field], 13)
                break
            except AssertionError:  # no word-aligned run of exactly 13 morphemes in this one
                continue
        rows[r][2 * (k % 2)] = f"다음 내용을 설명해 주세요 {disguise(spans[r], rng)} 에 대해서요"
    flags = Decontaminator(["kobest"], kobest_dir=str(mini_kobest)).score_rows(table(rows))["contaminated_by"]
    assert [i for i, f in enumerate(flags) if f] == sorted(spans)
    for k, (r, span) in enumerate(spans.items()):
        field = ("instruction", "output")[k % 2]
        assert flags[r] == f"{field} shares 13 morphemes with {expected_item(mini_kobest, span)}: '{span}'"


def test_every_kobest_task_and_split_is_indexed(mini_kobest):
    index = BenchmarkIndex.build(["kobest"], kobest_dir=str(mini_kobest), unit="char", cache=False)
    seen = {(i.benchmark, i.split) for i in index.items}
    assert seen == {(f"kobest_{t}", s) for t in ("boolq", "copa", "hellaswag", "sentineg", "wic")
                    for s in ("train", "validation", "test")} | {("kobest_sentineg", "test_originated")}
    assert len(index.items) == 16 * KEEP_ROWS


def test_a_changed_kobest_file_changes_the_key(mini_kobest):
    backend = backends.backend("filter", "decontaminate")
    section = {"benchmarks": ["kobest"], "kobest_dir": str(mini_kobest)}
    key = backend.cache_key(section)
    copa = mini_kobest / "COPA" / "test.tsv"
    copa.write_text(copa.read_text(encoding="utf-8").replace("\t결과\t", "\t원인\t", 1), encoding="utf-8")
    assert backend.cache_key(section) != key


def test_kobest_without_a_folder_needs_the_hub(monkeypatch):
    from koquality import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "unreachable", lambda: "huggingface.co:443: Network is unreachable")
    with pytest.raises(KoqualityError, match="skt/kobest_v1: on the Hugging Face hub, which cannot be reached"):
        Decontaminator(["kobest"])
