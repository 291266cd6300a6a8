"""Stage 2 — score: Instruction-Following Difficulty (IFD) of each row under a Hugging Face causal LM.

Reads `instruction`, `input` (may be null) and `output`; writes `ppl_answer`, `ppl_answer_alone`, `ifd`,
`n_answer_tokens` and `answer_tokens_cut`. The paper choice reproduced is Cherry-LLM's (Li et al., "From
Quantity to Quality", NAACL 2024) as Superfiltering uses it (Li et al., ACL 2024: a small scorer model will
do, so `model` need not be the instruction-perplexity model):

    ifd = ppl(answer | instruction) / ppl(answer)      (a ratio of perplexities, not of mean losses)

The texts are the paper's training template (export.TEMPLATES["paper"]) and its answer part:

    whole = `### 질문: {prompt}### 답변: {output}`, prompt = export.prompt(instruction, input)
    alone = `### 답변: {output}`

Each is tokenised without special tokens and truncated at `max_length`; its answer tokens are those whose
character span ends after the text before `{output}` (a token straddling the boundary, usually the space
glued to the answer's first word, belongs to the answer). A perplexity is exp(mean NLL) over the answer
tokens at positions ≥ 1, each predicted from every token before it. `n_answer_tokens` counts those scored in
the whole text, `answer_tokens_cut` the answer tokens its truncation removed (the shorter alone text is
truncated on its own: where the whole text's answer is cut, the two perplexities cover different spans). A
row with nothing to score (an empty answer, one truncated away) gets NaN, never a made-up number.

Batched exactly as the hf scorer (hf.py): the whole and the alone sequences of all rows are sorted by length
and packed together under one token budget, right-padded, and scored with a per-token cross entropy over the
answer positions only (logits upcast to fp32), summed per sequence — the per-sample loop's numbers.

Offline (Kiwi): not offered. Each Kiwi token carries its share of the analysis score (`Token.score`, CoNg's
log P(morpheme | the morphemes before it), see kiwi.py), so the answer part of one analysis of the whole text
is an exact chain-rule conditional, but a degenerate one: CoNg sees at most the 4 morphemes before the one it
predicts (backing off where it has not seen them) and starts afresh after a sentence break such as the blank
line before an `input`. The template puts `### 답변 :`, three morphemes, between the instruction and the
answer, so the instruction can reach only the answer's first morpheme, through a 4-gram CoNg has almost never
seen. On 1,000 rows of ../shared/data the instruction changed the score of 3 of 46,483 answer morphemes (in 2
rows): Kiwi's IFD would be exactly 1 for 99.8 % of rows. IFD stays with the hf family.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field

from ..backends import Backend
from ..errors import KoqualityError
from ..export import TEMPLATES, prompt
from ..torch_utils import resolved_device_dtype, right_padded, token_budget_batches
from .hf import CausalLMSettings, HFScorer

WHOLE = TEMPLATES["paper"]  # "### 질문: {instruction}### 답변: {output}"
ALONE = WHOLE.partition("{instruction}")[2]  # "### 답변: {output}"
COLUMNS = ("ppl_answer", "ppl_answer_alone", "ifd", "n_answer_tokens", "answer_tokens_cut")


class IFDScorer:
    def __init__(self, model: str | None = None, revision: str | None = None, device: str = "auto",
                 dtype: str = "auto", max_length: int = 1024, batch_tokens: int | None = None,
                 trust_remote_code: bool = False):
        if not model:
            raise KoqualityError("the ifd scorer needs --model NAME_OR_PATH (a causal LM; Superfiltering: a small "
                                 "one will do)")
        # The hf scorer's loading: device and dtype choice, pad id, token budget, one-line load errors.
        self.lm = HFScorer(model=model, revision=revision, device=device, dtype=dtype, max_length=max_length,
                           batch_tokens=batch_tokens, trust_remote_code=trust_remote_code)
        if not self.lm.tokenizer.is_fast:
            raise KoqualityError(f"the ifd scorer needs a fast tokenizer (character offsets); {model} has none")

    def config(self) -> dict[str, Any]:
        lm = self.lm
        return {"scorer": "ifd", "model": lm.model_name, "revision": lm.revision, "dtype": str(lm.dtype),
                "max_length": lm.max_length, "template": WHOLE, "formula": "ppl(answer | prompt) / ppl(answer)"}

    def tokenize(self, texts: Sequence[str], prefix_chars: Sequence[int]) -> tuple[list[list[int]], list[int], list[int]]:
        """Each text's token ids truncated at max_length, the index of its first answer token (the first whose
        span ends past the text's first `prefix_chars` characters) and how many answer tokens truncation cut."""
        enc = self.lm.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids, starts, cut = [], [], []
        for row, offsets, prefix in zip(enc["input_ids"], enc["offset_mapping"], prefix_chars):
            start = next((t for t, (_, end) in enumerate(offsets) if end > prefix), len(row))
            kept = row[:self.lm.max_length]  # what truncation of one sequence without special tokens keeps
            ids.append(kept)
            starts.append(start)
            cut.append(max(0, len(row) - max(start, len(kept))))
        return ids, starts, cut

    def score_rows(self, table: pa.Table) -> dict[str, np.ndarray]:
        prompts = [prompt(i or "", x) for i, x in zip(_column(table, "instruction"), _column(table, "input"))]
        outputs = [o or "" for o in _column(table, "output")]
        wholes = [WHOLE.format(instruction=p, output=o) for p, o in zip(prompts, outputs)]
        alones = [ALONE.format(output=o) for o in outputs]
        whole_ids, whole_starts, cut = self.tokenize(wholes, [len(t) - len(o) for t, o in zip(wholes, outputs)])
        alone_ids, alone_starts, _ = self.tokenize(alones, [len(t) - len(o) for t, o in zip(alones, outputs)])
        mean_nll = self.answer_nll([*whole_ids, *alone_ids], [*whole_starts, *alone_starts])
        n = table.num_rows
        with np.errstate(over="ignore", invalid="ignore"):  # exp past e^709 is inf; inf / inf is no value
            ppl_answer, ppl_alone = np.exp(mean_nll[:n]), np.exp(mean_nll[n:])
            ifd = ppl_answer / ppl_alone
        scored = [max(0, len(row) - max(start, 1)) for row, start in zip(whole_ids, whole_starts)]
        return {"ppl_answer": ppl_answer, "ppl_answer_alone": ppl_alone, "ifd": ifd,
                "n_answer_tokens": np.array(scored, "i4"), "answer_tokens_cut": np.array(cut, "i4")}

    def answer_nll(self, ids: list[list[int]], starts: list[int]) -> np.ndarray:
        """Mean NLL of the tokens from starts[i] (at least 1: token 0 has no prediction) to the end of each
        sequence, in token-budget batches; NaN where there is none."""
        torch, lm = self.lm.torch, self.lm
        first = [max(s, 1) for s in starts]
        out = np.full(len(ids), math.nan)
        scorable = [i for i in range(len(ids)) if first[i] < len(ids[i])]
        with torch.inference_mode():
            for batch in token_budget_batches([len(ids[i]) for i in scorable], lm.batch_tokens):
                rows = [scorable[j] for j in batch]
                input_ids, mask = right_padded(torch, [ids[i] for i in rows], lm.pad_id, lm.device)
                # The logits at t - 1 predict token t: answer tokens only, pads never.
                t = torch.arange(1, input_ids.shape[1], device=lm.device)
                lo = torch.tensor([first[i] for i in rows], device=lm.device)[:, None]
                hi = torch.tensor([len(ids[i]) for i in rows], device=lm.device)[:, None]
                answer = (t >= lo) & (t < hi)
                logits = lm.model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
                nll = torch.nn.functional.cross_entropy(logits[answer].float(), input_ids[:, 1:][answer], reduction="none")
                sums = torch.zeros(len(rows), dtype=torch.float64, device=lm.device)
                sums.index_add_(0, answer.nonzero()[:, 0], nll.double())
                out[rows] = (sums / answer.sum(dim=1)).cpu().numpy()
        return out


def _column(table: pa.Table, name: str) -> list:
    """A column's values; None throughout where the table lacks it (a corpus without `input`)."""
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


class IFDSettings(CausalLMSettings):  # `model` may be a smaller LM than the perplexity scorer's (Superfiltering)
    trust_remote_code: bool = Field(False, description="run the model repository's own code")


BACKENDS = (Backend("score", "ifd", "koquality.scoring.ifd:IFDScorer", IFDSettings,
                    writes=COLUMNS, reads=("instruction", "input", "output"),
                    help="instruction-following difficulty: ppl(answer | instruction) / ppl(answer) (Cherry-LLM)",
                    library="transformers", extra="hf", modules=("torch", "transformers"),
                    resolve=resolved_device_dtype, key_parts=lambda: ("ifd-ppl-ratio-1", WHOLE)),)
