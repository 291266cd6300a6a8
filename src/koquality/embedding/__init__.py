"""Stage 3 — embed: one vector per instruction, row i of the array for row i of the table.

The paper embeds with BM-K/KoSimCSE-roberta-multitask (`hf` backend); the offline default is TF-IDF over Kiwi
morphemes reduced by truncated SVD (`tfidf`). A backend is anything with `encode(texts) -> np.ndarray`
(float32, one row per text) and a `config()` that identifies its vectors for caching.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np
import pyarrow as pa

from .. import progress
from ..errors import KoqualityError
from ..tables import require_columns

ENCODERS = ("tfidf", "hf", "st")


class Encoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...

    def config(self) -> dict[str, Any]: ...


def make_encoder(name: str = "tfidf", **options: Any) -> Encoder:
    if name == "tfidf":
        from .tfidf import TfidfEncoder

        return TfidfEncoder(**{k: v for k, v in options.items() if v is not None})
    if name in ("hf", "st"):
        from .hf import make_hf_encoder

        return make_hf_encoder(name, **options)
    raise KoqualityError(f"unknown encoder '{name}' (expected one of: {', '.join(ENCODERS)})")


# The settings each backend takes: the CLI and recipes carry them all, and each backend gets only its own.
ENCODER_SETTINGS = {
    "tfidf": ("dims", "seed"),
    "hf": ("model", "revision", "pooling", "max_length", "batch_tokens", "device", "dtype", "normalize",
           "trust_remote_code"),
    "st": ("model", "revision", "max_length", "device", "normalize", "trust_remote_code"),
}


def encoder_for(name: str, settings: dict[str, Any]) -> Encoder:
    return make_encoder(name, **{k: settings[k] for k in ENCODER_SETTINGS.get(name, ()) if k in settings})


def cache_parts(name: str) -> tuple:
    """What identifies a backend's vectors beyond the recipe's settings and its library's version, for the
    cache key: TF-IDF's Kiwi options and model files (issue 11 dropped Kiwi's multi-word dictionary).
    Empty for `hf` and `st`, whose keys stay as they were."""
    if name == "tfidf":
        from ..kiwi import kiwi_settings

        return ("kiwi", kiwi_settings())
    return ()


def embed(table: pa.Table, encoder: Encoder, field: str = "instruction") -> np.ndarray:
    require_columns(table, [field], "embed")
    texts = table.column(field).to_pylist()
    with progress.stage("embed", len(texts)) as advance:
        vectors = encoder.encode(texts)
        advance(len(texts))
    if vectors.shape[0] != len(texts):
        raise RuntimeError(f"encoder returned {vectors.shape[0]} vectors for {len(texts)} texts")
    return np.ascontiguousarray(vectors, dtype=np.float32)
