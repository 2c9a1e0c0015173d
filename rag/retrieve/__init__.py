"""Retrieval pipelines over a datastore: hybrid fusion, reranking, MMR (``build_retriever``)."""

from rag.retrieve.fusion import FUSIONS, NORMALIZATIONS, convex, fuse, normalize, rrf
from rag.retrieve.mmr import ChunkVectors, mmr
from rag.retrieve.rerank import RERANK_KINDS, CrossEncoderReranker, RerankerError, load_reranker
from rag.retrieve.retriever import (AGGREGATIONS, MODES, DocumentHit, Retriever, RetrieverConfig, build_retriever,
                                    rank_documents)

__all__ = ["AGGREGATIONS", "FUSIONS", "MODES", "NORMALIZATIONS", "RERANK_KINDS", "ChunkVectors", "CrossEncoderReranker",
           "DocumentHit", "Retriever", "RetrieverConfig", "RerankerError", "build_retriever", "convex", "fuse",
           "load_reranker", "mmr", "normalize", "rank_documents", "rrf"]
