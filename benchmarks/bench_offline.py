"""The whole offline pipeline on real Korean instructions replicated to 400,000 rows.

Reads the four instruction files in ../shared/data/instructions, replicates them with small edits (a
different Korean lead-in per copy, so exact-dedup does not undo the replication) to --rows rows, runs
`koquality run` on them in a child process with the paper's L=5, K=100, method ppl, N=0.01, and prints
rows/s per stage and the child's peak RSS. In the same run it compares, on a slice, the paper-style
per-sample approach (one Kiwi call per text, one thread; sklearn KMeans(n_init=10)) with ours.

    python benchmarks/bench_offline.py [--rows 400000] [--compare-rows 5000]
    python benchmarks/bench_offline.py --rows 2000000      # the bounded-memory check (issue 4)
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "instructions"
MAPS = {"kor_mwp_train.jsonl": {"output": "reason+answer"}, "skku_every.jsonl": {"instruction": "input", "output": "label"}}
LEAD_INS = ["", "질문: ", "궁금한 게 있어요. ", "부탁드립니다. ", "혹시 ", "다음에 답해 주세요. ", "간단히 말해, ",
            "요청: ", "도와주세요. ", "한 가지 여쭤볼게요. ", "알려 주세요: ", "문제: ", "친구가 물어봤어요. ",
            "과제 질문입니다. ", "정리해서 답해 주세요. ", "빠르게 답해 주세요. ", "자세히 설명해 주세요. ", "참고로 묻습니다. "]


def real_rows() -> list[dict]:
    from koquality.ingest import SourceSpec, ingest

    specs = [SourceSpec(str(p), map=MAPS.get(p.name)) for p in sorted(SHARED.iterdir())]
    corpus = ingest(specs).corpus
    return corpus.select(["instruction", "input", "output", "source"]).to_pylist()


CLOSINGS = ["", " 부탁해요.", " 알려 주세요.", " 감사합니다.", " 꼭 답해 주세요."]


def edit(instruction: str, copy: int) -> str:
    """Copy 0 is the row itself; later copies get a lead-in and a closing phrase (90 variants)."""
    return LEAD_INS[copy % len(LEAD_INS)] + instruction + CLOSINGS[copy // len(LEAD_INS)]


def replicate(rows: list[dict], n: int, path: Path) -> None:
    copies = math.ceil(n / len(rows))
    if copies > len(LEAD_INS) * len(CLOSINGS):
        raise SystemExit(f"--rows {n} needs {copies} copies; only {len(LEAD_INS) * len(CLOSINGS)} variants")
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        for c in range(copies):
            for r in rows:
                if written == n:
                    return
                f.write(json.dumps({"instruction": edit(r["instruction"], c), "input": r["input"],
                                    "output": r["output"], "origin": r["source"]}, ensure_ascii=False) + "\n")
                written += 1


def compare_scoring(texts: list[str]) -> None:
    from kiwipiepy import Kiwi

    from koquality.kiwi import KIWI_OPTIONS
    from koquality.scoring import make_scorer
    from koquality.scoring.kiwi import OPEN_CLASS_TAGS, spelling_nats, start_entropy

    with warnings.catch_warnings():  # num_workers=0 is one thread since kiwipiepy 0.21, as wanted here
        warnings.simplefilter("ignore", DeprecationWarning)
        single = Kiwi(num_workers=0, **KIWI_OPTIONS)
    h0 = start_entropy()
    start = time.perf_counter()
    per_sample = []
    for t in texts:  # the per-sample loop: one analysis per call (the kiwi scorer's formula, issue 11)
        tokens, log_prob = single.analyze(t, top_n=1)[0]
        spelling = sum(spelling_nats(x.form) for x in tokens if x.tag in OPEN_CLASS_TAGS)
        per_sample.append(math.exp((spelling - log_prob - h0) / (len(tokens) + 1)))
    loop_s = time.perf_counter() - start
    scorer = make_scorer("kiwi")
    scorer.score(texts[:10])  # load the model outside the timing
    start = time.perf_counter()
    batched = scorer.score(texts)["ppl"]
    ours_s = time.perf_counter() - start
    assert np.allclose(per_sample, batched, rtol=1e-9), "batched kiwi ppl differs from the per-sample loop"
    print(f"score, {len(texts):,} rows: per-sample loop {len(texts) / loop_s:,.0f} rows/s, "
          f"batched {len(texts) / ours_s:,.0f} rows/s, ratio {loop_s / ours_s:.2f}x (identical values)")


def compare_kmeans(vectors: np.ndarray, k: int) -> None:
    from sklearn.cluster import KMeans

    from koquality.clustering import kmeans

    start = time.perf_counter()
    ref = KMeans(k, n_init=10, random_state=0).fit(vectors)
    sk_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = kmeans(vectors, k, seed=0, n_init=10)
    ours_s = time.perf_counter() - start
    print(f"k-means {vectors.shape[0]:,}x{vectors.shape[1]}, K={k}, n_init=10: sklearn {sk_s:.1f}s "
          f"inertia {ref.inertia_:.1f}; ours {ours_s:.1f}s inertia {ours.inertia:.1f} "
          f"({ours.inertia / ref.inertia_ - 1:+.2%}); ratio {sk_s / ours_s:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--compare-rows", type=int, default=5000)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directory here")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared instruction data at {SHARED}")

    rows = real_rows()
    work = Path(tempfile.mkdtemp(prefix="koquality-bench-"))
    source = work / "replicated.jsonl"
    replicate(rows, args.rows, source)
    recipe = work / "bench.yaml"
    recipe.write_text(json.dumps({
        "name": "bench", "seed": 42, "sources": [{"path": str(source), "source": "replicated"}],
        "cluster": {"len_groups": 5, "k": 100, "n_init": 10}, "sample": {"method": "ppl", "ratio": 0.01},
    }), encoding="utf-8")
    run_dir = args.keep or work / "run"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "koquality", "run", "--recipe", str(recipe), "--output", str(run_dir),
                    "--force"], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))

    print(f"offline pipeline, {args.rows:,} rows ({len(rows):,} real rows from shared/data, replicated with edits)")
    print(f"rows: {manifest['rows']}")
    for stage, info in manifest["stages"].items():
        n = manifest["rows"]["read"] if stage == "ingest" else manifest["rows"]["corpus"]
        if stage == "score":
            n = info.get("scored", n)
        if stage in ("sample", "export"):
            n = manifest["rows"]["corpus"] if stage == "sample" else manifest["rows"]["selected"]
        print(f"  {stage:<8} {info['seconds']:8.2f}s  {n / max(info['seconds'], 1e-9):>12,.0f} rows/s")
    print(f"total wall {wall:.1f}s, peak RSS {peak_gb:.2f} GB (targets: 400K rows < 360 s and < 3 GB; 2M rows ≤ 4 GB)")

    texts = [r["instruction"] for r in rows[: args.compare_rows]]
    compare_scoring(texts)
    from koquality.tables import load_vectors

    vectors = load_vectors(next((run_dir / "vectors").glob("*.npy")))
    import pyarrow.parquet as pq

    groups = pq.read_table(run_dir / "clusters" / "len5_k100.parquet").column("len_group").to_numpy()
    compare_kmeans(vectors[groups == 2][:40_000], 100)


if __name__ == "__main__":
    main()
