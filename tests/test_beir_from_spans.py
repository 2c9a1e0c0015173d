"""BEIR sets built from span-labelled questions, and multi-mode retrieval evaluation on them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from datastores.records import Document
from evaluators.beir_from_spans import write_beir_from_spans, write_chroma_beir_sets
from evaluators.datasets import EvalDataset, Question, load_beir, load_dataset
from indexers.chunkers import make_chunker

from conftest import CHROMA


def test_relevant_chunks_are_those_overlapping_a_reference(tmp_path):
    text = "".join(f"Sentence number {i} talks about topic {i % 3}. " for i in range(40))
    questions = [Question("topic one?", "c", ((100, 130),), index=0),
                 Question("two places?", "c", ((0, 5), (900, 1400)), index=1)]
    data = EvalDataset(questions, {"c": text})
    chunker = make_chunker("token", 20, 0)
    info = write_beir_from_spans(data, chunker, tmp_path / "beir")
    beir = load_beir(tmp_path / "beir")
    chunks = chunker.chunk(Document("c", text, "c"))
    assert info.documents == len(chunks) == len(beir.corpus)
    for q, question in zip(("q0", "q1"), questions):
        expected = {f"c:{n:05d}" for n, ch in enumerate(chunks)
                    if any(ch.start < e and s < ch.end for s, e in question.references)}
        assert set(beir.qrels[q]) == expected and expected
    assert beir.corpus["c:00000"]["text"] == chunks[0].text
    assert info.judgements == sum(len(v) for v in beir.qrels.values())


def test_chroma_sets_per_corpus_and_pooled(tmp_path):
    data = load_dataset(CHROMA).subset(["chatlogs", "state_of_the_union"])
    sets = write_chroma_beir_sets(data, make_chunker("recursive", 200, 0), tmp_path)
    assert set(sets) == {"chatlogs", "state_of_the_union", "pooled"}
    assert sets["pooled"].documents == sets["chatlogs"].documents + sets["state_of_the_union"].documents
    assert sets["pooled"].queries == sets["chatlogs"].queries + sets["state_of_the_union"].queries
    assert sets["pooled"].queries == len(data.questions)  # every reference overlaps some chunk
    pooled = load_beir(sets["pooled"].path)
    assert all(doc.startswith(("chatlogs:", "state_of_the_union:")) for doc in pooled.corpus)


def test_eval_retrieval_several_modes_in_one_table(tmp_path):
    from ragcli import main

    text = " ".join(f"Paragraph {i}: the {w} of the kingdom was discussed at length." for i, w in
                    enumerate(["army", "navy", "taxes", "roads", "harvest", "treaty", "courts", "schools"]))
    questions = [Question(f"what about the {w}?", "c", ((text.index(w), text.index(w) + len(w)),), index=i)
                 for i, w in enumerate(["navy", "harvest", "courts"])]
    write_beir_from_spans(EvalDataset(questions, {"c": text}), make_chunker("token", 15, 0), tmp_path / "beir")
    args = ["eval", "retrieval", "--dataset", str(tmp_path / "beir"), "--mode", "dense,bm25,hybrid-convex",
            "-k", "3", "--recall-k", "5", "--device", "cpu", "--rerank", "bi-encoder:all-MiniLM-L6-v2"]
    result = CliRunner().invoke(main, args + ["--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["mode"] for r in rows] == ["dense", "bm25", "hybrid-convex", "dense+rerank", "bm25+rerank",
                                         "hybrid-convex+rerank"]
    by_mode = {r["mode"]: r for r in rows}
    assert all(0 <= r["ndcg@3"] <= 100 and r["queries"] == 3 and r["queries_per_s"] > 0 for r in rows)
    assert by_mode["bm25"]["engine"] == "bm25" and by_mode["hybrid-convex"]["engine"].startswith("convex")
    # reranking dense hits by the same model's cosine keeps the dense ranking
    assert by_mode["dense+rerank"]["ndcg@3"] == pytest.approx(by_mode["dense"]["ndcg@3"], abs=1e-6)
    table = CliRunner().invoke(main, args[:-2] + ["--mode", "bm25,hybrid"])
    assert table.exit_code == 0 and "hybrid" in table.output and "queries/s" in table.output
    bad = CliRunner().invoke(main, ["eval", "retrieval", "--dataset", str(tmp_path / "beir"), "--mode", "sparse"])
    assert bad.exit_code != 0 and "unknown retrieval mode" in bad.output
