"""Shared pieces of the benchmarks: real Korean text from ../shared/data, model shapes, timing, MFU."""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# KOQUALITY_SHARED_DATA (as in the tests): where ../shared/data is elsewhere, e.g. a copy carried to a GPU machine
SHARED = Path(os.environ.get("KOQUALITY_SHARED_DATA", REPO.parent / "shared" / "data")) / "instructions"
sys.path.insert(0, str(REPO / "tests"))  # the tiny-model builders the tests use

MAPS = {"kor_mwp_train.jsonl": {"output": "reason+answer"}, "skku_every.jsonl": {"instruction": "input", "output": "label"}}

SHAPES = {  # random weights with the real checkpoints' shapes: same FLOPs per token
    "tiny-neox": dict(vocab_size=600),
    "polyglot-ko-1.3b": dict(vocab_size=30000, hidden_size=2048, num_hidden_layers=24, num_attention_heads=16,
                             intermediate_size=8192, rotary_pct=0.5),
    "tiny-roberta": dict(vocab_size=600),
    "roberta-base": dict(vocab_size=30000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072),
}
MODEL_VOCAB = {"polyglot-ko-1.3b": 30080, "roberta-base": 32000}  # embedding rows of the real checkpoints

# Dense bf16 peak of the device, TFLOP/s (vendor datasheets).
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.0}


def korean_instructions(n: int | None = None, seed: int = 0) -> list[str]:
    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared instruction data at {SHARED}")
    from koquality.ingest import SourceSpec, ingest

    specs = [SourceSpec(str(p), map=MAPS.get(p.name)) for p in sorted(SHARED.iterdir())]
    texts = ingest(specs).corpus.column("instruction").to_pylist()
    random.Random(seed).shuffle(texts)
    return texts[:n] if n else texts


def build(kind: str, shape: str, path: Path, lines: list[str]) -> Path:
    from tiny_models import build_causal_lm, build_encoder

    spec = dict(SHAPES[shape])
    vocab = spec.pop("vocab_size")
    builder = build_causal_lm if kind == "causal" else build_encoder
    return builder(path, vocab_size=vocab, lines=lines, embedding_rows=MODEL_VOCAB.get(shape), **spec)


def peak_flops(torch) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_BF16_TFLOPS.items():  # "H100 PCIe" is listed before "H100"
        if key in name:
            return tflops * 1e12
    return None


def synchronize(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
