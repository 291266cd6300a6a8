"""The offline scorer before and after issue 11, on the real rows of ../shared/data, in one run.

For the old scorer (exp(−Kiwi analysis score / morphemes), scorer_criteria.OldKiwiPathScorer) and the new
`kiwi` scorer it prints:
  (a) for each corruption (morphemes shuffled, characters swapped, mixed scripts) of every row with ≥ 5
      morphemes, the share of rows whose corrupted copy scores worse;
  (b) median perplexity by morpheme count and the ratio of rows with 1-2 morphemes to rows with ≥ 6;
  (c) where non-Korean rows rank: the English sentences and code lines found in the inputs and outputs of
      the same files, scored as instructions among the real instructions;
  the Spearman correlation of perplexity with the number of morphemes, and scoring throughput (rows/s) on
  --speed-rows rows, --repeats times each, alternating (the machine is shared: the best and the median).
Morpheme counts are those of the new scorer's analysis for both scorers.

    python benchmarks/bench_offline_scorer.py [--speed-rows 20000] [--repeats 3] [--corrupt-rows 0 (all)]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MAPS, SHARED  # noqa: E402
from scorer_criteria import OldKiwiPathScorer, corrupted, criteria, non_korean_lines  # noqa: E402


def rows() -> list[dict]:
    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared instruction data at {SHARED}")
    from koquality.ingest import SourceSpec, ingest

    specs = [SourceSpec(str(p), map=MAPS.get(p.name)) for p in sorted(SHARED.iterdir())]
    return ingest(specs).corpus.select(["instruction", "input", "output"]).to_pylist()


def batched(score, batch_rows: int = 4096):
    """Score in the pipeline's batch size, as `koquality run` does."""
    def run(texts):
        return np.concatenate([score(texts[s:s + batch_rows]) for s in range(0, len(texts), batch_rows)] or [np.empty(0)])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speed-rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corrupt-rows", type=int, default=0, help="rows with ≥ 5 morphemes to corrupt (0: all)")
    args = parser.parse_args()

    from koquality.kiwi import get_kiwi
    from koquality.scoring.kiwi import KiwiScorer

    data = rows()
    texts = [r["instruction"] for r in data]
    foreign = non_korean_lines(data)
    new = KiwiScorer()
    old = OldKiwiPathScorer()
    scorers = {"old (kiwi path score / n)": old.score, "new kiwi": lambda batch: new.score(batch)["ppl"]}
    scores, morphemes = new.analyse(texts)
    n_morphemes = np.array([len(m) for m in morphemes])
    long_rows = np.flatnonzero(n_morphemes >= 5)
    if args.corrupt_rows:
        long_rows = np.sort(np.random.default_rng(0).choice(long_rows, min(args.corrupt_rows, len(long_rows)), replace=False))
    copies = corrupted(get_kiwi(), [texts[i] for i in long_rows], [morphemes[i] for i in long_rows], long_rows.tolist())
    print(f"{len(texts):,} instructions ({', '.join(p.name for p in sorted(SHARED.iterdir()))}); "
          f"{len(long_rows):,} with ≥ 5 morphemes corrupted; {len(foreign):,} non-Korean lines (English, code)")

    results = {}
    for name, score in scorers.items():
        results[name] = criteria(batched(score), texts, n_morphemes, long_rows, copies, foreign)

    speed_texts = texts[:args.speed_rows]
    timings = {name: [] for name in results}
    for _ in range(args.repeats):
        for name, score in scorers.items():
            start = time.perf_counter()
            batched(score)(speed_texts)
            timings[name].append(len(speed_texts) / (time.perf_counter() - start))

    for name, r in results.items():
        m, f = r["medians"], r["foreign"]
        print(f"\n== {name}")
        print("(a) corrupted copy scores worse, all rows with ≥ 5 morphemes: "
              + "; ".join(f"{k} {v * 100:.1f} %" for k, v in r["worse"].items()))
        print(f"    the {r['Korean rows']:,} of them mostly in Hangul: "
              + "; ".join(f"{k} {v * 100:.1f} %" for k, v in r["worse, Korean rows"].items()))
        print(f"(b) median ppl by morphemes: 1: {m['1']:.3g}, 2: {m['2']:.3g}, 1-2: {m['1-2']:.3g}, 6: {m['6']:.3g}, "
              f"≥6: {m['>=6']:.3g}; ratio 1-2/≥6 {m['ratio 1-2 / >=6']:.3g}× (1/≥6 {m['ratio 1 / >=6']:.3g}×, "
              f"2/≥6 {m['ratio 2 / >=6']:.3g}×)")
        print(f"(c) non-Korean rows: best rank at the {f['best percentile']:.1f}th percentile (0 = most fluent), median "
              f"{f['median percentile']:.1f}th; share of the most fluent 1 %: {f['share in most fluent 1 %']:.1f} %, "
              f"10 %: {f['share in most fluent 10 %']:.1f} % (overall {f['share overall']:.1f} %)")
        print(f"Spearman(ppl, morphemes) {r['spearman']:+.3f}")
        t = timings[name]
        print(f"rows/s on {len(speed_texts):,} rows: best {max(t):,.0f}, median {statistics.median(t):,.0f} "
              f"({', '.join(f'{x:,.0f}' for x in t)})")


if __name__ == "__main__":
    main()
