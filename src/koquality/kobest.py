"""KoBEST from its TSV release (SKT-LSL/KoBEST_datarepo v1.0, as in ../shared/data/kobest) in the schema of
the Hugging Face dataset `skt/kobest_v1`, which lm-evaluation-harness's `kobest_*` tasks read — so the same
tasks run offline.

Label conventions of the hub copy: BoolQ and WiC answers TRUE/True/FALSE/False (and stray whitespace) → 1/0;
COPA answers 1/2 → label 0/1 (0 = alternative_1); HellaSwag 0-3 as given; SentiNeg 0/1 as given, its test
split's `Text`/`Label` columns (the negated sentences) as `test` and `Text_origin`/`Label_origin` as
`test_originated`. The local `dev` split is the hub's `validation`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable

from .errors import KoqualityError

TASKS = ("boolq", "copa", "hellaswag", "sentineg", "wic")
FOLDERS = {"boolq": "BoolQ", "copa": "COPA", "hellaswag": "HellaSwag", "sentineg": "SentiNeg", "wic": "WiC"}
SPLITS = {"train": "train", "validation": "dev", "test": "test", "test_originated": "test"}


def _boolean(value: str, where: str) -> int:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise KoqualityError(f"{where}: answer {value!r} (expected TRUE/True/FALSE/False)")
    return int(text == "true")


def _integer(value: str, where: str, allowed: range) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = None
    if number not in allowed:
        raise KoqualityError(f"{where}: label {value!r} (expected one of {', '.join(map(str, allowed))})")
    return number


CONVERT: dict[str, Callable[[dict[str, str], str, str], dict[str, Any]]] = {
    "boolq": lambda r, w, s: {"paragraph": r["Text"], "question": r["Question"], "label": _boolean(r["Answer"], w)},
    "copa": lambda r, w, s: {"premise": r["sentence"], "question": r["question"], "alternative_1": r["1"],
                             "alternative_2": r["2"], "label": _integer(r["Answer"], w, range(1, 3)) - 1},
    "hellaswag": lambda r, w, s: {"context": r["context"], **{f"ending_{i}": r[f"choice{i}"] for i in range(1, 5)},
                                  "label": _integer(r["label"], w, range(4))},
    "sentineg": lambda r, w, s: ({"sentence": r["Text_origin"], "label": _integer(r["Label_origin"], w, range(2))}
                                 if s == "test_originated" else
                                 {"sentence": r["Text"], "label": _integer(r["Label"], w, range(2))}),
    "wic": lambda r, w, s: {"word": r["Target"], "context_1": r["SENTENCE1"], "context_2": r["SENTENCE2"],
                            "label": _boolean(r["ANSWER"], w)},
}


def kobest_rows(kobest_dir: str | Path, task: str, split: str) -> list[dict[str, Any]]:
    """One task's split in the hub schema; a malformed line is an error naming the file and line."""
    if task not in TASKS:
        raise KoqualityError(f"--tasks {task}: expected KoBEST tasks {', '.join(TASKS)}")
    if split not in SPLITS:
        raise KoqualityError(f"KoBEST split {split}: expected one of {', '.join(SPLITS)}")
    if split == "test_originated" and task != "sentineg":
        raise KoqualityError(f"KoBEST split test_originated exists only for sentineg, not {task}")
    path = Path(kobest_dir) / FOLDERS[task] / f"{SPLITS[split]}.tsv"
    if not path.exists():
        raise KoqualityError(f"{path}: no such file (expected the KoBEST v1.0 layout: <dir>/{FOLDERS[task]}/{{train,dev,test}}.tsv)")
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.strip() for h in next(reader)]
        for record in reader:
            where = f"{path} line {reader.line_num}"
            if len(record) != len(header):
                raise KoqualityError(f"{where}: {len(record)} fields (expected {len(header)}, as the header)")
            try:
                rows.append(CONVERT[task](dict(zip(header, record)), where, split))
            except KeyError as e:
                raise KoqualityError(f"{path}: column {e} missing (found: {', '.join(header)})") from None
    return rows
