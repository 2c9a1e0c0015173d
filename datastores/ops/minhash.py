"""Exact and near-duplicate detection of texts: normalised hashes, MinHash LSH (datasketch) tuned
for recall at the threshold, candidates verified with the exact shingle Jaccard."""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

from datastores.errors import UserError

_WORD = re.compile(r"\w+", re.UNICODE)


def normalise_words(text: str) -> list[str]:
    """Lower-cased word tokens: punctuation and whitespace differences do not count."""
    return _WORD.findall(text.lower())


def exact_key(text: str) -> bytes:
    """A digest of the normalised text; equal keys mean equal texts up to case, spacing and punctuation."""
    return hashlib.blake2b(" ".join(normalise_words(text)).encode("utf-8"), digest_size=16).digest()


def word_shingles(text: str, n: int) -> set[bytes]:
    """The set of ``n``-word shingles (a text shorter than ``n`` words is one shingle)."""
    return shingles_of_words(normalise_words(text), n)


def shingles_of_words(words: Sequence[str], n: int) -> set[bytes]:
    """``word_shingles`` of already normalised ``words``."""
    if len(words) <= n:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i:i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


#: Probability that a pair whose exact Jaccard equals the threshold becomes an LSH candidate.
DEFAULT_RECALL = 0.99


def shingle_hashes(words: Sequence[str], n: int) -> np.ndarray:
    """Sorted unique 64-bit hashes (blake2b) of the ``n``-word shingles of ``words``."""
    hashes = [int.from_bytes(hashlib.blake2b(s, digest_size=8).digest(), "little")
              for s in shingles_of_words(words, n)]
    return np.unique(np.asarray(hashes, dtype=np.uint64))


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique hash arrays (``shingle_hashes``)."""
    common = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - common
    return common / union if union else 1.0


def candidate_probability(similarity: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    """Chance that MinHash LSH with ``bands`` bands of ``rows`` rows makes a pair of Jaccard
    ``similarity`` a candidate: ``1 − (1 − s^rows)^bands``."""
    return 1.0 - (1.0 - np.asarray(similarity, dtype=np.float64) ** rows) ** bands


def lsh_params(threshold: float, num_perm: int, recall: float = DEFAULT_RECALL) -> tuple[int, int]:
    """Bands and rows (``bands · rows ≤ num_perm``) under which a pair at exactly ``threshold``
    is a candidate with probability ≥ ``recall`` (so every pair above it too), choosing among
    those the fewest expected candidates below the threshold (``∫₀ᵗ P(s) ds``)."""
    rows = np.arange(1, num_perm + 1)
    hit = threshold ** rows.astype(np.float64)
    with np.errstate(divide="ignore"):
        needed = np.ceil(np.log1p(-recall) / np.log1p(-np.minimum(hit, 1 - 1e-16)))
    bands = np.clip(np.nan_to_num(needed, nan=num_perm + 1.0), 1, num_perm + 1).astype(np.int64)
    feasible = bands * rows <= num_perm
    if not feasible.any():
        raise UserError(f"{num_perm} permutations cannot reach recall {recall} at Jaccard {threshold}; "
                         f"use more permutations")
    grid = np.linspace(0.0, threshold, 201)
    cost = [np.trapezoid(candidate_probability(grid, b, r), grid) if ok else np.inf
            for b, r, ok in zip(bands, rows, feasible)]
    best = int(np.argmin(cost))
    return int(bands[best]), int(rows[best])


class NearDuplicateIndex:
    """Streaming near-duplicate finder, first occurrence kept: MinHash LSH proposes candidates,
    and a candidate counts only if its exact shingle Jaccard reaches ``threshold``.

    Bands and rows come from ``lsh_params`` so that a pair at the threshold is proposed with
    probability ≥ ``recall`` (0.99 by default); the exact check then removes every false
    candidate, so precision is exact and misses come only from the LSH step. Memory per kept text:
    its signature (``num_perm`` values), its LSH bucket keys and its shingle hashes (8 bytes per
    distinct shingle), never the text.
    """

    def __init__(self, threshold: float = 0.8, shingle: int = 13, num_perm: int = 128, seed: int = 1,
                 recall: float = DEFAULT_RECALL):
        if not 0.0 < threshold <= 1.0:
            raise UserError(f"threshold must be in (0, 1] (got {threshold})")
        if shingle < 1:
            raise UserError(f"shingle must be at least 1 (got {shingle})")
        if not 0.0 < recall < 1.0:
            raise UserError(f"recall must be in (0, 1) (got {recall})")
        self.threshold = threshold
        self.shingle = shingle
        self.num_perm = num_perm
        self.seed = seed
        self.bands, self.rows = lsh_params(threshold, num_perm, recall)
        self._lsh = MinHashLSH(num_perm=num_perm, params=(self.bands, self.rows))
        self._shingles: dict[int, np.ndarray] = {}

    def signatures(self, hashes: Sequence[np.ndarray]) -> list[MinHash]:
        """MinHash signatures of shingle hash arrays (their low 32 bits, batched with ``MinHash.bulk``)."""
        return MinHash.bulk([h.tolist() for h in hashes], num_perm=self.num_perm, seed=self.seed,
                            hashfunc=_low32)

    def add_batch(self, keys: Sequence[int], texts: Sequence[str]) -> list[tuple[int, float] | None]:
        """Check each text against the kept ones (and earlier texts of the batch), keep it if new.

        Returns, per text, ``(key of the kept text it duplicates, exact Jaccard)`` or None; among
        several kept texts the most similar wins (ties: the smallest key).
        """
        hashes = [shingle_hashes(normalise_words(t), self.shingle) for t in texts]
        out: list[tuple[int, float] | None] = []
        for key, mine, sig in zip(keys, hashes, self.signatures(hashes)):
            best: tuple[int, float] | None = None
            for other in self._lsh.query(sig):
                similarity = exact_jaccard(mine, self._shingles[other])
                if similarity >= self.threshold and (best is None or (similarity, -other) > (best[1], -best[0])):
                    best = (other, similarity)
            if best is None:
                self._lsh.insert(key, sig, check_duplication=False)
                self._shingles[key] = mine
            out.append(best)
        return out


def _low32(value: int) -> int:
    return value & 0xFFFFFFFF


def near_duplicate_of(texts: Iterable[str], threshold: float = 0.8, shingle: int = 13,
                      num_perm: int = 128, seed: int = 1, batch_size: int = 4096,
                      recall: float = DEFAULT_RECALL) -> np.ndarray:
    """For each text, the position of the earlier kept text it near-duplicates, or -1 if it is kept."""
    index = NearDuplicateIndex(threshold, shingle, num_perm, seed, recall)
    result: list[int] = []
    batch: list[str] = []

    def flush() -> None:
        start = len(result)
        for found in index.add_batch(range(start, start + len(batch)), batch):
            result.append(-1 if found is None else found[0])
        batch.clear()

    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return np.asarray(result, dtype=np.int64)
