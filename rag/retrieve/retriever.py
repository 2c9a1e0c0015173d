"""``Retriever``: a ``datastores.retrieval.SearchRequest`` with a loaded reranker, over any searcher.

The search itself (dense, BM25 or hybrid first stage, rerank, MMR, ``where``) is
``datastores.retrieval.Searcher.run``, the one implementation the local datastore and the Ray
searcher share; ``RetrieverConfig`` adds the reranker to load (``rerank``: a spec, see
``rag.retrieve.rerank``) to the ``SearchOptions``, and is what a pipeline config's ``retriever:``
mapping and ``build_retriever``'s keywords state.

Documents longer than a chunk: ``rank_documents`` / ``Retriever.retrieve_documents`` rank the
documents of a hit list by ``max`` (a document is as good as its best-ranked chunk; the default,
measured against sums and decayed sums) or ``decay`` (its chunks' scores s1 >= s2 >= ... summed as
s1 + 0.1 s2 + 0.01 s3 ...); ``rag eval retrieval`` scores documents the same way.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence

import numpy as np

from datastores.errors import UserError
from datastores.records import Hit
from datastores.retrieval import Reranker, SearchOptions, SearchRequest
from rag.retrieve.rerank import load_reranker, parse_spec

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
class RetrieverConfig(SearchOptions):
    """Search options plus the reranker to load (the keyword arguments of ``build_retriever``)."""

    rerank: str | None = None
    device: str = "auto"
    rerank_batch_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rerank_batch_size < 1:
            raise UserError(f"rerank_batch_size must be at least 1 (got {self.rerank_batch_size})")
        if self.rerank is not None:
            parse_spec(self.rerank)

    def request(self, k: int, where: str | None = None) -> SearchRequest:
        """The ``SearchRequest`` for ``k`` hits under ``where`` with these options."""
        return SearchRequest(k=k, where=where, **self.options())

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
    """Searches ``datastore`` (any ``datastores.retrieval.Searcher``) with ``config`` and its reranker."""

    datastore: Any
    config: RetrieverConfig = field(default_factory=RetrieverConfig)
    reranker: Reranker | None = None
    #: seconds spent per stage, summed over all calls (dense, bm25, fuse, rerank, mmr)
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def __post_init__(self) -> None:
        if self.config.rerank is not None and self.reranker is None:
            self.reranker = load_reranker(self.config.rerank, self.config.device, self.config.rerank_batch_size)

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
        return self.datastore.run(queries, self.config.request(k, where), self.reranker, self.timings)


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
    config = RetrieverConfig(mode=mode, fusion=fusion, alpha=alpha, rrf_k=rrf_k, depth=depth, rerank=rerank,
                             rerank_depth=rerank_depth, mmr=mmr, normalization=normalization, device=device)
    return Retriever(datastore, config, reranker)
