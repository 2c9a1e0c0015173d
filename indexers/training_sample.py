"""The training sample of a build: chunks drawn uniformly over the whole input, then embedded.

Quantized and IVF datastores need statistics of the whole collection before the first shard is
written (the int8 range, the IVF centroids), and every shard must use the same ones. A streaming
build cannot look ahead, so it makes one extra read+chunk pass first: a seeded reservoir sample
of ``train_sample`` chunks over the entire input (memory: the sampled texts only), embedded once.
The result is recorded in the build state, so a resumed build reuses it instead of recomputing.
Cost: one more read+chunk pass and ``train_sample`` extra embeddings, small next to embedding
the whole input when the input is large.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from datastores.records import Chunk
from indexers.vectors import VectorSpec


def reservoir_sample(items: Iterable[Any], size: int, seed: int = 0) -> list[Any]:
    """A uniform sample of ``size`` items from a stream of unknown length (Algorithm R), in stream order."""
    rng = np.random.default_rng(seed)
    kept: list[tuple[int, Any]] = []
    for seen, item in enumerate(items):
        if seen < size:
            kept.append((seen, item))
        else:
            slot = int(rng.integers(0, seen + 1))
            if slot < size:
                kept[slot] = (seen, item)
    return [item for _, item in sorted(kept, key=lambda pair: pair[0])]


def embed_training_sample(texts: Iterable[str], size: int, embedder: Any, batch_size: int | None = None,
                          progress: bool = False) -> np.ndarray:
    """Embeddings [n <= size, dim] of chunk texts sampled evenly (uniformly) from the stream ``texts``."""
    sample = reservoir_sample(texts, size)
    if not sample:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    if progress:
        from tqdm.auto import tqdm

        with tqdm(total=len(sample), desc="training sample", unit="chunk", dynamic_ncols=True) as bar:
            return embedder.encode_passages(sample, batch_size, progress=bar.update)
    return embedder.encode_passages(sample, batch_size)


def sample_vectors(chunks: Iterable[Chunk], spec: VectorSpec, size: int) -> np.ndarray:
    """The training sample of a precomputed build: the vectors of ``size`` chunks drawn uniformly
    from a stream of ``VectorChunk``s (the same reservoir as ``embed_training_sample``)."""
    picked = reservoir_sample(chunks, size)
    if not picked:
        return np.zeros((0, spec.dim or 0), dtype=np.float32)
    return np.stack([c.vector for c in picked])
