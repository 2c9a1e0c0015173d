"""Recursive separator splitting (LangChain / Chroma ``RecursiveTokenChunker``) on exact spans.

Split on the first separator present; pieces shorter than ``chunk_size`` tokens are merged
greedily with ``overlap`` tokens carried over, longer ones are split again with the next
separators. Chunk edges are stripped of whitespace.

``keep_separator="end"`` (the default, chunker ``recursive``) keeps each separator at the end of
the piece before it, so a chunk ends with its sentence's period. ``"start"`` (chunker
``recursive-start``) keeps it at the start of the piece after it, as LangChain's
``keep_separator=True`` and Chroma's ``RecursiveTokenChunker`` do: chunks then begin with ". ".
The Chroma reproduction (``configs/sweeps/chroma-minilm.yaml``) and the pre-splitters of the
``cluster`` and ``kamradt`` chunkers use ``"start"``.
"""

from __future__ import annotations

from typing import Sequence

from datastores.errors import UserError
from indexers.chunkers.base import Chunker, strip_span
from indexers.tokenizers import Tokenizer

DEFAULT_SEPARATORS = ("\n\n", "\n", ".", "?", "!", " ", "")
KEEP_SEPARATOR = ("end", "start")

Span = tuple[int, int]


def split_keeping_separator(text: str, start: int, end: int, separator: str, at: str = "start") -> list[Span]:
    """Partition ``text[start:end]`` before (``at="start"``) or after (``at="end"``) every
    occurrence of ``separator`` (empty pieces dropped)."""
    if separator == "":
        return [(i, i + 1) for i in range(start, end)]
    shift = len(separator) if at == "end" else 0
    cuts = [start]
    position = text.find(separator, start, end)
    while position != -1:
        cuts.append(position + shift)
        position = text.find(separator, position + len(separator), end)
    cuts.append(end)
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


class RecursiveChunker(Chunker):
    name = "recursive"

    keep_separator = "end"

    def __init__(self, tokenizer: Tokenizer, chunk_size: int, overlap: int = 0,
                 separators: Sequence[str] = DEFAULT_SEPARATORS, keep_separator: str | None = None):
        super().__init__(tokenizer, chunk_size, overlap)
        self.separators = tuple(separators)
        if keep_separator is not None:
            if keep_separator not in KEEP_SEPARATOR:
                raise UserError(f"keep_separator must be one of {', '.join(KEEP_SEPARATOR)} (got {keep_separator!r})")
            self.keep_separator = keep_separator

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
        for piece in split_keeping_separator(text, start, end, separator, self.keep_separator):
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


class RecursiveStartChunker(RecursiveChunker):
    """``recursive`` with each separator kept at the start of the next piece (LangChain / Chroma)."""

    name = "recursive-start"
    keep_separator = "start"
