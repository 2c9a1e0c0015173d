"""``--compact``: rewrite a datastore without its tombstoned rows (chunk ids are renumbered), re-packed
into shards of its configured shard size."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from datastores.layout import DatastoreLayout
from datastores.lock import DatastoreLock, staging_folder, writer_lock
from datastores.manifest import Manifest, read_manifest
from datastores.ops.rewrite import SourceShard, configured_shard_size, exchange_paths, write_selection
from datastores.ops.tombstones import Operation, deleted_masks


def _live_sources(root: Path, manifest: Manifest) -> list[SourceShard]:
    return [SourceShard(root, info, ~mask if mask.any() else None)
            for info, mask in zip(manifest.shards, deleted_masks(root, manifest))]


def _operation(root: Path, manifest: Manifest) -> Operation:
    return Operation("compact", {"source": str(root)}, {"dropped": manifest.num_deleted, "before": manifest.num_chunks})


def compact(root: str | Path, output: str | Path | None = None, progress: Callable[[int], Any] | None = None,
            *, lock: DatastoreLock | None = None, overwrite: bool = False) -> Manifest:
    """Write the live rows of ``root`` to ``output`` (``overwrite`` replaces a datastore or a killed
    run's output there), or, without ``output``, replace ``root`` by its compacted copy in one atomic
    directory exchange. The run holds the writer lock of the folder it writes (``lock`` if the
    caller holds it). In place it builds the copy in a locked ``.NAME.compact-PID-TOKEN`` folder
    beside ``root``, so a killed run leaves ``root`` as it was and the next writer removes the
    folder. Live rows are re-packed into shards of the configured shard size
    (``rewrite.configured_shard_size``); fully live shards of that size are hard-linked, not copied."""
    root = Path(root).resolve()
    manifest = read_manifest(DatastoreLayout(root))  # a clear error before anything is locked or created
    if output is not None:
        return write_selection(output, manifest, _live_sources(root, manifest), _operation(root, manifest),
                               manifest.lineage, progress, overwrite=overwrite, lock=lock,
                               shard_size=configured_shard_size(manifest))
    with writer_lock(root, "compact", held=lock):
        manifest = read_manifest(DatastoreLayout(root))
        if not manifest.tombstones:
            return manifest
        staging = staging_folder(root)
        with writer_lock(staging, "compact", create=True) as staging_lock:
            try:
                result = write_selection(staging, manifest, _live_sources(root, manifest),
                                         _operation(root, manifest), manifest.lineage, progress, lock=staging_lock,
                                         shard_size=configured_shard_size(manifest))
                exchange_paths(root, staging)
                staging_lock.moved_to(root)  # its lock file, still held, is now root's
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return result
