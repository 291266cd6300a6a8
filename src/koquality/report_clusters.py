"""The report's per-cluster table: each (length group, cluster) cell's size, kept rows and top terms.

A cluster number says nothing; its top terms give it a name. The terms are Kiwi's nouns (common and proper
nouns, and Latin-script words, of two or more characters) ranked by TF-IDF with each cell as one document, a
noun counted once per row: a term that many of the cell's rows use and few other cells do ranks first. Kiwi
reads at most about TERMS_ROWS instructions (a seeded sample of each large cell; their first 200 characters),
a few seconds on two cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TERMS_ROWS = 10_000  # instructions Kiwi reads for the clusters' top terms (a seeded sample per cluster beyond that)
TOP_TERMS = 5


def cell_table(len_group: np.ndarray, cluster: np.ndarray, selected: np.ndarray, ppl: np.ndarray) -> list[dict[str, Any]]:
    """One entry per (length group, cluster) cell: its rows (indices), size, kept count and median perplexity."""
    if not len(len_group):
        return []
    keys = len_group.astype(np.int64) * (int(cluster.max()) + 1) + cluster.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    cells = []
    for a, b in zip(starts, ends):
        rows = order[a:b]
        cells.append({"len_group": int(len_group[rows[0]]), "cluster": int(cluster[rows[0]]), "rows": rows,
                      "size": int(b - a), "kept": int(selected[rows].sum()), "median_ppl": float(np.median(ppl[rows]))})
    return cells


def term_sample(cells: list[dict[str, Any]], seed: int) -> dict[tuple[int, int], np.ndarray]:
    """The rows whose instructions name each cell: all of a small cell, a seeded sample of a large one."""
    cap = int(np.clip(TERMS_ROWS // max(len(cells), 1), 5, 300))
    rng = np.random.default_rng(seed)
    return {(c["len_group"], c["cluster"]): np.sort(rng.choice(c["rows"], cap, replace=False)) if c["size"] > cap
            else c["rows"] for c in cells}


def _nouns(texts: list[str]) -> list[list[str]]:
    """Kiwi's common and proper nouns (and Latin-script words) of two or more characters in each text, each once."""
    if not texts:
        return []
    from .kiwi import get_kiwi

    out = []
    for tokens in get_kiwi().tokenize([t[:200] for t in texts]):
        words = [t.form.lower() if t.tag == "SL" else t.form for t in tokens
                 if t.tag in ("NNG", "NNP", "SL") and len(t.form) > 1]  # one syllable: 때, 일, 수… name nothing
        out.append(list(dict.fromkeys(words)))
    return out


def _identity(document):
    return document


def cluster_terms(nouns_by_cell: dict[tuple[int, int], list[list[str]]], top: int = TOP_TERMS) -> dict[tuple[int, int], list[str]]:
    """Top terms of each cell: TF-IDF with each cell as one document (a noun counts once per row), so a term
    that many of the cell's rows use and few other cells do ranks first. Ties go alphabetically."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    keys = list(nouns_by_cell)
    documents = [[w for row in nouns_by_cell[k] for w in row] for k in keys]
    if not any(documents):
        return {k: [] for k in keys}
    vectorizer = TfidfVectorizer(analyzer=_identity, sublinear_tf=True)
    matrix = vectorizer.fit_transform(documents).tocsr()
    vocabulary = vectorizer.get_feature_names_out()
    terms = {}
    for row, key in enumerate(keys):
        lo, hi = matrix.indptr[row], matrix.indptr[row + 1]
        ranked = sorted(zip(matrix.data[lo:hi], matrix.indices[lo:hi]), key=lambda t: (-round(float(t[0]), 9), vocabulary[t[1]]))
        terms[key] = [str(vocabulary[i]) for _, i in ranked[:top]]
    return terms


def cell_names(term_rows: dict[tuple[int, int], np.ndarray], instruction) -> dict[tuple[int, int], list[str]]:
    """Top terms of each cell from the instructions (`instruction(row)`) of its sampled rows."""
    keys = list(term_rows)
    nouns = _nouns([instruction(i) for k in keys for i in term_rows[k]])
    by_cell, at = {}, 0
    for k in keys:
        by_cell[k], at = nouns[at:at + len(term_rows[k])], at + len(term_rows[k])
    return cluster_terms(by_cell)
