import math
import sys

import numpy as np
import pyarrow as pa
import pytest

from koquality.embedding import embed, make_encoder
from koquality.errors import KoqualityError
from koquality.kiwi import get_kiwi
from koquality.scoring import make_scorer, score


def test_kiwi_ppl_is_exp_of_negative_logprob_per_prediction():
    """Issue 11's formula on a text with no foreign spelling: (−log P(analysis) − H₀) / (morphemes + 1);
    test_kiwi_scorer.py checks the rest."""
    from koquality.scoring.kiwi import start_entropy

    text = "오늘은 날씨가 맑아서 공원에서 산책을 했다."
    tokens, log_prob = get_kiwi().analyze(text, top_n=1)[0]
    result = make_scorer("kiwi").score([text])
    assert result["n_tokens"][0] == len(tokens) + 1 > 1
    assert result["ppl"][0] == pytest.approx(math.exp((-log_prob - start_entropy()) / (len(tokens) + 1)), rel=1e-9)


def test_fluent_korean_scores_lower_than_noise():
    fluent = "오늘은 날씨가 맑아서 공원에서 산책을 했다."
    noise = "ㅋ겉럐 뷁쀍 숋뤩 앍뀱 쉛뛟"
    ppl = make_scorer("kiwi").score([fluent, noise])["ppl"]
    assert ppl[0] < ppl[1]


def test_score_stage_adds_columns_and_batches_do_not_change_results():
    texts = ["안녕하세요", "파이썬으로 리스트를 정렬하는 방법을 알려줘", "서울의 인구는 몇 명인가요?"] * 3
    table = pa.table({"instruction": texts})
    whole = score(table, make_scorer("kiwi"))
    batched = score(table, make_scorer("kiwi"), batch_rows=2)
    assert whole.column("ppl").to_pylist() == batched.column("ppl").to_pylist()
    assert whole.column("n_tokens").type == pa.int32() and whole.column("ppl").null_count == 0


def test_hf_scorer_without_torch_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(KoqualityError, match=r"pip install 'koquality\[hf\]'"):
        make_scorer("hf", model="EleutherAI/polyglot-ko-1.3b")


def test_unknown_backends():
    with pytest.raises(KoqualityError, match="unknown scorer 'gpt'"):
        make_scorer("gpt")
    with pytest.raises(KoqualityError, match="unknown encoder 'bow'"):
        make_encoder("bow")


def test_tfidf_vectors_are_normalised_deterministic_and_meaningful():
    texts = ["김치찌개 맛있게 끓이는 법", "김치찌개를 끓이는 방법을 알려줘", "파이썬 리스트 정렬 방법",
             "파이썬에서 리스트를 정렬하는 법", "제주도 여행 일정 추천", "제주도 3박 4일 여행 코스"] * 2
    table = pa.table({"instruction": texts})
    a = embed(table, make_encoder("tfidf", dims=8, seed=1))
    b = embed(table, make_encoder("tfidf", dims=8, seed=1))
    assert a.shape == (12, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    sim = a @ a.T
    assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[2, 4]
