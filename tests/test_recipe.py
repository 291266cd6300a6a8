import pytest

from koquality.errors import KoqualityError
from koquality.recipe import load_recipe, parse_recipe


def test_presets_load():
    demo = load_recipe("demo")
    assert demo.score.scorer == "kiwi" and demo.embed.encoder == "tfidf" and len(demo.sources) == 3
    paper = load_recipe("paper")
    assert (paper.cluster.len_groups, paper.cluster.k, paper.sample.method, paper.sample.ratio) == (5, 100, "ppl", 0.01)
    assert paper.score.model == "EleutherAI/polyglot-ko-1.3b"
    assert paper.embed.model == "BM-K/KoSimCSE-roberta-multitask" and paper.embed.pooling == "pooler"


def test_typos_are_errors_not_defaults():
    with pytest.raises(KoqualityError, match=r"recipe: cluster.kk: Extra inputs are not permitted"):
        parse_recipe({"sources": [{"path": "a.jsonl"}], "cluster": {"kk": 3}})
    with pytest.raises(KoqualityError, match=r"sample.ratio: Input should be less than or equal to 1"):
        parse_recipe({"sources": [{"path": "a.jsonl"}], "sample": {"ratio": 2}})
    with pytest.raises(KoqualityError, match="sources: Value error, a recipe needs at least one source"):
        parse_recipe({"sources": []})


def test_selection_name():
    recipe = parse_recipe({"sources": [{"path": "a.jsonl"}], "cluster": {"len_groups": 5, "k": 100},
                           "sample": {"method": "ppl_h", "ratio": 0.05}})
    assert recipe.selection_name() == "len5_k100_mppl_h_n0.05"


def test_recipe_name_cannot_escape_the_runs_directory():
    with pytest.raises(KoqualityError, match=r"recipe: name: Value error, use letters, digits"):
        parse_recipe({"name": "../../tmp/x", "sources": [{"path": "a.jsonl"}]})


def test_hub_tokens_stay_out_of_run_files(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    secret = "hf_SECRETtoken1234567890"
    env = {**os.environ, "HF_TOKEN": secret, "HUGGING_FACE_HUB_TOKEN": secret}
    subprocess.run([sys.executable, "-m", "koquality", "run", "--output", str(tmp_path / "run")], env=env, check=True,
                   capture_output=True)
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
