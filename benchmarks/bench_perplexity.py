"""Batched perplexity (koquality's `hf` scorer) against the paper's per-sample loop, on real Korean text.

GPU: polyglot-ko-1.3b's shape (random weights, same FLOPs), the paper's loop in fp32 at batch size 1 vs
ours in bf16 with token-budget batches, in one process; prints rows/s, tokens/s, the ratio and model FLOP
utilisation (2 × parameters × tokens/s ÷ the device's dense bf16 peak).
CPU: a tiny GPT-NeoX; the paper's scorer and `koquality score` each timed as a whole process (start-up,
model load, tokenisation and scoring), as a user would run them.

    python benchmarks/bench_perplexity.py [--rows N] [--paper-rows N] [--shape tiny-neox|polyglot-ko-1.3b]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import SHAPES, Timer, build, korean_instructions, peak_flops, synchronize
from paper_reference import paper_perplexity


def whole_process(model: Path, texts: list[str], work: Path) -> None:
    rows = work / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    with Timer() as paper:
        subprocess.run([sys.executable, str(Path(__file__).with_name("paper_reference.py")), "perplexity",
                        "--model", str(model), "--input", str(rows), "--output", str(work / "paper.json")], check=True)
    with Timer() as ours:
        subprocess.run([sys.executable, "-m", "koquality", "score", str(rows), "--scorer", "hf", "--model", str(model),
                        "--device", "cpu", "--output", str(work / "ours.parquet")], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    import pyarrow.parquet as pq

    expected = np.array(json.loads((work / "paper.json").read_text()), dtype=float)
    got = pq.read_table(work / "ours.parquet").column("ppl").to_numpy(zero_copy_only=False).astype(float)
    ok = ~np.isnan(expected)
    rel = np.max(np.abs(got[ok] - expected[ok]) / expected[ok])
    print(f"whole process, {len(texts):,} rows: paper loop {paper.seconds:.1f}s ({len(texts) / paper.seconds:,.1f} rows/s); "
          f"koquality score {ours.seconds:.1f}s ({len(texts) / ours.seconds:,.1f} rows/s); "
          f"ratio {paper.seconds / ours.seconds:.2f}x; max relative difference {rel:.2e}")


def in_process(model_path: Path, texts: list[str], paper_texts: list[str], device: str, batch_tokens: int | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from koquality.scoring.hf import HFScorer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    fp32 = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
    params = sum(p.numel() for p in fp32.parameters())
    paper_tokens = sum(len(tokenizer(t, add_special_tokens=False, truncation=True, max_length=1024).input_ids) for t in paper_texts)
    paper_perplexity(fp32, tokenizer, paper_texts[:4], device)  # warm-up
    synchronize(torch)
    with Timer() as paper:
        expected = paper_perplexity(fp32, tokenizer, paper_texts, device)
        synchronize(torch)
    exact = HFScorer(model=str(model_path), device=device, dtype="float32", batch_tokens=batch_tokens)
    got = exact.score(paper_texts)["ppl"]
    ok = ~np.isnan(expected)
    rel = np.max(np.abs(got[ok] - np.array(expected)[ok]) / np.array(expected)[ok])
    del fp32, exact
    ours = HFScorer(model=str(model_path), device=device, batch_tokens=batch_tokens)  # bf16 on GPU
    ours.score(texts[:64])  # warm-up
    tokens = sum(len(r) for r in ours.tokenize(texts))
    synchronize(torch)
    with Timer() as fast:
        ours.score(texts)
        synchronize(torch)
    paper_tps, ours_tps = paper_tokens / paper.seconds, tokens / fast.seconds
    print(f"model: {params / 1e6:,.0f}M parameters on {torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}")
    print(f"paper loop (fp32, batch 1): {len(paper_texts):,} rows, {len(paper_texts) / paper.seconds:,.1f} rows/s, {paper_tps:,.0f} tokens/s")
    print(f"koquality ({ours.dtype}, {ours.batch_tokens} tokens/batch): {len(texts):,} rows, {len(texts) / fast.seconds:,.1f} rows/s, "
          f"{ours_tps:,.0f} tokens/s")
    print(f"ratio (tokens/s): {ours_tps / paper_tps:.1f}x; fp32 batched vs paper loop max relative difference {rel:.2e}")
    peak = peak_flops(torch)
    if peak:
        print(f"model FLOP utilisation: paper {2 * params * paper_tps / peak:.1%}, koquality {2 * params * ours_tps / peak:.1%}")


def main() -> None:
    import torch

    gpu = torch.cuda.is_available()
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--paper-rows", type=int, default=500 if gpu else 2000)
    parser.add_argument("--shape", choices=[s for s in SHAPES if "neox" in s or "polyglot" in s],
                        default="polyglot-ko-1.3b" if gpu else "tiny-neox")
    parser.add_argument("--batch-tokens", type=int, default=None, help="default: koquality's (by device)")
    args = parser.parse_args()
    texts = korean_instructions(max(args.rows, args.paper_rows))
    work = Path(tempfile.mkdtemp(prefix="koquality-bench-ppl-"))
    model = build("causal", args.shape, work / args.shape, texts[:5000])
    print(f"shape {args.shape}; real Korean instructions from shared/data")
    if gpu:
        in_process(model, texts[:args.rows], texts[:args.paper_rows], "cuda", args.batch_tokens)
    else:
        whole_process(model, texts[:args.rows], work)
        in_process(model, texts[:args.rows], texts[:args.paper_rows], "cpu", args.batch_tokens)


if __name__ == "__main__":
    main()
