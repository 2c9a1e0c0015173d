"""Answer metrics: exact match and token F1 with SQuAD normalisation, answer-in-context hit rate.

Normalisation (the official SQuAD v1.1 script): lower-case, drop ASCII punctuation, drop the
articles ``a``, ``an``, ``the`` as whole words, collapse whitespace. A prediction is scored
against every gold answer and the best score counts. A question without gold answers is skipped
(counted, not scored). Means are reported ×100.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from datastores.errors import UserError

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


_CITATION_MARK = re.compile(r"\[\d+(?:\s*[,;-]\s*\d+)*\]")


def strip_citations(text: str) -> str:
    """``text`` without citation marks such as ``[2]`` or ``[1, 3]`` (they are not part of the answer)."""
    return " ".join(_CITATION_MARK.sub(" ", text).split())


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer, else 0.0."""
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(g) for g in golds))


def _f1(prediction_tokens: list[str], gold_tokens: list[str]) -> float:
    if not prediction_tokens or not gold_tokens:
        # SQuAD 2.0 convention: both empty is a match, one empty is not
        return float(prediction_tokens == gold_tokens)
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(prediction_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Iterable[str]) -> float:
    """Best token-overlap F1 of the prediction against the gold answers (normalised tokens)."""
    tokens = normalize_answer(prediction).split()
    scores = [_f1(tokens, normalize_answer(g).split()) for g in golds]
    return max(scores, default=0.0)


def answer_in_context(contexts: Sequence[str], golds: Iterable[str]) -> float:
    """1.0 when some normalised gold answer occurs in the normalised text of some context.

    Matching is on whole normalised tokens (``"art"`` does not hit ``"party"``); empty answers
    never hit.
    """
    normalized = [f" {normalize_answer(c)} " for c in contexts]
    for gold in golds:
        answer = normalize_answer(gold)
        if answer and any(f" {answer} " in c for c in normalized):
            return 1.0
    return 0.0


@dataclass(frozen=True)
class AnswerSummary:
    """Means ×100 over the questions that have gold answers."""

    questions: int
    skipped: int
    exact_match: float | None
    f1: float | None
    answer_in_context: float | None

    def to_dict(self) -> dict[str, float | int | None]:
        return {"questions": self.questions, "skipped": self.skipped, "exact_match": self.exact_match,
                "f1": self.f1, "answer_in_context": self.answer_in_context}


def _mean(values: list[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def answer_metrics(golds: Sequence[Sequence[str]], predictions: Sequence[str] | None = None,
                   contexts: Sequence[Sequence[str]] | None = None) -> AnswerSummary:
    """EM and F1 of ``predictions`` and/or the answer-in-context rate of retrieved ``contexts``
    (one list of texts per question), against each question's gold answers."""
    if predictions is not None and len(predictions) != len(golds):
        raise UserError(f"{len(predictions)} predictions for {len(golds)} questions")
    if contexts is not None and len(contexts) != len(golds):
        raise UserError(f"{len(contexts)} context lists for {len(golds)} questions")
    em, f1, hit = [], [], []
    skipped = 0
    for i, answers in enumerate(golds):
        answers = [a for a in answers if isinstance(a, str)]
        if not answers:
            skipped += 1
            continue
        if predictions is not None:
            em.append(exact_match(predictions[i], answers))
            f1.append(f1_score(predictions[i], answers))
        if contexts is not None:
            hit.append(answer_in_context(contexts[i], answers))
    return AnswerSummary(len(golds) - skipped, skipped, _mean(em), _mean(f1), _mean(hit))


__all__ = ["AnswerSummary", "answer_in_context", "answer_metrics", "exact_match", "f1_score", "normalize_answer",
           "strip_citations"]
