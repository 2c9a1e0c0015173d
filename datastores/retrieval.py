"""The one search interface: dense, BM25 or hybrid first stage, then rerank and MMR, with ``where``.

``Searcher`` is implemented once here and inherited by every searcher: the local datastore
(``datastores.Datastore``, ``rag.Datastore``) and the Ray searcher (``rag.serve.RayShardSearcher``).
A searcher supplies two primitives, ``top_k`` (the exact per-mode top-k of ``dense`` or ``bm25``,
canonical order: score, then chunk id) and ``vectors`` (stored chunk vectors by id, for MMR);
``Searcher.run`` composes them for a ``SearchRequest``:

1. first stage: ``dense`` or ``bm25``, or ``hybrid``: both asked for ``depth`` hits and fused
   (``rrf`` or ``convex``, ``datastores.fusion``);
2. rerank (when a ``Reranker`` is passed): the top ``rerank_depth`` candidates rescored and
   reordered, the rest following in first-stage order with their first-stage scores;
3. ``mmr``: the final ``k`` picked by maximal marginal relevance over the stored vectors (lambda
   = ``mmr``); hits keep the score of the previous step.

Defaults (chosen by best worst case over nine collections, docs/benchmarks.md, "Retrieval
defaults"): hybrid fusion is ``convex`` with ``alpha = 0.4`` on ``calibrated`` scores, each
retriever asked for ``depth = 100`` hits.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from datastores.errors import UserError
from datastores.fusion import FUSIONS, NORMALIZATIONS, fuse
from datastores.mmr import mmr
from datastores.records import Hit
from datastores.search import check_queries

MODES = ("dense", "bm25", "hybrid")
FIRST_STAGES = ("dense", "bm25")


class Reranker(Protocol):
    """Scores (query, passage) pairs; ``rag.retrieve.load_reranker`` loads one from a spec."""

    spec: str

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class SearchOptions:
    """How to search, apart from the query, ``k`` and ``where`` (see the module docstring)."""

    mode: str = "dense"
    fusion: str = "convex"
    alpha: float = 0.4
    rrf_k: int = 60
    depth: int = 100
    rerank_depth: int = 100
    mmr: float | None = None
    normalization: str = "calibrated"

    def __post_init__(self) -> None:
        _check_choice("retrieval mode", self.mode, MODES)
        _check_choice("fusion", self.fusion, FUSIONS)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"alpha must be in [0, 1] (got {self.alpha})")
        if self.rrf_k < 0:
            raise UserError(f"rrf_k must be >= 0 (got {self.rrf_k})")
        for name in ("depth", "rerank_depth"):
            _check_positive(name, getattr(self, name))
        if self.mmr is not None and not 0.0 <= self.mmr <= 1.0:
            raise UserError(f"the MMR lambda must be in [0, 1] (got {self.mmr})")

    def options(self) -> dict[str, Any]:
        """The ``SearchOptions`` fields of this object (also of a subclass) as keywords."""
        return {f.name: getattr(self, f.name) for f in fields(SearchOptions)}


@dataclass(frozen=True)
class SearchRequest(SearchOptions):
    """One search: its options plus how many hits (``k``) and a SQL filter over chunk columns."""

    k: int = 5
    where: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive("k", self.k)


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UserError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise UserError(f"{name} must be at least 1 (got {value})")


def rerank_order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score, ties to the earlier (upstream better ranked) candidate."""
    return np.lexsort((np.arange(len(scores)), -np.asarray(scores, dtype=np.float64)))


def fuse_hits(dense: list[Hit], sparse: list[Hit], options: SearchOptions) -> list[Hit]:
    """One fused hit list (``options.fusion``) of a dense and a BM25 hit list, fused scores."""
    by_id = {h.chunk_id: h for h in sparse}
    by_id.update({h.chunk_id: h for h in dense})
    fused = fuse([(h.chunk_id, h.score) for h in dense], [(h.chunk_id, h.score) for h in sparse], options.fusion,
                 alpha=options.alpha, rrf_k=options.rrf_k, normalization=options.normalization)
    return [replace(by_id[chunk_id], score=score) for chunk_id, score in fused]


