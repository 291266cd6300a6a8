"""Transformer embeddings (koquality's `hf` encoder) against the paper's loop (one text at a time, padded
to 512 tokens, pooler output), roberta-base's shape with random weights, on real Korean text.

    python benchmarks/bench_embedding.py [--rows N] [--paper-rows N] [--shape roberta-base|tiny-roberta]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import Timer, build, korean_instructions, peak_flops, synchronize
from paper_reference import paper_embeddings


def main() -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from koquality.embedding.hf import HFEncoder

    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50000 if gpu else 1000)
    parser.add_argument("--paper-rows", type=int, default=1000 if gpu else 50)
    parser.add_argument("--shape", choices=["roberta-base", "tiny-roberta"], default="roberta-base")
    parser.add_argument("--batch-tokens", type=int, default=None, help="default: koquality's (by device)")
    args = parser.parse_args()
    texts = korean_instructions(max(args.rows, args.paper_rows))
    work = Path(tempfile.mkdtemp(prefix="koquality-bench-emb-"))
    path = build("encoder", args.shape, work / args.shape, texts[:5000])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    paper_texts = texts[:args.paper_rows]
    paper_embeddings(model, tokenizer, paper_texts[:4], device)
    synchronize(torch)
    with Timer() as paper:
        expected = np.array(paper_embeddings(model, tokenizer, paper_texts, device))
        synchronize(torch)
    exact = HFEncoder(model=str(path), device=device, dtype="float32", batch_tokens=args.batch_tokens).encode(paper_texts)
    diff = np.max(np.abs(exact - expected))
    del model
    ours = HFEncoder(model=str(path), device=device, batch_tokens=args.batch_tokens)
    ours.encode(texts[:64])
    synchronize(torch)
    with Timer() as fast:
        ours.encode(texts[:args.rows])
        synchronize(torch)
    tokens = sum(len(ids) for ids in ours.tokenizer(texts[:args.rows], truncation=True, max_length=512)["input_ids"])
    paper_rps, ours_rps = len(paper_texts) / paper.seconds, args.rows / fast.seconds
    print(f"shape {args.shape} ({params / 1e6:,.0f}M parameters) on {torch.cuda.get_device_name() if gpu else 'CPU'}")
    print(f"paper loop (fp32, batch 1, padded to 512): {len(paper_texts):,} rows, {paper_rps:,.1f} rows/s")
    print(f"koquality ({ours.dtype}, dynamic padding, {ours.batch_tokens} tokens/batch): {args.rows:,} rows, "
          f"{ours_rps:,.1f} rows/s, {tokens / fast.seconds:,.0f} tokens/s")
    print(f"ratio (rows/s): {ours_rps / paper_rps:.1f}x; fp32 batched vs paper loop max abs difference {diff:.2e}")
    peak = peak_flops(torch)
    if peak:
        print(f"model FLOP utilisation (real tokens): koquality {2 * params * tokens / fast.seconds / peak:.1%}")


if __name__ == "__main__":
    main()
