"""The offline `kiwi` scorer (issue 11): its formula, what Kiwi's numbers in it are, and the criteria that make
it a fluency measure — (a) corrupted rows score worse, (b) short rows are comparable with long ones, (c)
non-Korean text is not the most fluent Korean — on the demo corpus (always) and on real rows of
../shared/data (skipped when absent). The criteria are computed by benchmarks/scorer_criteria.py, the same
code that prints the figures in benchmarks/RESULTS.md."""

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from koquality.ingest import SourceSpec, ingest
from koquality.kiwi import get_kiwi, morphemes_of
from koquality.scoring import make_scorer
from koquality.scoring.kiwi import char_nats, start_entropy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from scorer_criteria import (HANGUL, LATIN, OldKiwiPathScorer, corrupted, foreign_ranks, korean,  # noqa: E402
                             length_medians, non_korean_lines, spearman, worse)

DEMO = Path(__file__).resolve().parents[1] / "src" / "koquality" / "data" / "demo"
MIXED = ["오늘은 날씨가 맑아서 공원에서 산책을 했다.", "What is the capital of France?", "부치지 못한 편지", "안녕",
         "ㅋㅋㅋㅋ 진짜 웃기다", "東京は日本の首都です。", "漢字 공부를 합시다", "Где находится Москва?", "😀😀 좋아요",
         "2024년 3월 15일에 만나요!", "def foo(x): return x+1", "다음 기사를 요약하세요: https://example.com/a?b=1",
         "자세한 응답을 제공하세요. 캐나다의 수도는 어디입니까?", "café에서 만나요", "", "  ", "?!"]


def ppl_of(texts):
    return make_scorer("kiwi").score(texts)["ppl"]


# --- the formula, against an independent per-text computation ---------------------------------------------

def reference_nats(form: str) -> float:
    """The spelling cost written out separately: −ln(1/alphabet) per character."""
    total = 0.0
    for c in form:
        if re.fullmatch(r"[0-9]", c):
            size = 10
        elif re.fullmatch(r"[A-Za-zÀ-ÖØ-öø-ÿ]", c):
            size = 26
        elif re.fullmatch(r"[\u3131-\u318E\u1100-\u11FF]", c):
            size = 51
        elif re.fullmatch(r"[\u4E00-\u9FFF\u3400-\u4DBF\uF900-\uFAFF]", c):
            size = 4888
        elif c.isalpha():
            size = 50
        elif ord(c) < 128:
            size = 32
        else:
            size = 1000
        total += math.log(size)
    return total


@pytest.fixture(scope="module")
def own_kiwi():
    """A Kiwi of its own, one thread, built as koquality builds its analyser (no multi-word dictionary)."""
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=1, load_multi_dict=False)


def test_start_entropy_is_the_entropy_of_congs_first_morpheme(own_kiwi):
    log_p = np.array([m.score for m in own_kiwi.predict_next_morpheme([0], top_n=200_000)])
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=2e-3)  # a distribution over the whole vocabulary
    assert start_entropy() == pytest.approx(-(np.exp(log_p) * log_p).sum(), rel=1e-9)
    assert 5 < start_entropy() < 8


def test_batched_scores_equal_a_per_text_computation(own_kiwi):
    texts = MIXED * 3
    scorer = make_scorer("kiwi")
    batched = np.concatenate([scorer.score(texts[i:i + 7]) for i in range(0, len(texts), 7)])
    h0 = start_entropy()
    for text, got in zip(texts, batched):
        tokens, log_prob = own_kiwi.analyze(text, top_n=1)[0]
        if not tokens:
            assert math.isnan(got["ppl"]) and got["n_tokens"] == 0, text
            continue
        spelling = sum(reference_nats(t.form) for t in tokens
                       if t.tag in ("SL", "SH", "SN", "SW") or t.tag.startswith("W_"))
        expected = math.exp((spelling - log_prob - h0) / (len(tokens) + 1))
        assert got["n_tokens"] == len(tokens) + 1, text
        assert got["ppl"] == pytest.approx(expected, rel=1e-9), text


def test_spelling_costs_per_character():
    assert sum(map(char_nats, "capital")) == pytest.approx(7 * math.log(26))
    assert sum(map(char_nats, "2024")) == pytest.approx(4 * math.log(10))
    assert sum(map(char_nats, "ㅋㅋ")) == pytest.approx(2 * math.log(51))
    assert sum(map(char_nats, "漢字")) == pytest.approx(2 * math.log(4888))
    for c in "éДあ+😀":
        assert char_nats(c) == pytest.approx(reference_nats(c)), c


