"""The paper recipe's sources, tested on fixture files written in exactly the hub schemas, and the recipe
resolved through `datasets.load_dataset` (patched: the hub is unreachable here)."""

import json

import pytest

from koquality.ingest import SourceSpec, ingest
from koquality.recipe import load_recipe

KOALPACA = [  # beomi/KoAlpaca-v1.1a: instruction, output, url
    {"instruction": "양파는 어떤 식물 부위인가요?", "output": "양파는 잎이 변한 비늘줄기입니다.", "url": "https://kin.naver.com/1"},
    {"instruction": "스웨터의 유래는?", "output": "스웨터는 땀을 흘리게 하는 옷에서 유래했습니다.", "url": "https://kin.naver.com/2"},
]
KULLM = [  # nlpai-lab/kullm-v2: id, instruction, input, output
    {"id": "dolly_0", "instruction": "다음 글을 요약하세요.", "input": "버진 오스트레일리아는 2000년에 설립되었다.", "output": "2000년 설립."},
    {"id": "gpt4all_5", "instruction": "파이썬으로 리스트를 뒤집는 방법은?", "input": "", "output": "reversed()나 [::-1]을 씁니다."},
    {"id": "vicuna_12_3", "instruction": "안녕?", "input": "", "output": "안녕하세요!"},
]
OIG = [  # heegyu/OIG-small-chip2-ko: user, chip2, index, user_translated, chip2_translated
    {"user": "How do I boil an egg?", "chip2": "Put it in boiling water.", "index": 0,
     "user_translated": "달걀은 어떻게 삶나요?", "chip2_translated": "끓는 물에 넣으세요."},
]
HUB = {"beomi/KoAlpaca-v1.1a": KOALPACA, "nlpai-lab/kullm-v2": KULLM, "heegyu/OIG-small-chip2-ko": OIG}


def fixture_file(tmp_path, name, rows):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def specs_with_local_paths(tmp_path):
    recipe = load_recipe("paper")
    specs = []
    for src in recipe.sources:
        spec = SourceSpec(**src.model_dump())
        spec.path = fixture_file(tmp_path, src.path.split("/")[1], HUB[src.path])
        specs.append(spec)
    return specs


def test_each_adapter_on_hub_schema_files(tmp_path):
    rows = ingest(specs_with_local_paths(tmp_path)).corpus.to_pylist()
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    assert set(by_source) == {"koalpaca", "dolly", "gpt4all", "vicuna", "oig"}
    assert by_source["koalpaca"][0]["instruction"] == "양파는 어떤 식물 부위인가요?"
    assert by_source["koalpaca"][0]["url"] == "https://kin.naver.com/1"
    dolly = by_source["dolly"][0]
    assert dolly["instruction"] == "다음 글을 요약하세요. 버진 오스트레일리아는 2000년에 설립되었다."
    assert dolly["input"] == "" and dolly["orig_id"] == "dolly_0"
    assert dolly["len"] == len("다음 글을 요약하세요. 버진 오스트레일리아는 2000년에 설립되었다.")
    assert by_source["gpt4all"][0]["instruction"] == "파이썬으로 리스트를 뒤집는 방법은?"  # empty input adds nothing
    oig = by_source["oig"][0]
    assert (oig["instruction"], oig["output"], oig["user"]) == ("달걀은 어떻게 삶나요?", "끓는 물에 넣으세요.", "How do I boil an egg?")


def test_paper_recipe_resolves_to_hub_calls(monkeypatch, hub_reachable):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None, **kwargs):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(HUB[name])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    recipe = load_recipe("paper")
    result = ingest([SourceSpec(**s.model_dump()) for s in recipe.sources])
    assert calls == [("beomi/KoAlpaca-v1.1a", None, "train"), ("nlpai-lab/kullm-v2", None, "train"),
                     ("heegyu/OIG-small-chip2-ko", None, "train")]
    assert result.counts == {"read": 6, "dropped": 0, "corpus": 6}
    assert recipe.score.model == "EleutherAI/polyglot-ko-1.3b" and recipe.score.revision
    assert (recipe.score.max_length, recipe.score.add_bos, recipe.score.trust_remote_code) == (1024, False, False)
    assert recipe.embed.model == "BM-K/KoSimCSE-roberta-multitask" and recipe.embed.pooling == "pooler"
    assert (recipe.cluster.len_groups, recipe.cluster.k, recipe.cluster.n_init) == (5, 100, 10)
    assert (recipe.sample.method, recipe.sample.ratio, recipe.export.template) == ("ppl", 0.01, "paper")


def test_hub_failure_is_one_clear_line(monkeypatch, hub_reachable):
    import datasets

    from koquality.errors import KoqualityError

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nlpai-lab/kullm-v2' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(KoqualityError, match=r"^nlpai-lab/kullm-v2: cannot be loaded from the Hugging Face hub \(ConnectionError: "):
        ingest([SourceSpec("nlpai-lab/kullm-v2")])


def test_hub_split_and_config_reach_load_dataset(monkeypatch, tmp_path, hub_reachable):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None, **kwargs):
        calls.append((name, config, split))
        return datasets.Dataset.from_list(KOALPACA)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    result = ingest([SourceSpec("beomi/KoAlpaca-v1.1a", split="validation", config="v1.1a")])
    assert calls == [("beomi/KoAlpaca-v1.1a", "v1.1a", "validation")]
    assert result.corpus.column("source").to_pylist() == ["KoAlpaca-v1.1a"] * 2
