"""One shared Kiwi analyser per thread count: loading its model takes a second, and score and embed both use it."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=4)
def get_kiwi(num_workers: int = -1):
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=num_workers)


def kiwi_version() -> str:
    import kiwipiepy

    return kiwipiepy.__version__
