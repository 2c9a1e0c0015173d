"""Exact BM25 top-k over one shard with MaxScore pruning.

Scoring every posting of a query (``Bm25Scorer``'s dense path) costs the length of the posting
lists of its most common terms ("the", "of": nearly every chunk). MaxScore skips most of that
without changing a result. Each query term has an upper bound on what it adds to a score: its
weight (count × idf) times the largest per-posting term weight in its list (``column_max``).

1. The shortest posting lists (together at most a quarter of the shard's rows) are summed into a
   dense partial score. A partial score never exceeds the full one, so the k-th best partial
   score is a lower bound ``theta`` of the k-th best score.
2. Of the other terms, the longest lists whose bounds add up to less than ``theta`` are
   "non-essential": a row holding only those terms scores below the k-th best. The rest are
   summed in too, and ``theta`` rises to the new k-th best partial score.
3. Only rows whose partial score plus the non-essential bounds reaches ``theta`` stay. The
   non-essential terms are added to them one at a time (binary search in their sorted postings),
   highest bound first, dropping rows that fall behind.
4. The rows near the k-th best are rescored exactly, adding the terms in query order from 0.0 as
   the dense path's ``np.bincount`` does (``exact_scores``): bit-identical scores, ties broken by
   lower row as before.

Every comparison that drops a row keeps a relative margin of ``_MARGIN`` (far above the float64
rounding of a sum of a few terms), so pruning only ever keeps more rows than it must.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datastores.search import top_k_rows

_MARGIN = 1e-9
_FIRST_SHARE = 4  # step 1 reads at most 1/_FIRST_SHARE of the shard's rows in postings
_SAMPLE = 2048


@dataclass(frozen=True)
class QueryPostings:
    """A query's terms in one shard, in query order: sorted rows and per-posting term weights
    (without idf) of each posting list, each term's weight (count × idf, > 0) and its bound."""

    rows: list[np.ndarray]
    values: list[np.ndarray]
    weights: list[float]
    bounds: list[float]


def column_max(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """The largest value of each CSC column (0 for an empty column)."""
    out = np.zeros(len(indptr) - 1, dtype=np.float64)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if len(nonempty):
        out[nonempty] = np.maximum.reduceat(values, np.asarray(indptr[nonempty], dtype=np.int64))
    return out


def _lookup(term_rows: np.ndarray, values: np.ndarray, weight: float, rows: np.ndarray) -> np.ndarray:
    """``weight × value`` of each of ``rows`` in one sorted posting list, 0.0 where absent."""
    pos = np.searchsorted(term_rows, rows)
    pos[pos == len(term_rows)] = 0
    return np.where(term_rows[pos] == rows, weight * values[pos], 0.0)


def exact_scores(query: QueryPostings, rows: np.ndarray) -> np.ndarray:
    """Scores of ``rows``, adding the terms in query order from 0.0: the same float operations,
    hence the same values, as one ``np.bincount`` over the concatenated postings."""
    total = np.zeros(len(rows), dtype=np.float64)
    for term_rows, values, weight in zip(query.rows, query.values, query.weights):
        total += _lookup(term_rows, values, weight, rows)
    return total


def _kth(scores: np.ndarray, k: int) -> float:
    """The k-th largest of ``scores`` less the margin (0.0 when fewer), cheaply for long arrays:
    a strided sample's k-th largest bounds it from below and leaves few rows to partition."""
    if len(scores) >= 8 * _SAMPLE:
        sample = scores[:: len(scores) // _SAMPLE]
        scores = scores[scores >= np.partition(sample, len(sample) - k)[len(sample) - k]]
    if len(scores) < k:
        return 0.0
    return float(np.partition(scores, len(scores) - k)[len(scores) - k]) * (1.0 - _MARGIN)


def _dense_sum(query: QueryPostings, terms: list[int], num_docs: int, allowed: np.ndarray | None) -> np.ndarray:
    """Partial scores of every row from the ``terms``' postings (any float order; 0 where not allowed)."""
    rows = np.concatenate([query.rows[t] for t in terms])
    values = np.concatenate([query.weights[t] * query.values[t] for t in terms])
    partial = np.bincount(rows, weights=values, minlength=num_docs)
    if allowed is not None:
        partial[~allowed] = 0.0
    return partial


def _non_essential(query: QueryPostings, unread: list[int], theta: float) -> list[int]:
    """Step 2: the longest unread lists whose bounds add up to less than ``theta``, highest bound first."""
    chosen, total = [], 0.0
    for t in sorted(unread, key=lambda t: -len(query.rows[t])):
        if (total + query.bounds[t]) * (1.0 + _MARGIN) < theta:
            chosen.append(t)
            total += query.bounds[t]
    return sorted(chosen, key=lambda t: -query.bounds[t])


def _survivors(query: QueryPostings, k: int, num_docs: int,
               allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, list[int], float]:
    """Steps 1-2: rows that may reach the top k, their partial scores, the non-essential terms
    still to add and ``theta``."""
    order = sorted(range(len(query.rows)), key=lambda t: len(query.rows[t]))
    lengths = np.cumsum([len(query.rows[t]) for t in order])
    first = order[:max(1, int(np.count_nonzero(lengths <= num_docs // _FIRST_SHARE)))]
    theta = _kth(_dense_sum(query, first, num_docs, allowed), k)
    low = _non_essential(query, order[len(first):], theta)
    partial = _dense_sum(query, [t for t in order if t not in low], num_docs, allowed)
    remaining = sum(query.bounds[t] for t in low) * (1.0 + _MARGIN)
    cut = max(theta * (1.0 - _MARGIN) - remaining, np.finfo(np.float64).tiny)
    rows = np.flatnonzero(partial >= cut)
    return rows.astype(query.rows[0].dtype), partial[rows], low, theta


def pruned_top_k(query: QueryPostings, k: int, num_docs: int,
                 allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (scores, rows) among rows holding a query term (and ``allowed``): the same
    rows and scores as scoring every posting. Every term weight must be positive."""
    if k <= 0:
        return np.zeros(0), np.zeros(0, np.int64)
    rows, partial, low, theta = _survivors(query, k, num_docs, allowed)
    remaining = sum(query.bounds[t] for t in low)
    for t in low:  # step 3
        partial = partial + _lookup(query.rows[t], query.values[t], query.weights[t], rows)
        remaining -= query.bounds[t]
        theta = max(theta, _kth(partial, k))
        keep = partial + max(remaining, 0.0) * (1.0 + _MARGIN) >= theta
        rows, partial = rows[keep], partial[keep]
    rows = rows[partial >= _kth(partial, k)]
    return top_k_rows(exact_scores(query, rows), rows.astype(np.int64), k)
