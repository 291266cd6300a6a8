"""One shared Kiwi analyser per thread count: loading its model takes a second, and score and embed both use it.

It is built without Kiwi's multi-word dictionary (`load_multi_dict=False`: 250K WikiData titles such as
`부치지 못한 편지` or `데이터 시각화`, each analysed as one proper noun). Perplexity wants the language
model to predict the words of such a phrase, not one dictionary entry priced by a prior (scoring/kiwi.py), and
TF-IDF embeds the same morphemes, so the score stage's analysis serves the embed stage too.
"""

from __future__ import annotations

import functools

KIWI_OPTIONS = {"load_multi_dict": False}


@functools.lru_cache(maxsize=4)
def get_kiwi(num_workers: int = -1):
    """`num_workers=-1`: one worker per CPU this process may use (Kiwi's own -1 takes every core of the machine)."""
    from kiwipiepy import Kiwi

    from .threads import threads

    return Kiwi(num_workers=threads() if num_workers == -1 else num_workers, **KIWI_OPTIONS)


def kiwi_version() -> str:
    import kiwipiepy

    return kiwipiepy.__version__


def kiwi_settings() -> dict:
    """What decides an analysis besides the text: the options above and the model files' version."""
    try:
        import kiwipiepy_model

        model = kiwipiepy_model.__version__
    except ImportError:  # a model path given to kiwipiepy some other way
        model = None
    return {**KIWI_OPTIONS, "kiwipiepy_model": model}


def morpheme_string(token) -> str:
    """A morpheme as TF-IDF counts it: `학교/NNG`."""
    return f"{token.form}/{token.tag}"


def morphemes_of(texts, num_workers: int = -1):
    """The morphemes of each text (`form/tag`), streamed: Kiwi's best analysis, the one the kiwi scorer scores."""
    analyses = get_kiwi(num_workers).analyze(texts, top_n=1)
    return ([morpheme_string(t) for t in candidates[0][0]] for candidates in analyses)
