"""Helpers of the datastore-operation tests: small datastores written from given texts.

Vectors are derived from each text's hash (no model), so two datastores that hold the same text
hold the same vector; every file is written by the real ``DatastoreWriter``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from datastores import Bm25Params, DatastoreWriter
from datastores.records import Chunk

DIM = 16
CHUNKER = {"name": "given", "chunk_size": 0, "overlap": 0, "tokenizer": "none"}


def text_vectors(texts: Sequence[str]) -> np.ndarray:
    out = []
    for text in texts:
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
        v = np.random.default_rng(seed).standard_normal(DIM)
        out.append(v / np.linalg.norm(v))
    return np.asarray(out, dtype=np.float32)


def write_texts(root: Path, texts: Sequence[str], shard_size: int = 10, chunker: dict | None = None,
                doc_prefix: str = "doc", first: int = 0) -> Path:
    """A datastore with one chunk (and document) per text, ``shard_size`` chunks per shard; document
    ids count from ``first``."""
    writer = DatastoreWriter.create(root, {"texts": len(texts)}, {"name": "hash-vectors", "normalized": True},
                                    chunker or CHUNKER, Bm25Params())
    chunks = [Chunk(f"{doc_prefix}{i:04d}", 0, len(t), t, source=f"{doc_prefix}.txt", metadata={"i": i})
              for i, t in enumerate(texts, first)]
    for start in range(0, len(chunks), shard_size):
        part = chunks[start:start + shard_size]
        writer.add_shard(part, text_vectors([c.text for c in part]), start)
    writer.finish({"documents": len(chunks)}, DIM)
    return root


def passages(words_per_passage: int = 60, count: int = 30) -> list[str]:
    """Real text: consecutive passages of the bundled State of the Union addresses."""
    folder = Path(__file__).resolve().parents[1] / "examples" / "corpus" / "sotu"
    words: list[str] = []
    for path in sorted(folder.glob("*.txt"))[:6]:
        words.extend(path.read_text(encoding="utf-8").split())
    return [" ".join(words[i:i + words_per_passage])
            for i in range(0, words_per_passage * count, words_per_passage)]
