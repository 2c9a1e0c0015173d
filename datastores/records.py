"""Plain records that travel between the packages: documents, chunks and search hits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One input document: a stable id, its text, where it came from and free metadata."""

    id: str
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: ``document.text[start:end] == text``."""

    doc_id: str
    start: int
    end: int
    text: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result: the chunk, its score, the shard it came from and the row's metadata."""

    chunk_id: int
    doc_id: str
    start: int
    end: int
    score: float
    shard: str
    text: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "start": self.start,
            "end": self.end,
            "score": self.score,
            "shard": self.shard,
            "text": self.text,
            "source": self.source,
            "metadata": self.metadata,
        }
