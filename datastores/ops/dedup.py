"""Exact and near-duplicate removal: the first occurrence in datastore order is kept.

Shards are streamed in chunk-id order; memory holds one 16-byte key per kept text (exact) and,
for near-duplicates, one MinHash signature in an LSH index plus the 64-bit hashes of its shingles
per kept text, never the texts themselves. LSH bands and rows are chosen so that a pair whose
shingle Jaccard equals the threshold is proposed with probability ``recall`` (0.99), and each
proposed pair is kept only if its exact Jaccard reaches the threshold
(``datastores.ops.minhash.NearDuplicateIndex``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from datastores.errors import UserError
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest
from datastores.ops.minhash import DEFAULT_RECALL, NearDuplicateIndex, exact_key
from datastores.ops.scan import iter_chunk_batches


@dataclass(frozen=True)
class DuplicatePair:
    """A removed chunk and the earlier chunk it duplicates (similarity 1.0 for exact)."""

    removed: int
    kept: int
    kind: str
    similarity: float


@dataclass
class DedupResult:
    """What a dedup pass found: ids to remove, counts per kind and example pairs."""

    scanned: int = 0
    exact: int = 0
    near: int = 0
    removed_ids: list[int] = field(default_factory=list)
    examples: list[DuplicatePair] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"scanned": self.scanned, "exact": self.exact, "near": self.near}


def find_duplicates(root: str | Path, exact: bool = True, near: bool = True, threshold: float = 0.8,
                    shingle: int = 13, num_perm: int = 128, seed: int = 1, max_examples: int = 10,
                    batch_size: int = 4096, progress: Callable[[int], Any] | None = None,
                    recall: float = DEFAULT_RECALL) -> DedupResult:
    """Scan the live chunks of the datastore at ``root`` for duplicates of earlier chunks; near
    pairs are reported with their exact shingle Jaccard."""
    if not (exact or near):
        raise UserError("choose --exact, --near or both")
    manifest = read_manifest(DatastoreLayout(Path(root)))
    seen: dict[bytes, int] = {}
    index = NearDuplicateIndex(threshold, shingle, num_perm, seed, recall) if near else None
    result = DedupResult()
    for batch in iter_chunk_batches(root, manifest, ("text",), batch_size):
        ids = batch.chunk_ids.tolist()
        texts = batch.columns["text"]
        result.scanned += len(ids)
        fresh_ids, fresh_texts, fresh_keys = [], [], []
        for chunk_id, text in zip(ids, texts):
            key = exact_key(text) if exact else b""
            if exact:
                first = seen.setdefault(key, chunk_id)
                if first != chunk_id:
                    result.exact += 1
                    _record(result, DuplicatePair(chunk_id, first, "exact", 1.0), max_examples)
                    continue
            fresh_ids.append(chunk_id)
            fresh_texts.append(text)
            fresh_keys.append(key)
        if index is not None and fresh_ids:
            for chunk_id, key, found in zip(fresh_ids, fresh_keys, index.add_batch(fresh_ids, fresh_texts)):
                if found is not None:
                    if exact:  # later exact copies of this text point at the chunk that is kept
                        seen[key] = found[0]
                    result.near += 1
                    _record(result, DuplicatePair(chunk_id, found[0], "near", round(found[1], 4)), max_examples)
        if progress is not None:
            progress(len(ids))
    result.removed_ids.sort()
    return result


def _record(result: DedupResult, pair: DuplicatePair, max_examples: int) -> None:
    result.removed_ids.append(pair.removed)
    if len(result.examples) < max_examples:
        result.examples.append(pair)

