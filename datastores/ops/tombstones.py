"""Tombstones: per-shard deletion bitmaps recorded in the manifest, committed atomically.

An operation never rewrites shard files. It writes new bitmap files below ``tombstones/`` (names
the current manifest does not reference), then commits a new manifest that references them and
records the operation in its lineage. Until that atomic commit the previous manifest, and with it
the previous state, is what every reader sees; a killed operation leaves only unreferenced files,
which the next commit removes. Commits hold the datastore's writer lock (``datastores.lock``) and
re-read the manifest under it; bitmap names are unique per operation (lineage index, pid, random
suffix), so two operations never write the same file.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from datastores.errors import DatastoreError, UserError
from datastores.layout import TOMBSTONES_DIR, DatastoreLayout, atomic_write_bytes, sha256_file
from datastores.locate import rows_by_shard
from datastores.lock import DatastoreLock, writer_lock
from datastores.manifest import Manifest, TombstoneInfo, read_manifest, write_manifest


def read_deleted_mask(root: str | Path, info: TombstoneInfo, rows: int) -> np.ndarray:
    """The boolean [rows] mask of deleted rows stored in ``info.file``."""
    path = Path(root) / info.file
    try:
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise DatastoreError(f"{path} is unreadable: {exc}") from exc
    if len(data) != (rows + 7) // 8:
        raise DatastoreError(f"{path} holds {len(data)} bytes; a bitmap of {rows} rows needs {(rows + 7) // 8}")
    mask = np.unpackbits(data, count=rows, bitorder="little").astype(bool)
    if int(mask.sum()) != info.deleted:
        raise DatastoreError(f"{path} marks {int(mask.sum())} rows deleted; the manifest records {info.deleted}")
    return mask


def deleted_masks(root: str | Path, manifest: Manifest) -> list[np.ndarray]:
    """Per shard, the boolean mask of tombstoned rows (all false for shards without a bitmap)."""
    out = []
    for shard in manifest.shards:
        info = manifest.tombstones.get(shard.name)
        out.append(np.zeros(shard.rows, bool) if info is None else read_deleted_mask(root, info, shard.rows))
    return out


def deleted_chunk_ids(root: str | Path, manifest: Manifest) -> np.ndarray:
    """Global ids of every tombstoned chunk, ascending."""
    parts = [np.flatnonzero(mask) + shard.chunk_id_start
             for shard, mask in zip(manifest.shards, deleted_masks(root, manifest)) if mask.any()]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


@dataclass
class Operation:
    """One entry of a manifest's lineage; ``started`` is a ``time.perf_counter`` reading."""

    operation: str
    parameters: dict[str, Any]
    counts: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def record(self) -> dict[str, Any]:
        return {"operation": self.operation, "parameters": self.parameters, "counts": self.counts,
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - self.started, 3)}


def _bitmap_name(manifest: Manifest, shard: str) -> str:
    """A bitmap file name no other operation can choose: lineage index, pid and a random suffix."""
    return f"{TOMBSTONES_DIR}/{shard}.op{len(manifest.lineage) + 1:04d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.bits"


def remove_unreferenced_bitmaps(root: str | Path, manifest: Manifest) -> None:
    """Delete bitmap files of superseded manifests or killed operations."""
    folder = Path(root) / TOMBSTONES_DIR
    if not folder.is_dir():
        return
    referenced = {Path(t.file).name for t in manifest.tombstones.values()}
    for path in folder.iterdir():
        if path.is_file() and path.name not in referenced:
            path.unlink(missing_ok=True)


def _new_masks(root: Path, manifest: Manifest, chunk_ids: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
    """Per shard that gains deletions, its new deleted mask; and how many rows are newly deleted."""
    changed, removed = {}, 0
    per_shard = rows_by_shard(manifest.shards, chunk_ids)
    for shard, mask, rows in zip(manifest.shards, deleted_masks(root, manifest), per_shard):
        new = rows[~mask[rows]]
        if len(new):
            removed += len(new)
            changed[shard.name] = mask.copy()
            changed[shard.name][new] = True
    return changed, removed


def commit_tombstones(root: str | Path, before: Manifest, chunk_ids: np.ndarray, operation: Operation,
                      lock: DatastoreLock | None = None) -> Manifest:
    """Tombstone ``chunk_ids`` (global ids; already deleted ones are fine) and commit atomically.

    ``before`` is the manifest the operation read; the commit holds the writer lock (``lock``
    when the caller already holds it, else taken here without waiting), re-reads the manifest
    and is refused if another operation committed meanwhile. ``operation.counts`` gains
    ``removed`` (newly deleted rows) and ``live``.
    """
    layout = DatastoreLayout(Path(root))
    chunk_ids = np.unique(np.asarray(chunk_ids, dtype=np.int64))
    if len(chunk_ids) and (chunk_ids[0] < 0 or chunk_ids[-1] >= before.num_chunks):
        raise UserError(f"chunk ids must lie in [0, {before.num_chunks}) (got {chunk_ids[0]}..{chunk_ids[-1]})")
    with writer_lock(layout.root, operation.operation, held=lock):
        current = read_manifest(layout)
        if current.content_checksum != before.content_checksum or len(current.lineage) != len(before.lineage):
            raise DatastoreError(f"{layout.root} was changed by another operation meanwhile; run this one again")
        changed, removed = _new_masks(layout.root, current, chunk_ids)
        tombstones = dict(current.tombstones)
        (layout.root / TOMBSTONES_DIR).mkdir(exist_ok=True)
        for shard, mask in changed.items():
            name = _bitmap_name(current, shard)
            path = layout.root / name
            atomic_write_bytes(path, np.packbits(mask, bitorder="little").tobytes())
            tombstones[shard] = TombstoneInfo(name, path.stat().st_size, sha256_file(path), int(mask.sum()))
        operation.counts = {**operation.counts, "removed": removed}
        after = Manifest(**{**current.__dict__, "tombstones": tombstones, "lineage": list(current.lineage)})
        operation.counts["live"] = after.num_live
        after.lineage.append(operation.record())
        write_manifest(layout, after)
        remove_unreferenced_bitmaps(layout.root, after)
    return after
