"""Chunkers by name: ``token``, ``recursive``, ``sentence``."""

from __future__ import annotations

from indexers.chunkers.base import Chunker, strip_span
from indexers.chunkers.recursive import RecursiveChunker
from indexers.chunkers.sentence import SentenceChunker
from indexers.chunkers.token import TokenChunker
from indexers.tokenizers import DEFAULT_TOKENIZER, Tokenizer, load_tokenizer

CHUNKERS: dict[str, type[Chunker]] = {
    "token": TokenChunker,
    "recursive": RecursiveChunker,
    "sentence": SentenceChunker,
}


def make_chunker(name: str, chunk_size: int, overlap: int = 0,
                 tokenizer: str | Tokenizer = DEFAULT_TOKENIZER) -> Chunker:
    """A chunker by name, with sizes in tokens of ``tokenizer`` (a name or an instance)."""
    if name not in CHUNKERS:
        raise ValueError(f"unknown chunker {name!r}; choose one of {', '.join(CHUNKERS)}")
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    return CHUNKERS[name](tokenizer, chunk_size, overlap)


__all__ = ["CHUNKERS", "Chunker", "RecursiveChunker", "SentenceChunker", "TokenChunker",
           "make_chunker", "strip_span"]
