"""Decontamination of 400,000 rows against all of KoBEST (every task, every split): wall time of the index
build and of the corpus pass, separately, and peak memory — for the morpheme unit and the char unit.

The rows are bench_offline.py's: the four instruction files of ../shared/data/instructions replicated with a
different Korean lead-in per copy up to --rows. Into --plant of them (seeded) a span of a KoBEST text is
copied — 40 characters of a BoolQ paragraph or HellaSwag context, at word boundaries, with its punctuation
changed to full width and its spaces doubled — so the run also reports how many of those it finds.
Each unit runs in a child process, so each peak RSS (ru_maxrss) is its own; the index is built cold (no
index cache) and then loaded from the cache, both timed.

    python benchmarks/bench_decontaminate.py [--rows 400000] [--plant 200] [--units morpheme char]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
KOBEST = REPO.parent / "shared" / "data" / "kobest"
FULL_WIDTH = {c: chr(ord(c) + 0xFEE0) for c in ".,!?:;()"}


def corpus(rows: int, plant: int, seed: int = 0):
    """The bench_offline.py corpus as an Arrow table, and {row: KoBEST span} of the rows planted."""
    import math

    import pyarrow as pa
    from bench_offline import edit, real_rows

    from koquality.kobest import kobest_rows

    real = real_rows()
    out = {"id": [], "instruction": [], "input": [], "output": []}
    for c in range(math.ceil(rows / len(real))):
        for i, r in enumerate(real):
            if len(out["id"]) == rows:
                break
            out["id"].append(f"r{c}-{i}")
            out["instruction"].append(edit(r["instruction"], c))
            out["input"].append(r["input"] or None)
            out["output"].append(r["output"])
    rng = random.Random(seed)
    long_texts = [row["paragraph"] for row in kobest_rows(KOBEST, "boolq", "test")] + \
                 [row["context"] for row in kobest_rows(KOBEST, "hellaswag", "test")]
    planted = {}
    for r in rng.sample(range(rows), plant):
        words = rng.choice(long_texts).split(" ")
        start = rng.randrange(max(1, len(words) - 12))
        span = ""
        for w in words[start:]:
            span = f"{span} {w}".strip()
            if len(span) >= 40:
                break
        planted[r] = span
        varied = "".join(FULL_WIDTH.get(ch, ch) for ch in span).replace(" ", "  ")
        field = rng.choice(["instruction", "output"])
        out[field][r] = f"{out[field][r]} {varied} 라고 들었어요."
    return pa.table(out), planted


def child(unit: str, rows: int, plant: int) -> None:
    from koquality.decontaminate import BenchmarkIndex, Decontaminator

    table, planted = corpus(rows, plant)
    start = time.perf_counter()
    BenchmarkIndex.build(["kobest"], str(KOBEST), unit=unit, cache=False)
    cold = time.perf_counter() - start
    Decontaminator(["kobest"], str(KOBEST), unit=unit)  # builds again and writes the index cache
    start = time.perf_counter()
    filt = Decontaminator(["kobest"], str(KOBEST), unit=unit)  # loads it
    warm = time.perf_counter() - start
    start = time.perf_counter()
    flags = filt.score_rows(table)["contaminated_by"]
    passed = time.perf_counter() - start
    found = sum(flags[r] is not None for r in planted)
    others = [f for r, f in enumerate(flags) if f is not None and r not in planted]
    print(json.dumps({"unit": unit, "n": filt.n, "rows": rows, "index_cold_s": cold, "index_cached_s": warm,
                      "pass_s": passed, "rows_per_s": rows / passed, "planted": len(planted), "planted_found": found,
                      "other_rows_flagged": len(others), "examples": sorted(set(others))[:5],
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                      "index": repr(filt.index)}, ensure_ascii=False))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--plant", type=int, default=200)
    parser.add_argument("--units", nargs="+", default=["morpheme", "char"])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.rows, args.plant)
    if not KOBEST.is_dir():
        raise SystemExit(f"needs KoBEST at {KOBEST}")
    from koquality.threads import threads

    print(f"decontaminate {args.rows:,} rows against all of KoBEST; Kiwi threads {threads()}; load average "
          f"{os.getloadavg()[0]:.1f} (other processes share these cores)")
    with tempfile.TemporaryDirectory(prefix="koquality-cache-") as cache:
        for unit in args.units:
            env = {**os.environ, "KOQUALITY_CACHE": cache}
            out = subprocess.run([sys.executable, __file__, "--child", unit, "--rows", str(args.rows),
                                  "--plant", str(args.plant)], check=True, capture_output=True, text=True, env=env)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{unit} (n={r['n']}): index build {r['index_cold_s']:.1f}s cold, {r['index_cached_s']:.2f}s from "
                  f"the cache; corpus pass {r['pass_s']:.1f}s ({r['rows_per_s']:,.0f} rows/s); peak RSS "
                  f"{r['peak_rss_gb']:.2f} GB; planted {r['planted_found']}/{r['planted']} found; "
                  f"{r['other_rows_flagged']:,} other rows flagged  [{r['index']}]")
            for example in r["examples"]:
                print(f"    {example}")
    print("targets: corpus pass + cold index <= 60 s, <= 2 GB")


if __name__ == "__main__":
    main()
