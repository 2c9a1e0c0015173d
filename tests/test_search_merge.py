"""Per-shard top-k selection and the exact merge, against a plain full sort."""

from __future__ import annotations

import numpy as np
import pytest

from datastores.search import KthBest, ShardResult, merge_top_k, top_k_dense, top_k_rows


def naive(scores: np.ndarray, rows: np.ndarray, k: int):
    order = np.lexsort((rows, -scores))[:k]
    return scores[order].tolist(), rows[order].tolist()


@pytest.mark.parametrize("n", [0, 5, 1000, 50_000])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_top_k_rows_equals_full_sort_with_ties(n, k):
    rng = np.random.default_rng(n + k)
    scores = rng.integers(0, 50, n).astype(np.float64)  # many ties
    rows = rng.permutation(n * 3)[:n]
    got = top_k_rows(scores, rows, k)
    assert (got[0].tolist(), got[1].tolist()) == naive(scores, rows, k)


@pytest.mark.parametrize("n", [10, 40_000])
def test_top_k_dense_keeps_only_positive_scores(n):
    rng = np.random.default_rng(n)
    scores = np.where(rng.random(n) < 0.7, 0.0, rng.integers(1, 30, n).astype(np.float64))
    got = top_k_dense(scores, 10)
    positive = np.flatnonzero(scores > 0)
    assert (got[0].tolist(), got[1].tolist()) == naive(scores[positive], positive, 10)
    assert top_k_dense(np.zeros(n), 10)[1].size == 0


def test_merge_is_exact_and_breaks_ties_by_shard_then_row():
    results = [ShardResult(0, np.array([0.9, 0.5]), np.array([3, 1])),
               ShardResult(1, np.array([0.9, 0.7, -1.0]), np.array([0, 2, -1])),
               ShardResult(2, np.array([]), np.array([], dtype=np.int64))]
    assert merge_top_k(results, 3) == [(0, 3, 0.9), (1, 0, 0.9), (1, 2, 0.7)]
    assert merge_top_k(results, 10)[-1] == (0, 1, 0.5)  # the -1 padding row is dropped
    assert merge_top_k([], 5) == []


@pytest.mark.parametrize("k", [0, 1, 5, 40])
def test_kth_best_is_the_kth_score_of_everything_added(k):
    rng = np.random.default_rng(k)
    kth, seen = KthBest(k), np.zeros(0)
    for _ in range(12):
        scores = np.round(rng.random(int(rng.integers(0, 9))), 2)  # ties and empty shards
        kth.add(scores)
        seen = np.concatenate([seen, scores])
        expected = np.sort(seen)[::-1][k - 1] if 0 < k <= len(seen) else 0.0
        assert kth.floor == expected
        assert len(kth.best) <= max(k, 0)
