"""Semantic word removal without a language model (TCRA-LLM style), guided by the query.

Every word of a sentence ``s`` is scored ``cos(s, q) + (cos(s, q) - cos(s - w, q)) + (1 - cos(s, s - w))``
for the query ``q``: the sentence's relevance to the query (so the words of sentences about the
query stay longest), how much relevance the sentence loses without the word, and how far removing
it moves the sentence's meaning (TCRA's measure). The lowest-scored words go first. The query,
the sentences and all leave-one-out variants of a call are embedded in one batched pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from indexers.chunkers.sentence import sentence_spans
from indexers.embedding import caching_embedder
from indexers.tokenizers import DEFAULT_TOKENIZER, Tokenizer
from rag.compress.base import Compressor
from rag.compress.budget import keep_best_words, word_spans


def leave_one_out(sentence: str, spans: list[tuple[int, int]]) -> list[str]:
    """``sentence`` with each of its words removed in turn."""
    return [(sentence[:s] + sentence[e:]).replace("  ", " ").strip() for s, e in spans]


class SemanticWordCompressor(Compressor):
    """Removes the words whose removal changes the sentence embedding least, to the budget."""

    name = "semantic"

    def __init__(self, embedder: Any = None, tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
                 max_words_per_sentence: int = 64, **options: Any):
        super().__init__(tokenizer, **options)
        self.embedder = caching_embedder(embedder)
        self.max_words_per_sentence = max_words_per_sentence

    def word_scores(self, texts: list[str], query: str = "") -> list[tuple[list[tuple[int, int]], np.ndarray]]:
        """For each text: its word spans and each word's score (higher = kept longer); see the
        module docstring. Without a query only the meaning shift counts."""
        sentences, variants, owners = [], [], []
        layout = []  # per text: list of (sentence index, word spans in the text, scored)
        for text in texts:
            entries = []
            for s_start, s_end in sentence_spans(text):
                sentence = text[s_start:s_end]
                local = word_spans(sentence)
                sid = len(sentences)
                sentences.append(sentence)
                scored = local if len(local) <= self.max_words_per_sentence else []
                variants.extend(leave_one_out(sentence, scored))
                owners.extend([sid] * len(scored))
                entries.append((sid, [(s_start + a, s_start + b) for a, b in local], len(scored) > 0))
            layout.append(entries)
        if not sentences:
            return [([], np.zeros(0)) for _ in texts]
        q = self.embedder.encode_queries([query or " "])[0]
        vectors = self.embedder.encode_passages([*sentences, *variants])
        base, loo = vectors[:len(sentences)], vectors[len(sentences):]
        owner = np.asarray(owners, dtype=np.int64)
        relevance = base @ q if query else np.zeros(len(sentences))
        shifts = 1.0 - np.einsum("ij,ij->i", loo, base[owner]) if owners else np.zeros(0)
        if query and owners:
            shifts = shifts + relevance[owner] - loo @ q
        out, cursor = [], 0
        for entries in layout:
            spans, scores = [], []
            for sid, spans_in_text, scored in entries:
                spans.extend(spans_in_text)
                if scored:
                    scores.extend(relevance[sid] + shifts[cursor:cursor + len(spans_in_text)])
                    cursor += len(spans_in_text)
                else:  # a very long sentence is not scored word by word: its relevance and the median shift
                    scores.extend(np.full(len(spans_in_text), np.nan if not query else relevance[sid]))
            scores = np.asarray(scores, dtype=np.float64)
            missing = np.isnan(scores)
            if missing.any():
                scores[missing] = np.nanmedian(scores) if (~missing).any() else 0.0
            out.append((spans, scores))
        return out

    def prepare(self, query: str, texts: list[str]) -> dict[str, Any]:
        return dict(zip(texts, self.word_scores(texts, query)))

    def compress_one(self, query: str, text: str, budget: int, state: dict[str, Any]) -> str:
        spans, scores = state[text]
        return keep_best_words(text, spans, scores, budget, self.tokenizer)
