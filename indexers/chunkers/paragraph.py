"""Paragraphs (separated by blank lines) packed greedily into chunks of at most ``chunk_size`` tokens.

A paragraph longer than ``chunk_size`` is split by the recursive splitter (same size, no
overlap) and its pieces are packed like paragraphs. With ``overlap``, the next chunk starts with
the trailing paragraphs of the previous one whose text is at most ``overlap`` tokens (and that
leave room for the next paragraph). Sizes are measured on the chunk's exact text, including the
blank lines between its paragraphs.
"""

from __future__ import annotations

import re
from typing import Iterator

from indexers.chunkers.base import Chunker, pack_units, split_after, strip_span
from indexers.chunkers.recursive import RecursiveChunker

_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")

Span = tuple[int, int]


def paragraph_spans(text: str) -> list[Span]:
    """Whitespace-stripped spans of the blank-line separated paragraphs of ``text``."""
    return split_after(text, _BLANK_LINE)


class ParagraphChunker(Chunker):
    name = "paragraph"

    def _units(self, text: str) -> Iterator[Span]:
        splitter = None
        for start, end in paragraph_spans(text):
            if self.tokenizer.count(text[start:end]) <= self.chunk_size:
                yield start, end
                continue
            splitter = splitter or RecursiveChunker(self.tokenizer, self.chunk_size, 0)
            for a, b in splitter._split(text, start, end, splitter.separators):
                # The recursive splitter keeps pieces strictly below the size, except a piece it
                # cannot split further (a single character of many tokens); emit such a piece alone.
                a, b = strip_span(text, a, b)
                if b > a:
                    yield a, b

    def spans(self, text: str) -> Iterator[Span]:
        return pack_units(text, self._units(text), self.tokenizer.count, self.chunk_size, self.overlap)


__all__ = ["ParagraphChunker", "paragraph_spans"]
