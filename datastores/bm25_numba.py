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
``_pruned`` (every weight positive) is MaxScore term at a time: the shortest posting lists give
partial scores whose k-th best (``theta``, raised by ``floor`` from shards searched before) bounds
the k-th best score from below; the longest lists whose upper bounds add up to less than
``theta`` are non-essential and are looked up (galloping search) only for rows that can still
reach ``theta``; the survivors are rescored exactly in query order. Every bound comparison keeps
a relative margin of ``_MARGIN`` (far above the rounding of a sum of a few terms): pruning never
drops a row that belongs in the top k.

numba is imported when this module is; ``datastores.bm25`` imports it only when the compiled
backend is asked for. Compiled code is cached on disk (numba's cache: next to this file, else
the user's cache folder, or ``NUMBA_CACHE_DIR``): the first process compiles for ~15-20 s on a
loaded 2-core machine, later ones load it in under a second. Where no cache folder is writable
(``CACHED`` is false) the kernels would compile in every process, so ``auto`` keeps numpy.
"""

from __future__ import annotations

import queue
import warnings

import numba
import numpy as np

_MARGIN = 1e-9


def _cache_writable() -> bool:
    """Whether numba can cache compiled code for this file (next to it, in NUMBA_CACHE_DIR or in
    the user's cache folder): without it every process compiles the kernels again (seconds)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", numba.NumbaWarning)
            numba.njit(cache=True)(_cache_writable)
    except (RuntimeError, numba.NumbaWarning):
        return False
    return True


#: Compiled code is cached on disk; ``bm25_backend("auto")`` picks this backend only then.
CACHED = _cache_writable()


def _jit(fn=None, **options):
    """``numba.njit`` without fast-math (bit-identical float order), GIL released, cached on
    disk where possible. Helpers that take arrays are ``inline="always"``: a call that passes
    arrays otherwise costs reference counting on every row."""
    if fn is None:
        return lambda f: _jit(f, **options)
    return numba.njit(cache=CACHED, nogil=True, **options)(fn)


@_jit(inline="always")
def _better(s1, r1, s2, r2):
    """Whether (s1, r1) ranks before (s2, r2): higher score, then lower row."""
    return s1 > s2 or (s1 == s2 and r1 < r2)


@_jit(inline="always")
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


@_jit(inline="always")
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
            if n < k or _better(s, np.int64(r), hs[0], hr[0]):  # checked here: far cheaper than a call
                n = _offer(hs, hr, n, k, s, np.int64(r))
    return _ranked(hs, hr, n)


@_jit(inline="always")
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


@_jit(inline="always")
def _scatter(acc, touched, nt, indptr, rows, weights, col, w):
    """Add one term's postings into ``acc``; rows seen for the first time go to ``touched``."""
    for p in range(indptr[col], indptr[col + 1]):
        r = rows[p]
        if acc[r] == 0.0:
            touched[nt] = r
            nt += 1
        acc[r] += w * weights[p]
    return nt


@_jit(inline="always")
def _kth(values, k):
    """The k-th largest of ``values`` (0.0 when fewer than ``k``), by a size-k heap."""
    if len(values) < k:
        return 0.0
    heap = np.empty(k, np.float64)
    rows = np.zeros(k, np.int64)
    n = 0
    for v in values:
        if n < k or v > heap[0]:
            n = _offer(heap, rows, n, k, v, np.int64(0))
    return heap[0]


@_jit(inline="always")
def _lookup(indptr, rows, weights, col, w, d):
    """``w`` × the posting weight of row ``d`` in the term's list (binary search), 0.0 if absent."""
    lo, hi = indptr[col], indptr[col + 1]
    p = _gallop(rows, lo, hi, d)
    return w * weights[p] if p < hi and rows[p] == d else 0.0


@_jit
def _pruned(indptr, rows, weights, col_max, cols, qw, k, allowed, floor, acc, touched):
    """Top-k with MaxScore pruning, term at a time; every ``qw`` must be positive. ``acc`` (one
    float64 per row, all 0.0) and ``touched`` (one int32 per row) are scratch (``Scratch``);
    ``acc`` is all 0.0 again on return.

    1. The shortest posting lists (together at most a quarter of the rows) are added into a
       partial score; its k-th best among allowed rows, ``theta``, bounds the k-th best score
       from below. 2. Of the other terms, the longest lists whose bounds add up to less than
       ``theta`` are non-essential; the rest are added too. 3. Allowed rows whose partial score
       plus those bounds reaches ``theta`` are candidates; the non-essential terms are looked up
       for them only. 4. Candidates near the new k-th best are rescored exactly in query order.
    ``floor`` (<= the k-th best score of the whole datastore, from shards searched before) raises
    ``theta`` from the start: rows below it cannot reach the merged top k, so they may be left out."""
    m = len(cols)
    length = np.empty(m, np.int64)
    bound = np.empty(m, np.float64)
    for t in range(m):
        length[t] = indptr[cols[t] + 1] - indptr[cols[t]]
        bound[t] = qw[t] * col_max[cols[t]]
    done = np.zeros(m, np.bool_)
    nt, used = 0, 0
    for t in np.argsort(length, kind="mergesort"):
        if used > 0 and used + length[t] > len(acc) // 4:
            break
        used += length[t]
        nt = _scatter(acc, touched, nt, indptr, rows, weights, cols[t], qw[t])
        done[t] = True
    theta = max(_kth(_allowed_values(acc, touched[:nt], allowed), k), floor) * (1.0 - _MARGIN)
    low = np.zeros(m, np.bool_)
    rest = 0.0
    for t in np.argsort(-length, kind="mergesort"):
        if not done[t] and (rest + bound[t]) * (1.0 + _MARGIN) < theta:
            low[t] = True
            rest += bound[t]
    for t in range(m):
        if not done[t] and not low[t]:
            nt = _scatter(acc, touched, nt, indptr, rows, weights, cols[t], qw[t])
    low_order = np.argsort(-bound, kind="mergesort")  # non-essential terms, highest bound first
    cand = np.empty(nt, np.int64)
    approx = np.empty(nt, np.float64)
    heap = np.empty(k, np.float64)
    heap_rows = np.zeros(k, np.int64)
    keep, n = 0, 0
    for r in touched[:nt]:
        upper = acc[r] + rest
        if (len(allowed) and not allowed[r]) or upper * (1.0 + _MARGIN) < theta:
            continue
        for t in low_order:
            if not low[t]:
                continue
            upper += _lookup(indptr, rows, weights, cols[t], qw[t], r) - bound[t]
            if upper * (1.0 + _MARGIN) < theta:
                break
        if upper * (1.0 + _MARGIN) < theta:
            continue
        cand[keep], approx[keep] = r, upper
        keep += 1
        if n < k or upper > heap[0]:
            n = _offer(heap, heap_rows, n, k, upper, np.int64(0))
            if n == k:
                theta = max(theta, heap[0] * (1.0 - _MARGIN))
    cand, approx = cand[:keep], approx[:keep]
    for i in range(nt):
        acc[touched[i]] = 0.0
    theta2 = max(_kth(approx, k), floor) * (1.0 - _MARGIN)
    hs = np.empty(k, np.float64)
    hr = np.empty(k, np.int64)
    n = 0
    for i in range(keep):
        if approx[i] * (1.0 + _MARGIN) < theta2:
            continue
        s = 0.0
        for t in range(m):  # query order, as np.bincount adds
            s += _lookup(indptr, rows, weights, cols[t], qw[t], cand[i])
        if s > 0 and (n < k or _better(s, cand[i], hs[0], hr[0])):
            n = _offer(hs, hr, n, k, s, cand[i])
    return _ranked(hs, hr, n)


@_jit(inline="always")
def _allowed_values(acc, touched, allowed):
    """``acc`` at the touched rows that ``allowed`` lets through."""
    out = np.empty(len(touched), np.float64)
    n = 0
    for r in touched:
        if len(allowed) == 0 or allowed[r]:
            out[n] = acc[r]
            n += 1
    return out[:n]


def column_max(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """The largest value of each CSC column (0 for an empty column): MaxScore's term bounds."""
    out = np.zeros(len(indptr) - 1, dtype=np.float64)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if len(nonempty):
        out[nonempty] = np.maximum.reduceat(values, np.asarray(indptr[nonempty], dtype=np.int64))
    return out


_NO_MASK = np.zeros(0, dtype=np.bool_)


class Scratch:
    """Per-shard scratch of the MaxScore kernel (a zeroed float64 and an int32 per row), reused
    across queries: allocating and zeroing them per call cost as much as the search. A pool, so
    threads searching the same shard each take their own."""

    def __init__(self, num_docs: int):
        self.num_docs = num_docs
        self._free: queue.SimpleQueue = queue.SimpleQueue()

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            return np.zeros(self.num_docs, np.float64), np.empty(self.num_docs, np.int32)

    def give(self, buffers: tuple[np.ndarray, np.ndarray]) -> None:
        self._free.put(buffers)


def compiled_top_k(indptr: np.ndarray, rows: np.ndarray, weights: np.ndarray, col_max: np.ndarray,
                   cols: np.ndarray, qw: np.ndarray, k: int, allowed: np.ndarray | None,
                   scratch: Scratch, floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (scores, rows) of one shard, best first, ties by lower row, for the query
    terms ``cols`` (CSC columns, query order) with weights ``qw`` (count × idf). With a ``floor``
    (a lower bound of the merged k-th best score) rows scoring below it may be left out."""
    k = min(k, scratch.num_docs)
    if k <= 0 or len(cols) == 0:
        return np.zeros(0, np.float64), np.zeros(0, np.int64)
    mask = _NO_MASK if allowed is None else allowed
    if not bool(np.all(qw > 0)):
        return _exhaustive(indptr, rows, weights, cols, qw, k, mask, scratch.num_docs)
    buffers = scratch.take()  # not given back if the kernel fails: it may have left it dirty
    result = _pruned(indptr, rows, weights, col_max, cols, qw, k, mask, float(floor), *buffers)
    scratch.give(buffers)
    return result
