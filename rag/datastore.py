"""``rag.Datastore``: a datastore whose dense search encodes queries with its own embedder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datastores import Datastore as _StoredDatastore
from datastores.errors import DatastoreError
from indexers.embedding import Embedder


class Datastore(_StoredDatastore):
    """Opens a datastore; dense search encodes queries with the embedder its manifest records
    (``Embedder.from_manifest``: model, weights and query prefix), loaded once, on first use (again
    only if a new manifest generation names another embedder)."""

    def __init__(self, *args, device: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.device = device
        self._embedder: Embedder | None = None
        self._embedder_spec: dict[str, Any] | None = None
        if self.query_encoder is None:
            self.query_encoder = self._encode_queries

    @classmethod
    def open(cls, path: str | Path, query_encoder=None, device: str = "auto", **kwargs: Any) -> "Datastore":
        return super().open(path, query_encoder, device=device, **kwargs)

    @property
    def embedder(self) -> Embedder:
        """The manifest's embedder (not loaded until it first encodes; ``.load()`` loads it now)."""
        spec = self.manifest.embedder
        if spec.get("name") is None:  # built from precomputed vectors with no query embedder
            raise DatastoreError(f"{self.root} was built from precomputed vectors without a query embedder; "
                                 "search it with query vectors (Datastore.search_vectors) or --mode bm25")
        if self._embedder is None or self._embedder_spec != spec:
            self._embedder = Embedder.from_manifest(spec, device=self.device)
            self._embedder_spec = spec
        return self._embedder

    @property
    def query_prefix(self) -> str:
        """The instruction the manifest records for queries (e.g. e5's ``"query: "``)."""
        return str(self.manifest.embedder.get("query_prefix", ""))

    def _encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.encode_queries(texts)
