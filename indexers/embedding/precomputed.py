"""The backend of a build whose vectors all come with the documents: it has no model."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from indexers.embedding.models import EmbedderError


class PrecomputedBackend:
    """Records the dimension; any text to encode is refused (dense text queries of such a datastore
    need query vectors, ``Datastore.search_vectors``)."""

    backend = "precomputed"
    name = None
    weights_sha256 = None
    max_seq_length = None

    def __init__(self, dim: int):
        self.dim = int(dim)

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": None, "normalized": True, "max_seq_length": None, "backend": "precomputed"}

    def encode(self, texts: Sequence[str], batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        raise EmbedderError("built from precomputed vectors without a query embedder: every chunk needs its "
                            "vector, and dense queries need query vectors (Datastore.search_vectors) or --mode bm25")
