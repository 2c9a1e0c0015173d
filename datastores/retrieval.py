"""The one search interface: dense, BM25 or hybrid first stage, then rerank and MMR, with ``where``.

``Searcher`` is implemented once here and inherited by every searcher: the local datastore
(``datastores.Datastore``, ``rag.Datastore``) and the Ray searcher (``rag.serve.RayShardSearcher``).
A searcher supplies a ``SearchView`` (``view``: one generation of the datastore, so a whole
search sees one state) with three primitives, ``ranked_vectors`` and ``ranked_bm25`` (the exact
top-k chunk ids and scores of one first stage, canonical order: score, then chunk id) and
``fetch`` (the rows of ranked ids as ``Hit``s), and ``vectors`` (stored chunk vectors by id, for
MMR); ``Searcher.run`` composes them for a ``SearchRequest``:

1. first stage: ``dense`` or ``bm25``, or ``hybrid``: both asked for ``depth`` chunk ids and
   fused (``rrf`` or ``convex``, ``datastores.fusion``); rows are read only for the ids that are
   returned (``fetch``), never for the candidates fusion drops;
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
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from datastores.errors import DatastoreError, UserError
from datastores.fusion import FUSIONS, NORMALIZATIONS, fuse
from datastores.mmr import mmr
from datastores.records import Hit
from datastores.search import Ranked, check_queries

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


def fuse_ranked(dense: Ranked, sparse: Ranked, options: SearchOptions) -> Ranked:
    """One fused list (``options.fusion``) of a dense and a BM25 ranked list: (chunk id, fused score)."""
    return fuse(dense, sparse, options.fusion, alpha=options.alpha, rrf_k=options.rrf_k,
                normalization=options.normalization)


def rerank_hits(reranker: Reranker, query: str, hits: list[Hit], depth: int) -> list[Hit]:
    """The top ``depth`` hits reordered by ``reranker`` (its scores), the rest after them unchanged."""
    head, tail = hits[:depth], hits[depth:]
    scores = reranker.score(query, [h.text for h in head])
    return [replace(head[i], score=float(scores[i])) for i in rerank_order(scores)] + tail


class SearchView(Protocol):
    """One generation of a searcher's datastore: ranked chunk ids per first stage, rows by id."""

    def ranked_vectors(self, vectors: np.ndarray, k: int, where: str | None) -> list[Ranked]:
        """The exact dense top-``k`` (chunk id, score) per query vector, canonical order."""
        ...

    def ranked_bm25(self, queries: Sequence[str], k: int, where: str | None) -> list[Ranked]:
        """The exact BM25 top-``k`` (chunk id, score) per query text, canonical order."""
        ...

    def fetch(self, ranked: Sequence[Ranked]) -> list[list[Hit]]:
        """The hits (rows, with the given scores) of each ranked list, in its order."""
        ...


