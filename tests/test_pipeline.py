"""The ask pipeline on a real datastore: stages, budgets, citations back to documents, configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tiny_models import tiny_causal_lm

from indexers.tokenizers import load_tokenizer
from rag import Answer, Datastore, Pipeline
from rag.compress import load_compressor
from rag.pipeline import PipelineConfig, PipelineConfigError
from rag.records import Passage
from rag.reorder import ends_first
from rag.stages import count_tokens

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What did the president say about public credit and the debt?"


@pytest.fixture(scope="module")
def ds(small_datastore):
    return Datastore.open(small_datastore, device="cpu")


@pytest.fixture(scope="module")
def cl100k():
    return load_tokenizer("cl100k_base")


def check_citations(answer: Answer, ds) -> None:
    """Every citation names a context passage; every quote is the document text at its span."""
    assert answer.citations  # the checks below must have something to check
    rows = ds.get_chunks([c.chunk_id for c in answer.citations])
    by_number = {p.number: p for p in answer.context}
    for c in answer.citations:
        passage = by_number[c.number]
        assert (c.chunk_id, c.doc_id, c.start, c.end) == (passage.chunk_id, passage.doc_id, passage.start, passage.end)
        row = rows[c.chunk_id]
        assert row["doc_id"] == c.doc_id and (row["start"], row["end"]) == (c.start, c.end)
        if c.quote is not None and c.quote_start is None:  # words removed by compression: no verbatim span
            assert c.quote not in row["text"]
        elif c.quote is not None:
            assert c.start <= c.quote_start < c.quote_end <= c.end
            assert row["text"][c.quote_start - c.start:c.quote_end - c.start] == c.quote


def test_default_config_answers_with_citations(ds):
    pipe = Pipeline.from_config(REPO / "configs" / "pipelines" / "default.yaml", datastore=ds)
    answer = pipe.ask(QUESTION)
    assert answer.text and answer.citations and answer.generator == "extractive"
    assert all(c.quote for c in answer.citations)
    check_citations(answer, ds)
    assert answer.context_tokens <= 1024
    assert {"retrieve", "generate", "total"} <= set(answer.timings)
    json.dumps(answer.to_dict())


@pytest.mark.parametrize("method, budget", [(None, 60), (None, 200), ("truncate", 60), ("sentence", 60),
                                            ("sentence", 200), ("semantic", 60)])
def test_budget_holds_through_every_stage(ds, cl100k, method, budget):
    compressor = {"method": method} if method else None
    pipe = Pipeline.from_config(PipelineConfig(k=3, budget=budget, compressor=compressor, reorder=True), datastore=ds)
    answer = pipe.ask(QUESTION)
    assert count_tokens(answer.context, cl100k) == answer.context_tokens <= budget
    names = [s.name for s in answer.stages]
    assert names[-1] in ("reorder", "fit")
    assert names[0] == (method or "reorder")
    retrieved = count_tokens(pipe.retrieve(QUESTION), cl100k)
    assert answer.stages[0].tokens_before == retrieved
    for before, after in zip(answer.stages, answer.stages[1:]):
        assert after.tokens_before == before.tokens_after
    check_citations(answer, ds)


def test_python_construction_and_reorder(ds, embedder, cl100k):
    compressor = load_compressor("sentence", embedder=embedder, tokenizer=cl100k)
    plain = Pipeline(ds, k=5, compressor=compressor, budget=300, embedder=embedder)
    reordered = Pipeline(ds, k=5, compressor=compressor, budget=300, reorder=True, embedder=embedder)
    a, b = plain.ask(QUESTION), reordered.ask(QUESTION)
    assert [p.chunk_id for p in b.context] == [p.chunk_id for p in ends_first(a.context)]
    assert [p.number for p in b.context] == list(range(1, len(b.context) + 1))
    check_citations(b, ds)


def test_given_passages_without_a_datastore(embedder):
    passages = [Passage(1, "Paris is on the Seine. The Louvre is a museum.", 4, "p.txt", 10, 57),
                Passage(2, "The treaty was signed in Paris in 1783.", 8, "t.txt", 0, 39)]
    pipe = Pipeline(embedder=embedder)
    answer = pipe.ask("When was the treaty signed?", passages=passages)
    assert answer.citations[0].chunk_id == 8 and answer.citations[0].quote_start == 0
    assert "retrieve" not in answer.timings
    with pytest.raises(ValueError, match="no datastore"):
        pipe.ask("When was the treaty signed?")
    with pytest.raises(ValueError, match="empty"):
        pipe.ask("  ", passages=passages)


def test_hf_generator_from_config(ds, tmp_path):
    model = tiny_causal_lm(tmp_path / "lm", emit="[1]")
    pipe = Pipeline.from_config({"k": 2, "budget": 200, "generator": {"spec": f"hf:{model}", "max_new_tokens": 2,
                                                                       "device": "cpu"}}, datastore=ds)
    pieces: list[str] = []
    answer = pipe.ask(QUESTION, on_token=pieces.append)
    assert answer.text == "[1] [1]" and "".join(pieces).strip() == answer.text
    assert [c.number for c in answer.citations] == [1] and answer.citations[0].quote is None
    assert answer.completion_tokens == 2 and answer.prompt_tokens > 0
    check_citations(answer, ds)


def test_html_pruner_stage_holds_the_budget(embedder, cl100k):
    pytest.importorskip("rag.html", reason="rag.html (HTML pruning) is not in this tree")
    rows = "".join(f"<tr><td>row {i}</td><td>value {i * 7}</td></tr>" for i in range(40))
    page = (f"<html><body><h1>Treaty of Paris</h1><p>The treaty was signed in 1783 in Paris.</p>"
            f"<table>{rows}</table><div><p>Unrelated text about rivers and mountains.</p></div></body></html>")
    pipe = Pipeline.from_config({"budget": 60, "pruner": {"method": "html"}})
    answer = pipe.ask("When was the treaty signed?", passages=[Passage(1, page, 0, "page.html", 0, len(page))])
    assert answer.stages[0].name == "html" and answer.stages[0].tokens_before > 60
    assert count_tokens(answer.context, cl100k) <= 60


def test_config_errors_name_the_problem(tmp_path, ds):
    bad = tmp_path / "bad.yaml"
    bad.write_text("k: 3\nbudjet: 100\n")
    with pytest.raises(PipelineConfigError, match="budjet"):
        Pipeline.from_config(bad, datastore=ds)
    with pytest.raises(PipelineConfigError, match="budget"):
        PipelineConfig(budget=0)
    with pytest.raises(PipelineConfigError, match="method"):
        PipelineConfig(compressor={"split": "rank"})
    with pytest.raises(PipelineConfigError, match="unknown pruner"):
        Pipeline.from_config({"pruner": {"method": "pdf"}})
    with pytest.raises(FileNotFoundError):
        Pipeline.from_config(tmp_path / "missing.yaml")
    with pytest.raises(PipelineConfigError, match="retriever"):
        Pipeline.from_config({"retriever": {"mode": "dense", "colour": "blue"}}, datastore=ds)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "pipelines").glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    config = PipelineConfig.load(REPO / "configs" / "pipelines" / name)
    assert config.k >= 1
