"""``--compact``: rewrite a datastore without its tombstoned rows (chunk ids are renumbered)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

from datastores.layout import DatastoreLayout
from datastores.manifest import Manifest, read_manifest
from datastores.ops.rewrite import SourceShard, exchange_paths, write_selection
from datastores.ops.tombstones import Operation, deleted_masks


def compact(root: str | Path, output: str | Path | None = None,
            progress: Callable[[int], Any] | None = None) -> Manifest:
    """Write the live rows of ``root`` to ``output``, or, without ``output``, replace ``root`` by
    its compacted copy in one atomic directory exchange (the copy is built beside it first, so a
    killed run leaves ``root`` as it was). Unchanged shards are hard-linked, not copied."""
    root = Path(root).resolve()
    manifest = read_manifest(DatastoreLayout(root))
    if output is None and not manifest.tombstones:
        return manifest
    sources = [SourceShard(root, info, ~mask if mask.any() else None)
               for info, mask in zip(manifest.shards, deleted_masks(root, manifest))]
    operation = Operation("compact", {"source": str(root)},
                          {"dropped": manifest.num_deleted, "before": manifest.num_chunks})
    if output is not None:
        return write_selection(output, manifest, sources, operation, manifest.lineage, progress)
    staging = root.parent / f".{root.name}.compact-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        result = write_selection(staging, manifest, sources, operation, manifest.lineage, progress)
        exchange_paths(root, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
