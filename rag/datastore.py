"""``rag.Datastore``: a datastore whose dense search encodes queries with its own embedder."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from datastores import Datastore as _StoredDatastore
from indexers.embedders import SentenceTransformerEmbedder, load_embedder


class Datastore(_StoredDatastore):
    """Opens a datastore and loads the embedder its manifest records, once, on first dense search."""

    def __init__(self, *args, device: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.device = device
        self._embedder: SentenceTransformerEmbedder | None = None
        if self.query_encoder is None:
            self.query_encoder = self._encode_queries

    @classmethod
    def open(cls, path: str | Path, query_encoder=None, device: str = "auto") -> "Datastore":
        stored = _StoredDatastore.open(path, query_encoder)
        return cls(stored.root, stored.manifest, query_encoder, device=device)

    @property
    def embedder(self) -> SentenceTransformerEmbedder:
        if self._embedder is None:
            self._embedder = load_embedder(self.manifest.embedder, device=self.device)
        return self._embedder

    @property
    def query_prefix(self) -> str:
        """The instruction the manifest records for queries (e.g. e5's ``"query: "``)."""
        return str(self.manifest.embedder.get("query_prefix", ""))

    def _encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        prefix = self.query_prefix
        return self.embedder.encode([prefix + t for t in texts] if prefix else texts)
