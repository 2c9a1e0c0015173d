"""KamradtModifiedChunker (Smith & Troynikov, Chroma 2024, after G. Kamradt) on exact spans.

1. Pre-split the text into pieces of at most ``piece_size`` (50) tokens with the recursive
   splitter (no overlap); each piece is a stripped span.
2. For every piece, embed the window of pieces ``i − 3 .. i + 3`` (joined by single spaces, as
   the reference does) with the given embedder.
3. ``distance[i] = 1 − cos(window_i, window_{i+1})``.
4. ``cuts = total piece tokens // chunk_size``; a threshold is found by binary search on [0, 1]
   (until the interval is narrower than 1e-6) so that about ``cuts`` distances exceed it; the
   threshold used is the last midpoint tested, as in the reference.
5. The text is cut after every piece whose distance exceeds the threshold; a chunk is the span
   from its first piece's start to its last piece's end, whitespace-stripped.

``chunk_size`` is therefore a target *mean* chunk size, not a maximum.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from datastores.errors import UserError
from indexers.chunkers.base import Chunker, join_piece_runs
from indexers.chunkers.cluster import PIECE_SIZE
from indexers.chunkers.recursive import DEFAULT_SEPARATORS, RecursiveChunker
from indexers.tokenizers import Tokenizer

WINDOW = 3
Span = tuple[int, int]


def window_texts(texts: Sequence[str], window: int = WINDOW) -> list[str]:
    """For each piece, the pieces ``i − window .. i + window`` joined by single spaces."""
    n = len(texts)
    return [" ".join(texts[max(0, i - window):min(n, i + window + 1)]) for i in range(n)]


def find_threshold(distances: np.ndarray, cuts: int, tolerance: float = 1e-6) -> float:
    """The reference's binary search: the last midpoint of [0, 1] tested, narrowing towards the
    smallest threshold with at most ``cuts`` distances strictly above it."""
    distances = np.asarray(distances, dtype=np.float64)
    lower, upper = 0.0, 1.0
    threshold = 0.5
    while upper - lower > tolerance:
        threshold = (upper + lower) / 2.0
        if int(np.sum(distances > threshold)) > cuts:
            lower = threshold
        else:
            upper = threshold
    return threshold


def breakpoint_segments(distances: np.ndarray, threshold: float, n: int) -> list[tuple[int, int]]:
    """Inclusive piece ranges when cutting after every ``i`` with ``distances[i] > threshold``."""
    cuts = np.flatnonzero(np.asarray(distances) > threshold).tolist()
    segments, start = [], 0
    for index in cuts:
        segments.append((start, index))
        start = index + 1
    if start < n:
        segments.append((start, n - 1))
    return segments


class KamradtModifiedChunker(Chunker):
    """Semantic breakpoints between ±3-piece windows, with a threshold tuned to a mean chunk size."""

    name = "kamradt"

    def __init__(self, tokenizer: Tokenizer, chunk_size: int, overlap: int = 0, embedder: Any = None,
                 piece_size: int = PIECE_SIZE, window: int = WINDOW,
                 separators: Sequence[str] = DEFAULT_SEPARATORS):
        super().__init__(tokenizer, chunk_size, overlap)
        if overlap:
            raise UserError(f"the {self.name} chunker has no overlap (got {overlap}); use overlap 0")
        if embedder is None:
            raise UserError(f"the {self.name} chunker needs an embedder (make_chunker(..., embedder=...))")
        self.embedder = embedder
        self.piece_size = piece_size
        self.window = window
        self.splitter = RecursiveChunker(tokenizer, piece_size, 0, separators, keep_separator="start")

    def spans(self, text: str) -> list[Span]:
        pieces = self.splitter.spans(text)
        if len(pieces) <= 1:
            return list(pieces)
        texts = [text[a:b] for a, b in pieces]
        vectors = np.asarray(self.embedder.encode_passages(window_texts(texts, self.window)), dtype=np.float64)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
        distances = 1.0 - np.einsum("ij,ij->i", vectors[:-1], vectors[1:])
        total_tokens = sum(self.tokenizer.count(t) for t in texts)
        threshold = find_threshold(distances, total_tokens // self.chunk_size)
        return join_piece_runs(text, pieces, breakpoint_segments(distances, threshold, len(pieces)))

    @property
    def spec(self) -> dict[str, Any]:
        return {**super().spec, "piece_size": self.piece_size, "window": self.window,
                "embedder": getattr(self.embedder, "name", type(self.embedder).__name__)}


__all__ = ["KamradtModifiedChunker", "breakpoint_segments", "find_threshold", "window_texts"]
