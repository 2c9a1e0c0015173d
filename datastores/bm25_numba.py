"""Compiled BM25 top-k of one shard (numba), the ``fast`` extra's path.

``Bm25Scorer`` uses it when numba imports (``bm25_backend``); it returns the same rows and
bit-identical scores as the numpy path in ``datastores.bm25``:

- a row's score is ``0.0 + w_1 * v_1 + w_2 * v_2 + ...`` over the query's terms in query order
  (``w``: count × idf of the term, ``v``: the stored per-posting weight), the float64 operations
  ``np.bincount`` performs over the concatenated postings, in the same order (no fast-math, so no
  fused multiply-add);
- candidates are the rows holding a query term that ``allowed`` lets through (and, when every
  term weight is positive, whose score is positive, as ``top_k_dense`` keeps); ties go to the
  lower row.

Two kernels: ``_exhaustive`` adds every posting into a dense score array (any term weights);
``_maxscore`` (every weight positive) walks the rows in increasing order document-at-a-time with
MaxScore: terms whose upper bounds add up to less than the current k-th best score
(``theta``) are "non-essential", only rows in an essential term's list are visited, and a
non-essential term is looked up (galloping search) only while the row can still reach ``theta``.
Rows arrive in increasing order, so a later row with a score equal to ``theta`` never displaces
an earlier one, and every bound comparison keeps a relative margin of ``_MARGIN`` (far above the
rounding of a sum of a few terms): pruning never drops a row that belongs in the top k.

numba is imported when this module is; ``datastores.bm25`` imports it only when the compiled
backend is chosen. Compiled code is cached on disk (numba's cache: next to this file, else the
user's cache folder); where no cache folder is writable the kernels compile once per process.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np

_MARGIN = 1e-9


def _jit(fn):
    """``numba.njit`` without fast-math (bit-identical float order), GIL released, cached on
    disk where numba finds a writable cache folder."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", numba.NumbaWarning)
            return numba.njit(cache=True, nogil=True)(fn)
    except (RuntimeError, numba.NumbaWarning):  # no writable cache locator: compile per process
        return numba.njit(cache=False, nogil=True)(fn)


@_jit
def _better(s1, r1, s2, r2):
    """Whether (s1, r1) ranks before (s2, r2): higher score, then lower row."""
    return s1 > s2 or (s1 == s2 and r1 < r2)


@_jit
def _sift_down(hs, hr, i, n):
    """Restore the heap (worst entry at the root) below ``i`` over ``hs[:n]``, ``hr[:n]``."""
    while True:
        worst = i
        for child in (2 * i + 1, 2 * i + 2):
            if child < n and _better(hs[worst], hr[worst], hs[child], hr[child]):
                worst = child
        if worst == i:
            return
        hs[i], hs[worst] = hs[worst], hs[i]
        hr[i], hr[worst] = hr[worst], hr[i]
        i = worst


@_jit
def _offer(hs, hr, n, k, s, r):
    """Offer (score, row) to a heap of ``n`` <= ``k`` entries; returns the new ``n``."""
    if n < k:
        i = n
        hs[i], hr[i] = s, r
        while i > 0:
            parent = (i - 1) // 2
            if not _better(hs[parent], hr[parent], hs[i], hr[i]):
                break
            hs[i], hs[parent] = hs[parent], hs[i]
            hr[i], hr[parent] = hr[parent], hr[i]
            i = parent
        return n + 1
    if _better(s, r, hs[0], hr[0]):
        hs[0], hr[0] = s, r
        _sift_down(hs, hr, 0, n)
    return n


@_jit
def _ranked(hs, hr, n):
    """The heap's entries best first (heap sort in place)."""
    for end in range(n - 1, 0, -1):
        hs[0], hs[end] = hs[end], hs[0]
        hr[0], hr[end] = hr[end], hr[0]
        _sift_down(hs, hr, 0, end)
    return hs[:n].copy(), hr[:n].copy()


@_jit
def _exhaustive(indptr, rows, weights, cols, qw, k, allowed, num_docs):
    """Top-k by adding every posting into a dense score array (any sign of term weights)."""
    scores = np.zeros(num_docs, np.float64)
    positive = True
    for t in range(len(cols)):
        positive = positive and qw[t] > 0
        for p in range(indptr[cols[t]], indptr[cols[t] + 1]):
            scores[rows[p]] += qw[t] * weights[p]
    hs = np.empty(k, np.float64)
    hr = np.empty(k, np.int64)
    n = 0
    for t in range(len(cols)):
        for p in range(indptr[cols[t]], indptr[cols[t] + 1]):
            r = rows[p]
            s = scores[r]
            if np.isnan(s):  # already offered
                continue
            scores[r] = np.nan
            if len(allowed) and not allowed[r]:
                continue
            if positive and not s > 0:
                continue
            n = _offer(hs, hr, n, k, s, np.int64(r))
    return _ranked(hs, hr, n)


