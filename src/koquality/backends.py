"""The backends of the map stages (score, embed), in one registry that recipes, the CLI and the engines read.

A map stage reads one text column of a batch of rows and writes others: a scorer writes `ppl` and
`n_tokens`, an encoder a vector. Each backend declares, in its own module, a `Backend`: its name, the columns
it writes, its settings (a pydantic model whose fields become recipe keys and CLI options), the optional
extra it needs (checked when it is built, with one message naming the extra), the library whose version
keys its cache, and whether each row's output depends only on that row (`row_independent`: such a stage can
be cut into shards, cached by row id and spread over Ray actors; TF-IDF, fitted on the whole corpus, cannot).

Adding a backend is one module that defines `BACKENDS = (Backend(...),)` plus one line in `MODULES` below —
or, from another package, one entry point in the group `koquality.backends` naming that module (what
tests/test_engines.py does with a scorer written outside koquality).
The recipe's `score:` and `embed:` sections are built from the registered settings (recipe.py), and so are
the options of `koquality score` and `koquality embed` (cli.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import entry_points
from importlib.util import find_spec
from typing import Any, Callable, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from .cache import fingerprint
from .errors import KoqualityError, missing_extra

KINDS = {"score": "scorer", "embed": "encoder", "filter": "filter"}  # the map stages and what their backends are called
STAGES = tuple(KINDS)

# One line per backend module, in the order their names are listed in help texts.
MODULES = (
    "koquality.scoring.kiwi",
    "koquality.scoring.hf",
    "koquality.scoring.ifd",
    "koquality.embedding.tfidf",
    "koquality.embedding.hf",
    "koquality.decontaminate",
)


class Settings(BaseModel):
    """Base of every backend's settings: unknown keys and wrongly typed values are errors, not defaults."""

    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True)
class Backend:
    stage: str  # "score" or "embed"
    name: str
    factory: str  # "module:Class": called with the validated settings
    settings: type[Settings]
    writes: tuple[str, ...]
    help: str
    # The columns it reads. () = the one text column the recipe names (score.field / embed.field): the backend
    # has `score(texts)` / `encode(texts)`. Otherwise it has `score_rows(table)` over these columns (a missing
    # optional one, e.g. `input`, comes as nulls), returning {column of `writes`: one value per row}, where
    # NaN or None means the row has no value.
    reads: tuple[str, ...] = ()
    library: str | None = None  # module whose version is part of the cache key
    extra: str | None = None  # pip extra that provides `modules`
    modules: tuple[str, ...] = ()
    row_independent: bool = True
    context: tuple[str, ...] = ()  # arguments the run supplies rather than the section (TF-IDF's seed: the recipe's)
    key_parts: Callable[[], tuple] = tuple  # what else identifies its output (a formula's version, model files)
    resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # settings as they will run ("auto" → cuda)
    cache_skip: tuple[str, ...] = ("batch_tokens",)  # settings that change speed, never the values

    def check_installed(self) -> None:
        missing = [m for m in self.modules if find_spec(m) is None]
        if missing:
            raise missing_extra(f"the {self.name} {self.kind} "
                                f"({', '.join(missing)} not installed)", self.extra or "hf")

    def options(self, settings: dict[str, Any], strict: bool = False) -> dict[str, Any]:
        """This backend's own settings, validated, out of `settings`: a recipe section, which carries every
        backend's (`strict=False`), or exactly this backend's (`strict=True`: another key is an error). None
        means the default."""
        given = {k: v for k, v in settings.items() if v is not None and k not in self.context}
        unknown = sorted(set(given) - set(self.settings.model_fields))
        if strict and unknown:
            raise KoqualityError(f"the {self.name} {self.kind} takes no setting {', '.join(unknown)} "
                                 f"(it takes: {', '.join(self.settings.model_fields) or 'none'})")
        try:
            valid = self.settings.model_validate({k: v for k, v in given.items() if k not in unknown})
        except ValidationError as e:
            err = e.errors()[0]
            if not strict:  # a recipe section
                raise KoqualityError(f"{self.stage}.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None
            option = f"--{str(err['loc'][0]).replace('_', '-')} {err.get('input')}"  # the command line's words
            bounds = {"greater_than_equal": "expected a number at least {ge}", "greater_than": "expected a number above {gt}"}
            why = bounds[err["type"]].format(**err["ctx"]) if err["type"] in bounds else err["msg"]
            raise KoqualityError(f"{option}: {why}") from None
        return valid.model_dump()

    @property
    def kind(self) -> str:
        return KINDS[self.stage]

    def build(self, settings: dict[str, Any], strict: bool = False, **context: Any):
        """The backend object (`Scorer` / `Encoder`), its model loaded. `context`: what the run supplies
        besides the section (the recipe's seed for TF-IDF); also taken from `settings` by name."""
        self.check_installed()
        module, name = self.factory.split(":")
        context = {**{k: settings[k] for k in self.context if settings.get(k) is not None}, **context}
        return getattr(import_module(module), name)(**self.options(settings, strict), **context)

    def cache_key(self, section: dict[str, Any], *parts: Any) -> str:
        """The key of this backend's cached output: the section's settings as they will run, what the caller
        adds (the library's version; for a corpus-wide encoder the seed and the rows) and what else identifies
        the output (`key_parts`). Settings that only change speed are left out."""
        settings = {k: v for k, v in section.items() if k not in (*self.cache_skip, "shard_rows")}
        resolved = self.resolve(settings) if self.resolve else None
        return fingerprint(settings, *parts, *self.key_parts(), *([resolved] if resolved else []))


@functools.cache
def registry() -> dict[str, dict[str, Backend]]:
    found: dict[str, dict[str, Backend]] = {stage: {} for stage in STAGES}
    plugins = [entry.value for entry in entry_points(group="koquality.backends")]
    for module in (*MODULES, *plugins):
        for backend in import_module(module).BACKENDS:
            if backend.name in found[backend.stage]:
                raise RuntimeError(f"two {backend.stage} backends are named {backend.name}")
            found[backend.stage][backend.name] = backend
    return found


def names(stage: str) -> tuple[str, ...]:
    return tuple(registry()[stage])


def backend(stage: str, name: str) -> Backend:
    try:
        return registry()[stage][name]
    except KeyError:
        raise KoqualityError(f"unknown {KINDS[stage]} '{name}' (expected one of: {', '.join(names(stage))})") from None


def settings_fields(stage: str) -> dict[str, Any]:
    """Every setting of every backend of `stage`, by name (pydantic FieldInfo), in registry order. A name
    shared by two backends must hold the same type in both (None aside); the recipe section takes the first
    one's default (`max_length: 512` for hf and st, where a bare `make_encoder("st")` keeps the model's own)."""
    fields: dict[str, Any] = {}
    for b in registry()[stage].values():
        for name, info in b.settings.model_fields.items():
            seen = fields.get(name)
            if seen is not None and _without_none(seen.annotation) != _without_none(info.annotation):
                raise RuntimeError(f"{stage} setting {name}: {b.name} declares another type than an earlier backend")
            fields.setdefault(name, info)
    return fields


def _without_none(annotation):
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in get_args(annotation) else annotation