class Searcher:
    """The one search interface (module docstring); subclasses supply ``view`` and ``vectors``,
    and a ``query_encoder`` (texts -> float32 [n, dim]) for dense search."""

    query_encoder: Callable[[Sequence[str]], np.ndarray] | None = None

    def view(self) -> SearchView:
        """The primitives of the datastore's current generation (one per search call)."""
        raise NotImplementedError

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """Stored vectors (float32 [len(chunk_ids), dim]) of live chunks by global id, in that order."""
        raise NotImplementedError

    def top_k(self, queries: Sequence[str], k: int, mode: str, where: str | None = None) -> list[list[Hit]]:
        """The exact top-``k`` of one first stage (``dense`` or ``bm25``) per query, canonical order;
        ``where`` is a SQL filter over chunk columns."""
        _check_choice("search mode", mode, FIRST_STAGES)
        _check_positive("k", k)
        check_queries(queries)
        view = self.view()
        if mode == "bm25":
            return view.fetch(view.ranked_bm25(queries, k, where))
        return view.fetch(view.ranked_vectors(self.encode_queries(queries), k, where))

    def search_vectors(self, vectors: np.ndarray, k: int = 5, where: str | None = None) -> list[list[Hit]]:
        """The exact dense top-``k`` per query vector (float32 [n, dim]), canonical order."""
        view = self.view()
        return view.fetch(view.ranked_vectors(vectors, k, where))

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Query vectors (float32 [n, dim]) from the searcher's ``query_encoder``."""
        encoder = self.query_encoder
        if encoder is None:
            raise DatastoreError("dense search needs a query encoder; open the datastore with rag.Datastore.open")
        return np.asarray(encoder(list(queries)), dtype=np.float32)

    def search(self, query: str, k: int = 5, mode: str = "dense", where: str | None = None, *,
               reranker: Reranker | None = None, **options: Any) -> list[Hit]:
        """Top-``k`` hits for one query text, best first; ``options`` are ``SearchOptions`` fields."""
        return self.search_many([query], k, mode, where, reranker=reranker, **options)[0]

    def search_many(self, queries: Sequence[str], k: int = 5, mode: str = "dense", where: str | None = None, *,
                    reranker: Reranker | None = None, **options: Any) -> list[list[Hit]]:
        """Top-``k`` hits for each query text, best first (``run`` of a ``SearchRequest``)."""
        return self.run(queries, SearchRequest(mode=mode, k=k, where=where, **options), reranker)

    def search_ids(self, queries: Sequence[str], k: int = 5, mode: str = "dense", where: str | None = None,
                   **options: Any) -> list[Ranked]:
        """``search_many`` without reading rows: (chunk id, score) lists, best first (no reranker: it
        needs the texts; MMR runs on the stored vectors)."""
        queries = list(queries)
        check_queries(queries)
        request = SearchRequest(mode=mode, k=k, where=where, **options)
        return self._ranked(self.view(), queries, request, _Clock(None)) if queries else []

    def run(self, queries: Sequence[str], request: SearchRequest, reranker: Reranker | None = None,
            timings: dict[str, float] | None = None) -> list[list[Hit]]:
        """The hits of ``request`` for each query; ``timings`` (if given) gains seconds per stage."""
        queries = list(queries)
        check_queries(queries)
        if not queries:
            return []
        clock = _Clock(timings)
        view = self.view()
        if reranker is None:  # rows of the k ids returned only
            return view.fetch(self._ranked(view, queries, request, clock))
        pool = max(request.k, request.rerank_depth, request.depth if request.mmr is not None else 0)
        candidates = view.fetch(self._first_stage(view, queries, pool, request, clock))
        with clock("rerank"):
            candidates = [rerank_hits(reranker, q, hits, request.rerank_depth) for q, hits in zip(queries, candidates)]
        if request.mmr is not None:
            with clock("mmr"):
                candidates = [[hits[i] for i in self._diversify([(h.chunk_id, h.score) for h in hits], request)]
                              for hits in candidates]
        return [hits[: request.k] for hits in candidates]

    def _ranked(self, view: SearchView, queries: list[str], request: SearchRequest, clock: "_Clock") -> list[Ranked]:
        """The top ``k`` (chunk id, score) of ``request`` without a reranker: first stage, then MMR."""
        pool = max(request.k, request.depth if request.mmr is not None else 0)
        ranked = self._first_stage(view, queries, pool, request, clock)
        if request.mmr is not None:
            with clock("mmr"):
                ranked = [[r[i] for i in self._diversify(r, request)] for r in ranked]
        return [r[: request.k] for r in ranked]

    def _first_stage(self, view: SearchView, queries: list[str], pool: int, request: SearchRequest,
                     clock: "_Clock") -> list[Ranked]:
        """The ranked chunk ids (at most ``pool`` per query) of the request's first stage."""
        if request.mode == "dense":
            return self._dense(view, queries, pool, request.where, clock)
        if request.mode == "bm25":
            with clock("bm25"):
                return view.ranked_bm25(queries, pool, request.where)
        depth = max(request.depth, pool)
        dense = self._dense(view, queries, depth, request.where, clock)
        with clock("bm25"):
            sparse = view.ranked_bm25(queries, depth, request.where)
        with clock("fuse"):
            return [fuse_ranked(d, s, request)[:pool] for d, s in zip(dense, sparse)]

    def _dense(self, view: SearchView, queries: list[str], k: int, where: str | None,
               clock: "_Clock") -> list[Ranked]:
        """Dense top-``k`` ids, with query encoding and the index search timed apart."""
        with clock("encode"):
            vectors = self.encode_queries(queries)
        with clock("dense"):
            return view.ranked_vectors(vectors, k, where)

    def _diversify(self, ranked: Ranked, request: SearchRequest) -> list[int]:
        """Positions in ``ranked`` of the ``k`` picked by MMR (lambda ``request.mmr``) over the stored vectors."""
        if not ranked:
            return []
        vectors = self.vectors([c for c, _ in ranked])
        return [int(i) for i in mmr(np.array([s for _, s in ranked]), vectors, request.k, request.mmr)]


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
