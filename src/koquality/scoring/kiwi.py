"""Perplexity per prediction under Kiwi's Korean language model (the offline stand-in for the paper's causal LM).

    ppl = exp((−log P(analysis) − H₀ + spelling) / (n + 1)),   n_tokens = n + 1

`log P(analysis)` is the score Kiwi gives the best analysis of the text: the chain rule of its CoNg language
model (`cong.mdl` from kiwipiepy-model) over the n morphemes, log P(m₁ | start) + … + log P(mₙ | m<ₙ), plus
log P(end | m≤ₙ): the end of the text is a prediction too, so a text of n morphemes makes n + 1 of them
and the average is over n + 1. (The scorer before issue 11 divided the same sum by n, so in a one-morpheme
text the end counted twice.)

What Kiwi's score is, checked against `Kiwi.predict_next_morpheme` (CoNg's next-morpheme distribution, whose
probabilities sum to 1): each morpheme's share (`Token.score`) is CoNg's log P(morpheme | context) exactly for
ordinary morphemes, and the rest of the analysis score is log P(end | context) (tests/test_kiwi_scorer.py).
Kiwi adds to some morphemes the analyser's log-penalties for spacing and morphotactics (a particle written
after a space, a proper noun glued to the word before, an uncontracted ending: 3-10 nats, up to 100 for an
impossible combination) and, for dictionary and unknown words, the dictionary's log-prior or its character
model's log-probability of the spelling.
Those mark mis-spaced text and rare words, so they stay in. A text of several sentences is analysed sentence
by sentence, each starting afresh and paying its own end.

Three corrections make it a fluency measure rather than an analyser artefact:

* The first morpheme (H₀). It is predicted from the start of the text alone, so its surprisal (8-12 nats
  for a topic word) says what the text is about, not how well it is written; every text pays it once, and
  in a text of one or two morphemes it is most of the score: that is why short rows looked 10⁵-10⁸× less
  fluent. We subtract H₀, the entropy of CoNg's start-of-text distribution (6.43 nats with kiwipiepy-model
  0.24, computed from the model, not tuned): the first morpheme counts by how much more surprising it is
  than an average first morpheme. Long texts barely move; the median of 1-2-morpheme rows comes within 5×
  of rows with ≥ 6 on the shared data (benchmarks/RESULTS.md).
* Spellings the model does not predict. CoNg has one vocabulary entry for *any* Latin-script word (tag SL),
  one for any Hanja word (SH), number (SN), other symbol or script (SW), URL, e-mail, hashtag, mention, serial
  or emoji. Its log-probability for such a token is that of the class ("a Latin word comes next"), not of the
  word: after one SL another is almost certain, so English text got the best perplexity of all. The text's
  probability needs P(word | class) too; with no model of foreign spellings we use the maximum-entropy one,
  each character uniform over its alphabet (`char_nats`: 26 Latin letters, 10 digits, 51 Hangul jamo, the
  4,888 Hanja of KS X 1001, 50 for another alphabet or syllabary, 32 ASCII symbols, 1,000 for any other
  symbol or emoji). `capital` costs 7 × ln 26 = 22.8 nats, `2024` 9.2, `ㅋㅋ` 7.9, where a Korean morpheme
  costs 0-12 in context. Non-Korean text ranks as the least fluent Korean, Korean text quoting a foreign word
  pays for that word, and punctuation (closed classes: . ? ! , …) is not charged.
* Multi-word dictionary entries. Kiwi's multi-word dictionary (WikiData titles) makes `부치지 못한 편지` one
  proper noun priced by a −29-nat dictionary prior (7.3e15 before). The scorer's Kiwi is built without it
  (see ..kiwi), so the language model predicts the words themselves (ppl 154).

Rows with no morpheme get NaN (never a made-up number); an overflowing exp (garbled text past e⁷⁰⁹) is inf.
`n_tokens` is the number of predictions averaged over: morphemes + the end. The morphemes (form/tag) come
out of the same analysis and are what TF-IDF embeds (`analyse`), so a run analyses each instruction once.
"""

from __future__ import annotations

import functools
import math
import unicodedata
from typing import Any, Sequence

import numpy as np

from ..backends import Backend, Settings
from ..errors import KoqualityError
from ..kiwi import get_kiwi, kiwi_settings, kiwi_version, morpheme_string
from . import SCORE_DTYPE

