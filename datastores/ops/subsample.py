"""A seeded, deterministic random subset of a datastore's live chunks, as a new datastore."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from datastores.errors import UserError
from datastores.layout import DatastoreLayout
from datastores.locate import masks_of_ids
from datastores.lock import DatastoreLock
from datastores.manifest import Manifest, read_manifest
from datastores.ops.rewrite import SourceShard, write_selection
from datastores.ops.tombstones import Operation, deleted_masks


def subsample_masks(manifest: Manifest, deleted: list[np.ndarray], fraction: float, seed: int) -> list[np.ndarray]:
    """Per shard, the rows chosen: ``round(fraction × live)`` live rows drawn without replacement
    by ``numpy.random.default_rng(seed)`` (the same seed always picks the same rows)."""
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"the fraction -p must be in (0, 1] (got {fraction})")
    live = np.concatenate([np.flatnonzero(~d) + s.chunk_id_start for s, d in zip(manifest.shards, deleted)])
    chosen = np.sort(np.random.default_rng(seed).choice(live, round(fraction * len(live)), replace=False))
    return masks_of_ids(manifest.shards, chosen)


def subsample(root: str | Path, output: str | Path, fraction: float, seed: int = 0,
              progress: Callable[[int], Any] | None = None, *, overwrite: bool = False,
              lock: DatastoreLock | None = None) -> Manifest:
    """Write a ``fraction`` of the live chunks of ``root`` (seeded) to the new datastore ``output``,
    under its writer lock (``lock`` if the caller holds it); ``overwrite`` replaces a datastore or a
    killed run's partial output there."""
    root = Path(root)
    manifest = read_manifest(DatastoreLayout(root))
    masks = subsample_masks(manifest, deleted_masks(root, manifest), fraction, seed)
    sources = [SourceShard(root, info, mask) for info, mask in zip(manifest.shards, masks)]
    operation = Operation("subsample", {"source": str(root), "fraction": fraction, "seed": seed},
                          {"before": manifest.num_live})
    return write_selection(output, manifest, sources, operation, manifest.lineage, progress, overwrite=overwrite,
                           lock=lock)
