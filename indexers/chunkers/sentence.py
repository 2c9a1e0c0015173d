"""Sentences packed into chunks of at most ``chunk_size`` tokens, overlapping by whole sentences."""

from __future__ import annotations

import re
from typing import Iterator

from indexers.chunkers.base import Chunker, pack_units, split_after

# A sentence ends at . ! ? (and closing quotes/brackets) followed by whitespace, or at a blank line.
_SENTENCE_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s)|\n\s*\n""")

Span = tuple[int, int]


def sentence_spans(text: str) -> list[Span]:
    """Whitespace-stripped sentence spans covering every non-space character of ``text``."""
    return split_after(text, _SENTENCE_END)


class SentenceChunker(Chunker):
    """Greedy packing of sentences; a sentence longer than the size is cut into token windows."""

    name = "sentence"

    def _units(self, text: str) -> Iterator[Span]:
        for start, end in sentence_spans(text):
            if self.tokenizer.count(text[start:end]) <= self.chunk_size:
                yield start, end
                continue
            # Cut into token windows; shrink a window whose text re-tokenizes longer (a character
            # split across tokens is taken whole by the span).
            starts, ends = self.tokenizer.token_spans(text[start:end])
            n, first = len(starts), 0
            while first < n:
                last = min(first + self.chunk_size, n)
                while last > first + 1 and self.tokenizer.count(
                        text[start + int(starts[first]):start + int(ends[last - 1])]) > self.chunk_size:
                    last -= 1
                yield start + int(starts[first]), start + int(ends[last - 1])
                first = last

    def spans(self, text: str) -> Iterator[Span]:
        return pack_units(text, self._units(text), self.tokenizer.count, self.chunk_size, self.overlap)
