"""Evaluation of chunking and retrieval.

- ``evaluators.spans``: Recall, Precision, IoU and Precision-Ω over character or token spans.
- ``evaluators.datasets``: Chroma-format evaluation sets (questions with reference offsets).
- ``evaluators.chunking``: ``evaluate_chunking`` through the real datastore and search code.
"""

from __future__ import annotations

from typing import Any

from evaluators.datasets import EvalDataset, Question, load_dataset
from evaluators.spans import SpanScorer, SpanScores, SpanSummary, summarize

_LAZY = {"evaluate_chunking", "ChunkingEvaluation"}


def __getattr__(name: str) -> Any:
    # The chunking pipeline pulls in the datastore and chunker code; import it on first use.
    if name in _LAZY:
        from evaluators import chunking

        return getattr(chunking, name)
    raise AttributeError(f"module 'evaluators' has no attribute {name!r}")


__all__ = ["ChunkingEvaluation", "EvalDataset", "Question", "SpanScorer", "SpanScores", "SpanSummary",
           "evaluate_chunking", "load_dataset", "summarize"]
