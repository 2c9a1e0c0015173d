"""Maximal marginal relevance over the stored chunk vectors, and reading those vectors."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from datastores.errors import UserError


class ChunkVectors:
    """Stored chunk vectors of a datastore, looked up by global id: the float16 embeddings, or the
    dequantized int8 / multi-bit rescoring layer of a quantized index (memory-mapped, only the rows
    asked for are read; ``datastores.dense.DenseShard.vectors``)."""

    def __init__(self, datastore):
        self.datastore = datastore
        self.starts = np.array([s.info.chunk_id_start for s in datastore.shards], dtype=np.int64)

    def _rows(self, index: int, rows: np.ndarray) -> np.ndarray:
        return self.datastore.shards[index].dense_layer().vectors(rows)  # memory maps opened once per shard

    def get(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """float32 [len(chunk_ids), dim] in the order given."""
        ids = np.asarray(chunk_ids, dtype=np.int64)
        dim = int(self.datastore.manifest.embedder["dim"])
        out = np.zeros((len(ids), dim), dtype=np.float32)
        if len(ids) == 0:
            return out
        shard_of = np.searchsorted(self.starts, ids, side="right") - 1
        for shard in np.unique(shard_of):
            sel = np.flatnonzero(shard_of == shard)
            rows = ids[sel] - self.starts[shard]
            order = np.argsort(rows)
            out[sel[order]] = self._rows(int(shard), rows[order])
        return out


def mmr(relevance: np.ndarray, vectors: np.ndarray, k: int, lam: float = 0.5) -> list[int]:
    """Indices of ``k`` items chosen greedily by ``lam * rel - (1 - lam) * max_sim_to_chosen``.

    ``relevance`` is scaled to [0, 1] (min-max) so that it is comparable with cosine
    similarities between the unit-length ``vectors``; ``lam=1`` keeps the relevance order and
    ``lam=0`` picks the most diverse items. Ties go to the earlier item.
    """
    if not 0.0 <= lam <= 1.0:
        raise UserError(f"the MMR lambda must be in [0, 1] (got {lam})")
    rel = np.asarray(relevance, dtype=np.float64)
    n = len(rel)
    k = min(k, n)
    if k <= 0:
        return []
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones(n)
    vecs = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = vecs / np.where(norms > 0, norms, 1.0)
    sims = (vecs @ vecs.T).astype(np.float64)
    chosen: list[int] = []
    max_sim = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = lam * rel - (1.0 - lam) * penalty
        value[~available] = -np.inf
        best = int(np.argmax(value))  # first maximum: ties go to the earlier (better ranked) item
        chosen.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, sims[best])
    return chosen
