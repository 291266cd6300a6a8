"""Batched IFD (koquality's `ifd` scorer) against the per-sample loop Cherry-LLM and Superfiltering run, on
real Korean instruction rows from ../shared/data.

The reference scores one row at a time at batch size 1, two forward passes per row (the whole text and the
answer alone), each `exp(model(ids, labels=ids with the prefix set to -100).loss)`, in fp32; koquality packs
the whole and alone sequences of all rows into token-budget batches. A small GPT-NeoX (random weights, BPE
trained on the rows) stands in for a small scorer (Superfiltering's point); `--shape tiny` is the tests' model.
Prints rows/s and tokens/s of each (the best of `--repeats` alternating runs: a shared machine only ever
slows a run down), their ratio, and the largest relative difference between the two on the reference rows
(koquality in fp32 there; on a GPU it is timed in its default bf16).

    python benchmarks/bench_ifd.py [--rows 2000] [--reference-rows 200] [--device cpu|cuda] [--shape small|tiny]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
from pathlib import Path

import numpy as np

from common import MAPS, SHARED, Timer, synchronize

SHAPES = {  # random weights
    "small": dict(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "tiny": dict(vocab_size=600),  # the tests' (and bench_perplexity's CPU) model: 2 layers, hidden 64
}


def instruction_rows(n: int, seed: int = 0) -> list[dict]:
    if not SHARED.is_dir():
        raise SystemExit(f"bench_ifd: skipped, it needs the shared instruction data at {SHARED}")
    from koquality.ingest import SourceSpec, ingest

    corpus = ingest([SourceSpec(str(p), map=MAPS.get(p.name)) for p in sorted(SHARED.iterdir())]).corpus
    rows = corpus.select(["instruction", "input", "output"]).to_pylist()
    random.Random(seed).shuffle(rows)
    return rows[:n]


def texts(row: dict) -> tuple[tuple[str, int], tuple[str, int]]:
    from koquality.export import prompt

    prefix = f"### 질문: {prompt(row['instruction'], row['input'])}### 답변: "
    return (prefix + row["output"], len(prefix)), ("### 답변: " + row["output"], len("### 답변: "))


def reference_ifd(model, tokenizer, rows: list[dict], device: str, max_length: int = 1024) -> np.ndarray:
    """Cherry-LLM's loop: per row, per text, the prefix labelled -100 and exp(outputs.loss); the answer's
    first token found by character offsets (the scorer's definition) rather than by re-tokenising the prefix."""
    import torch

    def answer_ppl(text: str, prefix_chars: int) -> float:
        enc = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length,
                        return_offsets_mapping=True, return_tensors="pt")
        ends = enc.offset_mapping[0, :, 1].tolist()
        start = next((t for t, end in enumerate(ends) if end > prefix_chars), len(ends))
        if max(start, 1) >= len(ends):
            return math.nan
        ids = enc.input_ids.to(device)
        labels = ids.clone()
        labels[:, :start] = -100
        with torch.no_grad():
            return math.exp(model(input_ids=ids, labels=labels).loss.item())

    out = np.empty((len(rows), 3))
    for i, row in enumerate(rows):
        whole, alone = texts(row)
        out[i, :2] = answer_ppl(*whole), answer_ppl(*alone)
        out[i, 2] = out[i, 0] / out[i, 1]
    return out


def max_relative_difference(got: np.ndarray, expected: np.ndarray) -> float:
    ok = np.isfinite(expected)
    assert (np.isfinite(got) == ok).all(), "the two disagree on which rows have a value"
    return float(np.max(np.abs(got[ok] - expected[ok]) / expected[ok]))


def token_count(tokenizer, rows: list[dict]) -> int:
    """Tokens of the whole and the alone text of every row, as scored (truncated at 1,024)."""
    both = [t for r in rows for t, _ in texts(r)]
    return sum(len(ids) for ids in tokenizer(both, add_special_tokens=False, truncation=True, max_length=1024).input_ids)


