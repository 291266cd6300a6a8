"""Stage 3 — embed: one vector per instruction, row i of the array for row i of the table.

The paper embeds with BM-K/KoSimCSE-roberta-multitask (`hf` backend); the offline default is TF-IDF over Kiwi
morphemes reduced by truncated SVD (`tfidf`). A backend is anything with `encode(texts) -> np.ndarray`
(float32, one row per text); it is registered with its settings in ../backends.py.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import pyarrow as pa

from .. import progress
from ..tables import require_columns

class Encoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def config(self) -> dict[str, Any]: ...


def make_encoder(name: str = "tfidf", **settings: Any) -> Encoder:
    """A registered encoder (../backends.py) by name; a setting it does not take is an error, not ignored."""
    from ..backends import backend  # here: the registry imports the backend modules, which import this one

    return backend("embed", name).build(settings, strict=True)


def embed(table: pa.Table, encoder: Encoder, field: str = "instruction") -> np.ndarray:
    require_columns(table, [field], "embed")
    texts = table.column(field).to_pylist()
    with progress.stage("embed", len(texts)) as advance:
        vectors = encoder.encode(texts)
        advance(len(texts))
    if vectors.shape[0] != len(texts):
        raise RuntimeError(f"encoder returned {vectors.shape[0]} vectors for {len(texts)} texts")
    return np.ascontiguousarray(vectors, dtype=np.float32)
