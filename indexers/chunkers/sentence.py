"""Sentences packed into chunks of at most ``chunk_size`` tokens, overlapping by whole sentences."""

from __future__ import annotations

import re
from typing import Iterator

from indexers.chunkers.base import Chunker, split_after

# A sentence ends at . ! ? (and closing quotes/brackets) followed by whitespace, or at a blank line.
_SENTENCE_END = re.compile(r"""[.!?…]+["'”’)\]]*(?=\s)|\n\s*\n""")

Span = tuple[int, int]


def sentence_spans(text: str) -> list[Span]:
    """Whitespace-stripped sentence spans covering every non-space character of ``text``."""
    return split_after(text, _SENTENCE_END)


class SentenceChunker(Chunker):
    """Greedy packing of sentences; a sentence longer than the size is cut into token windows."""

    name = "sentence"

    def _units(self, text: str) -> Iterator[tuple[Span, int]]:
        for start, end in sentence_spans(text):
            length = self.tokenizer.count(text[start:end])
            if length <= self.chunk_size:
                yield (start, end), length
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
                yield (start + int(starts[first]), start + int(ends[last - 1])), last - first
                first = last

    def spans(self, text: str) -> Iterator[Span]:
        count = self.tokenizer.count
        current: list[Span] = []
        for unit, _ in self._units(text):
            if current and count(text[current[0][0]:unit[1]]) > self.chunk_size:
                yield current[0][0], current[-1][1]
                # Carry trailing sentences that fit in the overlap and leave room for this one.
                first = len(current)
                while first > 0 and count(text[current[first - 1][0]:current[-1][1]]) <= self.overlap \
                        and count(text[current[first - 1][0]:unit[1]]) <= self.chunk_size:
                    first -= 1
                current = current[first:]
            current.append(unit)
        if current:
            yield current[0][0], current[-1][1]
