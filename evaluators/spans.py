"""Span metrics for chunking: Recall, Precision, IoU and Precision-Ω (Smith & Troynikov, Chroma 2024).

Definitions (``shared/METRICS.md`` beside the repository), for one question q with reference spans ``R`` in its
corpus, the chunks ``C`` of that corpus, and a ranked retrieval ``r_1..r_k`` from an index that
holds the chunks of every corpus:

- ``ret_same``: retrieved chunks of q's own corpus;
  ``N = |⋃ (r ∩ g) for r in ret_same, g in R|`` (each relevant unit counted once);
  ``unused = Σ|g| − N``.
- ``Recall = N / Σ|g|``; ``Precision = N / Σ|r_i|`` (a SUM over all k retrieved chunks, so
  overlapping chunks count twice and other-corpus chunks count); ``IoU = N / (Σ|r_i| + unused)``.
- ``A``: every chunk of q's corpus that intersects a reference. Retrieval-free
  ``Precision-Ω = N_Ω / |⋃A ∪ unused_Ω|`` with ``N_Ω = |⋃A ∩ ⋃R|`` and
  ``unused_Ω = ⋃R \\ ⋃A``; the denominator is a union (equal to ``|⋃A ∪ ⋃R|``).

Intersection test: like the reference implementation, a chunk and a reference intersect when
``max(starts) <= min(ends)``, so a chunk that only *touches* a reference (``chunk.end ==
ref.start`` or ``chunk.start == ref.end``) belongs to ``A`` (its length then enters the
Precision-Ω denominator) and counts for the "min" k. Touching adds nothing to any numerator.

Edge cases, defined instead of dividing by zero: an empty retrieval (or one of zero total length)
scores precision 0 and IoU 0; a question whose references hold no unit is skipped (all metrics
NaN, ``skipped=True``) and counted by :func:`summarize`; chunks need not cover the corpus
(uncovered reference units lower Precision-Ω through ``unused_Ω``).

Units: ``char`` (what the reference implementation measures, and what reproduces the published
numbers) or ``token``: every span is mapped to the token indices of a named tokenizer run over the
whole corpus; a token belongs to a span when its character range intersects the span, so each
token is counted once. "min" k is always decided in characters so that both units score the same
retrieval.

All interval arithmetic is vectorised numpy (sort, running maximum, group boundaries); nothing
loops over characters.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from datastores.errors import UserError

UNITS = ("char", "token")
METRICS = ("recall", "precision", "precision_omega", "iou")
MIN_K_CAP = 20

SpanLike = tuple[int, int]


# -- interval arithmetic --------------------------------------------------------------------


def as_spans(spans: Iterable[SpanLike] | np.ndarray) -> np.ndarray:
    """``spans`` as an int64 array [n, 2] of half-open ``[start, end)``; rejects ``start > end``."""
    array = np.asarray(spans if isinstance(spans, np.ndarray) else list(spans), dtype=np.int64)
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    array = array.reshape(-1, 2)
    bad = np.flatnonzero(array[:, 0] > array[:, 1])
    if len(bad):
        i = int(bad[0])
        raise UserError(f"span {i} has start > end: [{array[i, 0]}, {array[i, 1]})")
    return array


def merge_spans(spans: Iterable[SpanLike] | np.ndarray) -> np.ndarray:
    """Disjoint, sorted spans covering exactly the units of ``spans`` (empty spans dropped)."""
    array = as_spans(spans)
    array = array[array[:, 1] > array[:, 0]]
    if len(array) == 0:
        return array
    array = array[np.argsort(array[:, 0], kind="stable")]
    starts, ends = array[:, 0], array[:, 1]
    reach = np.maximum.accumulate(ends)
    new_group = np.empty(len(array), dtype=bool)
    new_group[0] = True
    new_group[1:] = starts[1:] > reach[:-1]
    firsts = np.flatnonzero(new_group)
    lasts = np.append(firsts[1:] - 1, len(array) - 1)
    return np.column_stack((starts[firsts], reach[lasts]))


def union_length(spans: Iterable[SpanLike] | np.ndarray) -> int:
    """Number of units covered by at least one span."""
    merged = merge_spans(spans)
    return int((merged[:, 1] - merged[:, 0]).sum())


def total_length(spans: Iterable[SpanLike] | np.ndarray) -> int:
    """Sum of span lengths (overlaps counted as often as they occur)."""
    array = as_spans(spans)
    return int((array[:, 1] - array[:, 0]).sum())


def intersection_length(a: Iterable[SpanLike] | np.ndarray, b: Iterable[SpanLike] | np.ndarray) -> int:
    """``|⋃a ∩ ⋃b|`` by inclusion–exclusion: ``|⋃a| + |⋃b| − |⋃a ∪ ⋃b|``."""
    a, b = as_spans(a), as_spans(b)
    if len(a) == 0 or len(b) == 0:
        return 0
    return union_length(a) + union_length(b) - union_length(np.concatenate((a, b)))


def intersects(chunks: Iterable[SpanLike] | np.ndarray, references: Iterable[SpanLike] | np.ndarray) -> np.ndarray:
    """Boolean mask over ``chunks``: intersects some reference by ``max(starts) <= min(ends)``.

    This is the reference implementation's test; it is true for spans that merely touch.
    """
    c, r = as_spans(chunks), as_spans(references)
    if len(c) == 0 or len(r) == 0:
        return np.zeros(len(c), dtype=bool)
    starts = np.maximum(c[:, None, 0], r[None, :, 0])
    ends = np.minimum(c[:, None, 1], r[None, :, 1])
    return (starts <= ends).any(axis=1)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator > 0 else 0.0


# -- per-question metrics (one unit, spans already in that unit) -----------------------------


@dataclass(frozen=True)
class RetrievedSpan:
    """One retrieved chunk as the metrics see it: its corpus and its span."""

    corpus_id: str
    start: int
    end: int


def precision_omega(references: Sequence[SpanLike] | np.ndarray,
                    corpus_chunks: Sequence[SpanLike] | np.ndarray) -> tuple[float, int]:
    """(Precision-Ω, |A|) for references and the chunks of their corpus, in one unit.

    Returns NaN for a question with no reference units.
    """
    refs = as_spans(references)
    chunks = as_spans(corpus_chunks)
    mask = intersects(chunks, refs)
    highlighted = chunks[mask]
    if union_length(refs) == 0:
        return math.nan, int(mask.sum())
    numerator = intersection_length(highlighted, refs)
    # ⋃A ∪ unused_Ω with unused_Ω = ⋃R \ ⋃A is the same set as ⋃A ∪ ⋃R.
    denominator = union_length(np.concatenate((highlighted, refs)))
    return _ratio(numerator, denominator), int(mask.sum())


def retrieval_scores(references: Sequence[SpanLike] | np.ndarray, retrieved_same: Sequence[SpanLike] | np.ndarray,
                     retrieved_total: int) -> tuple[float, float, float, int]:
    """(recall, precision, iou, N) in one unit.

    ``retrieved_same`` are the spans of the retrieved chunks from the question's own corpus;
    ``retrieved_total`` is ``Σ|r_i|`` over all retrieved chunks of every corpus.
    """
    refs = as_spans(references)
    reference_total = total_length(refs)
    if reference_total == 0:
        return math.nan, math.nan, math.nan, 0
    numerator = intersection_length(retrieved_same, refs)
    unused = reference_total - numerator
    recall = _ratio(numerator, reference_total)
    precision = _ratio(numerator, retrieved_total)
    iou = _ratio(numerator, retrieved_total + unused) if retrieved_total > 0 else 0.0
    return recall, precision, iou, numerator


# -- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpanScores:
    """The scores of one question (fractions in [0, 1]; NaN when ``skipped``)."""

    question_index: int
    corpus_id: str
    unit: str
    k: int                      # chunks asked for (k, or the question's own k under "min")
    retrieved: int              # chunks returned (≤ k)
    retrieved_same_corpus: int  # of which from the question's corpus
    highlighted_chunks: int     # |A|, in characters
    reference_size: int         # Σ|g| in the unit
    retrieved_size: int         # Σ|r_i| in the unit
    relevant: int               # N in the unit
    recall: float
    precision: float
    iou: float
    precision_omega: float
    skipped: bool = False
    engine: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- units ----------------------------------------------------------------------------------


class TokenMap:
    """Character spans of one text → spans of token indices of a tokenizer.

    A token belongs to a character span when its character range intersects the span (a
    positive-length overlap). Tokens that start inside a multi-byte character can have an empty
    character range; they are widened to that one character so they still belong somewhere.
    """

    def __init__(self, token_starts: np.ndarray, token_ends: np.ndarray, text_length: int):
        starts = np.asarray(token_starts, dtype=np.int64)
        ends = np.asarray(token_ends, dtype=np.int64)
        if len(starts) != len(ends):
            raise ValueError("token starts and ends differ in length")
        self.starts = np.maximum.accumulate(starts) if len(starts) else starts
        widened = np.minimum(np.maximum(ends, self.starts + 1), max(text_length, 1))
        self.ends = np.maximum.accumulate(widened) if len(widened) else widened
        self.text_length = text_length

    @classmethod
    def of_text(cls, text: str, tokenizer: Any) -> "TokenMap":
        starts, ends = tokenizer.token_spans(text)
        return cls(starts, ends, len(text))

    def __len__(self) -> int:
        return len(self.starts)

    def to_tokens(self, spans: Iterable[SpanLike] | np.ndarray) -> np.ndarray:
        """Token-index spans [n, 2] for character spans [n, 2]."""
        array = as_spans(spans)
        if len(array) == 0:
            return array
        first = np.searchsorted(self.ends, array[:, 0], side="right")   # first token ending after start
        stop = np.searchsorted(self.starts, array[:, 1], side="left")   # tokens starting before end
        stop = np.where(array[:, 1] > array[:, 0], np.maximum(stop, first), first)
        return np.column_stack((first, stop)).astype(np.int64)


class SpanScorer:
    """Scores questions against the chunks of every corpus, in characters or tokens.

    ``chunks_by_corpus`` maps a corpus id to the character spans of its chunks. For the token
    unit, ``corpora`` (id → text) and ``tokenizer`` (a name for
    :func:`indexers.tokenizers.load_tokenizer` or an object with ``token_spans``) are needed.
    """

    def __init__(self, chunks_by_corpus: Mapping[str, Iterable[SpanLike] | np.ndarray], unit: str = "char",
                 corpora: Mapping[str, str] | None = None, tokenizer: Any = None, engine: str = ""):
        if unit not in UNITS:
            raise UserError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
        self.unit = unit
        self.engine = engine
        self.chunks = {cid: as_spans(spans) for cid, spans in chunks_by_corpus.items()}
        self.token_maps: dict[str, TokenMap] = {}
        self.tokenizer_name = None
        if unit == "token":
            if corpora is None:
                raise UserError("the token unit needs the corpus texts")
            if tokenizer is None or isinstance(tokenizer, str):
                from indexers.tokenizers import DEFAULT_TOKENIZER, load_tokenizer

                tokenizer = load_tokenizer(tokenizer or DEFAULT_TOKENIZER)
            self.tokenizer_name = getattr(tokenizer, "name", str(tokenizer))
            self.token_maps = {cid: TokenMap.of_text(text, tokenizer) for cid, text in corpora.items()}
        self._chunks_in_unit = {cid: self._convert(cid, spans) for cid, spans in self.chunks.items()}

    def _convert(self, corpus_id: str, spans: Iterable[SpanLike] | np.ndarray) -> np.ndarray:
        if self.unit == "char":
            return as_spans(spans)
        if corpus_id not in self.token_maps:
            raise UserError(f"no text for corpus {corpus_id!r}; the token unit needs it")
        return self.token_maps[corpus_id].to_tokens(spans)

    def highlighted_chunks(self, corpus_id: str, references: Sequence[SpanLike]) -> int:
        """|A| in characters: chunks of the corpus that intersect (or touch) a reference."""
        return int(intersects(self.chunks.get(corpus_id, np.zeros((0, 2), np.int64)), references).sum())

    def min_k(self, corpus_id: str, references: Sequence[SpanLike], cap: int = MIN_K_CAP) -> int:
        """The "min" k of a question: |A| capped at ``cap``."""
        return min(self.highlighted_chunks(corpus_id, references), cap)

    def score(self, question_index: int, corpus_id: str, references: Sequence[SpanLike],
              retrieved: Sequence[RetrievedSpan | tuple[str, int, int]], k: int) -> SpanScores:
        """Scores of one question given its top-``k`` retrieval (best first, any corpora)."""
        retrieved = [r if isinstance(r, RetrievedSpan) else RetrievedSpan(*r) for r in retrieved][:k]
        refs_char = as_spans(references)
        refs = self._convert(corpus_id, refs_char)
        highlighted = self.highlighted_chunks(corpus_id, refs_char)
        same = [(r.start, r.end) for r in retrieved if r.corpus_id == corpus_id]
        same_unit = self._convert(corpus_id, same)
        retrieved_total = 0
        by_corpus: dict[str, list[SpanLike]] = {}
        for r in retrieved:
            by_corpus.setdefault(r.corpus_id, []).append((r.start, r.end))
        for cid, spans in by_corpus.items():
            retrieved_total += total_length(self._convert(cid, spans))
        reference_size = total_length(refs)
        common = dict(question_index=question_index, corpus_id=corpus_id, unit=self.unit, k=k,
                      retrieved=len(retrieved), retrieved_same_corpus=len(same), highlighted_chunks=highlighted,
                      reference_size=reference_size, retrieved_size=retrieved_total, engine=self.engine)
        if union_length(refs) == 0:
            return SpanScores(**common, relevant=0, recall=math.nan, precision=math.nan, iou=math.nan,
                              precision_omega=math.nan, skipped=True)
        recall, precision, iou, relevant = retrieval_scores(refs, same_unit, retrieved_total)
        omega, _ = precision_omega(refs, self._chunks_in_unit.get(corpus_id, np.zeros((0, 2), np.int64)))
        return SpanScores(**common, relevant=relevant, recall=recall, precision=precision, iou=iou,
                          precision_omega=omega, skipped=False)


# -- aggregation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricStat:
    """Mean and population standard deviation (ddof = 0), ×100."""

    mean: float
    std: float

    def __str__(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f}"


@dataclass(frozen=True)
class SpanSummary:
    """Pooled statistics over scored questions (×100), with the same per corpus."""

    questions: int
    skipped: int
    recall: MetricStat
    precision: MetricStat
    precision_omega: MetricStat
    iou: MetricStat
    per_corpus: dict[str, "SpanSummary"] = field(default_factory=dict)

    def metric(self, name: str) -> MetricStat:
        return getattr(self, name)

    def to_dict(self, per_corpus: bool = True) -> dict[str, Any]:
        """Flat ``recall_mean``, ``recall_std``, …, ``questions``, ``skipped`` (and ``per_corpus``)."""
        out: dict[str, Any] = {}
        for name in METRICS:
            stat = self.metric(name)
            out[f"{name}_mean"] = _json_float(stat.mean)
            out[f"{name}_std"] = _json_float(stat.std)
        out["questions"] = self.questions
        out["skipped"] = self.skipped
        if per_corpus and self.per_corpus:
            out["per_corpus"] = {cid: s.to_dict(per_corpus=False) for cid, s in self.per_corpus.items()}
        return out


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def _stat(values: list[float]) -> MetricStat:
    if not values:
        return MetricStat(math.nan, math.nan)
    array = np.asarray(values, dtype=np.float64) * 100.0
    return MetricStat(float(array.mean()), float(array.std(ddof=0)))


def _summary(rows: Sequence[SpanScores]) -> SpanSummary:
    scored = [r for r in rows if not r.skipped]
    stats = {name: _stat([getattr(r, name) for r in scored]) for name in METRICS}
    return SpanSummary(questions=len(scored), skipped=len(rows) - len(scored), **stats)


def summarize(rows: Sequence[SpanScores]) -> SpanSummary:
    """Pooled mean ± std (ddof = 0, ×100) over non-skipped rows, and the same per corpus."""
    pooled = _summary(rows)
    corpora: dict[str, list[SpanScores]] = {}
    for row in rows:
        corpora.setdefault(row.corpus_id, []).append(row)
    per_corpus = {cid: _summary(group) for cid, group in sorted(corpora.items())}
    return SpanSummary(pooled.questions, pooled.skipped, pooled.recall, pooled.precision, pooled.precision_omega,
                       pooled.iou, per_corpus)


__all__ = ["METRICS", "MIN_K_CAP", "UNITS", "MetricStat", "RetrievedSpan", "SpanScorer", "SpanScores",
           "SpanSummary", "TokenMap", "as_spans", "intersection_length", "intersects", "merge_spans",
           "precision_omega", "retrieval_scores", "summarize", "total_length", "union_length"]
