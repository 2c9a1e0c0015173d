"""Hybrid fusion of ranked lists: reciprocal rank fusion and convex combination of normalised scores.

Every function takes, per retriever, a list of ``(chunk_id, score)`` pairs best first, and returns
one fused list of ``(chunk_id, fused_score)`` best first. Ties are broken by the lower chunk id, so
results never depend on dictionary or set order.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from datastores.errors import UserError

Ranked = Sequence[tuple[int, float]]
FUSIONS = ("rrf", "convex")
NORMALIZATIONS = ("minmax", "zscore", "calibrated")


def _ids(ranked: Ranked) -> np.ndarray:
    return np.fromiter((chunk_id for chunk_id, _ in ranked), dtype=np.int64, count=len(ranked))


def _scores(ranked: Ranked) -> np.ndarray:
    return np.fromiter((score for _, score in ranked), dtype=np.float64, count=len(ranked))


def _sorted(ids: np.ndarray, scores: np.ndarray) -> list[tuple[int, float]]:
    """(id, score) pairs, highest score first, ties by lower chunk id."""
    order = np.lexsort((ids, -scores))
    return list(zip(ids[order].tolist(), scores[order].tolist()))


def rrf(lists: Sequence[Ranked], k: int = 60, weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """Reciprocal rank fusion (Cormack et al. 2009): ``sum_i w_i / (k + rank_i)``, ranks from 1."""
    if k < 0:
        raise UserError(f"rrf k must be >= 0 (got {k})")
    weights = [1.0] * len(lists) if weights is None else list(weights)
    if len(weights) != len(lists):
        raise UserError(f"{len(weights)} weights for {len(lists)} ranked lists")
    if not any(len(ranked) for ranked in lists):
        return []
    ids = np.concatenate([_ids(ranked) for ranked in lists])
    parts = [weight / (k + np.arange(1, len(ranked) + 1, dtype=np.float64)) for ranked, weight in zip(lists, weights)]
    unique, inverse = np.unique(ids, return_inverse=True)
    # bincount adds in input order from 0.0: the same sums, bit for bit, as adding list by list
    return _sorted(unique, np.bincount(inverse, weights=np.concatenate(parts), minlength=len(unique)))


def normalize(scores: np.ndarray, method: str = "minmax", kind: str = "dense") -> np.ndarray:
    """Scores of one ranked list mapped to a common scale.

    - ``minmax``: (s - min) / (max - min), 1.0 for every item when all scores are equal.
    - ``zscore``: (s - mean) / std, 0.0 when all scores are equal.
    - ``calibrated``: probabilities. BM25 (``kind="bm25"``) goes through a logistic of its
      per-query z-score, so the top of a list with a clear winner gets close to 1 and a flat list
      stays near 0.5; cosine similarities (``kind="dense"``) map linearly to [0, 1] by (1 + s) / 2.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if method not in NORMALIZATIONS:
        raise UserError(f"unknown normalization {method!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if len(scores) == 0:
        return scores
    if method == "minmax":
        span = scores.max() - scores.min()
        return (scores - scores.min()) / span if span > 0 else np.ones_like(scores)
    if method == "calibrated" and kind == "dense":
        return np.clip((1.0 + scores) / 2.0, 0.0, 1.0)
    std = scores.std()
    z = (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)
    return z if method == "zscore" else 1.0 / (1.0 + np.exp(-z))


def convex(dense: Ranked, sparse: Ranked, alpha: float = 0.5, normalization: str = "minmax") -> list[tuple[int, float]]:
    """``alpha * norm(dense) + (1 - alpha) * norm(bm25)``.

    A chunk missing from one list gets that list's lowest normalised score (it ranked below
    everything the retriever returned), so a chunk found by only one retriever is not favoured.
    """
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"alpha must be in [0, 1] (got {alpha})")
    every = np.union1d(_ids(dense), _ids(sparse))
    if not len(every):
        return []
    fused = np.zeros(len(every), dtype=np.float64)
    for ranked, weight, kind in ((dense, alpha, "dense"), (sparse, 1.0 - alpha, "bm25")):
        norm = normalize(_scores(ranked), normalization, kind)
        values = np.full(len(every), float(norm.min()) if len(norm) else 0.0)
        values[np.searchsorted(every, _ids(ranked))] = norm
        fused = fused + weight * values
    return _sorted(every, fused)


def fuse(dense: Ranked, sparse: Ranked, method: str = "rrf", *, alpha: float = 0.5, rrf_k: int = 60,
         normalization: str = "minmax") -> list[tuple[int, float]]:
    """Fuse a dense and a BM25 ranked list with ``rrf`` or ``convex``.

    ``alpha`` is the dense side's weight in both: convex takes ``alpha * dense + (1 - alpha) * bm25``;
    RRF weighs the lists ``2 * alpha`` and ``2 * (1 - alpha)``, so ``alpha = 0.5`` is plain RRF."""
    if method == "rrf":
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"alpha must be in [0, 1] (got {alpha})")
        return rrf([dense, sparse], rrf_k, weights=(2.0 * alpha, 2.0 * (1.0 - alpha)))
    if method == "convex":
        return convex(dense, sparse, alpha, normalization)
    raise UserError(f"unknown fusion {method!r}; choose one of {', '.join(FUSIONS)}")
