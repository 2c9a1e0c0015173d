"""Query-aware sentence extraction: keep the sentences most similar to the query, in original order.

By default (``split="global"``) the best sentences are chosen across all passages at once (no
per-passage shares; it kept the most reference text in benchmarks/context.py); with ``greedy``,
``rank`` or ``equal`` each passage gets its share of the budget first.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from indexers.chunkers.sentence import sentence_spans
from indexers.embedding import caching_embedder
from indexers.tokenizers import DEFAULT_TOKENIZER, Tokenizer
from rag.compress.base import Compressor
from rag.compress.budget import SPLITS
from rag.records import Passage
from rag.stages import with_text

Span = tuple[int, int]


def pick_fitting(order: Sequence[int], sizes: Sequence[int], budget: int,
                 fits: Callable[[list[int]], bool]) -> list[int]:
    """Units taken best first while their sizes fit ``budget`` (a unit that does not fit is skipped),
    then the worst taken dropped until ``fits`` (the exact count of the assembled text) holds."""
    chosen, used = [], 0
    for i in order:
        if used + sizes[i] <= budget:
            chosen.append(i)
            used += sizes[i]
    while len(chosen) > 1 and not fits(chosen):
        chosen.pop()
    return chosen


def select_sentences(text: str, spans: list[Span], scores: np.ndarray, budget: int, tokenizer: Tokenizer) -> str:
    """The best-scoring sentences that fit ``budget`` tokens, joined in their original order."""
    order = [int(i) for i in np.argsort(-scores, kind="stable")]
    sizes = [tokenizer.count(text[s:e]) for s, e in spans]
    if sizes[order[0]] > budget:  # the best sentence alone is too long: its start, cut by the caller
        return text[spans[order[0]][0]:spans[order[0]][1]]

    def join(chosen: list[int]) -> str:
        return " ".join(text[spans[i][0]:spans[i][1]] for i in sorted(chosen))

    return join(pick_fitting(order, sizes, budget, lambda chosen: tokenizer.count(join(chosen)) <= budget))


class SentenceCompressor(Compressor):
    """Scores every sentence by cosine similarity to the query (one batched encode per call)."""

    name = "sentence"
    splits = (*SPLITS, "global")

    def __init__(self, embedder: Any = None, tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
                 split: str = "global", **options: Any):
        super().__init__(tokenizer, split=split, **options)
        self.embedder = caching_embedder(embedder)

    def prepare(self, query: str, texts: list[str]) -> dict[str, Any]:
        spans = [sentence_spans(t) for t in texts]
        sentences = [t[s:e] for t, sp in zip(texts, spans) for s, e in sp]
        scores = self.embedder.encode_passages(sentences) @ self.embedder.encode_queries([query])[0]
        state, offset = {}, 0
        for text, sp in zip(texts, spans):
            state[text] = (sp, scores[offset:offset + len(sp)])
            offset += len(sp)
        return state

    def compress_one(self, query: str, text: str, budget: int, state: dict[str, Any]) -> str:
        spans, scores = state[text]
        if not spans:
            return ""
        return select_sentences(text, spans, scores, budget, self.tokenizer)

    def apply(self, query: str, passages: list[Passage], budget: int | None) -> list[Passage]:
        if self.split != "global":
            return super().apply(query, passages, budget)
        target = self.target(sum(self.tokenizer.count(p.text) for p in passages), budget)
        if target is None or not passages:
            return list(passages)
        state = self.prepare(query, [p.text for p in passages])
        units = [(n, span, score) for n, p in enumerate(passages) for span, score in zip(*state[p.text])]
        if not units:
            return []
        order = [int(i) for i in np.argsort(-np.asarray([u[2] for u in units]), kind="stable")]
        sizes = [self.tokenizer.count(passages[n].text[s:e]) for n, (s, e), _ in units]

        def assemble(chosen: list[int]) -> list[Passage]:
            out = []
            for n, passage in enumerate(passages):
                mine = sorted(units[i][1] for i in chosen if units[i][0] == n)
                if mine:
                    out.append(with_text(passage, " ".join(passage.text[s:e] for s, e in mine)))
            return out

        def fits(chosen: list[int]) -> bool:
            return sum(self.tokenizer.count(p.text) for p in assemble(chosen)) <= target

        if sizes[order[0]] > target:  # the best sentence alone is too long: its start only
            kept = assemble(order[:1])
            return [with_text(kept[0], self.cut(kept[0].text, target))]
        return assemble(pick_fitting(order, sizes, target, fits))
