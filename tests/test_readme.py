"""Every offline command of the README runs as written (issue 11: its Python snippet named a file that did
not exist). The `bash` blocks' `koquality` lines and the offline `python` block run in a folder laid out
as the README assumes (`data/`, `mine.yaml`, the shared files by name); the lines that need the hub, a GPU
or a trained model are listed below with the reason, so a new one is run unless it is named here."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import INSTRUCTIONS, REPO, SHARED_DATA

README = (REPO / "README.md").read_text(encoding="utf-8")
NEEDS = {  # a command containing one of these cannot run on this machine or in CI
    "EleutherAI/": "a hub model", "BM-K/": "a hub model", "PATH_OR_ID": "a model of the reader's",
    "--recipe paper": "the hub's datasets", "--device cuda": "a GPU", "models/": "a trained model",
    "--address": "a running Ray cluster",
}
KOBEST = SHARED_DATA / "kobest"
SHARED_FILES = ("koalpaca_v1.0_partial.json", "chatbotdata.csv", "kor_mwp_train.jsonl", "skku_every.jsonl")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    lines = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("koquality "):
                lines.append(line)
    return lines


def offline(command: str) -> bool:
    return not any(mark in command for mark in NEEDS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The layout the README's examples assume, built from the demo corpus (and the shared files when here)."""
    root = tmp_path_factory.mktemp("readme")
    demo = REPO / "src" / "koquality" / "data" / "demo"
    (root / "data").mkdir()
    shutil.copy(demo / "alpaca.json", root / "data" / "koalpaca.json")
    shutil.copy(demo / "chat.jsonl", root / "data" / "chat.jsonl")
    with open(root / "data" / "math.jsonl", "w", encoding="utf-8") as f:
        for i in range(1, 41):
            f.write(json.dumps({"question": f"사과가 {i}개 있고 {i + 2}개를 더 샀습니다. 사과는 모두 몇 개입니까?",
                                "reason": f"{i} 더하기 {i + 2}는 {2 * i + 2}입니다.", "answer": str(2 * i + 2)},
                               ensure_ascii=False) + "\n")
    (root / "mine.yaml").write_text(blocks("yaml")[0], encoding="utf-8")
    for name in SHARED_FILES:
        if (INSTRUCTIONS / name).exists():
            (root / name).symlink_to(INSTRUCTIONS / name)
    if KOBEST.exists():
        (root / "data" / "kobest").symlink_to(KOBEST)
    run(["koquality run --no-report"], root)  # `make demo`: runs/demo, which later commands read
    return root


def run(lines: list[str], cwd: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    for line in lines:
        proc = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"README command failed: {line}\n{proc.stderr[-2000:]}"


def test_the_readme_names_what_it_cannot_run_here():
    skipped = [c for c in commands() if not offline(c)]
    assert skipped and all(any(mark in c for mark in NEEDS) for c in skipped)
    assert len([c for c in commands() if offline(c)]) >= 8


def test_offline_commands_run_as_written(folder):
    lines = [c for c in commands() if offline(c)]
    if not all((folder / name).exists() for name in SHARED_FILES):
        lines = [c for c in lines if not any(name in c for name in SHARED_FILES)]
    if not KOBEST.exists():
        lines = [c for c in lines if "data/kobest" not in c]
    run(lines, folder)
    assert (folder / "runs" / "mine" / "manifest.json").exists()


def test_python_api_snippet_runs_as_written(folder):
    code = blocks("python")[0]
    assert "kq.train" not in code  # the training snippet needs a model: it is a block of its own
    proc = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "'selected'" in proc.stdout and (folder / "train.jsonl").exists()
