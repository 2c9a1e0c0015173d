"""Fusion settings tuned on judged queries and scored held out (evaluators.fusion_tuning, --tune-fusion)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from datastores.records import Hit
from evaluators.fusion_tuning import (ALL_ALPHAS, TUNED_MODE, FusionSetting, assign_folds, cross_fit_fusion,
                                      fusion_grid, score_grid, tune_fusion)
from evaluators.retrieval import document_ranking, mean_metrics, retrieval_metrics
from rag.retrieve.retriever import RetrieverConfig

DOCS = 30


def hits(doc_order: list[int], scores: list[float]) -> list[Hit]:
    """Hits whose chunk n belongs to document ``dn`` (one chunk per document)."""
    return [Hit(d, f"d{d}", 0, 1, float(s), "s0", "") for d, s in zip(doc_order, scores)]


def perfect_and_random(queries: int, seed: int = 0):
    """Query i's one relevant document is ``d{i}``: ranked first by the "perfect" lists (with a clear
    margin) and at a random place by the "random" lists."""
    rng = np.random.default_rng(seed)
    perfect, random, qrels = {}, {}, {}
    for i in range(queries):
        others = [d for d in rng.permutation(DOCS).tolist() if d != i]
        perfect[f"q{i}"] = hits([i] + others, [10.0] + sorted(rng.uniform(0, 5, DOCS - 1), reverse=True))
        shuffled = rng.permutation(DOCS).tolist()
        random[f"q{i}"] = hits(shuffled, sorted(rng.uniform(-0.2, 0.8, DOCS), reverse=True))
        qrels[f"q{i}"] = {f"d{i}": 1}
    return perfect, random, qrels


def ndcg(lists, qrels, k=10):
    run = {q: document_ranking(h, 100) for q, h in lists.items()}
    return mean_metrics(retrieval_metrics(run, qrels, k, 100))[f"ndcg@{k}"]


def test_bm25_perfect_dense_random_tunes_to_the_bm25_side():
    bm25, dense, qrels = perfect_and_random(40)
    assert ndcg(bm25, qrels) == pytest.approx(100.0) and ndcg(dense, qrels) < 60
    result = cross_fit_fusion(dense, bm25, qrels, folds=2)
    assert result.metrics["ndcg@10"] == pytest.approx(100.0)  # held out: as good as BM25
    assert all(f.tuning.fusion == "convex" and f.tuning.alpha < 0.5 for f in result.folds)
    assert result.overall.alpha == 0.1 and result.overall.dev_score == pytest.approx(100.0)
    # the full grid (single retrievers allowed) picks BM25 alone, the first of the equal settings
    full = tune_fusion(dense, bm25, qrels, fusion_grid(ALL_ALPHAS))
    assert (full.fusion, full.alpha) == ("convex", 0.0)
    # and the mirror image goes to the dense side
    mirror = cross_fit_fusion(bm25, dense, qrels, folds=3)
    assert mirror.metrics["ndcg@10"] == pytest.approx(100.0)
    assert all(f.tuning.fusion == "convex" and f.tuning.alpha > 0.5 for f in mirror.folds)


def test_hybrid_beats_both_when_each_ranks_the_answer_second():
    dense, bm25, qrels = {}, {}, {}
    for i in range(12):
        rel, a, b = 3 * i, 3 * i + 1, 3 * i + 2
        dense[f"q{i}"] = hits([a, rel, b], [0.9, 0.8, 0.1])
        bm25[f"q{i}"] = hits([b, rel, a], [9.0, 8.0, 1.0])
        qrels[f"q{i}"] = {f"d{rel}": 1}
    single = 100 / np.log2(3)
    assert ndcg(dense, qrels) == pytest.approx(single) and ndcg(bm25, qrels) == pytest.approx(single)
    result = cross_fit_fusion(dense, bm25, qrels, folds=4, k=10, recall_k=10)
    assert result.metrics["ndcg@10"] == pytest.approx(100.0)
    # the grid table lists every setting with its dev score
    assert len(result.overall.table) == len(fusion_grid()) and max(s for _, s in result.overall.table) == 100.0


def test_held_out_scores_use_the_setting_tuned_on_the_other_folds():
    rng = np.random.default_rng(3)
    dense, bm25, qrels = {}, {}, {}
    for i in range(25):  # noisy lists: settings differ from fold to fold
        docs = rng.permutation(DOCS).tolist()
        dense[f"q{i}"] = hits(docs, sorted(rng.uniform(0, 1, DOCS), reverse=True))
        docs = rng.permutation(DOCS).tolist()
        bm25[f"q{i}"] = hits(docs[:20], sorted(rng.exponential(3, 20), reverse=True))
        qrels[f"q{i}"] = {f"d{d}": int(rng.integers(1, 3)) for d in rng.choice(DOCS, 3, replace=False)}
    result = cross_fit_fusion(dense, bm25, qrels, folds=3)
    assert list(result.per_query) == [f"q{i}" for i in range(25)]  # every query once, natural order
    for fold in result.folds:
        dev = {q: qrels[q] for q in qrels if q not in fold.test_queries}
        again = tune_fusion(dense, bm25, dev)
        assert again.setting == fold.tuning.setting and again.dev_score == pytest.approx(fold.tuning.dev_score)
        test = {q: qrels[q] for q in fold.test_queries}
        alone = score_grid(dense, bm25, test, [fold.tuning.setting])
        held_out = [result.per_query[q]["ndcg@10"] for q in alone.query_ids]
        assert held_out == pytest.approx(alone.values[0, :, 0].tolist())
    assert result.metrics["ndcg@10"] == pytest.approx(100 * np.mean([v["ndcg@10"] for v in result.per_query.values()]))


def test_folds_are_deterministic_disjoint_and_balanced():
    ids = [f"q{i}" for i in (10, 2, 1, 33, 7, 0, 21)]
    folds = assign_folds(ids, 3)
    assert folds == assign_folds(list(reversed(ids)), 3)
    assert set(folds) == set(ids) and sorted(np.bincount(list(folds.values()))) == [2, 2, 3]
    assert [q for q in sorted(folds, key=lambda q: int(q[1:]))] == ["q0", "q1", "q2", "q7", "q10", "q21", "q33"]
    assert [folds[q] for q in ("q0", "q1", "q2", "q7", "q10", "q21", "q33")] == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(ids, 1)
    with pytest.raises(ValueError, match="7 judged queries"):
        assign_folds(ids, 8)


def test_settings_print_as_search_flags_and_config():
    convex = FusionSetting("convex", 0.4, "calibrated")
    assert convex.search_flags(300) == "--mode hybrid --fusion convex --alpha 0.4 --normalization calibrated --depth 300"
    assert FusionSetting("rrf", rrf_k=10).retriever_options() == {"mode": "hybrid", "fusion": "rrf", "rrf_k": 10}
    with pytest.raises(ValueError, match="unknown normalization"):
        FusionSetting("convex", 0.5, "softmax")
    with pytest.raises(ValueError, match="no query has a relevant judgement"):
        score_grid({}, {}, {"q1": {"d1": 0}})


CORPUS = {
    "d1": "The Eiffel Tower is a wrought-iron lattice tower in Paris, finished in 1889.",
    "d2": "Photosynthesis turns light, water and carbon dioxide into glucose and oxygen in plants.",
    "d3": "Alexander Fleming discovered penicillin in 1928 at St Mary's Hospital in London.",
    "d4": "Mount Everest, on the border of Nepal and China, is the highest mountain above sea level.",
    "d5": "The Great Wall of China is a series of fortifications built across northern China.",
    "d6": "Plants need sunlight; green leaves hold chlorophyll, which absorbs red and blue light.",
    "d7": "Antibiotics such as penicillin kill bacteria or stop them from growing.",
    "d8": "The Louvre in Paris is the world's most-visited art museum.",
}
QUERIES = {"q1": "Which tower was finished in 1889?", "q2": "How do plants make food from light?",
           "q3": "Who discovered penicillin?", "q4": "What is the tallest peak in the world?",
           "q5": "fortifications across northern China", "q6": "medicines that kill bacteria",
           "q7": "most visited museum of art", "q8": "why are leaves green"}
QRELS = {"q1": "d1", "q2": "d2", "q3": "d3", "q4": "d4", "q5": "d5", "q6": "d7", "q7": "d8", "q8": "d6"}


def write_beir(root):
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                               for d, t in CORPUS.items()), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                for q, t in QUERIES.items()), encoding="utf-8")
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             + "".join(f"{q}\t{d}\t1\n" for q, d in QRELS.items()), encoding="utf-8")
    return root


def test_cli_tune_fusion_row_and_usable_flags(tmp_path):
    from ragcli import main

    beir = write_beir(tmp_path / "beir")
    base = ["eval", "retrieval", "--dataset", str(beir), "-k", "3", "--recall-k", "5", "--device", "cpu"]
    runner = CliRunner()
    result = runner.invoke(main, base + ["--mode", "hybrid", "--tune-fusion", "--folds", "2", "--json",
                                         "--index-dir", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["mode"] for r in rows] == ["hybrid", "dense", "bm25", TUNED_MODE]
    tuned = rows[-1]
    tuning = tuned["fusion_tuning"]
    assert tuned["queries"] == 8 and len(tuning["folds"]) == 2
    assert sorted(f["test_queries"] for f in tuning["folds"]) == [4, 4]
    assert 0 <= tuned["ndcg@3"] <= 100 and tuning["overall"]["queries"] == 8
    flags = tuned["search_flags"].split()
    assert flags[:2] == ["--mode", "hybrid"] and tuned["retriever"]["mode"] == "hybrid"
    config = RetrieverConfig.from_dict(tuned["retriever"])  # what a pipeline config's retriever: takes
    assert (config.fusion, config.depth) == (tuning["overall"]["fusion"], int(flags[flags.index("--depth") + 1]))
    # the printed flags reproduce the all-query setting's score when given back to the evaluation ...
    again = runner.invoke(main, base + flags + ["--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["ndcg@3"] == pytest.approx(tuning["overall"]["dev_score"], abs=1e-4)
    # ... and are accepted by rag search as they are
    search = runner.invoke(main, ["search", str(tmp_path / "ds"), "who found penicillin", *flags, "-k", "2",
                                  "--device", "cpu", "--json"])
    assert search.exit_code == 0, search.output
    assert len(json.loads(search.stdout)) == 2
    table = runner.invoke(main, base + ["--mode", "bm25", "--tune-fusion", "--folds", "4"])
    assert table.exit_code == 0, table.output
    assert TUNED_MODE in table.output and "rag search DATASTORE QUERY --mode hybrid --fusion" in table.output
    assert "all 8 queries" in table.output and "retriever: {mode: hybrid" in table.output
    bad = runner.invoke(main, base + ["--tune-fusion", "--folds", "9"])
    assert bad.exit_code == 1 and "9 folds for 8 judged queries" in bad.output
