"""Reordering against "lost in the middle": the best passages at both ends of the context."""

from __future__ import annotations

from typing import Sequence, TypeVar

from rag.records import Passage

T = TypeVar("T")


def ends_first(items: Sequence[T]) -> list[T]:
    """Items given best first, placed best first, second best last, then alternating inward.

    ``[1, 2, 3, 4, 5] -> [1, 3, 5, 4, 2]``; ``[1, 2, 3, 4] -> [1, 3, 4, 2]``.
    """
    front = list(items[0::2])
    back = list(items[1::2])
    return front + back[::-1]


class Reorder:
    """The reorder stage: passages arrive in rank order (best first) and leave ends-first."""

    name = "reorder"

    def apply(self, query: str, passages: list[Passage], budget: int | None) -> list[Passage]:
        return ends_first(passages)