def test_kiwi_analysis_score_is_congs_chain_rule(own_kiwi):
    """What the formula's log P(analysis) is: each morpheme's share (Token.score) is CoNg's log-probability
    of that morpheme after the ones before it, as `predict_next_morpheme` gives it, and the remainder of the
    analysis score is the log-probability of the end. Morpheme id 0 is the start; ids past CoNg's
    vocabulary (allomorphs) are given to it as (form, tag), which Kiwi maps to their vocabulary entry."""
    vocab = len(own_kiwi.predict_next_morpheme([0], top_n=200_000))
    for text in ("오늘 점심은 무엇을 먹을까요?", "서울에서 부산까지 기차로 몇 시간 걸려요?"):
        tokens, log_prob = own_kiwi.analyze(text, top_n=1)[0]
        prefix = [0]
        checked = 0
        for t in tokens:
            if t.id < vocab and len(prefix) > 1:  # the first morpheme: see test_start_entropy (same distribution)
                predicted = {m.id: m.score for m in own_kiwi.predict_next_morpheme(prefix, top_n=vocab)}
                assert t.score == pytest.approx(predicted[t.id], abs=1e-4), (text, t)
                checked += 1
            prefix.append(t.id if t.id < vocab else (t.form, t.tag))
        end = {m.id: m.score for m in own_kiwi.predict_next_morpheme(prefix, top_n=vocab)}[1]
        assert log_prob - sum(t.score for t in tokens) == pytest.approx(end, abs=1e-3), text
        assert checked >= len(tokens) // 2


def test_multi_word_dictionary_entries_are_scored_as_words():
    tokens = next(morphemes_of(["부치지 못한 편지"]))
    assert len(tokens) == 5  # not one proper noun from the WikiData dictionary
    assert ppl_of(["부치지 못한 편지"])[0] < 1000  # 7.3e15 before issue 11


def test_unscorable_rows_are_nan():
    result = make_scorer("kiwi").score(["", "   ", "정상적인 문장입니다."])
    assert np.isnan(result["ppl"][:2]).all() and (result["n_tokens"][:2] == 0).all()
    assert np.isfinite(result["ppl"][2]) and result["n_tokens"][2] > 1


def test_scorer_morphemes_are_tfidfs_tokens():
    """The morphemes the scorer hands the embed stage are what TF-IDF would get by analysing the texts
    itself, so vectors from cached morphemes equal vectors from fresh ones."""
    from koquality.embedding.tfidf import TfidfEncoder

    texts = demo_rows()[0]
    _, forms = make_scorer("kiwi").analyse(texts)
    encoder = TfidfEncoder(dims=16, seed=0)
    assert forms == list(encoder.tokenize(texts))
    fresh = np.concatenate(list(encoder.encode_batches(texts)))
    cached = np.concatenate(list(encoder.encode_batches(texts, tokens=iter(forms))))
    np.testing.assert_array_equal(fresh, cached)


# --- the criteria ------------------------------------------------------------------------------------------

def demo_rows():
    corpus = ingest([SourceSpec(str(p)) for p in sorted(DEMO.iterdir())]).corpus
    return corpus.column("instruction").to_pylist(), corpus


def check_criteria(texts, foreign, old_too=True):
    """(a), (b), (c) and the Spearman correlation for `texts` (plus `foreign`, non-Korean rows); returns the
    figures for the failure messages."""
    scorer = make_scorer("kiwi")
    result, forms = scorer.analyse(texts)
    ppl = result["ppl"]
    n = np.array([len(f) for f in forms])
    rows = np.array([i for i in np.flatnonzero(n >= 5) if korean(texts[i])])
    copies = corrupted(get_kiwi(), [texts[i] for i in rows], [forms[i] for i in rows], rows.tolist())
    figures = {name: float(worse(ppl[rows], ppl_of(c)).mean()) for name, c in copies.items()}
    assert len(rows) >= 100
    for name, share in figures.items():
        assert share >= 0.95, (name, figures)

    medians = length_medians(ppl, n)
    assert np.isfinite(medians["1"]) and np.isfinite(medians["2"]), medians
    for key in ("ratio 1-2 / >=6", "ratio 1 / >=6", "ratio 2 / >=6"):
        assert medians[key] <= 100, medians

    ranks = foreign_ranks(ppl, ppl_of(foreign))
    assert ranks["best percentile"] > 50, ranks  # no non-Korean row in the more fluent half
    rho = spearman(ppl, n)
    assert abs(rho) < 0.3, rho

    if old_too:  # the same checks catch the old scorer's problems
        old = OldKiwiPathScorer().score
        old_ppl = old(texts)
        assert length_medians(old_ppl, n)["ratio 1-2 / >=6"] > 100
        assert foreign_ranks(old_ppl, old(foreign))["best percentile"] < 5
    return figures, medians, ranks, rho


