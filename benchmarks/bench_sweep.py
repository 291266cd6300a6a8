"""The paper's grid (4 L × 5 K × 3 methods × 3 N = 180 selections) on 400,000 rows: everything after
scoring and embedding — 20 clusterings, 180 selection files, sweep.csv and the report.

Fills the run directory's caches with one `koquality run` (not timed), then times `koquality sweep` into the
same directory, whose scores and vectors then come from the caches. Target: under 10 minutes on 2 cores.

    python benchmarks/bench_sweep.py [--rows 400000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_offline import SHARED, real_rows, replicate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--keep", type=Path, default=None, help="run directory to use (and keep)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared instruction data at {SHARED}")
    work = Path(tempfile.mkdtemp(prefix="koquality-bench-sweep-"))
    source = work / "replicated.jsonl"
    replicate(real_rows(), args.rows, source)
    recipe = work / "bench.yaml"
    recipe.write_text(json.dumps({"name": "bench", "seed": 42, "sources": [{"path": str(source), "source": "replicated"}],
                                  "cluster": {"len_groups": 5, "k": 100, "n_init": 10},
                                  "sample": {"method": "ppl", "ratio": 0.01}}), encoding="utf-8")
    run_dir = args.keep or work / "run"
    koquality = [sys.executable, "-m", "koquality"]
    subprocess.run([*koquality, "run", "--recipe", str(recipe), "--output", str(run_dir), "--force", "--no-report"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    timer = ["/usr/bin/time", "-f", "%M", "-o", str(work / "maxrss")] if Path("/usr/bin/time").exists() else []
    start = time.perf_counter()
    subprocess.run([*timer, *koquality, "sweep", "--recipe", str(recipe), "--output", str(run_dir)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    stages = manifest["stages"]
    after = stages["sweep"]["seconds"] + stages["report"]["seconds"]
    print(f"paper grid on {manifest['rows']['corpus']:,} rows: {stages['sweep']['selections']} selections")
    for name in ("ingest", "score", "embed", "sweep", "report"):
        extra = {"score": f" (scored {stages['score'].get('scored', 0):,}, from cache {stages['score'].get('from_cache', 0):,})",
                 "embed": f" (from cache: {stages['embed'].get('from_cache')})"}.get(name, "")
        print(f"  {name:<7} {stages[name]['seconds']:8.1f}s{extra}")
    print(f"after scoring and embedding (20 clusterings, 180 selections, sweep.csv, report): {after:.1f}s "
          f"(target < 600 s); whole `koquality sweep` process {wall:.1f}s")
    if timer:
        print(f"peak RSS of the `koquality sweep` process: {int((work / 'maxrss').read_text().split()[-1]) / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