# Kiwi tags whose single vocabulary entry in CoNg stands for an open set of strings.
OPEN_CLASS_TAGS = frozenset({"SL", "SH", "SN", "SW", "W_URL", "W_EMAIL", "W_HASHTAG", "W_MENTION", "W_SERIAL",
                             "W_EMOJI"})

_LN = {n: math.log(n) for n in (10, 26, 32, 50, 51, 1000, 4888)}


def char_nats(c: str) -> float:
    """−log P(c) under a uniform choice from the alphabet of `c`: the spelling model of an open-class token."""
    o = ord(c)
    if o < 128:
        if c.isdigit():
            return _LN[10]
        if c.isalpha():
            return _LN[26]
        return _LN[32]  # ASCII punctuation and symbols
    if 0x3131 <= o <= 0x318E or 0x1100 <= o <= 0x11FF:  # Hangul jamo (ㅋ, ㅠ, …)
        return _LN[51]
    if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF:  # Han (Hanja)
        return _LN[4888]
    if c.isdigit():
        return _LN[10]
    if c.isalpha():
        return _LN[26] if unicodedata.name(c, "").startswith("LATIN") else _LN[50]
    return _LN[1000]


def spelling_nats(form: str) -> float:
    return sum(char_nats(c) for c in form)


@functools.lru_cache(maxsize=4)
def start_entropy(num_workers: int = -1) -> float:
    """H₀ = −Σ P(m | start) ln P(m | start) over CoNg's whole vocabulary (morpheme id 0 is the start)."""
    try:
        predicted = get_kiwi(num_workers).predict_next_morpheme([0], top_n=1 << 22)
    except ValueError as e:  # a Kiwi built on another language model
        raise KoqualityError(f"the kiwi scorer needs Kiwi's CoNg language model (kiwipiepy-model): {e}") from None
    log_p = np.array([m.score for m in predicted], dtype=np.float64)
    return float(-(np.exp(log_p) * log_p).sum())


class KiwiScorer:
    def __init__(self, num_workers: int = -1):
        self.num_workers = num_workers

    def config(self) -> dict[str, Any]:
        return {"scorer": "kiwi", "formula": "(spelling - log P - H0) / (n + 1)", **kiwi_settings(),
                "kiwipiepy": kiwi_version()}

    def score(self, texts: Sequence[str]) -> np.ndarray:
        return self.analyse(texts, morphemes=False)[0]

    def analyse(self, texts: Sequence[str], morphemes: bool = True) -> tuple[np.ndarray, list[list[str]] | None]:
        """Scores of `texts` and, with `morphemes`, each text's morphemes as `form/tag` (TF-IDF's tokens)."""
        out = np.empty(len(texts), SCORE_DTYPE)
        log_ppl = np.empty(len(texts))
        forms: list[list[str]] | None = [] if morphemes else None
        h0 = start_entropy(self.num_workers)
        for i, candidates in enumerate(get_kiwi(self.num_workers).analyze(list(texts), top_n=1)):
            tokens, log_prob = candidates[0]
            n = len(tokens)
            spelling = 0.0
            for t in tokens:
                if t.tag in OPEN_CLASS_TAGS:
                    spelling += spelling_nats(t.form)
            log_ppl[i] = (spelling - log_prob - h0) / (n + 1) if n else math.nan
            out["n_tokens"][i] = n + 1 if n else 0
            if forms is not None:
                forms.append([morpheme_string(t) for t in tokens])
        # Garbled text can have a log-perplexity past 709, beyond float64: its perplexity is infinite, not an error.
        with np.errstate(over="ignore"):
            out["ppl"] = np.exp(log_ppl)
        return out, forms


class KiwiSettings(Settings):
    """None: Kiwi's model files and options (`..kiwi`) are the whole configuration."""


def _key_parts() -> tuple:
    # the formula's version (issue 11 changed it) and Kiwi's options and model files
    return ("kiwi-lm-per-prediction-2", kiwi_settings())


BACKENDS = (Backend("score", "kiwi", "koquality.scoring.kiwi:KiwiScorer", KiwiSettings, writes=("ppl", "n_tokens"),
                    help="offline: Kiwi's Korean language model (CoNg)", library="kiwipiepy", modules=("kiwipiepy",),
                    key_parts=_key_parts),)
