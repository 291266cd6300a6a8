"""The Hugging Face hub, asked once before any work: can the models and datasets a command names be had?

Without a connection, `datasets` and `transformers` retry each request for half a minute and print a
dozen lines per name before failing deep inside a stage, after a run directory was made. koquality instead
looks at the names first: local paths need nothing; hub ids need the hub, probed with one short TCP
connection (to `HF_ENDPOINT`, default huggingface.co). When it cannot be reached, a command stops at once in
one line that says what to do (`HF_HUB_OFFLINE=1` for what is already in the local cache, local paths, or
the offline demo) — except for models already in the local cache, which are then used offline.
With `HF_HUB_OFFLINE=1` set nothing is probed: the libraries read their cache and fail fast themselves.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import KoqualityError

PROBE_SECONDS = 3.0


def is_hub_name(name: str) -> bool:
    """`org/name` or `name` that is not a local path: what the Hugging Face libraries look up on the hub."""
    return re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is not None and not name.startswith(".") and not Path(name).exists()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def unreachable() -> str | None:
    """Why the hub cannot be reached (probed once per process), or None when it can."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError as e:
        return f"{host}:{port}: {e.strerror or type(e).__name__}"
    return None


def _cached_model(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def require(models: list[str] | tuple[str, ...] = (), datasets: list[str] | tuple[str, ...] = ()) -> None:
    """Stop in one line when hub ids among `models`/`datasets` need a hub that cannot be reached. Models
    already in the local cache switch this process to offline mode instead."""
    models = [m for m in dict.fromkeys(models) if m and is_hub_name(m)]
    datasets = [d for d in dict.fromkeys(datasets) if d and is_hub_name(d)]
    if not (models or datasets) or offline():
        return
    why = unreachable()
    if why is None:
        return
    missing = [m for m in models if not _cached_model(m)] + datasets
    if not missing:
        os.environ["HF_HUB_OFFLINE"] = "1"  # every model is in the local cache: use it without asking the hub
        return
    names = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    raise KoqualityError(f"{names}: on the Hugging Face hub, which cannot be reached from here ({why}); set "
                         "HF_HUB_OFFLINE=1 to use what is already in the local cache, give local paths instead of "
                         "hub ids, or run the offline demo: koquality run --recipe demo")


def require_for_recipe(recipe) -> None:
    """Everything a recipe will load from the hub: hub sources, the scorer's, IFD's and encoder's models, KoBEST
    for decontamination without a kobest_dir, and the model to fine-tune and evaluate (with KoBEST from the hub
    when no kobest_dir is given)."""
    from .sources import is_hub_id

    datasets = [s.path for s in recipe.sources if is_hub_id(s.path)]
    models = []
    if recipe.score.scorer == "hf":
        models.append(recipe.score.model)
    if recipe.embed.encoder in ("hf", "st"):
        models.append(recipe.embed.model)
    if recipe.ifd is not None:
        models.append(recipe.ifd.model)
    if recipe.decontaminate is not None and "kobest" in recipe.decontaminate.benchmarks and not recipe.decontaminate.kobest_dir:
        datasets.append("skt/kobest_v1")
    if recipe.train:
        models.append(recipe.train.model)
        if recipe.eval and not recipe.eval.kobest_dir:
            datasets.append("skt/kobest_v1")
    require(models, datasets)
