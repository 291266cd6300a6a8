import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# koquality's cache (converted KoBEST task files) goes to a folder of the test session, not the user's ~/.cache.
os.environ.setdefault("KOQUALITY_CACHE", tempfile.mkdtemp(prefix="koquality-cache-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KOQUALITY_SHARED_DATA", REPO.parent / "shared" / "data"))
INSTRUCTIONS = SHARED_DATA / "instructions"

# What a run promises to reproduce; manifest.json and run.log hold timings, report.html is not written.
REPRODUCIBLE = ("corpus.parquet", "vectors/*.npy", "clusters/*.parquet", "clusters/*.json", "selections/*",
                "export/*")

# The four shared instruction files as one recipe (format with dir=): what the determinism and engine tests run.
SHARED_RECIPE = """\
name: shared-determinism
seed: 42
sources:
  - path: {dir}/koalpaca_v1.0_partial.json
  - path: {dir}/chatbotdata.csv
  - path: {dir}/kor_mwp_train.jsonl
    map: {{output: reason+answer}}
  - path: {dir}/skku_every.jsonl
    map: {{instruction: input, output: label}}
score: {{scorer: kiwi}}
embed: {{encoder: tfidf, dims: 256}}
cluster: {{len_groups: 5, k: 20}}
sample: {{method: ppl, ratio: 0.1}}
export: {{format: jsonl, template: paper}}
"""


@pytest.fixture
def shared_instructions():
    if not INSTRUCTIONS.is_dir():
        pytest.skip(f"shared instruction data not present at {INSTRUCTIONS}")
    return INSTRUCTIONS


def koquality(*args, cwd=None, check=True):
    """Run the real console entry point in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "koquality", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"})
    if check and proc.returncode != 0:
        raise AssertionError(f"koquality {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def hub_reachable(monkeypatch):
    """For tests that stand in for the hub (a patched `load_dataset`): koquality's probe of the hub says yes."""
    from koquality import hub

    monkeypatch.setattr(hub, "unreachable", lambda: None)
