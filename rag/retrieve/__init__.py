"""Retrieval over a datastore: a ``RetrieverConfig`` (search options + reranker) and ``build_retriever``.

The search itself is ``datastores.retrieval.Searcher`` (fusion: ``datastores.fusion``, MMR:
``datastores.mmr``), shared by the local datastore and the Ray searcher; rerankers load here.
"""

from datastores.fusion import FUSIONS, NORMALIZATIONS, convex, fuse, normalize, rrf
from datastores.mmr import mmr
from datastores.retrieval import MODES, SearchOptions, SearchRequest
from rag.retrieve.rerank import RERANK_KINDS, CrossEncoderReranker, RerankerError, load_reranker
from rag.retrieve.retriever import (AGGREGATIONS, DocumentHit, Retriever, RetrieverConfig, build_retriever,
                                    rank_documents)

__all__ = ["AGGREGATIONS", "FUSIONS", "MODES", "NORMALIZATIONS", "RERANK_KINDS", "CrossEncoderReranker", "DocumentHit",
           "Retriever", "RetrieverConfig", "RerankerError", "SearchOptions", "SearchRequest", "build_retriever",
           "convex", "fuse", "load_reranker", "mmr", "normalize", "rank_documents", "rrf"]
