"""Maximal marginal relevance: pick diverse items from a ranked list by their (stored) vectors."""

from __future__ import annotations

import numpy as np

from datastores.errors import UserError


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