@_jit
def _gallop(rows, lo, hi, target):
    """First position in ``rows[lo:hi]`` (sorted) whose row is >= ``target``."""
    step = 1
    while lo + step < hi and rows[lo + step] < target:
        lo += step
        step *= 2
    hi = min(hi, lo + step + 1)
    while lo < hi:
        mid = (lo + hi) // 2
        if rows[mid] < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def _maxscore(indptr, rows, weights, col_max, cols, qw, k, allowed):
    """Top-k with MaxScore pruning, document at a time; every ``qw`` must be positive."""
    m = len(cols)
    bound = np.empty(m, np.float64)
    for t in range(m):
        bound[t] = qw[t] * col_max[cols[t]]
    order = np.argsort(bound, kind="mergesort")  # ascending bound: non-essential terms first
    cum = np.cumsum(bound[order])
    pos = np.empty(m, np.int64)
    end = np.empty(m, np.int64)
    for t in range(m):
        pos[t], end[t] = indptr[cols[t]], indptr[cols[t] + 1]
    part = np.zeros(m, np.float64)
    hs = np.empty(k, np.float64)
    hr = np.empty(k, np.int64)
    n, ne, theta = 0, 0, 0.0  # ne: the first ``ne`` terms of ``order`` are non-essential
    while True:
        d = -1
        for i in range(ne, m):
            t = order[i]
            if pos[t] < end[t] and (d < 0 or rows[pos[t]] < d):
                d = rows[pos[t]]
        if d < 0:
            break
        upper = cum[ne - 1] if ne else 0.0
        for i in range(ne, m):
            t = order[i]
            part[t] = 0.0
            if pos[t] < end[t] and rows[pos[t]] == d:
                part[t] = qw[t] * weights[pos[t]]
                upper += part[t]
                pos[t] += 1
        if len(allowed) and not allowed[d]:
            continue
        i = ne - 1
        while i >= 0 and n == k and not upper * (1.0 + _MARGIN) < theta:
            t = order[i]
            upper -= bound[t]
            part[t] = 0.0
            pos[t] = _gallop(rows, pos[t], end[t], d)
            if pos[t] < end[t] and rows[pos[t]] == d:
                part[t] = qw[t] * weights[pos[t]]
                upper += part[t]
            i -= 1
        if n == k and (i >= 0 or upper * (1.0 + _MARGIN) < theta):
            continue  # cannot reach the k-th best
        s = 0.0
        for t in range(m):  # query order, as np.bincount adds
            s += part[t]
        if s > 0:
            n = _offer(hs, hr, n, k, s, np.int64(d))
        if n == k:
            theta = hs[0]
            while ne < m and cum[ne] * (1.0 + _MARGIN) < theta:
                ne += 1
    return _ranked(hs, hr, n)


def column_max(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """The largest value of each CSC column (0 for an empty column): MaxScore's term bounds."""
    out = np.zeros(len(indptr) - 1, dtype=np.float64)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if len(nonempty):
        out[nonempty] = np.maximum.reduceat(values, np.asarray(indptr[nonempty], dtype=np.int64))
    return out


_NO_MASK = np.zeros(0, dtype=np.bool_)


def compiled_top_k(indptr: np.ndarray, rows: np.ndarray, weights: np.ndarray, col_max: np.ndarray,
                   cols: np.ndarray, qw: np.ndarray, k: int, allowed: np.ndarray | None,
                   num_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (scores, rows) of one shard, best first, ties by lower row, for the query
    terms ``cols`` (CSC columns, query order) with weights ``qw`` (count × idf)."""
    k = min(k, num_docs)
    if k <= 0 or len(cols) == 0:
        return np.zeros(0, np.float64), np.zeros(0, np.int64)
    mask = _NO_MASK if allowed is None else allowed
    if bool(np.all(qw > 0)):
        return _maxscore(indptr, rows, weights, col_max, cols, qw, k, mask)
    return _exhaustive(indptr, rows, weights, cols, qw, k, mask, num_docs)
