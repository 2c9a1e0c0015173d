"""Document retrieval metrics (pytrec_eval) on a hand-computed case; BEIR loading; ``rag eval retrieval``."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from evaluators.datasets import load_beir
from evaluators.retrieval import document_ranking, evaluate_beir, mean_metrics, retrieval_metrics


# -- metrics, by hand --------------------------------------------------------------------------------

QRELS = {
    "q1": {"d1": 1, "d3": 2},
    "q2": {"d2": 1},
    "q3": {"d4": 0},          # no relevant document: not evaluated
    "q4": {"d6": 1},          # never retrieved: scores 0
}
RUN = {"q1": ["d2", "d1", "d5", "d3"], "q2": ["d5", "d6"], "q3": ["d4"]}


def test_hand_computed_case():
    per_query = retrieval_metrics(RUN, QRELS, k=3, recall_k=4)
    assert set(per_query) == {"q1", "q2", "q4"}
    q1 = per_query["q1"]
    # nDCG@3: DCG = 1/log2(3) (d1 at rank 2); ideal = 2/log2(2) + 1/log2(3) (d3 then d1)
    dcg = 1 / math.log2(3)
    assert q1["ndcg@3"] == pytest.approx(dcg / (2 + dcg))
    assert q1["mrr@3"] == pytest.approx(0.5)             # first relevant at rank 2
    assert q1["recall@3"] == pytest.approx(0.5)          # d1 of {d1, d3}
    assert q1["recall@4"] == pytest.approx(1.0)
    assert q1["map"] == pytest.approx((1 / 2 + 2 / 4) / 2)   # precision at ranks 2 and 4
    for q in ("q2", "q4"):
        assert all(v == 0.0 for v in per_query[q].values())
    means = mean_metrics(per_query)
    assert list(means) == ["ndcg@3", "mrr@3", "recall@3", "recall@4", "map"]
    assert means["mrr@3"] == pytest.approx(100 * 0.5 / 3)
    assert means["ndcg@3"] == pytest.approx(100 * dcg / (2 + dcg) / 3)
    assert means["recall@4"] == pytest.approx(100 / 3)
    assert means["map"] == pytest.approx(100 * 0.5 / 3)


def test_mrr_is_cut_at_k_and_the_ranking_is_kept_on_ties():
    qrels = {"q": {"z": 1}}
    # trec_eval would re-sort equal scores by document id (z before a); ranks are passed as scores
    assert retrieval_metrics({"q": ["a", "z"]}, qrels, k=10)["q"]["mrr@10"] == pytest.approx(0.5)
    assert retrieval_metrics({"q": ["a", "b", "z"]}, qrels, k=2)["q"]["mrr@2"] == 0.0
    assert retrieval_metrics({"q": ["a", "b", "z"]}, qrels, k=2, recall_k=3)["q"]["recall@3"] == 1.0
    # a repeated document counts once, at its first rank
    assert retrieval_metrics({"q": ["a", "a", "z"]}, qrels, k=2)["q"]["mrr@2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 1"):
        retrieval_metrics({}, qrels, k=0)


def test_document_ranking_by_best_chunk():
    class H:
        def __init__(self, doc_id, score):
            self.doc_id, self.score = doc_id, score

    hits = [H("a", 5.0), H("b", 4.0), H("a", 3.0), H("c", 2.0), H("d", 1.0)]
    assert document_ranking(hits, 10) == ["a", "b", "c", "d"]
    assert document_ranking(hits, 2) == ["a", "b"]


# -- BEIR ------------------------------------------------------------------------------------------

DOCS = {
    "d1": ("Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris."),
    "d2": ("Photosynthesis", "Photosynthesis lets plants convert light energy into chemical energy stored in sugar."),
    "d3": ("Great Wall", "The Great Wall of China stretches thousands of kilometres across northern China."),
    "d4": ("", "Honey bees tell their hive mates where flowers are with a waggle dance."),
    "d5": ("Mount Everest", "Mount Everest in the Himalayas is the highest mountain above sea level."),
    "d6": ("Penicillin", "Alexander Fleming discovered penicillin, the first antibiotic, in 1928."),
}
QUERIES = {"q1": "Which tower stands in Paris?", "q2": "How do plants turn light into chemical energy?",
           "q3": "Who discovered penicillin?", "q4": "What is the highest mountain on Earth?",
           "q5": "A query without judgements"}
JUDGEMENTS = [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d6", 2), ("q3", "d4", 0), ("q4", "d5", 1)]


def write_beir(root, judgements=JUDGEMENTS, split="test"):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for doc_id, (title, text) in DOCS.items():
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as handle:
        for qid, text in QUERIES.items():
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for q, d, g in judgements:
            handle.write(f"{q}\t{d}\t{g}\n")
    return root


def test_load_beir(tmp_path):
    data = load_beir(write_beir(tmp_path / "beir"))
    assert len(data.corpus) == 6 and len(data.queries) == 5 and data.split == "test"
    assert data.qrels["q3"] == {"d6": 2, "d4": 0}
    assert data.evaluated_queries == ["q1", "q2", "q3", "q4"]
    assert data.document_text("d1").startswith("Eiffel Tower\n\nThe Eiffel Tower")
    assert data.document_text("d4") == DOCS["d4"][1]
    # the only split is taken when there is no test split
    only_dev = load_beir(write_beir(tmp_path / "dev", split="dev"))
    assert only_dev.split == "dev"


def test_beir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_beir(tmp_path / "absent")
    root = write_beir(tmp_path / "bad", [("q1", "d1", 1), ("q9", "d1", 1), ("q1", "d99", 1), ("q2", "d2", "x")])
    with pytest.raises(ValueError) as info:
        load_beir(root)
    message = str(info.value)
    assert "3 bad line(s)" in message and "unknown query id 'q9'" in message
    assert "unknown corpus id 'd99'" in message and "is not a number" in message
    with pytest.raises(ValueError, match="has no train.tsv; it has test"):
        load_beir(write_beir(tmp_path / "ok"), split="train")


@pytest.mark.parametrize("mode", ["bm25", "dense"])
def test_evaluate_beir_through_the_datastore(tmp_path, embedder, mode):
    result = evaluate_beir(write_beir(tmp_path / "beir"), mode, k=10, recall_k=100, embedder=embedder,
                           index_dir=tmp_path / "ds")
    assert result.settings["queries"] == 4 and result.settings["chunks"] == 6
    assert result.settings["engine"] == {"dense": "faiss-flat-ip", "bm25": "bm25"}[mode]
    assert list(result.metrics) == ["ndcg@10", "mrr@10", "recall@10", "recall@100", "map"]
    # every query finds its one relevant document first
    assert result.metrics == pytest.approx({"ndcg@10": 100.0, "mrr@10": 100.0, "recall@10": 100.0,
                                            "recall@100": 100.0, "map": 100.0})
    assert (tmp_path / "ds" / "manifest.json").is_file()


def test_cli_retrieval_json_and_table(tmp_path):
    from ragcli.eval import eval_group

    root = write_beir(tmp_path / "beir")
    runner = CliRunner()
    result = runner.invoke(eval_group, ["retrieval", "--dataset", str(root), "--mode", "bm25", "-k", "10",
                                        "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    for key in ("ndcg@10", "mrr@10", "recall@100", "map"):
        assert data[key] == pytest.approx(100.0)
    assert data["queries"] == 4 and data["engine"] == "bm25"
    table = runner.invoke(eval_group, ["retrieval", "--dataset", str(root), "--mode", "bm25", "-k", "3",
                                       "--device", "cpu"])
    assert table.exit_code == 0, table.output
    assert "nDCG@3" in table.output and "MRR@3" in table.output and "recall@100" in table.output
    bad = runner.invoke(eval_group, ["retrieval", "--dataset", str(tmp_path / "nope")])
    assert bad.exit_code == 1 and "does not exist" in bad.output


def test_evaluation_asks_depth_chunks_when_no_document_was_split(tmp_path, embedder):
    """One chunk per document: ``depth`` chunks are ``depth`` documents, so no more are read."""
    from evaluators.retrieval import evaluate_beir_modes

    root = write_beir(tmp_path / "beir")
    short = evaluate_beir_modes(root, ["bm25", "hybrid"], k=1, recall_k=2, embedder=embedder, keep_hits=True)
    assert all(len(hits) <= 2 for result in short for hits in result.hits.values())
    assert all(len(hits) == 2 for hits in short[1].hits.values())    # hybrid always has candidates
    split = evaluate_beir_modes(root, ["bm25"], k=1, recall_k=2, embedder=embedder, keep_hits=True, chunk_size=8)[0]
    assert split.settings["chunks"] > 6    # documents were split: chunk_factor x depth chunks
    assert max(len(hits) for hits in split.hits.values()) > 2
