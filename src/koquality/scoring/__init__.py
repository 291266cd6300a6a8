"""Stage 2 — score: perplexity of each instruction (`ppl`) and the number of units it was computed over
(`n_tokens`).

The paper scores instructions with EleutherAI/polyglot-ko-1.3b (`hf` backend); the offline default uses
Kiwi's own Korean language model (`kiwi` backend: log-probability of Kiwi's analysis per prediction, the
first morpheme counted by its surprisal above the average first morpheme's, foreign spellings priced per
character; see kiwi.py). A backend is anything with
`score(texts) -> np.ndarray` of `SCORE_DTYPE` rows; it is registered with its settings in ../backends.py.
A text that cannot be scored gets `ppl` NaN here and null in the table — never a made-up number.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import pyarrow as pa

from .. import progress
from ..tables import require_columns, set_column, with_optional_input

SCORE_DTYPE = np.dtype([("ppl", "f8"), ("n_tokens", "i4")])


class Scorer(Protocol):
    def score(self, texts: Sequence[str]) -> np.ndarray: ...

    def config(self) -> dict[str, Any]: ...


def make_scorer(name: str = "kiwi", **settings: Any) -> Scorer:
    """A registered scorer (../backends.py) by name; a setting it does not take is an error, not ignored."""
    from ..backends import backend  # here: the registry imports the backend modules, which import this one

    return backend("score", name).build(settings, strict=True)


def score(table: pa.Table, scorer: Scorer, field: str = "instruction", batch_rows: int = 4096,
          morphemes: Any = None) -> pa.Table:
    """Add `ppl` (null where the text cannot be scored) and `n_tokens` to `table`. With `morphemes` (a
    ..morphemes.MorphemeWriter) and a scorer that analyses into morphemes (`analyse`, the kiwi scorer), the
    morphemes of each batch are written there by row id (`table` then needs an `id` column)."""
    require_columns(table, [field] + (["id"] if morphemes is not None else []), "score")
    texts = table.column(field).to_pylist()
    analyse = getattr(scorer, "analyse", None) if morphemes is not None else None
    ids = table.column("id").to_pylist() if analyse is not None else None
    result = np.empty(len(texts), SCORE_DTYPE)
    with progress.stage("score", len(texts)) as advance:
        for start in range(0, len(texts), batch_rows):
            batch = texts[start:start + batch_rows]
            if analyse is not None:
                result[start:start + len(batch)], forms = analyse(batch)
                morphemes.write(ids[start:start + len(batch)], forms)
            else:
                result[start:start + len(batch)] = scorer.score(batch)
            advance(len(batch))
    ppl = result["ppl"]
    table = set_column(table, "ppl", pa.array(ppl, type=pa.float64(), mask=np.isnan(ppl)))
    return set_column(table, "n_tokens", pa.array(result["n_tokens"], type=pa.int32()))


def score_rows(table: pa.Table, scorer: Any) -> pa.Table:
    """`table` with the columns of a backend that reads several of its columns (`score_rows`: the IFD scorer,
    the decontamination filter; see ../backends.py), NaN and None as nulls — no value, never a number. A
    table without `input` is scored as if every input were empty."""
    table = with_optional_input(table, ["input"])
    for column, values in scorer.score_rows(table).items():
        table = set_column(table, column, _column(values))
    return table


def _column(values) -> pa.Array:
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return pa.array(values.astype(np.float64), mask=np.isnan(values))
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        return pa.array(values.astype(np.int32))
    return pa.array(list(values), pa.string() if not isinstance(values, np.ndarray) else None)
