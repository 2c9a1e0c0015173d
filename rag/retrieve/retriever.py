"""``Retriever``: dense, BM25 or hybrid first stage, then optional reranking and MMR diversification.

Pipeline for each query:

1. first stage: ``dense`` or ``bm25`` search of the datastore, or ``hybrid``: both asked for
   ``depth`` hits and fused (``rrf`` or ``convex``, see ``rag.retrieve.fusion``);
2. ``rerank``: the top ``rerank_depth`` candidates rescored by a cross-encoder (or bi-encoder)
   and reordered; candidates below ``rerank_depth`` follow in first-stage order with their
   first-stage scores;
3. ``mmr``: the final ``k`` picked from the candidates by maximal marginal relevance over the
   stored chunk embeddings (``lambda`` = ``mmr``); hits keep the score of the previous step.

A ``where`` filter (SQL over chunk columns and metadata) applies to every first-stage search.

Defaults (``RetrieverConfig``; chosen by best worst case over nine collections, docs/benchmarks.md,
"Retrieval defaults"): hybrid fusion is ``convex`` with ``alpha = 0.4`` on ``calibrated`` scores
(0.4 * (1 + cosine) / 2 + 0.6 * logistic(z-score of BM25)), each retriever asked for ``depth = 100``
hits. ``fusion="rrf", alpha=0.5, rrf_k=60`` is the default before issue 18 (plain RRF).

Documents longer than a chunk: ``rank_documents`` / ``Retriever.retrieve_documents`` rank the
documents of a hit list by ``max`` (a document is as good as its best-ranked chunk; the default,
measured against sums and decayed sums) or ``decay`` (its chunks' scores s1 >= s2 >= ... summed as
s1 + 0.1 s2 + 0.01 s3 ...); ``rag eval retrieval`` scores documents the same way.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

import numpy as np

from datastores.errors import UserError
from datastores.records import Hit
from datastores.search import check_queries
from rag.retrieve.fusion import FUSIONS, NORMALIZATIONS, fuse
from rag.retrieve.mmr import ChunkVectors, mmr
from rag.retrieve.rerank import Reranker, load_reranker, parse_spec, rerank_order

MODES = ("dense", "bm25", "hybrid")
AGGREGATIONS = ("max", "decay")
DECAY = 0.1  # weight of a document's second chunk under ``decay`` (third: DECAY**2, ...)
CHUNKS_PER_DOCUMENT = 3  # chunks asked for per document wanted by ``retrieve_documents``


@dataclass(frozen=True)
class DocumentHit:
    """A document ranked by its chunks among one query's hits; ``hits`` are its chunks, in hit order."""

    doc_id: str
    score: float
    hits: tuple[Hit, ...]


