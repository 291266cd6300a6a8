"""Kiwi's morphemes of each text, cached in the run directory beside the scores: one analysis per instruction.

The kiwi scorer analyses every text to score it; the same analysis gives the morphemes (`form/tag`) that
TF-IDF embeds. The score stage writes them as it scores, in shards by id like the scores,

    morphemes/kiwi-<key>/shard-*.parquet      id → list of form/tag

(key: the field analysed, kiwipiepy's version, Kiwi's options and model files), and the embed stage reads
them (`tokens_in_order`), analysing only the rows no shard holds (a corpus scored by `hf`, a run killed
between a score shard and its morphemes). Kiwi's analysis of a text does not depend on the batch it came in
or the thread count, so cached and fresh morphemes are the same and the vectors do not depend on which
were used. Shards are sealed and checked like every cache file (cache.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import cache
from .cache import fingerprint
from .kiwi import kiwi_settings, kiwi_version, morphemes_of

SCHEMA = pa.schema([("id", pa.string()), ("morphemes", pa.list_(pa.string()))])


def directory(run_dir: Path, field: str) -> Path:
    return Path(run_dir) / "morphemes" / f"kiwi-{fingerprint(field, kiwi_version(), kiwi_settings())}"


class MorphemeWriter:
    """Where the scorer puts the morphemes of what it scores: `write(ids, morphemes)` seals one shard."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def write(self, ids: Sequence[str], morphemes: Sequence[Sequence[str]]) -> None:
        table = pa.table({"id": pa.array(ids, pa.string()), "morphemes": pa.array(morphemes, pa.list_(pa.string()))},
                         schema=SCHEMA)
        cache.write_shard(self.path, list(ids), ".parquet", lambda tmp: pq.write_table(table, tmp))


# Read back dictionary-encoded: 40 MB instead of 93 MB for 400K rows of 18.5 morphemes.
READ_SCHEMA = pa.schema([("id", pa.string()), ("morphemes", pa.list_(pa.dictionary(pa.int32(), pa.string())))])


def cached(path: Path) -> pa.Table:
    """Every intact shard of `path` (an id in more than one shard has the same morphemes in each)."""
    path = Path(path)
    found = cache.valid_shards(path, ".parquet") if path.is_dir() else []
    shards = [pq.read_table(p, read_dictionary=["morphemes.list.element"]) for p in found]
    return pa.concat_tables([READ_SCHEMA.empty_table(), *shards])


def tokens_in_order(path: Path, ids: pa.Array | pa.ChunkedArray, texts: Sequence[str], num_workers: int = -1,
                    batch_rows: int = 65536) -> Iterator[list[str]]:
    """The morphemes of `texts[i]` (row id `ids[i]`) in order, streamed a batch at a time: from the shards
    where they hold the id, analysed where they do not."""
    table = cached(path)
    index = pc.index_in(ids, value_set=table.column("id"))
    column = table.column("morphemes")
    for start in range(0, len(texts), batch_rows):
        found = column.take(index.slice(start, batch_rows)).cast(SCHEMA.field("morphemes").type).to_pylist()
        missing = [j for j, tokens in enumerate(found) if tokens is None]
        if missing:
            for j, tokens in zip(missing, morphemes_of([texts[start + j] for j in missing], num_workers)):
                found[j] = tokens
        yield from found
