"""Faithful re-implementations of the paper's original per-sample approach, for the benchmarks.

- perplexity: one instruction at a time, fp32, no BOS, truncated at 1,024 tokens, exp(outputs.loss) with
  labels = input ids (mean NLL of tokens 2..n) — what `evaluate`'s perplexity computes per text.
- embedding: one instruction at a time, padded to 512 tokens (`padding="max_length"`), pooler output.

Also a command line, so a benchmark can time the paper's scorer as a whole process:
    python benchmarks/paper_reference.py perplexity --model PATH --input rows.jsonl --output ppl.json
"""

from __future__ import annotations

import argparse
import json
import math


def paper_perplexity(model, tokenizer, texts, device="cpu", max_length=1024):
    import torch

    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_length,
                        add_special_tokens=False).input_ids.to(device)
        if ids.shape[1] < 2:
            out.append(math.nan)
            continue
        with torch.no_grad():
            out.append(math.exp(model(input_ids=ids, labels=ids).loss.item()))
    return out


def paper_embeddings(model, tokenizer, texts, device="cpu"):
    import torch

    out = []
    with torch.no_grad():
        for text in texts:
            token = tokenizer(text, padding="max_length", truncation=True, max_length=512, return_tensors="pt")
            out.append(model(**token.to(device)).pooler_output.detach().cpu().numpy().squeeze())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["perplexity"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).to(device).eval()
    with open(args.input, encoding="utf-8") as f:
        texts = [json.loads(line)["instruction"] for line in f]
    ppl = paper_perplexity(model, tokenizer, texts, device)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(ppl, f)


if __name__ == "__main__":
    main()
