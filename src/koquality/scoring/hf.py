"""Perplexity under a Hugging Face causal LM (the paper: EleutherAI/polyglot-ko-1.3b), batched and exact.

The paper scored one instruction at a time in fp32: exp(mean NLL of tokens 2..n), no BOS token, truncated
at 1,024 tokens. Here rows are tokenised once, sorted by length, packed into batches under a token budget,
right-padded, and scored with a per-token cross-entropy (`reduction="none"`, pads labelled −100, logits
upcast to fp32) averaged per row — the same number as the per-sample loop, never the batch-averaged
`outputs.loss`. Rows with fewer than two tokens have no next-token prediction: their `ppl` is NaN.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from pydantic import Field

from ..backends import Backend, Settings

from ..torch_utils import (from_pretrained, import_torch, load_options, resolve_device, resolve_dtype, resolved_device_dtype,
                           right_padded,
                           token_budget_batches)
from . import SCORE_DTYPE


class HFScorer:
    def __init__(self, model: str | None = None, revision: str | None = None, device: str = "auto",
                 dtype: str = "auto", max_length: int = 1024, batch_tokens: int | None = None, add_bos: bool = False,
                 trust_remote_code: bool = False, num_workers: int | None = None):
        from ..errors import KoqualityError

        torch = import_torch("the hf scorer")
        if not model:
            raise KoqualityError("the hf scorer needs --model NAME_OR_PATH (the paper: EleutherAI/polyglot-ko-1.3b)")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.model_name, self.revision = model, revision
        self.device = resolve_device(torch, device)
        self.dtype = resolve_dtype(torch, dtype, self.device)
        # CPU caches favour small batches (2K tokens ran 2x faster than 16K on a tiny GPT-NeoX); GPUs want big ones.
        self.batch_tokens = batch_tokens or (2048 if self.device == "cpu" else 32768)
        self.max_length, self.add_bos = max_length, add_bos
        options = load_options(revision, trust_remote_code)
        self.tokenizer = from_pretrained(AutoTokenizer, model, "a tokenizer", **options)
        self.model = from_pretrained(AutoModelForCausalLM, model, "a causal LM", dtype=self.dtype, **options).to(self.device).eval()
        # Some polyglot-ko revisions ship a pad token outside the vocabulary; pads are masked anyway, so any
        # valid id will do: EOS. The embeddings are never resized.
        eos = self.tokenizer.eos_token_id
        self.pad_id = eos if eos is not None else 0
        if add_bos and self.tokenizer.bos_token_id is None:
            raise KoqualityError(f"--add-bos: the tokenizer of {model} has no BOS token")

    def config(self) -> dict[str, Any]:
        return {"scorer": "hf", "model": self.model_name, "revision": self.revision, "dtype": str(self.dtype),
                "max_length": self.max_length, "add_bos": self.add_bos}

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        limit = self.max_length - 1 if self.add_bos else self.max_length
        ids = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
        if self.add_bos:
            ids = [[self.tokenizer.bos_token_id, *row] for row in ids]
        return ids

    def score(self, texts: Sequence[str]) -> np.ndarray:
        torch = self.torch
        ids = self.tokenize(texts)
        out = np.empty(len(ids), SCORE_DTYPE)
        out["n_tokens"] = [len(row) for row in ids]
        out["ppl"] = math.nan
        scorable = [i for i, row in enumerate(ids) if len(row) >= 2]
        lengths = [len(ids[i]) for i in scorable]
        with torch.inference_mode():
            for batch in token_budget_batches(lengths, self.batch_tokens):
                input_ids, mask = right_padded(torch, [ids[scorable[j]] for j in batch], self.pad_id, self.device)
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
                labels = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
                nll = torch.nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                    ignore_index=-100, reduction="none").view(labels.shape)
                mean_nll = nll.sum(dim=1) / (labels != -100).sum(dim=1)
                for j, value in zip(batch, mean_nll.double().cpu().numpy()):
                    out["ppl"][scorable[j]] = math.exp(value)
        return out


class CausalLMSettings(Settings):
    """What loads and batches a causal LM: the hf scorer's settings, and the IFD scorer's (ifd.py)."""

    model: str | None = Field(None, description="hub id or local path of the causal LM (the paper: EleutherAI/polyglot-ko-1.3b)")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit)")
    device: str = Field("auto", description="auto, cpu or cuda")
    dtype: str = Field("auto", description="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16")
    max_length: int = Field(1024, ge=2, description="truncate at this many tokens (the paper: 1024)")
    batch_tokens: int | None = Field(None, ge=1, description="token budget per batch (default: 2048 on CPU, 32768 on GPU)")


class HFScorerSettings(CausalLMSettings):
    add_bos: bool = Field(False, description="prepend BOS so the first token is scored too (the paper does not)")
    trust_remote_code: bool = Field(False, description="run the model repository's own code")


BACKENDS = (Backend("score", "hf", "koquality.scoring.hf:HFScorer", HFScorerSettings, writes=("ppl", "n_tokens"),
                    help="a Hugging Face causal LM (the paper's)", library="transformers", extra="hf",
                    modules=("torch", "transformers"), resolve=resolved_device_dtype),)