def main() -> None:
    import pyarrow as pa
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from koquality.scoring.ifd import IFDScorer
    from koquality.threads import threads
    from tiny_models import build_causal_lm

    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--reference-rows", type=int, default=200)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=list(SHAPES), default="small")
    parser.add_argument("--batch-tokens", type=int, default=None, help="default: koquality's (by device)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timings of each; the best is reported "
                                                                "(a shared machine only ever makes a run slower)")
    args = parser.parse_args()
    torch.set_num_threads(threads())
    shape = dict(SHAPES[args.shape])
    vocab = shape.pop("vocab_size")

    rows = instruction_rows(max(args.rows, args.reference_rows))
    lines = [t for r in rows[:5000] for t in (r["instruction"], r["output"]) if t]
    work = Path(tempfile.mkdtemp(prefix="koquality-bench-ifd-"))
    model_path = build_causal_lm(work / "neox", vocab_size=vocab, lines=lines, **shape)
    table, reference_rows = pa.Table.from_pylist(rows[:args.rows]), rows[:args.reference_rows]

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    fp32 = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(args.device).eval()
    params = sum(p.numel() for p in fp32.parameters())
    exact = IFDScorer(model=str(model_path), device=args.device, dtype="float32", batch_tokens=args.batch_tokens)
    ours = exact if args.device == "cpu" else IFDScorer(model=str(model_path), device=args.device,
                                                       batch_tokens=args.batch_tokens)  # bf16 on GPU
    got = exact.score_rows(pa.Table.from_pylist(reference_rows))
    ours.score_rows(table.slice(0, 64))  # warm-up

    reference_s, ours_s = [], []
    for _ in range(args.repeats):
        with Timer() as reference:
            expected = reference_ifd(fp32, tokenizer, reference_rows, args.device)
            synchronize(torch)
        with Timer() as fast:
            scores = ours.score_rows(table)
            synchronize(torch)
        reference_s.append(reference.seconds)
        ours_s.append(fast.seconds)

    rel = max_relative_difference(np.stack([got["ppl_answer"], got["ppl_answer_alone"], got["ifd"]], axis=1), expected)
    ref_tokens, our_tokens = token_count(tokenizer, reference_rows), token_count(tokenizer, rows[:args.rows])
    ref_rate, our_rate = len(reference_rows) / min(reference_s), args.rows / min(ours_s)
    ref_tps, our_tps = ref_tokens / min(reference_s), our_tokens / min(ours_s)
    seconds = lambda runs: ", ".join(f"{s:.1f}" for s in runs)  # noqa: E731
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"model: GPT-NeoX {params / 1e6:.1f}M parameters ({shape.get('num_hidden_layers', 2)} layers, hidden "
          f"{shape.get('hidden_size', 64)}, vocabulary {vocab}) on {where}")
    print(f"rows: {args.rows:,} from shared/data, {our_tokens / args.rows:,.0f} tokens per row (whole + alone); answer "
          f"truncated in {int((scores['answer_tokens_cut'] > 0).sum())}, no IFD in {int(np.isnan(scores['ifd']).sum())}")
    print(f"per-sample loop (fp32, batch 1, 2 passes per row): {len(reference_rows):,} rows ({ref_tokens / len(reference_rows):,.0f} "
          f"tokens per row) in {seconds(reference_s)} s: best {ref_rate:,.1f} rows/s, {ref_tps:,.0f} tokens/s")
    print(f"koquality ifd ({ours.lm.dtype}, {ours.lm.batch_tokens} tokens/batch): {args.rows:,} rows in {seconds(ours_s)} s: "
          f"best {our_rate:,.1f} rows/s, {our_tps:,.0f} tokens/s")
    print(f"ratio: {our_rate / ref_rate:.1f}x rows/s, {our_tps / ref_tps:.1f}x tokens/s; fp32 batched vs per-sample loop "
          f"max relative difference {rel:.2e} (ppl_answer, ppl_answer_alone, ifd; {len(reference_rows)} rows)")


if __name__ == "__main__":
    main()
