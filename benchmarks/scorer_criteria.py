"""What makes an offline perplexity credible (issue 11), as functions shared by bench_offline_scorer.py and
tests/test_kiwi_scorer.py.

(a) a corrupted copy of a row scores worse (higher perplexity) than the row: morphemes shuffled (rejoined by
    Kiwi, so particles still attach), adjacent characters swapped, or a fifth of the Hangul syllables replaced
    by letters of other scripts. Reported over every row with ≥ 5 morphemes and over the Korean ones (most
    letters Hangul): the scorer judges Korean; a letter swap inside an English word changes nothing a Korean
    model knows (see scoring/kiwi.py: foreign spellings are priced per character, uniformly), and for
    non-Korean rows (c) is the criterion;
(b) short rows are comparable with long ones: median perplexity of rows with 1-2 morphemes / median of rows
    with ≥ 6 morphemes, within 100×;
(c) non-Korean text (English sentences, code) does not rank as the most fluent Korean;
and the Spearman correlation of perplexity with the number of morphemes.

`OldKiwiPathScorer` is the scorer koquality shipped before issue 11, kept here as the reference the figures
compare against: exp(−analysis score / morphemes) with Kiwi's default dictionaries.
"""

from __future__ import annotations

import math
import random
import re
from typing import Callable, Sequence

import numpy as np

HANGUL = re.compile("[가-힣]")
LATIN = re.compile("[A-Za-z]")
OTHER_SCRIPTS = ("abcdefghijklmnopqrstuvwxyz" "абвгдежзиклмнопрстуфхцчшщэюя" "αβγδεζηθικλμνξπρστυφχψω"
                 "あいうえおかきくけこさしすせそたちつてとなにぬねの")
CORRUPTIONS = ("shuffled morphemes", "swapped characters", "mixed scripts")


class OldKiwiPathScorer:
    """The pre-issue-11 `kiwi` scorer: exp(−Kiwi's analysis score / number of morphemes)."""

    def __init__(self, num_workers: int = -1):
        from kiwipiepy import Kiwi

        self.kiwi = Kiwi(num_workers=num_workers)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        log_ppl = np.full(len(texts), math.nan)
        for i, candidates in enumerate(self.kiwi.analyze(list(texts), top_n=1)):
            tokens, log_prob = candidates[0]
            if tokens:
                log_ppl[i] = -log_prob / len(tokens)
        with np.errstate(over="ignore"):
            return np.exp(log_ppl)


def korean(text: str) -> bool:
    """Most of the letters are Hangul syllables."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum("가" <= c <= "힣" for c in letters) >= 0.5 * len(letters)


def non_korean_lines(rows: Sequence[dict], min_chars: int = 20) -> list[str]:
    """Real English sentences and code lines found in the inputs and outputs of instruction rows: no Hangul,
    mostly Latin letters."""
    found = set()
    for r in rows:
        for field in ("input", "output"):
            for line in (r.get(field) or "").split("\n"):
                line = line.strip()
                letters = len(line.replace(" ", ""))
                if len(line) >= min_chars and not HANGUL.search(line) and len(LATIN.findall(line)) > 0.6 * letters:
                    found.add(line)
    return sorted(found)


def shuffle_morphemes(kiwi, morphemes: Sequence[str], seed: int) -> str:
    """The row's morphemes (`form/tag`) in another order, joined back into text by Kiwi."""
    pairs = [tuple(m.rsplit("/", 1)) for m in morphemes]
    rng = random.Random(seed)
    shuffled = list(pairs)
    for _ in range(20):
        rng.shuffle(shuffled)
        if shuffled != pairs:
            break
    try:
        return kiwi.join(shuffled)
    except Exception:  # a form Kiwi cannot rejoin: fall back to spaces
        return " ".join(form for form, _ in shuffled)


