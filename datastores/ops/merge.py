"""Merging datastores built with the same embedder and chunker into a new one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from datastores.bm25 import Bm25Params
from datastores.dense import DenseSpec
from datastores.errors import DatastoreError
from datastores.layout import DatastoreLayout
from datastores.lock import DatastoreLock
from datastores.manifest import Manifest, read_manifest
from datastores.ops.rewrite import SourceShard, write_selection
from datastores.ops.tombstones import Operation, deleted_masks


def _settings(manifest: Manifest) -> dict[str, dict[str, Any]]:
    return {"embedder": manifest.embedder, "chunker": manifest.chunker,
            "bm25": Bm25Params.from_manifest(manifest.bm25).to_dict(),  # every option, old manifests too
            # index settings (aliases resolved) and the datastore-wide int8 range of rescoring files
            "dense index": {**DenseSpec.coerce(manifest.dense_index or "float-flat").settings(),
                            "int8": manifest.dense_index.get("int8")}}


def check_compatible(paths: Sequence[Path], manifests: Sequence[Manifest]) -> None:
    """Raise ``DatastoreError`` naming the first setting that differs from the first datastore."""
    first = _settings(manifests[0])
    for path, manifest in zip(paths[1:], manifests[1:]):
        for part, values in _settings(manifest).items():
            if values != first[part]:
                keys = sorted(k for k in set(values) | set(first[part]) if values.get(k) != first[part].get(k))
                detail = ", ".join(f"{k}: {first[part].get(k)!r} vs {values.get(k)!r}" for k in keys)
                raise DatastoreError(f"cannot merge {paths[0]} and {path}: the {part} differs ({detail})")


def merge(roots: Sequence[str | Path], output: str | Path, progress: Callable[[int], Any] | None = None, *,
          overwrite: bool = False, lock: DatastoreLock | None = None) -> Manifest:
    """Write the live chunks of every datastore in ``roots``, in that order, to ``output``; BM25
    document frequencies and averages are recomputed over the union. The output is written under
    its writer lock (``lock`` if the caller holds it); ``overwrite`` replaces a datastore or a
    killed run's partial output there."""
    paths = [Path(r) for r in roots]
    if len(paths) < 2:
        raise ValueError("merge needs at least two datastores")
    manifests = [read_manifest(DatastoreLayout(p)) for p in paths]
    check_compatible(paths, manifests)
    sources = []
    for path, manifest in zip(paths, manifests):
        for info, mask in zip(manifest.shards, deleted_masks(path, manifest)):
            sources.append(SourceShard(path, info, ~mask if mask.any() else None))
    operation = Operation("merge", {"sources": [str(p) for p in paths]},
                          {"per_source": [m.num_live for m in manifests]})
    return write_selection(output, manifests[0], sources, operation, (), progress, overwrite=overwrite, lock=lock)
