"""Engines run a map stage (score, embed: see ../backends.py) over the rows its shard cache does not hold yet.

`local` (the default) computes in this process, one shard at a time. `ray` (engines/ray.py) hands the same
shards to a pool of Ray actors, one backend loaded per actor, on one machine or a cluster. Both compute a
shard with `MapStage.compute` and write it through the same `cache.ShardCache`, so a row's output does not
depend on the engine (a text's score or vector does not depend on the batch it came in: Kiwi exactly, the
hf backends within fp32 batching noise) and either engine resumes what the other began or left after a kill.
The global stages (length groups and k-means, sampling, export) run at the driver over narrow columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import progress
from ..backends import Backend
from ..cache import ShardCache
from ..embedding import embed
from ..morphemes import MorphemeWriter
from ..recipe import EngineConfig
from ..scoring import score, score_rows
from ..tables import check_finite

@dataclass
class MapStage:
    """One backend over one text column, its output cached by row id. Picklable: Ray ships it to actors."""

    backend: Backend
    settings: dict[str, Any]  # a recipe section (it may carry other backends' settings too)
    field: str
    cache: ShardCache
    shard_rows: int = 8192
    context: dict[str, Any] = field(default_factory=dict)  # what the run supplies besides the section
    morphemes: Path | None = None  # kiwi scorer: also keep the morphemes of what it scores (../morphemes.py)

    def load(self):
        return self.backend.build(self.settings, **self.context)

    @property
    def columns(self) -> list[str]:
        """What the stage reads of each row besides its id."""
        return list(self.backend.reads or (self.field,))

    def compute(self, instance, batch: pa.Table) -> pa.Table:
        """`batch` (id and `columns`) → id and the backend's output columns, by the stages' own functions."""
        if self.backend.reads:
            return score_rows(batch, instance).select(["id", *self.backend.writes])
        if self.backend.stage == "score":
            writer = MorphemeWriter(self.morphemes) if self.morphemes is not None else None
            return score(batch, instance, field=self.field, morphemes=writer).select(["id", "ppl", "n_tokens"])
        vectors = embed(batch, instance, field=self.field)
        check_finite(vectors, f"{self.backend.name} encoder {self.settings.get('model')}")
        return pa.table({"id": batch.column("id"),
                         "vector": pa.FixedSizeListArray.from_arrays(vectors.reshape(-1), vectors.shape[1])})

    def shards_of(self, todo: pa.Table) -> list[pa.Table]:
        return [todo.slice(start, self.shard_rows) for start in range(0, todo.num_rows, self.shard_rows)]


def fill(stage: MapStage, rows: pa.Table, engine: EngineConfig | None = None) -> int:
    """Compute `stage` for the rows of `rows` (id and the stage's columns) no shard holds yet, with a progress bar named after
    the stage; returns how many were computed."""
    todo = rows.filter(stage.cache.missing(rows.column("id")))
    if not todo.num_rows:
        return 0
    engine = engine or EngineConfig()
    with progress.stage(stage.backend.name if stage.backend.reads else stage.backend.stage, todo.num_rows) as advance:
        if engine.name == "local":
            instance = stage.load()
            for shard in stage.shards_of(todo):
                stage.cache.write(stage.compute(instance, shard))
                advance(shard.num_rows)
        else:
            from .ray import fill_with_ray  # Ray is the optional `ray` extra

            fill_with_ray(stage, todo, engine, advance)
    return todo.num_rows
