"""Transformer sentence embeddings (the paper: BM-K/KoSimCSE-roberta-multitask, pooler output).

The paper embedded one instruction at a time padded to 512 tokens; here rows are sorted by length and
batched under a token budget with dynamic padding, in `inference_mode`, bf16 on GPU. `st` loads any
sentence-transformers model and lets it pool as it was trained to.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field

from ..backends import Backend, Settings

from ..errors import KoqualityError
from ..torch_utils import (from_pretrained, import_torch, load_options, resolve_device, resolve_dtype, resolved_device_dtype,
                           right_padded,
                           token_budget_batches)

POOLINGS = ("pooler", "cls", "mean")


class HFEncoder:
    def __init__(self, model: str | None = None, revision: str | None = None, pooling: str = "pooler",
                 max_length: int = 512, batch_tokens: int | None = None, device: str = "auto", dtype: str = "auto",
                 normalize: bool = False, trust_remote_code: bool = False):
        torch = import_torch("the hf encoder")
        if not model:
            raise KoqualityError("the hf encoder needs --model NAME_OR_PATH (the paper: BM-K/KoSimCSE-roberta-multitask)")
        if pooling not in POOLINGS:
            raise KoqualityError(f"--pooling {pooling}: expected one of {', '.join(POOLINGS)}")
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.model_name, self.revision, self.pooling = model, revision, pooling
        self.max_length, self.normalize = max_length, normalize
        self.device = resolve_device(torch, device)
        self.batch_tokens = batch_tokens or (4096 if self.device == "cpu" else 65536)
        self.dtype = resolve_dtype(torch, dtype, self.device)
        options = load_options(revision, trust_remote_code)
        self.tokenizer = from_pretrained(AutoTokenizer, model, "a tokenizer", **options)
        self.model = from_pretrained(AutoModel, model, "an encoder model", dtype=self.dtype, **options).to(self.device).eval()
        if pooling == "pooler" and getattr(self.model, "pooler", None) is None:
            raise KoqualityError(f"--pooling pooler: {model} has no pooler layer (use --pooling cls or mean)")

    def config(self) -> dict[str, Any]:
        return {"encoder": "hf", "model": self.model_name, "revision": self.revision, "pooling": self.pooling,
                "max_length": self.max_length, "dtype": str(self.dtype), "normalize": self.normalize}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        torch = self.torch
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out: np.ndarray | None = None
        with torch.inference_mode():
            for batch in token_budget_batches([len(r) for r in ids], self.batch_tokens):
                input_ids, mask = right_padded(torch, [ids[i] for i in batch], pad, self.device)
                result = self.model(input_ids=input_ids, attention_mask=mask)
                if self.pooling == "pooler":
                    pooled = result.pooler_output
                elif self.pooling == "cls":
                    pooled = result.last_hidden_state[:, 0]
                else:
                    m = mask.unsqueeze(-1).to(result.last_hidden_state.dtype)
                    pooled = (result.last_hidden_state * m).sum(1) / m.sum(1)
                pooled = pooled.float()
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                if out is None:
                    out = np.empty((len(ids), pooled.shape[-1]), dtype=np.float32)
                out[batch] = pooled.cpu().numpy()
        return out if out is not None else np.zeros((0, self.model.config.hidden_size), dtype=np.float32)


class STEncoder:
    def __init__(self, model: str | None = None, revision: str | None = None, device: str = "auto",
                 normalize: bool = False, batch_size: int = 128, max_length: int | None = None,
                 trust_remote_code: bool = False):
        torch = import_torch("the st encoder")
        if not model:
            raise KoqualityError("the st encoder needs --model NAME_OR_PATH")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise KoqualityError("the st encoder needs sentence-transformers: pip install 'koquality[hf]'") from None
        self.model_name, self.revision, self.normalize, self.batch_size = model, revision, normalize, batch_size
        self.model = from_pretrained(_SentenceTransformerLoader(SentenceTransformer), model, "a sentence-transformers model",
                                     device=resolve_device(torch, device), revision=revision,
                                     trust_remote_code=trust_remote_code)
        if max_length:
            self.model.max_seq_length = max_length

    def config(self) -> dict[str, Any]:
        return {"encoder": "st", "model": self.model_name, "revision": self.revision, "normalize": self.normalize,
                "max_length": self.model.max_seq_length}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=self.normalize,
                                 convert_to_numpy=True).astype(np.float32)


class _SentenceTransformerLoader:
    """SentenceTransformer's constructor in `from_pretrained`'s shape, so it fails the same one-line way."""

    def __init__(self, cls):
        self.cls = cls

    def from_pretrained(self, name: str, **options: Any):
        return self.cls(name, **options)


def make_hf_encoder(name: str, **options: Any):
    options = {k: v for k, v in options.items() if v is not None}
    return HFEncoder(**options) if name == "hf" else STEncoder(**options)


class HFEncoderSettings(Settings):
    model: str | None = Field(None, description="hub id or local path (the paper: BM-K/KoSimCSE-roberta-multitask)")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    pooling: Literal["pooler", "cls", "mean"] = Field("pooler", description="hf: pooler (the paper), cls or mean")
    max_length: int = Field(512, ge=1, description="truncate at this many tokens")
    batch_tokens: int | None = Field(None, ge=1, description="hf: token budget per batch (default: 4096 on CPU, 65536 on GPU)")
    device: str = Field("auto", description="auto, cpu or cuda")
    dtype: str = Field("auto", description="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16")
    normalize: bool = Field(False, description="L2-normalise the vectors")
    trust_remote_code: bool = Field(False, description="run the model repository's own code")


class STEncoderSettings(Settings):
    model: str | None = Field(None, description="hub id or local path (the paper: BM-K/KoSimCSE-roberta-multitask)")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    max_length: int | None = Field(None, ge=1, description="truncate at this many tokens (default: the model's own)")
    device: str = Field("auto", description="auto, cpu or cuda")
    normalize: bool = Field(False, description="L2-normalise the vectors")
    trust_remote_code: bool = Field(False, description="run the model repository's own code")


BACKENDS = (
    Backend("embed", "hf", "koquality.embedding.hf:HFEncoder", HFEncoderSettings, writes=("vector",),
            help="a Hugging Face encoder (the paper's KoSimCSE)", library="transformers", extra="hf",
            modules=("torch", "transformers"), resolve=resolved_device_dtype),
    Backend("embed", "st", "koquality.embedding.hf:STEncoder", STEncoderSettings, writes=("vector",),
            help="a sentence-transformers model", library="sentence_transformers", extra="hf",
            modules=("torch", "sentence_transformers")),
)
