"""The same recipe and seed give byte-identical output whatever the thread settings.

BLAS and OpenMP read OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS when they are loaded, so each
setting needs its own process: every test runs the real pipeline twice, once with all three (and
KOQUALITY_THREADS) at 1 and once with them removed from the environment (the libraries' default: one thread
per core; koquality's: one worker per available CPU), and compares every
output that is meant to be reproducible. The two runs go concurrently: the thread count a library uses is
fixed by the setting, not by how busy the machine is, and two cores then finish both in about the time of one.

What used to differ: the TF-IDF SVD (vectors up to 4e-4 apart on the shared data, 2e-2 on the demo; on the
shared data at L=5, K=20 that moved 1,240 rows to other clusters and changed the selection and the export) and
faiss's k-means distances (every inertia in clusters/*.json in its last bits). Kiwi's scores and morphemes do
not depend on thread counts.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import REPRODUCIBLE, SHARED_RECIPE

# KOQUALITY_THREADS=1 also runs the length groups' k-means one after another instead of side by side.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "KOQUALITY_THREADS")
SETTINGS = {"one-thread": "1", "default": None}

def thread_env(threads: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, threads))
    return {**env, "COLUMNS": "200"}


def run_under_each_setting(recipe: str, tmp_path: Path) -> dict[str, Path]:
    """`koquality run --recipe RECIPE` once per thread setting, concurrently, each in its own process."""
    outputs = {name: tmp_path / name for name in SETTINGS}
    procs = {name: subprocess.Popen([sys.executable, "-m", "koquality", "run", "--recipe", recipe,
                                     "--output", str(outputs[name]), "--no-report"],
                                    env=thread_env(threads), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
             for name, threads in SETTINGS.items()}
    failures = []
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=600)
        if proc.returncode:
            failures.append(f"{name}: exited {proc.returncode}\n{stdout}\n{stderr}")
    assert not failures, "\n".join(failures)
    return outputs


def reproducible_files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for pattern in REPRODUCIBLE for p in run_dir.glob(pattern))


def assert_byte_identical(outputs: dict[str, Path]) -> None:
    first, second = outputs.values()
    files = reproducible_files(first)
    assert files == reproducible_files(second)
    assert {"corpus.parquet", "export/train.jsonl"} <= set(files)
    assert any(f.startswith("clusters/") and f.endswith(".parquet") for f in files)
    assert any(f.startswith("selections/") for f in files) and any(f.startswith("vectors/") for f in files)
    differ = [f for f in files if (first / f).read_bytes() != (second / f).read_bytes()]
    details = []
    for f in differ:
        if f.endswith(".npy"):
            gap = np.abs(np.load(first / f).astype(np.float64) - np.load(second / f)).max()
            details.append(f"{f}: max abs difference {gap:.3g}")
        else:
            details.append(f)
    assert not differ, "differ between OPENBLAS/OMP/MKL_NUM_THREADS=1 and unset: " + "; ".join(details)


def test_demo_recipe_is_identical_across_thread_settings(tmp_path):
    assert_byte_identical(run_under_each_setting("demo", tmp_path))


def test_shared_files_are_identical_across_thread_settings(shared_instructions, tmp_path):
    """The four shared files together (28K rows): big enough that last-bit differences move rows between
    clusters and change the selection, which the 347-row demo does not show."""
    recipe = tmp_path / "shared.yaml"
    recipe.write_text(SHARED_RECIPE.format(dir=shared_instructions.as_posix()), encoding="utf-8")
    assert_byte_identical(run_under_each_setting(str(recipe), tmp_path))