def rank_documents(hits: Sequence[Hit], aggregation: str = "max") -> list[DocumentHit]:
    """The documents of ``hits`` (best first), best first: ``max`` keeps the order of each
    document's first hit and its score; ``decay`` scores s1 + DECAY s2 + DECAY² s3 ... over the
    document's chunk scores in descending order (scores >= 0 assumed), ties by first hit."""
    if aggregation not in AGGREGATIONS:
        raise UserError(f"unknown document aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
    groups: dict[str, list[Hit]] = {}
    for hit in hits:
        groups.setdefault(hit.doc_id, []).append(hit)
    if aggregation == "max":
        return [DocumentHit(doc_id, chunks[0].score, tuple(chunks)) for doc_id, chunks in groups.items()]
    docs = []
    for doc_id, chunks in groups.items():
        scores = np.sort(np.array([h.score for h in chunks], dtype=np.float64))[::-1]
        docs.append(DocumentHit(doc_id, float(scores @ DECAY ** np.arange(len(scores))), tuple(chunks)))
    return sorted(docs, key=lambda d: -d.score)  # stable: equal scores keep first-hit order


@dataclass(frozen=True)
class RetrieverConfig:
    """Settings of a retrieval pipeline (the keyword arguments of ``build_retriever``)."""

    mode: str = "dense"
    fusion: str = "convex"
    alpha: float = 0.4
    rrf_k: int = 60
    depth: int = 100
    rerank: str | None = None
    rerank_depth: int = 100
    mmr: float | None = None
    normalization: str = "calibrated"
    device: str = "auto"
    rerank_batch_size: int = 32

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"unknown retrieval mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.fusion not in FUSIONS:
            raise UserError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if self.normalization not in NORMALIZATIONS:
            raise UserError(f"unknown normalization {self.normalization!r}; choose one of {', '.join(NORMALIZATIONS)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"alpha must be in [0, 1] (got {self.alpha})")
        if self.rrf_k < 0:
            raise UserError(f"rrf_k must be >= 0 (got {self.rrf_k})")
        for name in ("depth", "rerank_depth", "rerank_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.mmr is not None and not 0.0 <= self.mmr <= 1.0:
            raise UserError(f"the MMR lambda must be in [0, 1] (got {self.mmr})")
        if self.rerank is not None:
            parse_spec(self.rerank)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RetrieverConfig":
        """Settings from a pipeline config mapping; unknown keys are errors that name them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise UserError(f"unknown retriever setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)


@dataclass
class Retriever:
    """A retrieval pipeline over one datastore (see the module docstring)."""

    datastore: Any
    config: RetrieverConfig = field(default_factory=RetrieverConfig)
    reranker: Reranker | None = None
    #: seconds spent per stage, summed over all calls (encode, dense, bm25, fuse, rerank, mmr)
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def __post_init__(self) -> None:
        if self.config.rerank is not None and self.reranker is None:
            self.reranker = load_reranker(self.config.rerank, self.config.device, self.config.rerank_batch_size)
        self._vectors: ChunkVectors | None = None

    def retrieve(self, query: str, k: int, where: str | None = None) -> list[Hit]:
        """The top ``k`` hits for one query, best first."""
        return self.retrieve_many([query], k, where)[0]

    def retrieve_documents(self, query: str, k: int, where: str | None = None, aggregation: str = "max",
                           chunks_per_document: int = CHUNKS_PER_DOCUMENT) -> list[DocumentHit]:
        """At most ``k`` documents for one query, best first: ``k * chunks_per_document`` chunk
        hits ranked by document (``rank_documents``)."""
        if chunks_per_document < 1:
            raise UserError(f"chunks_per_document must be at least 1 (got {chunks_per_document})")
        return rank_documents(self.retrieve(query, k * chunks_per_document, where), aggregation)[:k]

    def retrieve_many(self, queries: Sequence[str], k: int, where: str | None = None) -> list[list[Hit]]:
        """The top ``k`` hits for each query, best first."""
        if k < 1:
            raise UserError(f"k must be at least 1 (got {k})")
        queries = list(queries)
        if not queries:
            return []
        check_queries(queries)
        pool = k
        if self.reranker is not None:
            pool = max(pool, self.config.rerank_depth)
        if self.config.mmr is not None:
            pool = max(pool, self.config.depth)
        candidates = self._first_stage(queries, pool, where)
        if self.reranker is not None:
            candidates = [self._rerank(q, hits) for q, hits in zip(queries, candidates)]
        if self.config.mmr is not None:
            candidates = [self._diversify(hits, k) for hits in candidates]
        return [hits[:k] for hits in candidates]

    # -- stages -----------------------------------------------------------------------------

    def _timed(self, stage: str, started: float) -> None:
        self.timings[stage] += time.perf_counter() - started

    def _dense(self, queries: list[str], k: int, where: str | None) -> list[list[Hit]]:
        encoder = self.datastore.query_encoder
        if encoder is None:
            return self.datastore.search_many(queries, k=k, mode="dense", where=where)  # raises a clear error
        started = time.perf_counter()
        vectors = np.asarray(encoder(queries), dtype=np.float32)
        self._timed("encode", started)
        started = time.perf_counter()
        hits = self.datastore.search_vectors(vectors, k=k, where=where)
        self._timed("dense", started)
        return hits

    def _bm25(self, queries: list[str], k: int, where: str | None) -> list[list[Hit]]:
        started = time.perf_counter()
        hits = self.datastore.search_many(queries, k=k, mode="bm25", where=where)
        self._timed("bm25", started)
        return hits

    def _first_stage(self, queries: list[str], pool: int, where: str | None) -> list[list[Hit]]:
        mode = self.config.mode
        if mode == "dense":
            return self._dense(queries, pool, where)
        if mode == "bm25":
            return self._bm25(queries, pool, where)
        depth = max(self.config.depth, pool)
        dense, sparse = self._dense(queries, depth, where), self._bm25(queries, depth, where)
        started = time.perf_counter()
        fused = [self._fuse(d, s)[:pool] for d, s in zip(dense, sparse)]
        self._timed("fuse", started)
        return fused

    def _fuse(self, dense: list[Hit], sparse: list[Hit]) -> list[Hit]:
        by_id = {h.chunk_id: h for h in sparse}
        by_id.update({h.chunk_id: h for h in dense})
        c = self.config
        fused = fuse([(h.chunk_id, h.score) for h in dense], [(h.chunk_id, h.score) for h in sparse], c.fusion,
                     alpha=c.alpha, rrf_k=c.rrf_k, normalization=c.normalization)
        return [replace(by_id[chunk_id], score=score) for chunk_id, score in fused]

    def _rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        head, tail = hits[: self.config.rerank_depth], hits[self.config.rerank_depth:]
        started = time.perf_counter()
        scores = self.reranker.score(query, [h.text for h in head])
        self._timed("rerank", started)
        return [replace(head[i], score=float(scores[i])) for i in rerank_order(scores)] + tail

    def _diversify(self, hits: list[Hit], k: int) -> list[Hit]:
        if not hits:
            return hits
        started = time.perf_counter()
        if self._vectors is None:
            self._vectors = ChunkVectors(self.datastore)
        vectors = self._vectors.get([h.chunk_id for h in hits])
        chosen = mmr(np.array([h.score for h in hits]), vectors, k, self.config.mmr)
        self._timed("mmr", started)
        return [hits[i] for i in chosen]


def build_retriever(datastore: Any, mode: str = "dense", *, fusion: str = RetrieverConfig.fusion,
                    alpha: float = RetrieverConfig.alpha, rrf_k: int = RetrieverConfig.rrf_k,
                    depth: int = RetrieverConfig.depth, rerank: str | None = None,
                    rerank_depth: int = RetrieverConfig.rerank_depth, mmr: float | None = None,
                    normalization: str = RetrieverConfig.normalization, device: str = "auto",
                    reranker: Reranker | None = None) -> Retriever:
    """A retrieval pipeline over ``datastore`` (a ``rag.Datastore``); see ``Retriever``.

    ``reranker`` passes an already loaded reranker (e.g. shared between retrievers) instead of
    loading the ``rerank`` spec again.
    """
    config = RetrieverConfig(mode, fusion, alpha, rrf_k, depth, rerank, rerank_depth, mmr, normalization, device)
    return Retriever(datastore, config, reranker)