def rerank_hits(reranker: Reranker, query: str, hits: list[Hit], depth: int) -> list[Hit]:
    """The top ``depth`` hits reordered by ``reranker`` (its scores), the rest after them unchanged."""
    head, tail = hits[:depth], hits[depth:]
    scores = reranker.score(query, [h.text for h in head])
    return [replace(head[i], score=float(scores[i])) for i in rerank_order(scores)] + tail


class Searcher:
    """The one search interface (module docstring); subclasses supply ``top_k`` and ``vectors``."""

    def top_k(self, queries: Sequence[str], k: int, mode: str, where: str | None = None) -> list[list[Hit]]:
        """The exact top-``k`` of one first stage (``dense`` or ``bm25``) per query, canonical order."""
        raise NotImplementedError

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """Stored vectors (float32 [len(chunk_ids), dim]) of live chunks by global id, in that order."""
        raise NotImplementedError

    def search(self, query: str, k: int = 5, mode: str = "dense", where: str | None = None, *,
               reranker: Reranker | None = None, **options: Any) -> list[Hit]:
        """Top-``k`` hits for one query text, best first; ``options`` are ``SearchOptions`` fields."""
        return self.search_many([query], k, mode, where, reranker=reranker, **options)[0]

    def search_many(self, queries: Sequence[str], k: int = 5, mode: str = "dense", where: str | None = None, *,
                    reranker: Reranker | None = None, **options: Any) -> list[list[Hit]]:
        """Top-``k`` hits for each query text, best first (``run`` of a ``SearchRequest``)."""
        return self.run(queries, SearchRequest(mode=mode, k=k, where=where, **options), reranker)

    def run(self, queries: Sequence[str], request: SearchRequest, reranker: Reranker | None = None,
            timings: dict[str, float] | None = None) -> list[list[Hit]]:
        """The hits of ``request`` for each query; ``timings`` (if given) gains seconds per stage."""
        queries = list(queries)
        check_queries(queries)
        if not queries:
            return []
        clock = _Clock(timings)
        pool = max(request.k, request.rerank_depth if reranker is not None else 0,
                   request.depth if request.mmr is not None else 0)
        candidates = self._first_stage(queries, pool, request, clock)
        if reranker is not None:
            with clock("rerank"):
                candidates = [rerank_hits(reranker, q, hits, request.rerank_depth)
                              for q, hits in zip(queries, candidates)]
        if request.mmr is not None:
            with clock("mmr"):
                candidates = [self._diversify(hits, request.k, request.mmr) for hits in candidates]
        return [hits[: request.k] for hits in candidates]

    def _first_stage(self, queries: list[str], pool: int, request: SearchRequest, clock: "_Clock") -> list[list[Hit]]:
        if request.mode in FIRST_STAGES:
            with clock(request.mode):
                return self.top_k(queries, pool, request.mode, request.where)
        depth = max(request.depth, pool)
        with clock("dense"):
            dense = self.top_k(queries, depth, "dense", request.where)
        with clock("bm25"):
            sparse = self.top_k(queries, depth, "bm25", request.where)
        with clock("fuse"):
            return [fuse_hits(d, s, request)[:pool] for d, s in zip(dense, sparse)]

    def _diversify(self, hits: list[Hit], k: int, lam: float) -> list[Hit]:
        if not hits:
            return hits
        vectors = self.vectors([h.chunk_id for h in hits])
        return [hits[i] for i in mmr(np.array([h.score for h in hits]), vectors, k, lam)]


class _Clock:
    """Adds the seconds of each ``with clock(stage)`` block to ``timings`` (nothing when None)."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings = timings

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started
