"""The `ifd` scorer (Instruction-Following Difficulty) on a tiny GPT-NeoX built here: the batched scores equal
a plain per-sample fp32 loop of the definition, truncation is counted, and nothing depends on batching or row
order. Skipped when the `hf` extra (torch, transformers) is not installed."""

import json
import math
import random
from importlib import resources

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import build_causal_lm  # noqa: E402

from koquality.backends import backend, settings_fields  # noqa: E402
from koquality.errors import KoqualityError  # noqa: E402
from koquality.scoring import make_scorer  # noqa: E402

COLUMNS = ("ppl_answer", "ppl_answer_alone", "ifd", "n_answer_tokens", "answer_tokens_cut")


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory):
    return build_causal_lm(tmp_path_factory.mktemp("models") / "tiny-neox")


@pytest.fixture(scope="module")
def tokenizer(lm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(lm_path)


@pytest.fixture(scope="module")
def rows(tokenizer):
    """40 demo rows (some with an input), then: an answer truncated away, one truncated in part, an empty answer."""
    demo = json.loads((resources.files("koquality") / "data" / "demo" / "alpaca.json").read_text(encoding="utf-8"))
    rows = [{"instruction": r["instruction"], "input": r["input"] or None, "output": r["output"]} for r in demo[:40]]
    assert sum(r["input"] is not None for r in rows) >= 5
    per_word = len(tokenizer("서울 " * 100, add_special_tokens=False).input_ids) / 100
    rows.append({"instruction": "서울 " * int(1100 / per_word), "input": None, "output": "부산입니다."})
    rows.append({"instruction": "서울 " * int(950 / per_word), "input": None, "output": "부산 " * int(200 / per_word)})
    rows.append({"instruction": "서울의 인구는?", "input": None, "output": ""})
    return rows


@pytest.fixture(scope="module")
def scorer(lm_path):
    return make_scorer("ifd", model=str(lm_path), device="cpu")


def texts(row):
    prompt = f"{row['instruction']}\n\n{row['input']}" if row["input"] else row["instruction"]
    whole_prefix = f"### 질문: {prompt}### 답변: "
    return (whole_prefix + row["output"], len(whole_prefix)), ("### 답변: " + row["output"], len("### 답변: "))


def reference(model_path, rows, max_length=1024):
    """The definition, one text at a time in fp32: the answer tokens are those whose span ends after the
    prefix; ppl = exp(mean of −log P(token | tokens before it)) over those at positions ≥ 1."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()

    def answer_ppl(text, prefix_chars):
        enc = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length, return_offsets_mapping=True)
        answer = [t for t, (_, end) in enumerate(enc.offset_mapping) if end > prefix_chars and t >= 1]
        full = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
        cut = sum(end > prefix_chars for _, end in full) - sum(end > prefix_chars for _, end in enc.offset_mapping)
        if not answer:
            return math.nan, 0, cut
        with torch.no_grad():
            logits = model(torch.tensor([enc.input_ids])).logits[0].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        nll = [-log_probs[t - 1, enc.input_ids[t]].item() for t in answer]
        return math.exp(sum(nll) / len(nll)), len(answer), cut

    out = {c: [] for c in COLUMNS}
    for row in rows:
        whole, alone = texts(row)
        ppl, n, cut = answer_ppl(*whole)
        ppl_alone, _, _ = answer_ppl(*alone)
        for column, value in zip(COLUMNS, (ppl, ppl_alone, ppl / ppl_alone, n, cut)):
            out[column].append(value)
    return {c: np.array(v) for c, v in out.items()}


def check_equal(got, expected):
    for column in COLUMNS:
        if column in ("n_answer_tokens", "answer_tokens_cut"):
            assert got[column].dtype == np.int32
            np.testing.assert_array_equal(got[column], expected[column], err_msg=column)
        else:
            assert got[column].dtype == np.float64
            np.testing.assert_array_equal(np.isnan(got[column]), np.isnan(expected[column]), err_msg=column)
            np.testing.assert_allclose(got[column], expected[column], rtol=1e-4, equal_nan=True, err_msg=column)


def test_batched_ifd_equals_the_per_sample_loop(lm_path, rows, scorer):
    got = scorer.score_rows(pa.Table.from_pylist(rows))
    check_equal(got, reference(lm_path, rows))
    assert np.isfinite(got["ifd"][:40]).all()


def test_truncated_and_empty_answers(scorer, rows):
    got = scorer.score_rows(pa.Table.from_pylist(rows[-3:]))
    gone, partial, empty = 0, 1, 2
    # the answer truncated away: no conditional perplexity, its tokens counted as cut; the alone one is fine
    assert math.isnan(got["ppl_answer"][gone]) and math.isnan(got["ifd"][gone]) and np.isfinite(got["ppl_answer_alone"][gone])
    assert got["n_answer_tokens"][gone] == 0 and got["answer_tokens_cut"][gone] > 0
    assert got["n_answer_tokens"][partial] > 0 and got["answer_tokens_cut"][partial] > 0
    assert np.isfinite(got["ifd"][partial])
    assert np.isnan([got[c][empty] for c in COLUMNS[:3]]).all()
    assert got["n_answer_tokens"][empty] == 0 and got["answer_tokens_cut"][empty] == 0


def test_short_max_length_equals_the_loop(lm_path, rows):
    """At 64 tokens most answers are cut in part or whole, alone ones too."""
    got = make_scorer("ifd", model=str(lm_path), device="cpu", max_length=64).score_rows(pa.Table.from_pylist(rows))
    expected = reference(lm_path, rows, max_length=64)
    check_equal(got, expected)
    assert (got["answer_tokens_cut"] > 0).sum() > 20 and np.isnan(got["ppl_answer"]).sum() >= 2


def test_a_token_straddling_the_boundary_belongs_to_the_answer(tokenizer, scorer):
    """The space after `답변:` is glued to the answer's first word: that token starts in the prefix and ends in
    the answer, and it is scored."""
    row = {"instruction": "서울의 인구는?", "input": None, "output": "약 천만 명입니다."}
    (whole, prefix_chars), _ = texts(row)
    offsets = tokenizer(whole, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
    first = next(t for t, (_, end) in enumerate(offsets) if end > prefix_chars)
    assert offsets[first][0] < prefix_chars < offsets[first][1]
    got = scorer.score_rows(pa.Table.from_pylist([row]))
    assert got["n_answer_tokens"][0] == len(offsets) - first


def test_the_first_token_is_never_scored(scorer):
    """Token 0 has no prediction: an answer starting there is scored from token 1, a one-token answer not at all."""
    ids = scorer.lm.tokenizer("서울의 인구는 약 천만 명입니다.", add_special_tokens=False).input_ids
    from_0, from_1, alone = scorer.answer_nll([ids, ids, ids[:1]], [0, 1, 0])
    assert from_0 == from_1 and math.isnan(alone)


def test_values_depend_neither_on_batching_nor_on_row_order(lm_path, rows, scorer):
    table = pa.Table.from_pylist(rows)
    base = scorer.score_rows(table)
    for batch_tokens in (1, 300, 8192):
        other = make_scorer("ifd", model=str(lm_path), device="cpu", batch_tokens=batch_tokens).score_rows(table)
        for column in COLUMNS:
            np.testing.assert_allclose(other[column], base[column], rtol=1e-5, equal_nan=True, err_msg=column)
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    shuffled = scorer.score_rows(table.take(order))
    for column in COLUMNS:
        unshuffled = np.empty_like(shuffled[column])
        unshuffled[order] = shuffled[column]
        np.testing.assert_allclose(unshuffled, base[column], rtol=1e-5, equal_nan=True, err_msg=column)


def test_ifd_is_the_ratio_of_perplexities(scorer, rows):
    got = scorer.score_rows(pa.Table.from_pylist(rows[:10]))
    np.testing.assert_array_equal(got["ifd"], got["ppl_answer"] / got["ppl_answer_alone"])


def test_input_column_absent_or_null(scorer, rows):
    plain = [{"instruction": r["instruction"], "output": r["output"]} for r in rows[:8]]
    without = scorer.score_rows(pa.Table.from_pylist(plain))
    null = scorer.score_rows(pa.Table.from_pylist(plain).append_column("input", pa.nulls(8)))
    empty = scorer.score_rows(pa.Table.from_pylist([{**r, "input": ""} for r in plain]))
    for column in COLUMNS:
        np.testing.assert_array_equal(without[column], null[column])
        np.testing.assert_array_equal(without[column], empty[column])


def test_registered_with_the_hf_settings(lm_path):
    ifd = backend("score", "ifd")
    assert ifd.reads == ("instruction", "input", "output") and ifd.writes == COLUMNS
    settings_fields("score")  # a setting it shares with hf has hf's type, or this raises
    built = ifd.build({"model": str(lm_path), "device": "cpu", "max_length": 128}, strict=True)
    assert built.config()["scorer"] == "ifd" and built.config()["max_length"] == 128
    with pytest.raises(KoqualityError, match=r"^--max-length 1: expected a number at least 2$"):
        ifd.build({"model": str(lm_path), "max_length": 1}, strict=True)
    with pytest.raises(KoqualityError, match="the ifd scorer takes no setting add_bos"):
        ifd.build({"model": str(lm_path), "add_bos": True}, strict=True)
    with pytest.raises(KoqualityError, match="the ifd scorer needs --model"):
        ifd.build({}, strict=True)
    with pytest.raises(KoqualityError, match="--device tpu: expected auto, cpu or cuda"):
        ifd.build({"model": str(lm_path), "device": "tpu"}, strict=True)
