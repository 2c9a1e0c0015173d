"""Query checks and the exact top-k merge of per-shard results."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from datastores.errors import DatastoreError


class EmptyQueryError(DatastoreError):
    """A query text is empty or only whitespace: there is nothing to search for."""


def check_queries(queries: Sequence[str]) -> None:
    """Raise ``EmptyQueryError`` when any query text is empty or whitespace only."""
    for i, query in enumerate(queries):
        if not str(query).strip():
            where = "" if len(queries) == 1 else f" (query {i + 1} of {len(queries)})"
            raise EmptyQueryError(f"the query is empty{where}: give some text to search for")


#: One query's ranked chunks: (global chunk id, score), best first.
Ranked = list[tuple[int, float]]


@dataclass(frozen=True)
class ShardResult:
    """Candidate rows of one shard with their scores (any order, no padding)."""

    shard: int
    scores: np.ndarray
    rows: np.ndarray


def merge_top_k(results: Sequence[ShardResult], k: int) -> list[tuple[int, int, float]]:
    """The global top-``k`` as (shard, row, score), best first.

    Ties are broken by (shard, row), i.e. by global chunk id (shards hold consecutive id ranges in
    shard order), so a sharded datastore returns exactly what a single index over the same chunks
    would, provided each shard's list is its canonical top-k: scores that do not depend on the
    sharding and no tie cut arbitrarily at its k-th row (``datastores.dense.reader``, ``top_k_rows``).
    """
    parts = [r for r in results if len(r.rows)]
    if not parts or k <= 0:
        return []
    scores = np.concatenate([np.asarray(r.scores, dtype=np.float64) for r in parts])
    rows = np.concatenate([np.asarray(r.rows, dtype=np.int64) for r in parts])
    shards = np.concatenate([np.full(len(r.rows), r.shard, dtype=np.int64) for r in parts])
    valid = rows >= 0
    scores, rows, shards = scores[valid], rows[valid], shards[valid]
    order = np.lexsort((rows, shards, -scores))[:k]
    return list(zip(shards[order].tolist(), rows[order].tolist(), scores[order].tolist()))


def merge_ranked(lists: Sequence[Ranked], k: int) -> Ranked:
    """The top-``k`` (chunk id, score) of several ranked lists (e.g. one per shard group), best
    first, ties by lower chunk id: ``merge_top_k``'s order, chunk ids rising with (shard, row)."""
    pairs = [pair for ranked in lists for pair in ranked]
    if not pairs or k <= 0:
        return []
    ids = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
    scores = np.fromiter((p[1] for p in pairs), dtype=np.float64, count=len(pairs))
    order = np.lexsort((ids, -scores))[:k]
    return list(zip(ids[order].tolist(), scores[order].tolist()))


class KthBest:
    """The k-th best score of the shard results seen so far (0.0 until ``k`` scores were seen): a
    lower bound of the k-th best score of any merge that includes them. Keeps at most ``k``
    scores, so each shard costs O(k) however many came before."""

    def __init__(self, k: int):
        self.k = k
        self.best = np.zeros(0, dtype=np.float64)

    def add(self, scores: np.ndarray) -> None:
        if self.k <= 0:
            return
        merged = np.concatenate([self.best, np.asarray(scores, dtype=np.float64)])
        self.best = merged if len(merged) <= self.k else np.partition(merged, len(merged) - self.k)[-self.k:]

    @property
    def floor(self) -> float:
        return float(self.best.min()) if 0 < self.k <= len(self.best) else 0.0


_SAMPLE = 2048


def _lower_bound_of_kth(scores: np.ndarray, k: int) -> float | None:
    """A value <= the k-th largest score, from a strided sample (the k-th largest of any subset
    never exceeds the k-th largest of the whole), or None when sampling would not pay off."""
    n = len(scores)
    if n < 8 * _SAMPLE or k > _SAMPLE // 8:
        return None
    sample = scores[:: n // _SAMPLE]
    return float(np.partition(sample, len(sample) - k)[len(sample) - k])


def top_k_rows(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (scores, rows), ties broken by lower row, in O(n) plus a sort of ~k items."""
    if k <= 0 or len(rows) == 0:
        return scores[:0], rows[:0]
    bound = _lower_bound_of_kth(scores, k)
    if bound is not None:
        keep = scores >= bound
        scores, rows = scores[keep], rows[keep]
    if len(rows) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]


def top_k_dense(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, rows) among the positive entries of a dense score vector."""
    bound = _lower_bound_of_kth(scores, k)
    if bound is None and 0 < k < len(scores):
        # Too small to sample: the exact k-th largest costs one O(n) partition, and keeps the
        # candidates to about k instead of every row with a positive score.
        bound = float(np.partition(scores, len(scores) - k)[len(scores) - k])
    rows = np.flatnonzero(scores >= bound) if bound is not None and bound > 0 else np.flatnonzero(scores > 0)
    return top_k_rows(scores[rows], rows, k)
