"""Chunkers by name: ``token``, ``recursive`` (``recursive-start``: separators kept at chunk starts, as
LangChain and the Chroma reproduction do), ``sentence``, ``paragraph``; and the embedding-based
``cluster`` and ``kamradt``, which need an embedder (``make_chunker(..., embedder=...)``)."""

from __future__ import annotations

from typing import Any

from datastores.errors import UserError
from indexers.chunkers.base import Chunker, strip_span
from indexers.chunkers.cluster import ClusterSemanticChunker
from indexers.chunkers.kamradt import KamradtModifiedChunker
from indexers.chunkers.paragraph import ParagraphChunker
from indexers.chunkers.recursive import RecursiveChunker, RecursiveStartChunker
from indexers.chunkers.sentence import SentenceChunker
from indexers.chunkers.token import TokenChunker
from indexers.tokenizers import DEFAULT_TOKENIZER, Tokenizer, load_tokenizer

CHUNKERS: dict[str, type[Chunker]] = {
    "token": TokenChunker,
    "recursive": RecursiveChunker,
    "recursive-start": RecursiveStartChunker,
    "sentence": SentenceChunker,
    "paragraph": ParagraphChunker,
}

# Chunkers that embed pieces of the text to decide where to cut; they need an embedder.
EMBEDDING_CHUNKERS: dict[str, type[Chunker]] = {
    "cluster": ClusterSemanticChunker,
    "kamradt": KamradtModifiedChunker,
}

CHUNKER_NAMES: tuple[str, ...] = (*CHUNKERS, *EMBEDDING_CHUNKERS)


def make_chunker(name: str, chunk_size: int, overlap: int = 0,
                 tokenizer: str | Tokenizer = DEFAULT_TOKENIZER, embedder: Any = None) -> Chunker:
    """A chunker by name, with sizes in tokens of ``tokenizer`` (a name or an instance).

    ``embedder`` (an ``Embedder``, or anything with ``encode_passages(texts) -> unit float32
    [n, d]``) is required by the
    embedding-based chunkers (``cluster``, ``kamradt``) and ignored by the others.
    """
    if name not in CHUNKERS and name not in EMBEDDING_CHUNKERS:
        raise UserError(f"unknown chunker {name!r}; choose one of {', '.join(CHUNKER_NAMES)}")
    if name in EMBEDDING_CHUNKERS and embedder is None:
        raise UserError(f"the {name} chunker embeds the text to find its cuts and needs an embedder: "
                         f"make_chunker({name!r}, ..., embedder=load_embedder(...))")
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    if name in EMBEDDING_CHUNKERS:
        return EMBEDDING_CHUNKERS[name](tokenizer, chunk_size, overlap, embedder=embedder)
    return CHUNKERS[name](tokenizer, chunk_size, overlap)


def build_chunker(name: str, chunk_size: int, overlap: int, tokenizer: str | Tokenizer,
                  embedder: Any) -> tuple[Chunker, Any]:
    """The chunker of a build and the embedder the build then embeds chunks with.

    The embedding chunkers (``cluster``, ``kamradt``) reuse the build's loaded ``embedder`` (one
    model load) through a view of it (``Embedder.with_prefixes``): views take turns on the model,
    since the build may chunk ahead in another thread, and each keeps its own call statistics.
    """
    if name not in EMBEDDING_CHUNKERS:
        return make_chunker(name, chunk_size, overlap, tokenizer), embedder
    return make_chunker(name, chunk_size, overlap, tokenizer, embedder=embedder.with_prefixes(*embedder.prefixes)), embedder


__all__ = ["CHUNKERS", "CHUNKER_NAMES", "Chunker", "ClusterSemanticChunker", "EMBEDDING_CHUNKERS",
           "KamradtModifiedChunker", "ParagraphChunker", "RecursiveChunker", "RecursiveStartChunker", "SentenceChunker", "TokenChunker",
           "build_chunker", "make_chunker", "strip_span"]
