"""Fixed windows of tokens (Chroma's TokenText): ``chunk_size`` tokens, step ``size - overlap``."""

from __future__ import annotations

from typing import Iterator

from indexers.chunkers.base import Chunker


class TokenChunker(Chunker):
    """Windows are mapped to characters through token offsets, never by decoding tokens."""

    name = "token"

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        starts, ends = self.tokenizer.token_spans(text)
        n = len(starts)
        step = self.chunk_size - self.overlap
        for first in range(0, n, step):
            last = min(first + self.chunk_size, n)
            yield int(starts[first]), int(ends[last - 1])
            if last == n:
                break
