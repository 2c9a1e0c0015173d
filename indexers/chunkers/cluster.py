"""ClusterSemanticChunker (Smith & Troynikov, Chroma 2024) on exact character spans.

1. Pre-split the text into pieces of at most ``piece_size`` (50) tokens with the recursive
   splitter (separators ``\\n\\n \\n . ? ! ␣ ""``, no overlap). Each piece is a stripped span.
2. Embed the pieces with the given embedder (``encode_passages(texts) -> unit float32 [n, d]``); the
   similarity matrix is ``S = E Eᵀ`` (cosine).
3. Subtract the mean of the off-diagonal upper triangle of ``S`` and set the diagonal to zero.
4. Dynamic programming over piece boundaries maximises the sum of within-segment similarities
   ``Σ_segments Σ_{i,j in segment} S'[i, j]`` with at most ``chunk_size // piece_size`` pieces
   per segment.
5. A chunk is the span from its first piece's start to its last piece's end (so the whitespace
   between pieces is kept as it is in the text); ``text[start:end] == chunk.text`` holds.

Differences from the reference implementation, all deliberate:

- Chunks are spans, not ``" ".join(pieces)`` (which the reference then has to search for in
  the corpus).
- The reference seeds every ``dp[i]`` with 0 and ``segmentation[i]`` with 0, so while no
  positive-reward segment has been seen yet (at the very start of a text whose first pieces are
  dissimilar) it may emit one segment from piece 0 that is longer than the piece limit. Here
  ``dp`` starts at −∞, so the limit always holds; among equal scores the shortest last segment
  wins, as in the reference's ascending-size loop with a strict ``>``.
- Segment rewards come from banded prefix sums (O(n · m²) for ``m`` pieces per chunk) and the
  mean of the upper triangle from ``(|Σv|² − Σ|v|²) / 2`` in float64, so the n × n matrix is
  never formed.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from datastores.errors import UserError
from indexers.chunkers.base import Chunker, join_piece_runs
from indexers.chunkers.recursive import DEFAULT_SEPARATORS, RecursiveChunker
from indexers.tokenizers import Tokenizer

PIECE_SIZE = 50
Span = tuple[int, int]


def upper_triangle_mean(vectors: np.ndarray) -> float:
    """Mean of ``(V Vᵀ)[i, j]`` over ``i < j`` without forming the matrix (0 for fewer than 2 rows)."""
    v = np.asarray(vectors, dtype=np.float64)
    n = len(v)
    if n < 2:
        return 0.0
    total = v.sum(axis=0)
    off_diagonal = float(total @ total) - float(np.einsum("ij,ij->", v, v))
    return off_diagonal / 2.0 / (n * (n - 1) / 2.0)


def segment_rewards(similarity_band: Sequence[np.ndarray], n: int, max_size: int) -> np.ndarray:
    """``R[j, s]``: reward of the segment of ``s`` pieces ending at piece ``j`` (−∞ where it would
    start before piece 0). ``similarity_band[d][i] = S'[i, i + d]`` for ``d = 1 .. max_size − 1``;
    the diagonal of ``S'`` is zero, and the matrix is symmetric so each pair counts twice.
    """
    rewards = np.full((n, max_size + 1), -np.inf)
    rewards[:, 1] = 0.0
    # Running sums of each band: cum[d][i] = Σ_{t < i} band_d[t].
    cum = [None] + [np.concatenate(([0.0], np.cumsum(similarity_band[d]))) for d in range(1, max_size)]
    ends = np.arange(n)
    for size in range(2, max_size + 1):
        starts = ends - size + 1
        valid = starts >= 0
        total = np.zeros(n)
        for d in range(1, size):
            # pairs (i, i + d) with start <= i and i + d <= end, i.e. i in [start, end - d]
            lo = np.where(valid, starts, 0)
            hi = np.where(valid, ends - d + 1, 0)
            total += cum[d][hi] - cum[d][lo]
        rewards[:, size] = np.where(valid, 2.0 * total, -np.inf)
    return rewards


def optimal_segmentation(similarity: np.ndarray | None, max_size: int, *, vectors: np.ndarray | None = None,
                         ) -> list[tuple[int, int]]:
    """Segments ``(first, last)`` (inclusive piece indices) maximising within-segment similarity.

    Give either the full ``similarity`` matrix (raw cosine similarities, before centring) or the
    unit ``vectors`` it comes from. The matrix is centred by the mean of its off-diagonal upper
    triangle and its diagonal is zeroed before the dynamic programme; a segment holds at most
    ``max_size`` pieces.
    """
    if max_size < 1:
        raise UserError(f"a segment must be allowed at least one piece (got {max_size})")
    if vectors is not None:
        v = np.asarray(vectors, dtype=np.float64)
        n = len(v)
        mean = upper_triangle_mean(v)
        band = [None] + [np.einsum("ij,ij->i", v[:n - d], v[d:]) - mean if d < n else np.zeros(0)
                         for d in range(1, max_size)]
    else:
        s = np.asarray(similarity, dtype=np.float64)
        n = len(s)
        mean = float(s[np.triu_indices(n, k=1)].mean()) if n > 1 else 0.0
        band = [None] + [np.diagonal(s, offset=d) - mean for d in range(1, max_size)]
    if n == 0:
        return []
    rewards = segment_rewards(band, n, max_size)
    best = np.full(n + 1, -np.inf)   # best[e]: best score of the first e pieces
    best[0] = 0.0
    back = np.zeros(n + 1, dtype=np.int64)
    sizes = np.arange(1, max_size + 1)
    for end in range(1, n + 1):
        usable = sizes[sizes <= end]
        candidates = best[end - usable] + rewards[end - 1, usable]
        choice = int(np.argmax(candidates))          # first maximum: the shortest last segment
        best[end] = candidates[choice]
        back[end] = end - int(usable[choice])
    segments = []
    end = n
    while end > 0:
        start = int(back[end])
        segments.append((start, end - 1))
        end = start
    segments.reverse()
    return segments


class ClusterSemanticChunker(Chunker):
    """Embedding-based segmentation of ≤``piece_size``-token pieces into chunks of at most
    ``chunk_size // piece_size`` pieces (so at most about ``chunk_size`` tokens)."""

    name = "cluster"

    def __init__(self, tokenizer: Tokenizer, chunk_size: int, overlap: int = 0, embedder: Any = None,
                 piece_size: int = PIECE_SIZE, separators: Sequence[str] = DEFAULT_SEPARATORS):
        super().__init__(tokenizer, chunk_size, overlap)
        if overlap:
            raise UserError(f"the {self.name} chunker has no overlap (got {overlap}); use overlap 0")
        if embedder is None:
            raise UserError(f"the {self.name} chunker needs an embedder (make_chunker(..., embedder=...))")
        if chunk_size < piece_size:
            raise UserError(f"the {self.name} chunker needs a chunk size of at least {piece_size} tokens "
                             f"(its piece size; got {chunk_size})")
        self.embedder = embedder
        self.piece_size = piece_size
        self.max_pieces = chunk_size // piece_size
        self.splitter = RecursiveChunker(tokenizer, piece_size, 0, separators, keep_separator="start")

    def pieces(self, text: str) -> list[Span]:
        """The ≤``piece_size``-token stripped spans the chunks are built from."""
        return self.splitter.spans(text)

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.embedder.encode_passages(texts), dtype=np.float32)

    def spans(self, text: str) -> list[Span]:
        pieces = self.pieces(text)
        if len(pieces) <= 1:
            return list(pieces)
        vectors = self.embed([text[a:b] for a, b in pieces])
        segments = optimal_segmentation(None, self.max_pieces, vectors=vectors)
        return join_piece_runs(text, pieces, segments)

    @property
    def spec(self) -> dict[str, Any]:
        return {**super().spec, "piece_size": self.piece_size,
                "embedder": getattr(self.embedder, "name", type(self.embedder).__name__)}


__all__ = ["ClusterSemanticChunker", "PIECE_SIZE", "optimal_segmentation", "segment_rewards",
           "upper_triangle_mean"]
