"""The one embedding cache: vectors remembered by (query or passage, hash of the text).

Used by the sweep (the embedding chunkers of every grid point embed the same pieces) and by the
context stages of ``rag.Pipeline`` (a compressor and the extractive generator embed the query
and the same sentences).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Sequence

import numpy as np

from indexers.embedding.embedder import Embedder, EmbedderOptions
from indexers.embedding.models import DEFAULT_EMBEDDER


def text_key(kind: str, text: str) -> bytes:
    """The cache key of ``text`` encoded as a query (``"q"``) or passage (``"p"``)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16, person=kind.encode()).digest()


class CachingEmbedder:
    """An ``Embedder`` that remembers the vectors of the last ``max_entries`` texts it encoded
    (None: all); same ``encode_queries`` / ``encode_passages`` as the embedder it wraps."""

    def __init__(self, embedder: Embedder, max_entries: int | None = None):
        self.embedder = embedder
        self.max_entries = max_entries
        self._cache: dict[bytes, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.embedder.name

    @property
    def dim(self) -> int:
        return self.embedder.dim

    @property
    def spec(self) -> dict[str, Any]:
        return self.embedder.spec

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        return self._cached("q", texts, lambda missing: self.embedder.encode_queries(missing, batch_size))

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None,
                        progress: Callable[[int], None] | None = None) -> np.ndarray:
        return self._cached("p", texts, lambda missing: self.embedder.encode_passages(missing, batch_size, progress))

    def _cached(self, kind: str, texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        keys = [text_key(kind, t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts) if k not in self._cache}
        if missing:
            self._cache.update(zip(missing, np.asarray(encode(list(missing.values())), dtype=np.float32)))
            self._evict(set(keys))
        return np.stack([self._cache[k] for k in keys])

    def _evict(self, wanted: set[bytes]) -> None:
        """Drop the oldest entries beyond ``max_entries`` (never those of the current call)."""
        if self.max_entries is None:
            return
        for old in list(self._cache)[:max(0, len(self._cache) - self.max_entries)]:
            if old not in wanted:
                del self._cache[old]


def caching_embedder(embedder: Any = None, device: str = "auto", max_entries: int | None = 4096) -> CachingEmbedder:
    """``embedder`` with a cache: a ``CachingEmbedder`` as it is, an ``Embedder`` wrapped, a model
    name or manifest record (None: the default model) as an embedder loaded on first use."""
    if isinstance(embedder, CachingEmbedder):
        return embedder
    if isinstance(embedder, dict):
        embedder = Embedder.from_manifest(embedder, device)
    elif embedder is None or isinstance(embedder, str):
        embedder = Embedder(EmbedderOptions(embedder or DEFAULT_EMBEDDER, device=device))
    return CachingEmbedder(embedder, max_entries)
