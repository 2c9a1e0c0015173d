"""Records shared by the ask path: a ``Passage`` is what context stages and generators pass along."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Passage:
    """One piece of context as the generator sees it; ``number`` is its 1-based place in the prompt."""

    number: int
    text: str
    chunk_id: int
    doc_id: str
    start: int
    end: int
    source: str = ""
    score: float = 0.0
