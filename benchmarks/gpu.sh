#!/usr/bin/env bash
# The GPU figures in one short run, for a session lent a device (`run` this script with timeout_s ≈ 560).
# The device's image (Python 3.12, /opt/torch/.venv) has torch, transformers, pyarrow, typer and rich but not
# pydantic, faiss or kiwipiepy: first, here, download their wheels into .whl/ (ignored via .git/info/exclude):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic pydantic-core annotated-types typing-inspection faiss-cpu kiwipiepy kiwipiepy-model
# and copy the real rows beside them (the benchmarks read ../shared/data, which does not travel; 10 MB):
#   mkdir -p .whl/shared && cp -r ../shared/data/instructions .whl/shared/
# and name `.whl` in the run's carry. Each benchmark has its own time limit, so one slow step cannot eat the
# others' time; what they print goes to $OUT (brought back by the device tool) or benchmarks/out/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out}"
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:src" KOQUALITY_SHARED_DATA="$PWD/.whl/shared"
else
  export PYTHONPATH="src"
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/device.txt"
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" python3 "$@" 2>&1 | tee "$OUT/$name.txt"; }
step perplexity 150 benchmarks/bench_perplexity.py
step embedding 100 benchmarks/bench_embedding.py
step kmeans 100 benchmarks/bench_kmeans.py
step ifd 150 benchmarks/bench_ifd.py --device cuda
