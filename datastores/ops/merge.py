"""Merging datastores built with the same embedder and chunker into a new one; shared document ids
are refused or namespaced (``--prefix``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from typing import Any, Callable, Sequence

from datastores.bm25 import Bm25Params
from datastores.dense import DenseSpec
from datastores.errors import DatastoreError, UserError
from datastores.layout import CHUNKS_FILE, DatastoreLayout
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


def _live_doc_ids(root: Path, manifest: Manifest) -> set[str]:
    """The document ids of the live chunks of a datastore."""
    ids: set[str] = set()
    for info, mask in zip(manifest.shards, deleted_masks(root, manifest)):
        column = pq.read_table(DatastoreLayout(root).shard(info.name) / CHUNKS_FILE, columns=["doc_id"]).column(0)
        ids.update(np.asarray(column.to_pylist(), dtype=object)[~mask].tolist())
    return ids


def doc_prefixes(paths: Sequence[Path]) -> list[str]:
    """``--prefix`` namespaces: each datastore's folder name and "/", numbered when names repeat."""
    names = [p.resolve().name for p in paths]
    return [f"{name}/" if names.count(name) == 1 else f"{i + 1}-{name}/" for i, name in enumerate(names)]


def check_doc_ids(paths: Sequence[Path], manifests: Sequence[Manifest]) -> None:
    """Refuse (``DatastoreError``) when two datastores hold live chunks of the same document id."""
    seen: dict[str, Path] = {}
    for path, manifest in zip(paths, manifests):
        ids = _live_doc_ids(path, manifest)
        shared = sorted(i for i in ids if i in seen)
        if shared:
            raise DatastoreError(f"refusing to merge: {len(shared)} document id(s) of {path} also occur in "
                                 f"{seen[shared[0]]} (e.g. {shared[0]!r}); pass --prefix to namespace each "
                                 f"datastore's ids with its folder name ({', '.join(doc_prefixes(paths))})")
        seen.update(dict.fromkeys(ids, path))


def check_mergeable(paths: Sequence[Path], manifests: Sequence[Manifest], prefix: bool) -> None:
    """Same settings everywhere, and (without ``prefix``) no document id in two datastores."""
    check_compatible(paths, manifests)
    if not prefix:
        check_doc_ids(paths, manifests)


def merge(roots: Sequence[str | Path], output: str | Path, progress: Callable[[int], Any] | None = None, *,
          overwrite: bool = False, lock: DatastoreLock | None = None, prefix: bool = False) -> Manifest:
    """Write the live chunks of every datastore in ``roots``, in that order, to ``output``; BM25
    document frequencies and averages are recomputed over the union. Datastores sharing a
    document id are refused, unless ``prefix``: then every document id becomes
    ``<folder name>/<id>`` (``doc_prefixes``). The output is written under its writer lock
    (``lock`` if the caller holds it); ``overwrite`` replaces a datastore or a killed run's partial
    output there."""
    paths = [Path(r) for r in roots]
    if len(paths) < 2:
        raise UserError("merge needs at least two datastores")
    manifests = [read_manifest(DatastoreLayout(p)) for p in paths]
    check_mergeable(paths, manifests, prefix)
    prefixes = doc_prefixes(paths) if prefix else [""] * len(paths)
    sources = []
    for path, manifest, doc_prefix in zip(paths, manifests, prefixes):
        for info, mask in zip(manifest.shards, deleted_masks(path, manifest)):
            sources.append(SourceShard(path, info, ~mask if mask.any() else None, doc_prefix))
    parameters = {"sources": [str(p) for p in paths], **({"doc_id_prefixes": prefixes} if prefix else {})}
    operation = Operation("merge", parameters, {"per_source": [m.num_live for m in manifests]})
    return write_selection(output, manifests[0], sources, operation, (), progress, overwrite=overwrite, lock=lock)
