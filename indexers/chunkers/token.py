"""Fixed windows of tokens (Chroma's TokenText): ``chunk_size`` tokens, step ``size - overlap``."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from datastores.records import Chunk, Document
from indexers.chunkers.base import Chunker


class TokenChunker(Chunker):
    """Windows are mapped to characters through token offsets, never by decoding tokens."""

    name = "token"

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        return self._windows(*self.tokenizer.token_spans(text))

    def chunk_counted(self, document: Document) -> tuple[list[Chunk], int]:
        """The chunks and the token count of ``document`` from one tokenization."""
        starts, ends = self.tokenizer.token_spans(document.text)
        return self.chunks_at(document, self._windows(starts, ends)), len(starts)

    def _windows(self, starts: np.ndarray, ends: np.ndarray) -> Iterator[tuple[int, int]]:
        n = len(starts)
        step = self.chunk_size - self.overlap
        for first in range(0, n, step):
            last = min(first + self.chunk_size, n)
            yield int(starts[first]), int(ends[last - 1])
            if last == n:
                break
