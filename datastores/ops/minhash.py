"""Exact and near-duplicate detection of texts: normalised hashes and MinHash LSH (datasketch)."""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

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


class NearDuplicateIndex:
    """Streaming near-duplicate finder: MinHash signatures in an LSH index, first occurrence kept.

    Only signatures are held in memory (``num_perm`` 8-byte values per kept text), so a datastore
    can be streamed shard by shard.
    """

    def __init__(self, threshold: float = 0.8, shingle: int = 13, num_perm: int = 128, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1] (got {threshold})")
        if shingle < 1:
            raise ValueError(f"shingle must be at least 1 (got {shingle})")
        self.threshold = threshold
        self.shingle = shingle
        self.num_perm = num_perm
        self.seed = seed
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._signatures: dict[int, MinHash] = {}

    def signatures(self, texts: Sequence[str]) -> list[MinHash]:
        """MinHash signatures of ``texts`` (batched with ``MinHash.bulk``)."""
        shingles = [list(word_shingles(t, self.shingle)) for t in texts]
        return MinHash.bulk(shingles, num_perm=self.num_perm, seed=self.seed)

    def add_batch(self, keys: Sequence[int], texts: Sequence[str]) -> list[tuple[int, float] | None]:
        """Check each text against the kept ones (and earlier texts of the batch), keep it if new.

        Returns, per text, ``(key of the kept text it duplicates, estimated Jaccard)`` or None.
        """
        out: list[tuple[int, float] | None] = []
        for key, sig in zip(keys, self.signatures(texts)):
            best: tuple[int, float] | None = None
            for other in self._lsh.query(sig):
                similarity = float(sig.jaccard(self._signatures[other]))
                if similarity >= self.threshold and (best is None or (similarity, -other) > (best[1], -best[0])):
                    best = (other, similarity)
            if best is None:
                self._lsh.insert(key, sig, check_duplication=False)
                self._signatures[key] = sig
            out.append(best)
        return out


def near_duplicate_of(texts: Iterable[str], threshold: float = 0.8, shingle: int = 13,
                      num_perm: int = 128, seed: int = 1, batch_size: int = 4096) -> np.ndarray:
    """For each text, the position of the earlier kept text it near-duplicates, or -1 if it is kept."""
    index = NearDuplicateIndex(threshold, shingle, num_perm, seed)
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
