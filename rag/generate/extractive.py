"""``extractive``: the default generator, no language model.

It answers with the sentences of the passages best supported by the query: cosine similarity of
sentence and query embeddings plus a lexical bonus for query words the sentence contains (weighted by
their rarity across the passages). Each sentence is cited with its passage number, and its character
span inside the passage is recorded so citations map back to document offsets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from datastores.errors import UserError
from indexers.chunkers.sentence import sentence_spans
from indexers.embedding import caching_embedder
from rag.generate.base import Generation
from rag.records import Passage

_TERM = re.compile(r"\w+")
_STOPWORDS = frozenset("""a an and are as at be by did do does for from had has have how i in is it its
of on or that the their there this to was were what when where which who whom whose why will with""".split())


def terms(text: str) -> set[str]:
    """Lower-cased word terms of ``text`` without common stop words."""
    return {t for t in _TERM.findall(text.lower()) if t not in _STOPWORDS}


@dataclass(frozen=True)
class Quote:
    """One answer sentence: the passage it comes from and its character span inside the passage text."""

    number: int
    start: int
    end: int
    text: str
    score: float


class ExtractiveGenerator:
    """Answers with up to ``max_sentences`` supporting sentences, best first, each cited as [n]."""

    name = "extractive"

    def __init__(self, embedder: Any = None, max_sentences: int = 3, lexical_weight: float = 0.3,
                 min_similarity: float = 0.1, device: str = "auto"):
        if max_sentences < 1:
            raise UserError(f"max_sentences must be at least 1, got {max_sentences}")
        self.embedder = caching_embedder(embedder, device)
        self.max_sentences = max_sentences
        self.lexical_weight = lexical_weight
        self.min_similarity = min_similarity

    def lexical_scores(self, question: str, sentences: list[str]) -> np.ndarray:
        """Share of the query's idf mass (idf over the candidate sentences) each sentence covers."""
        query_terms = terms(question)
        if not query_terms or not sentences:
            return np.zeros(len(sentences))
        sets = [terms(s) for s in sentences]
        vocab = sorted(query_terms)
        present = np.array([[t in s for t in vocab] for s in sets], dtype=np.float64)
        idf = np.log1p(len(sentences) / (1.0 + present.sum(axis=0)))
        total = idf.sum()
        return present @ idf / total if total > 0 else np.zeros(len(sentences))

    def quotes(self, question: str, passages: Sequence[Passage]) -> list[Quote]:
        """All sentences of the passages with their scores, best first."""
        candidates = [(i, s, e) for i, p in enumerate(passages, start=1) for s, e in sentence_spans(p.text)]
        if not candidates:
            return []
        texts = [passages[i - 1].text[s:e] for i, s, e in candidates]
        similarity = self.embedder.encode_passages(texts) @ self.embedder.encode_queries([question])[0]
        scores = similarity + self.lexical_weight * self.lexical_scores(question, texts)
        order = np.argsort(-scores, kind="stable")
        return [Quote(candidates[j][0], candidates[j][1], candidates[j][2], texts[j], float(scores[j]))
                for j in order if similarity[j] >= self.min_similarity]

    def generate(self, question: str, passages: Sequence[Passage],
                 on_token: Callable[[str], None] | None = None) -> Generation:
        chosen: list[Quote] = []
        seen: set[str] = set()
        for quote in self.quotes(question, passages):
            key = " ".join(quote.text.lower().split())
            if key in seen:
                continue
            seen.add(key)
            chosen.append(quote)
            if len(chosen) == self.max_sentences:
                break
        if not chosen:
            text = "No passage answers this question."
            if on_token is not None:
                on_token(text)
            return Generation(text, [], metadata={"quotes": []})
        pieces = [f"{q.text} [{q.number}]" for q in chosen]
        for i, piece in enumerate(pieces):
            if on_token is not None:
                on_token(piece if i == 0 else " " + piece)
        citations = list(dict.fromkeys(q.number for q in chosen))
        return Generation(" ".join(pieces), citations, metadata={"quotes": chosen})
