"""Semantic word removal without a language model (TCRA-LLM style).

Every word is scored by how far removing it moves its sentence's embedding (1 - cosine between the
sentence and the sentence without the word); the words that move it least go first. All leave-one-out
variants of a call are embedded in one batched pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from indexers.chunkers.sentence import sentence_spans
from indexers.tokenizers import DEFAULT_TOKENIZER, Tokenizer
from rag.compress.base import Compressor
from rag.compress.budget import keep_best_words, word_spans
from rag.stages import LazyEmbedder


def leave_one_out(sentence: str, spans: list[tuple[int, int]]) -> list[str]:
    """``sentence`` with each of its words removed in turn."""
    return [(sentence[:s] + sentence[e:]).replace("  ", " ").strip() for s, e in spans]


class SemanticWordCompressor(Compressor):
    """Removes the words whose removal changes the sentence embedding least, to the budget."""

    name = "semantic"

    def __init__(self, embedder: Any = None, tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
                 max_words_per_sentence: int = 64, **options: Any):
        super().__init__(tokenizer, **options)
        self.embedder = embedder if isinstance(embedder, LazyEmbedder) else LazyEmbedder(embedder)
        self.max_words_per_sentence = max_words_per_sentence

    def word_scores(self, texts: list[str]) -> list[tuple[list[tuple[int, int]], np.ndarray]]:
        """For each text: its word spans and each word's embedding shift (higher = more important)."""
        sentences, variants, owners = [], [], []
        layout = []  # per text: list of (sentence index, word spans in the text)
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
        vectors = self.embedder.encode(sentences + variants) if sentences else np.zeros((0, 1), np.float32)
        base, loo = vectors[:len(sentences)], vectors[len(sentences):]
        shifts = 1.0 - np.einsum("ij,ij->i", loo, base[np.asarray(owners, dtype=np.int64)]) if owners else []
        out, cursor = [], 0
        for entries in layout:
            spans, scores = [], []
            for sid, spans_in_text, scored in entries:
                spans.extend(spans_in_text)
                if scored:
                    scores.extend(shifts[cursor:cursor + len(spans_in_text)])
                    cursor += len(spans_in_text)
                else:  # a very long sentence is not scored word by word: its words get the median
                    scores.extend(np.full(len(spans_in_text), np.nan))
            scores = np.asarray(scores, dtype=np.float64)
            missing = np.isnan(scores)
            if missing.any():
                scores[missing] = np.nanmedian(scores) if (~missing).any() else 0.0
            out.append((spans, scores))
        return out

    def prepare(self, query: str, texts: list[str]) -> dict[str, Any]:
        return dict(zip(texts, self.word_scores(texts)))

    def compress_one(self, query: str, text: str, budget: int, state: dict[str, Any]) -> str:
        spans, scores = state[text]
        return keep_best_words(text, spans, scores, budget, self.tokenizer)
