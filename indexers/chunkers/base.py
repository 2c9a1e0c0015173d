"""The chunker interface: exact character spans, from which chunk texts are sliced."""

from __future__ import annotations

from abc import ABC, abstractmethod
import re
from typing import Any, Callable, Iterable, Iterator, Sequence

from datastores.errors import UserError
from datastores.records import Chunk, Document
from indexers.html.document import chunk_metadata
from indexers.tokenizers import Tokenizer


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` so it neither starts nor ends with whitespace (``str.strip`` rules)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_after(text: str, pattern: "re.Pattern[str]") -> list[tuple[int, int]]:
    """Non-empty, whitespace-stripped spans of ``text``, cut just after every match of ``pattern``."""
    spans, start = [], 0
    for cut in [m.end() for m in pattern.finditer(text)] + [len(text)]:
        s, e = strip_span(text, start, cut)
        if e > s:
            spans.append((s, e))
        start = cut
    return spans


def join_piece_runs(text: str, pieces: Sequence[tuple[int, int]],
                    runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """One stripped span per run ``(first, last)`` of consecutive pieces (inclusive); empty ones dropped."""
    out = []
    for first, last in runs:
        start, end = strip_span(text, pieces[first][0], pieces[last][1])
        if end > start:
            out.append((start, end))
    return out


def pack_units(text: str, units: Iterable[tuple[int, int]], count: "Callable[[str], int]",
               chunk_size: int, overlap: int) -> Iterator[tuple[int, int]]:
    """Greedily join consecutive unit spans (sentences, paragraphs) into chunks of at most
    ``chunk_size`` tokens; each new chunk starts with the trailing units of the previous one that
    fit in ``overlap`` tokens and leave room for the unit that did not fit."""
    current: list[tuple[int, int]] = []
    for unit in units:
        if current and count(text[current[0][0]:unit[1]]) > chunk_size:
            yield current[0][0], current[-1][1]
            first = len(current)
            while first > 0 and count(text[current[first - 1][0]:current[-1][1]]) <= overlap \
                    and count(text[current[first - 1][0]:unit[1]]) <= chunk_size:
                first -= 1
            current = current[first:]
        current.append(unit)
    if current:
        yield current[0][0], current[-1][1]


class Chunker(ABC):
    """Splits documents into chunks of at most ``chunk_size`` tokens with ``overlap`` tokens shared."""

    name: str = ""

    def __init__(self, tokenizer: Tokenizer, chunk_size: int, overlap: int = 0):
        if chunk_size < 1:
            raise UserError(f"chunk size must be at least 1 token (got {chunk_size})")
        if overlap < 0:
            raise UserError(f"overlap cannot be negative (got {overlap})")
        if overlap >= chunk_size:
            raise UserError(f"overlap ({overlap}) must be smaller than the chunk size ({chunk_size})")
        self.tokenizer = tokenizer
        self.chunk_size = chunk_size
        self.overlap = overlap

    @abstractmethod
    def spans(self, text: str) -> Iterable[tuple[int, int]]:
        """Character spans ``[start, end)`` of the chunks of ``text``, in document order."""

    def chunk(self, document: Document) -> list[Chunk]:
        """Chunks of ``document``; whitespace-only spans are dropped."""
        return self.chunks_at(document, self.spans(document.text))

    def chunk_counted(self, document: Document) -> tuple[list[Chunk], int]:
        """``chunk(document)`` and the number of tokens of the document's text."""
        return self.chunk(document), self.tokenizer.count(document.text)

    def chunks_at(self, document: Document, spans: Iterable[tuple[int, int]]) -> list[Chunk]:
        """The chunks of ``document`` at ``spans``; whitespace-only spans are dropped."""
        text = document.text
        chunks = []
        for start, end in spans:
            piece = text[start:end]
            if piece.strip():
                chunks.append(Chunk(document.id, start, end, piece, document.source,
                                    chunk_metadata(document, start, end)))
        return chunks

    @property
    def spec(self) -> dict[str, Any]:
        """What the manifest records about this chunker."""
        return {"name": self.name, "chunk_size": self.chunk_size, "overlap": self.overlap,
                "tokenizer": self.tokenizer.name}
