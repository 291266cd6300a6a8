"""The Ray engine: a map stage's missing shards as Ray Data `map_batches` over a pool of actors.

Each actor builds the backend once (a model loaded per actor, not per batch) and, for every batch it gets,
computes one shard with `MapStage.compute` and writes it through the stage's `ShardCache` itself: the shards
land in the run directory as they finish (on a cluster that directory must be on a filesystem every node
sees), so a killed run resumes with them, and the driver receives only row counts, never the outputs.
Blocks are the shards (one Arrow table per shard, `batch_size` = the shard's rows), so the actors share the
work shard by shard.

Resources, because a small machine stalls silently otherwise: measured with `ray.init(num_cpus=2)`, a pool of
2 actors at Ray's default of 1 CPU each made no progress for 6.5 minutes: the actors held both CPUs and the
operators that move blocks got none. Actors here take at most (CPUs − 1) / actors CPUs each (0.5 on 2 CPUs),
GPU actors `gpus_per_actor` GPUs (fractions put several replicas on one GPU), and each actor sizes its own
thread pools (Kiwi, torch) from its CPU share. Ray Data's no-progress timeout (`stall_timeout`, default 30
minutes) turns a stall into an error instead of a hang.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..clustering import assign
from ..errors import KoqualityError, missing_extra
from ..recipe import EngineConfig
from ..tables import VectorFile
from ..threads import set_threads, threads
from . import MapStage


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise missing_extra("--engine ray", "ray") from None
    return ray


def connect(engine: EngineConfig):
    """Ray, started on this machine (with the CPUs this process may use) or joined at `engine.address`."""
    # Ray's usage statistics: its driver otherwise queries a Prometheus at localhost:9090 after each dataset and
    # reports to Anyscale; a curation run talks to the cluster only (set RAY_USAGE_STATS_ENABLED=1 to allow it)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DATA_USAGE_DISABLED", "1")
    ray = import_ray()
    if not ray.is_initialized():
        options = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        try:
            if engine.address:
                ray.init(address=engine.address, **options)
            else:
                ray.init(num_cpus=threads(), **options)
        except ConnectionError as e:
            raise KoqualityError(f"--address {engine.address}: no Ray cluster there ({e}); start one with "
                                 "`ray start --head`, or leave --address out to start Ray on this machine") from None
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its plan and timing lines would bury koquality's bars
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # koquality draws its own bar from the shards that come back
    context.execution_options.preserve_order = False
    context.execution_no_progress_timeout_s = engine.stall_timeout
    return ray


def actor_resources(engine: EngineConfig, backend_device: str, cluster: dict[str, float]) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for a map stage on a cluster with `cluster` resources."""
    cpus, gpus = cluster.get("CPU", 1.0), cluster.get("GPU", 0.0)
    on_gpu = gpus > 0 and not backend_device.startswith("cpu")
    gpus_per_actor = (engine.gpus_per_actor or 1.0) if on_gpu else 0.0
    if engine.actors:
        actors = engine.actors
    elif on_gpu:
        actors = max(1, int(gpus / gpus_per_actor))
    else:
        actors = max(1, int(cpus))
    cpus_per_actor = engine.cpus_per_actor or max(0.25, min(1.0, (cpus - 1) / actors))
    if actors * cpus_per_actor > cpus:
        raise KoqualityError(f"engine: {actors} actors × {cpus_per_actor:g} CPUs is more than the cluster's {cpus:g} CPUs")
    return actors, cpus_per_actor, gpus_per_actor


def stage_device(stage: MapStage) -> str:
    """Where a stage's backend runs: only one with a device setting (the hf family) asks for GPUs. A recipe
    section carries every backend's settings, so the kiwi scorer's has hf's `device: auto` too: not its own."""
    if "device" not in stage.backend.settings.model_fields:
        return "cpu"
    return str(stage.settings.get("device") or "auto")


class ShardWriter:
    """A Ray actor: one backend loaded, then shard after shard computed and written to the cache."""

    def __init__(self, stage: MapStage, thread_count: int):
        set_threads(thread_count)  # before the backend starts its pools: this actor's share, not the node's cores
        self.stage = stage
        self.instance = stage.load()

    def __call__(self, batch: pa.Table) -> pa.Table:
        self.stage.cache.write(self.stage.compute(self.instance, batch))
        return pa.table({"rows": [batch.num_rows]})


