"""Evaluation of chunking and retrieval.

- ``evaluators.spans``: Recall, Precision, IoU and Precision-Ω over character or token spans.
- ``evaluators.datasets``: Chroma-format evaluation sets, BEIR folders, and JSONL questions with
  character offsets (``question``, ``references: [{doc_id, start, end}]``, ``answers``).
- ``evaluators.chunking``: ``evaluate_chunking`` / ``ChunkIndex`` through the real datastore.
- ``evaluators.sweep``: YAML chunking sweeps with resumable DuckDB results, reports and plots.
- ``evaluators.retrieval``: nDCG@k, MRR@k, recall@k, MAP (pytrec_eval) and BEIR evaluation.
- ``evaluators.answers``: SQuAD exact match and F1, answer-in-context hit rate.
- ``evaluators.answer_eval``: whole ask pipelines over a QA set (``rag eval answers``).
- ``evaluators.perplexity``: LM perplexity of held-out text with and without retrieval
  (``rag eval perplexity``, MassiveDS).
"""

from __future__ import annotations

from typing import Any

from evaluators.datasets import EvalDataset, Question, load_dataset
from evaluators.spans import SpanScorer, SpanScores, SpanSummary, summarize

# The pipelines pull in the datastore, chunker and embedder code; import them on first use.
_LAZY = {
    "evaluate_chunking": "evaluators.chunking", "ChunkingEvaluation": "evaluators.chunking",
    "ChunkIndex": "evaluators.chunking", "run_sweep": "evaluators.sweep", "load_sweep_config": "evaluators.sweep",
    "evaluate_beir": "evaluators.retrieval", "retrieval_metrics": "evaluators.retrieval",
    "answer_metrics": "evaluators.answers", "load_beir": "evaluators.datasets",
    "evaluate_answers": "evaluators.answer_eval", "load_qa_set": "evaluators.datasets",
    "evaluate_perplexity": "evaluators.perplexity",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evaluators' has no attribute {name!r}")


__all__ = ["ChunkIndex", "ChunkingEvaluation", "EvalDataset", "Question", "SpanScorer", "SpanScores", "SpanSummary",
           "answer_metrics", "evaluate_answers", "evaluate_beir", "evaluate_chunking", "evaluate_perplexity",
           "load_beir", "load_dataset", "load_qa_set", "load_sweep_config", "retrieval_metrics", "run_sweep",
           "summarize"]