def swap_characters(text: str, seed: int) -> str:
    """Swap adjacent non-space characters at one position in ten (at least one)."""
    chars = list(text)
    rng = random.Random(seed)
    positions = [i for i in range(len(chars) - 1)
                 if not chars[i].isspace() and not chars[i + 1].isspace() and chars[i] != chars[i + 1]]
    for i in rng.sample(positions, min(len(positions), max(1, len(chars) // 10))):
        chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def mix_scripts(text: str, seed: int) -> str:
    """Replace a fifth of the Hangul syllables (at least one) with letters of other scripts."""
    chars = list(text)
    rng = random.Random(seed)
    hangul = [i for i, c in enumerate(chars) if "가" <= c <= "힣"]
    for i in rng.sample(hangul, min(len(hangul), max(1, len(hangul) // 5))):
        chars[i] = rng.choice(OTHER_SCRIPTS)
    return "".join(chars)


def corrupted(kiwi, texts: Sequence[str], morphemes: Sequence[Sequence[str]], seeds: Sequence[int]) -> dict[str, list[str]]:
    return {
        "shuffled morphemes": [shuffle_morphemes(kiwi, m, s) for m, s in zip(morphemes, seeds)],
        "swapped characters": [swap_characters(t, s) for t, s in zip(texts, seeds)],
        "mixed scripts": [mix_scripts(t, s) for t, s in zip(texts, seeds)],
    }


def worse(original: np.ndarray, corrupt: np.ndarray) -> np.ndarray:
    """(a): which corrupted copies have a higher perplexity than their row (a NaN is never worse)."""
    return np.nan_to_num(corrupt, nan=-np.inf) > np.nan_to_num(original, nan=np.inf)


def length_medians(ppl: np.ndarray, n_morphemes: np.ndarray) -> dict[str, float]:
    """(b): median perplexity by morpheme count, and the ratio short / long."""
    def med(mask):
        values = ppl[mask & ~np.isnan(ppl)]
        return float(np.median(values)) if values.size else math.nan

    out = {"1": med(n_morphemes == 1), "2": med(n_morphemes == 2), "1-2": med((n_morphemes >= 1) & (n_morphemes <= 2)),
           "6": med(n_morphemes == 6), ">=6": med(n_morphemes >= 6)}
    out["ratio 1-2 / >=6"] = out["1-2"] / out[">=6"]
    out["ratio 1 / >=6"] = out["1"] / out[">=6"]
    out["ratio 2 / >=6"] = out["2"] / out[">=6"]
    return out


def foreign_ranks(ppl_korean: np.ndarray, ppl_foreign: np.ndarray) -> dict[str, float]:
    """(c): where non-Korean rows rank among all rows by perplexity (0 % = most fluent)."""
    values = np.concatenate([ppl_korean, ppl_foreign])
    foreign = np.r_[np.zeros(len(ppl_korean), bool), np.ones(len(ppl_foreign), bool)]
    order = np.argsort(np.nan_to_num(values, nan=np.inf), kind="stable")
    percentile = np.empty(len(values))
    percentile[order] = np.arange(len(values)) / len(values) * 100
    top = lambda share: float(foreign[order[:max(1, int(len(values) * share))]].mean() * 100)
    return {"best percentile": float(percentile[foreign].min()), "median percentile": float(np.median(percentile[foreign])),
            "share in most fluent 1 %": top(0.01), "share in most fluent 10 %": top(0.10),
            "share overall": float(foreign.mean() * 100)}


def spearman(ppl: np.ndarray, n_morphemes: np.ndarray) -> float:
    from scipy.stats import spearmanr

    keep = ~np.isnan(ppl)
    return float(spearmanr(ppl[keep], n_morphemes[keep])[0])


def criteria(score: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str], n_morphemes: np.ndarray,
             corrupt_rows: np.ndarray, corrupt_texts: dict[str, list[str]], foreign: Sequence[str]) -> dict:
    """All figures for one scorer. `corrupt_rows` indexes `texts`; `corrupt_texts` holds their corrupted copies."""
    ppl = score(texts)
    hangul_rows = np.array([korean(texts[i]) for i in corrupt_rows], bool)
    worse_by = {name: worse(ppl[corrupt_rows], score(copies)) for name, copies in corrupt_texts.items()}
    return {
        "worse": {name: float(w.mean()) for name, w in worse_by.items()},
        "worse, Korean rows": {name: float(w[hangul_rows].mean()) for name, w in worse_by.items()},
        "Korean rows": int(hangul_rows.sum()),
        "medians": length_medians(ppl, n_morphemes),
        "foreign": foreign_ranks(ppl, score(foreign)),
        "spearman": spearman(ppl, n_morphemes),
    }