def fill_with_ray(stage: MapStage, todo: pa.Table, engine: EngineConfig, advance: Callable[[int], None]) -> None:
    ray = connect(engine)
    actors, cpus, gpus = actor_resources(engine, stage_device(stage), ray.cluster_resources())
    shards = stage.shards_of(todo)
    dataset = ray.data.from_arrow(shards)
    done = dataset.map_batches(ShardWriter, fn_constructor_kwargs={"stage": stage, "thread_count": max(1, math.floor(cpus))},
                               batch_size=stage.shard_rows, batch_format="pyarrow", concurrency=min(actors, len(shards)),
                               num_cpus=cpus, num_gpus=gpus or None, zero_copy_batch=True)
    for batch in done.iter_batches(batch_size=None, batch_format="pyarrow"):
        advance(int(pc.sum(batch.column("rows")).as_py()))


def ray_assigner(vectors: VectorFile, engine: EngineConfig, batch_rows: int = 65536):
    """k-means's assignment step on Ray (clustering.cluster's `assigner`): the driver has fitted every length
    group's centroids; each batch of a group's rows is read from the vectors file by a Ray Data task, which
    labels it with `clustering.assign` at its place in the group (`offset`, `total_rows`), so the labels and
    distances are those of the local engine bit for bit. Only centroids go out, and labels and distances
    (12 bytes a row) come back. `batch_rows` is a multiple of faiss's 4,096-query blocks."""

    def assign_groups(groups: list[tuple[int, np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
        ray = connect(engine)
        jobs = [{"group": i, "start": start, "end": min(start + batch_rows, len(rows))}
                for i, (_, rows, _) in enumerate(groups) for start in range(0, len(rows), batch_rows)]
        found = [(np.empty(len(rows), np.int64), np.empty(len(rows), np.float32)) for _, rows, _ in groups]
        if not jobs:
            return found
        actors, cpus, _ = actor_resources(engine, "cpu", ray.cluster_resources())  # the map stages' CPU sizing
        done = ray.data.from_items(jobs).map_batches(
            _AssignBatch, fn_constructor_kwargs={"path": str(vectors.path), "groups": ray.put(groups)},
            batch_size=1, batch_format="pyarrow", concurrency=min(len(jobs), actors), num_cpus=cpus)
        for batch in done.iter_batches(batch_size=None, batch_format="pyarrow"):
            for i, (group, start, end) in enumerate(zip(*(batch.column(c).to_pylist() for c in ("group", "start", "end")))):
                labels, distances = found[group]
                labels[start:end] = batch.column("labels")[i].values.to_numpy()
                distances[start:end] = batch.column("distances")[i].values.to_numpy()
        return found

    return assign_groups


class _AssignBatch:
    """A Ray actor holding every group's rows and centroids (received once) that labels batch after batch."""

    def __init__(self, path: str, groups):
        set_threads(1)
        self.vectors = VectorFile(path)
        self.groups = groups if isinstance(groups, list) else import_ray().get(groups)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = {"group": [], "start": [], "end": [], "labels": [], "distances": []}
        for job in batch.to_pylist():
            _, rows, centroids = self.groups[job["group"]]
            x = self.vectors.rows(rows[job["start"]:job["end"]])
            labels, distances = assign(x, centroids, offset=job["start"], total_rows=len(rows))
            for key, value in (("group", job["group"]), ("start", job["start"]), ("end", job["end"]),
                               ("labels", labels), ("distances", distances)):
                out[key].append(value)
        offsets = np.concatenate([[0], np.cumsum([len(a) for a in out["labels"]])]).astype(np.int32)
        return pa.table({"group": out["group"], "start": out["start"], "end": out["end"],
                         "labels": pa.ListArray.from_arrays(offsets, np.concatenate(out["labels"])),
                         "distances": pa.ListArray.from_arrays(offsets, np.concatenate(out["distances"]))})
