"""Streaming the chunk rows of a datastore shard by shard, skipping tombstoned rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datastores.layout import CHUNKS_FILE, DatastoreLayout
from datastores.manifest import Manifest
from datastores.ops.tombstones import deleted_masks


@dataclass(frozen=True)
class ChunkBatch:
    """Some consecutive live rows of one shard: global ids, rows within the shard, columns."""

    shard: int
    chunk_ids: np.ndarray
    rows: np.ndarray
    columns: dict[str, list]


def iter_chunk_batches(root: str | Path, manifest: Manifest, columns: Sequence[str] = ("text",),
                       batch_size: int = 4096, live_only: bool = True) -> Iterator[ChunkBatch]:
    """Rows of every shard in datastore (chunk id) order, ``batch_size`` at a time; only one
    batch of text is in memory at once."""
    layout = DatastoreLayout(Path(root))
    masks = deleted_masks(layout.root, manifest) if live_only else [None] * len(manifest.shards)
    wanted = [c for c in columns if c != "chunk_id"]
    for i, (shard, deleted) in enumerate(zip(manifest.shards, masks)):
        parquet = pq.ParquetFile(layout.shard(shard.name) / CHUNKS_FILE)
        offset = 0
        for batch in parquet.iter_batches(batch_size=batch_size, columns=wanted):
            rows = np.arange(offset, offset + batch.num_rows)
            offset += batch.num_rows
            if deleted is not None and deleted[rows].any():
                keep = ~deleted[rows]
                rows = rows[keep]
                batch = batch.filter(pa.array(keep))  # drop tombstoned rows in Arrow, not in Python
            data = {name: batch.column(name).to_pylist() for name in wanted}
            if len(rows):
                yield ChunkBatch(i, rows + shard.chunk_id_start, rows, data)