def test_criteria_on_the_demo_corpus():
    texts, _ = demo_rows()
    foreign = [t for t in texts if not HANGUL.search(t) and LATIN.search(t)]  # English instructions of the demo
    assert len(foreign) >= 4
    check_criteria([t for t in texts if t not in foreign], foreign)


def test_criteria_on_shared_rows(shared_instructions):
    from common import MAPS

    rows = ingest([SourceSpec(str(p), map=MAPS.get(p.name)) for p in sorted(shared_instructions.iterdir())]).corpus
    rows = rows.select(["instruction", "input", "output"]).to_pylist()
    rng = np.random.default_rng(0)
    short = [i for i, r in enumerate(rows) if len(r["instruction"]) <= 4]  # mostly 1-2 morphemes: (b) needs them
    sample = [rows[i]["instruction"] for i in rng.choice(len(rows), 340, replace=False)]
    sample += [rows[i]["instruction"] for i in rng.choice(short, 60, replace=False)]
    foreign = non_korean_lines(rows)
    foreign = [foreign[i] for i in rng.choice(len(foreign), 40, replace=False)]
    check_criteria(sample, foreign)


# --- one analysis per instruction in a run -----------------------------------------------------------------

def test_a_run_embeds_the_morphemes_its_scorer_analysed(tmp_path, monkeypatch):
    """`koquality run` on the demo: the score stage leaves every corpus row's morphemes in the run directory
    and the embed stage analyses nothing again. A run that finds no cached morphemes (analysing them in the
    embed stage) gives the same vectors and selection."""
    import dataclasses

    import koquality.morphemes as morphemes
    import koquality.pipeline as pipeline
    from koquality import load_recipe, run
    from koquality.tables import read_table

    analysed = []
    fresh = morphemes.morphemes_of
    monkeypatch.setattr(morphemes, "morphemes_of", lambda texts, *a: analysed.extend(texts) or fresh(texts, *a))
    reused = run(load_recipe("demo"), tmp_path / "reused", report=False)
    corpus_ids = set(read_table(tmp_path / "reused" / "corpus.parquet").column("id").to_pylist())
    [shards] = (tmp_path / "reused" / "morphemes").iterdir()
    assert corpus_ids <= set(morphemes.cached(shards).column("id").to_pylist())
    assert analysed == []  # TF-IDF took every row's morphemes from the score stage

    keeping = pipeline.score_stage  # the score stage keeps no morphemes:
    monkeypatch.setattr(pipeline, "score_stage", lambda *a: dataclasses.replace(keeping(*a), morphemes=None))
    again = run(load_recipe("demo"), tmp_path / "fresh", report=False)
    assert len(analysed) == len(corpus_ids)
    assert not (tmp_path / "fresh" / "morphemes").exists()
    vectors = [np.load(tmp_path / name / r.manifest["files"]["vectors"]) for name, r in (("reused", reused), ("fresh", again))]
    np.testing.assert_array_equal(*vectors)
    assert reused.selection.column("id").to_pylist() == again.selection.column("id").to_pylist()


def test_tokens_in_order_mixes_cached_and_fresh_morphemes(tmp_path):
    import pyarrow as pa

    from koquality.morphemes import MorphemeWriter, tokens_in_order

    texts = ["오늘 점심은 무엇을 먹을까요?", "안녕", "서울의 인구는 몇 명인가요?", "파이썬으로 리스트 정렬하기"]
    ids = [f"r{i}" for i in range(len(texts))]
    expected = list(morphemes_of(texts))
    writer = MorphemeWriter(tmp_path / "m")
    writer.write([ids[2], ids[0]], [expected[2], expected[0]])
    got = list(tokens_in_order(tmp_path / "m", pa.array(ids), texts, batch_rows=3))
    assert got == expected
    assert list(tokens_in_order(tmp_path / "absent", pa.array(ids), texts)) == expected
