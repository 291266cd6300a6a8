"""Perplexity under Kiwi's Korean language model: exp(−log-probability / number of morphemes) of the best
analysis. Offline, CPU-only, and fast (Kiwi analyses a batch over its worker threads); a stand-in for the
paper's causal LM that still ranks fluent Korean below noisy text."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..kiwi import get_kiwi, kiwi_version
from . import SCORE_DTYPE


class KiwiScorer:
    def __init__(self, num_workers: int = -1):
        self.num_workers = num_workers

    def config(self) -> dict[str, Any]:
        return {"scorer": "kiwi", "kiwipiepy": kiwi_version()}

    def score(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty(len(texts), SCORE_DTYPE)
        log_ppl = np.empty(len(texts))
        for i, candidates in enumerate(get_kiwi(self.num_workers).analyze(list(texts), top_n=1)):
            tokens, log_prob = candidates[0]
            n = len(tokens)
            log_ppl[i] = -log_prob / n if n else math.nan
            out["n_tokens"][i] = n
        # Garbled text can have a log-perplexity past 709, beyond float64: its perplexity is infinite, not an error.
        with np.errstate(over="ignore"):
            out["ppl"] = np.exp(log_ppl)
        return out
