"""Global chunk ids -> (shard index, row), vectorised over the shards' id ranges."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from datastores.manifest import ShardInfo


def locate_ids(shards: Sequence[ShardInfo], chunk_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per id, the index in ``shards`` holding it and its row there (int64 arrays, in the order
    given); both are -1 for an id no shard holds (a shard group need not cover every id)."""
    ids = np.asarray(chunk_ids, dtype=np.int64).reshape(-1)
    if not shards:
        return np.full(len(ids), -1, np.int64), np.full(len(ids), -1, np.int64)
    starts = np.array([s.chunk_id_start for s in shards], dtype=np.int64)
    sizes = np.array([s.rows for s in shards], dtype=np.int64)
    order = np.argsort(starts, kind="stable")
    pos = np.searchsorted(starts[order], ids, side="right") - 1
    shard = order[np.maximum(pos, 0)]
    row = ids - starts[shard]
    inside = (pos >= 0) & (row < sizes[shard])
    return np.where(inside, shard, -1), np.where(inside, row, -1)


def rows_by_shard(shards: Sequence[ShardInfo], chunk_ids: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Per shard, the sorted unique rows of the ids in ``chunk_ids`` it holds."""
    shard, row = locate_ids(shards, chunk_ids)
    return [np.unique(row[shard == i]) for i in range(len(shards))]


def masks_of_ids(shards: Sequence[ShardInfo], chunk_ids: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """One boolean mask per shard, true at the rows whose global id is in ``chunk_ids``."""
    masks = []
    for info, rows in zip(shards, rows_by_shard(shards, chunk_ids)):
        mask = np.zeros(info.rows, dtype=bool)
        mask[rows] = True
        masks.append(mask)
    return masks
