"""Ends-first reordering: best first, second best last, alternating inward."""

from __future__ import annotations

import pytest

from rag.records import Passage
from rag.reorder import Reorder, ends_first


def test_known_orders_for_odd_and_even_counts():
    assert ends_first([1, 2, 3, 4, 5]) == [1, 3, 5, 4, 2]
    assert ends_first([1, 2, 3, 4]) == [1, 3, 4, 2]
    assert ends_first([1, 2]) == [1, 2]
    assert ends_first([1]) == [1]
    assert ends_first([]) == []


@pytest.mark.parametrize("n", range(1, 12))
def test_better_ranks_sit_nearer_an_end(n):
    ranks = list(range(n))
    placed = ends_first(ranks)
    assert sorted(placed) == ranks
    assert placed[0] == 0
    if n > 1:
        assert placed[-1] == 1
    distance = {rank: min(pos, n - 1 - pos) for pos, rank in enumerate(placed)}
    assert all(distance[r] <= distance[r + 1] for r in range(n - 1))


def test_stage_keeps_passages_and_texts():
    passages = [Passage(i, f"text {i}", 100 + i, f"d{i}", 0, 6) for i in range(1, 6)]
    out = Reorder().apply("q", passages, budget=None)
    assert [p.chunk_id for p in out] == [101, 103, 105, 104, 102]
    assert {p.text for p in out} == {p.text for p in passages}
