"""The training sample of a build: rows drawn uniformly over the whole input, by hashed position.

Quantized and IVF datastores need statistics of the whole collection before the first shard is
written (the int8 range, the IVF centroids), and every shard must use the same ones. A streaming
build cannot look ahead, so it makes one extra pass first and keeps a seeded sample of
``train_sample`` rows of the entire input (memory: the sample only):

- a build that embeds samples chunk texts (a read+chunk pass) and embeds the sample once;
- a build with precomputed vectors samples the vectors themselves (a pass that reads only the
  text and vector columns of Parquet files and parses JSON Lines; nothing is chunked): a uniform
  sample of the input's vectors (per-document vectors: of its documents, whatever their chunk
  counts; per-chunk: of its chunks; records with an id seen before are not left out).

Every row has a position (``position``: the pass's task number and the row's index in the task;
tasks are cut the same way whatever the number of worker processes) and a pseudo-random key, a
hash of the position (``sample_keys``). The sample is the ``size`` rows with the smallest keys
(bottom-k sampling: uniform without replacement), in input order, so it is the same however the
pass was split among processes. The result is recorded in the build state, so a resumed build
reuses it instead of recomputing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Rows a task may hold (a row's position is ``task << ROW_BITS | row``).
ROW_BITS = 32
#: The largest key: every row is below it.
NO_LIMIT = np.iinfo(np.uint64).max


def position(task: int, rows: int) -> np.ndarray:
    """Positions (int64 [rows]) of the first ``rows`` rows of task number ``task``."""
    return (np.int64(task) << ROW_BITS) + np.arange(rows, dtype=np.int64)


def sample_keys(positions: np.ndarray, seed: int = 0) -> np.ndarray:
    """Pseudo-random uint64 keys of ``positions`` (splitmix64 of position and seed)."""
    with np.errstate(over="ignore"):
        z = positions.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class BottomK:
    """The ``size`` rows with the smallest keys among all rows added (payload: an array, rows first)."""

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.seed = seed
        self.parts: list[tuple[np.ndarray, np.ndarray, Any]] = []  # (positions, keys, payload) runs
        self.rows = 0
        self.limit = NO_LIMIT  # rows with a key at or above it can no longer enter the sample

    def add(self, positions: np.ndarray, payload: Any) -> None:
        """Offer rows at ``positions`` with their ``payload`` rows."""
        keys = sample_keys(positions, self.seed)
        keep = keys < self.limit
        if keep.any():
            self.parts.append((positions[keep], keys[keep], payload[keep]))
            self.rows += int(keep.sum())
        if self.rows >= 2 * self.size:
            self._trim()

    def _trim(self) -> tuple[np.ndarray, Any] | None:
        """Keep the ``size`` smallest keys (one run); their (positions, payload)."""
        if not self.parts:
            return None
        positions, keys = (np.concatenate([part[i] for part in self.parts]) for i in (0, 1))
        payload = np.concatenate([part[2] for part in self.parts])
        if len(keys) > self.size:
            kept = np.argpartition(keys, self.size - 1)[:self.size]
            positions, keys, payload = positions[kept], keys[kept], payload[kept]
            self.limit = keys.max()
        self.parts, self.rows = [(positions, keys, payload)], len(keys)
        return positions, payload

    def sample(self) -> Any:
        """The sampled payload rows in input order (None when nothing was added)."""
        kept = self._trim()
        if kept is None:
            return None
        positions, payload = kept
        return payload[np.argsort(positions, kind="stable")]


def embed_training_sample(texts: list[str], embedder: Any, batch_size: int | None = None,
                          progress: bool = False) -> np.ndarray:
    """Embeddings [n, dim] of the sampled chunk ``texts``."""
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    if progress:
        from tqdm.auto import tqdm

        with tqdm(total=len(texts), desc="training sample", unit="chunk", dynamic_ncols=True) as bar:
            return embedder.encode_passages(texts, batch_size, progress=bar.update)
    return embedder.encode_passages(texts, batch_size)
