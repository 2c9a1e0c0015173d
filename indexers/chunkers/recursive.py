"""Recursive separator splitting (LangChain / Chroma ``RecursiveTokenChunker``) on exact spans.

Split on the first separator present, keeping each separator at the start of the piece that
follows it; pieces shorter than ``chunk_size`` tokens are merged greedily with ``overlap``
tokens carried over, longer ones are split again with the next separators. Chunk edges are
stripped of whitespace.
"""

from __future__ import annotations

from typing import Sequence

from indexers.chunkers.base import Chunker, strip_span
from indexers.tokenizers import Tokenizer

DEFAULT_SEPARATORS = ("\n\n", "\n", ".", "?", "!", " ", "")

Span = tuple[int, int]


def split_keeping_separator(text: str, start: int, end: int, separator: str) -> list[Span]:
    """Partition ``text[start:end]`` before every occurrence of ``separator`` (empty pieces dropped)."""
    if separator == "":
        return [(i, i + 1) for i in range(start, end)]
    cuts = [start]
    position = text.find(separator, start, end)
    while position != -1:
        cuts.append(position)
        position = text.find(separator, position + len(separator), end)
    cuts.append(end)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


class RecursiveChunker(Chunker):
    name = "recursive"

    def __init__(self, tokenizer: Tokenizer, chunk_size: int, overlap: int = 0,
                 separators: Sequence[str] = DEFAULT_SEPARATORS):
        super().__init__(tokenizer, chunk_size, overlap)
        self.separators = tuple(separators)

    def spans(self, text: str) -> list[Span]:
        return self._split(text, 0, len(text), self.separators)

    def _split(self, text: str, start: int, end: int, separators: Sequence[str]) -> list[Span]:
        separator, rest = separators[-1], ()
        for i, candidate in enumerate(separators):
            if candidate == "":
                separator = ""
                break
            if text.find(candidate, start, end) != -1:
                separator, rest = candidate, tuple(separators[i + 1:])
                break
        out: list[Span] = []
        good: list[tuple[Span, int]] = []
        for piece in split_keeping_separator(text, start, end, separator):
            length = self.tokenizer.count(text[piece[0]:piece[1]])
            if length < self.chunk_size:
                good.append((piece, length))
                continue
            if good:
                out.extend(self._merge(text, good))
                good = []
            if rest:
                out.extend(self._split(text, piece[0], piece[1], rest))
            else:
                out.append(piece)
        if good:
            out.extend(self._merge(text, good))
        return out

    def _merge(self, text: str, pieces: list[tuple[Span, int]]) -> list[Span]:
        """LangChain's ``_merge_splits`` with an empty joiner; pieces are contiguous spans."""
        merged: list[Span] = []
        current: list[tuple[Span, int]] = []
        total = 0
        for piece, length in pieces:
            if total + length > self.chunk_size and current:
                self._emit(text, current, merged)
                while total > self.overlap or (total + length > self.chunk_size and total > 0):
                    total -= current[0][1]
                    current.pop(0)
            current.append((piece, length))
            total += length
        if current:
            self._emit(text, current, merged)
        return merged

    @staticmethod
    def _emit(text: str, current: list[tuple[Span, int]], merged: list[Span]) -> None:
        start, end = strip_span(text, current[0][0][0], current[-1][0][1])
        if end > start:
            merged.append((start, end))
