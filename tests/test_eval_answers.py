"""rag eval answers: QA readers, whole pipelines scored by EM/F1/answer-in-context, closed-book and
oracle rows, the resumable generation cache, batching, the CLI, and the real smollm2 on 2 questions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _tiny_models import tiny_causal_lm
from click.testing import CliRunner

from evaluators.answer_eval import GenerationCache, NamedPipeline, evaluate_answers, index_documents, same_document
from evaluators.answers import answer_in_context, f1_score, strip_citations
from evaluators.datasets import load_qa_set
from ragcli import main
from rag.pipeline import PipelineConfig

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2_dev_sample" / "squad2_dev_sample.json"
PARAGRAPHS = {
    "Treaties": ("The Treaty of Ghent ended the War of 1812. It was signed on 24 December 1814 in the city of "
                 "Ghent. The treaty restored the borders of 1811.", [
                     ("When was the Treaty of Ghent signed?", "24 December 1814"),
                     ("Which war did the Treaty of Ghent end?", "War of 1812")]),
    "Rivers": ("The Danube flows through ten countries. It rises in the Black Forest and empties into the Black "
               "Sea. Vienna and Budapest lie on its banks.", [("Where does the Danube rise?", "Black Forest")]),
    "Bridges": ("The Golden Gate Bridge opened in 1937. Its main span is 1,280 metres long. It is painted "
                "international orange.", [("When did the Golden Gate Bridge open?", "1937")]),
}


def write_squad(path: Path) -> Path:
    """A small SQuAD 2.0 file: 3 paragraphs, 4 answerable questions and one unanswerable one."""
    data = []
    for title, (context, questions) in PARAGRAPHS.items():
        qas = [{"id": f"{title}-{i}", "question": q, "is_impossible": False,
                "answers": [{"text": a, "answer_start": context.index(a)}]} for i, (q, a) in enumerate(questions)]
        if title == "Rivers":
            qas.append({"id": "nope", "question": "Who painted the Danube?", "is_impossible": True, "answers": []})
        data.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps({"version": "v2.0", "data": data}))
    return path


@pytest.fixture(scope="module")
def squad(tmp_path_factory):
    return write_squad(tmp_path_factory.mktemp("qa") / "mini_squad.json")


@pytest.fixture(scope="module")
def store(tmp_path_factory, squad):
    return index_documents(load_qa_set(squad).documents, tmp_path_factory.mktemp("qa_ds") / "ds", device="cpu")


def extractive(k: int = 2, **changes) -> PipelineConfig:
    return PipelineConfig(k=k, budget=256, device="cpu", generator={"spec": "extractive", "max_sentences": 1},
                          **changes)


def test_squad_reader_keeps_answerable_questions_and_gold_paragraphs(squad):
    qa = load_qa_set(squad)
    assert [i.id for i in qa.items] == ["Treaties-0", "Treaties-1", "Rivers-0", "Bridges-0"] and qa.skipped == 1
    assert set(qa.documents) == {"Treaties:000", "Rivers:000", "Bridges:000"}
    first = qa.items[0]
    assert first.gold_docs == ("Treaties:000",) and first.gold_passages == (PARAGRAPHS["Treaties"][0],)
    real = load_qa_set(SQUAD)
    assert len(real.items) == 321 and len(real.documents) == 73


def test_jsonl_and_chroma_readers(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Paris is the capital of France.")
    lines = [{"question": "Capital of France?", "answers": ["Paris"], "references": [{"doc_id": "a", "start": 0,
                                                                                   "end": 5}]},
             {"question": "No answer here?", "references": []}]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines))
    qa = load_qa_set(path, tmp_path / "docs")
    assert len(qa.items) == 1 and qa.skipped == 1
    assert qa.items[0].gold_passages == ("Paris",) and qa.items[0].gold_docs == ("a",) and qa.documents
    chroma = load_qa_set(Path(__file__).resolve().parents[2] / "shared" / "data" / "chroma_general_eval")
    assert chroma.items[0].answers == chroma.items[0].gold_passages and len(chroma.documents) == 5


def test_bad_sets_are_clear_errors(tmp_path):
    (tmp_path / "x.json").write_text('{"not": "squad"}')
    with pytest.raises(ValueError, match="not a SQuAD JSON file"):
        load_qa_set(tmp_path / "x.json")
    (tmp_path / "y.jsonl").write_text(json.dumps({"question": "q?", "references": []}))
    with pytest.raises(ValueError, match="no questions with answers"):
        load_qa_set(tmp_path / "y.jsonl")
    with pytest.raises(FileNotFoundError):
        load_qa_set(tmp_path / "missing.jsonl")


def test_seeded_limit_is_a_stable_ordered_sample():
    qa = load_qa_set(SQUAD)
    a, b = qa.limited(10, seed=3), qa.limited(10, seed=3)
    order = {item.id: i for i, item in enumerate(qa.items)}
    assert [i.id for i in a.items] == [i.id for i in b.items] and len(a.items) == 10
    assert [order[i.id] for i in a.items] == sorted(order[i.id] for i in a.items)
    assert [i.id for i in qa.limited(10, seed=4).items] != [i.id for i in a.items]
    assert [i.id for i in qa.limited(3).items] == [i.id for i in qa.items[:3]]


def test_same_document_rules():
    assert same_document("a", "a") and same_document("corpora/finance.md", "finance")
    assert same_document("q.jsonl#7", "7") and not same_document("q.jsonl#17", "7")


def test_rows_agree_with_their_records(squad, store):
    qa = load_qa_set(squad)
    result = evaluate_answers(qa, [NamedPipeline("extractive", extractive())], store)
    assert [r.pipeline for r in result.rows] == ["extractive", "closed-book", "oracle"]
    assert len(result.records) == 3 * len(qa.items)
    for row in result.rows:
        mine = [r for r in result.records if r.pipeline == row.pipeline]
        assert math.isclose(row.f1, 100 * sum(r.f1 for r in mine) / len(mine))
        assert math.isclose(row.answer_in_context, 100 * sum(r.answer_in_context for r in mine) / len(mine))
        for record in mine:
            assert record.f1 == f1_score(strip_citations(record.prediction), record.answers)
            assert record.accuracy == answer_in_context([strip_citations(record.prediction)], record.answers)
    by_name = {r.pipeline: r for r in result.rows}
    assert by_name["oracle"].answer_in_context == 100.0 and by_name["closed-book"].answer_in_context == 0.0
    assert by_name["closed-book"].context_tokens == 0 and by_name["oracle"].retrieval_recall is None
    # with k=2 of 3 paragraphs the gold paragraph is retrieved for these distinct topics
    assert by_name["extractive"].retrieval_recall == 100.0 and by_name["extractive"].f1 > 0
    assert set(by_name["extractive"].seconds) >= {"retrieve", "generate"}


def test_budget_and_k_show_in_context_tokens(squad, store):
    qa = load_qa_set(squad)
    small = NamedPipeline("k1", extractive(k=1))
    large = NamedPipeline("k3", extractive(k=3))
    rows = evaluate_answers(qa, [small, large], store, closed_book=False, oracle=False).rows
    assert [r.pipeline for r in rows] == ["k1", "k3"]
    assert 0 < rows[0].context_tokens < rows[1].context_tokens


def test_killed_runs_resume_from_the_cache(squad, store, tmp_path):
    qa = load_qa_set(squad)
    pipelines = [NamedPipeline("extractive", extractive())]
    first = evaluate_answers(qa, pipelines, store, oracle=False, closed_book=False, batch_size=1, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1 and len(files[0].read_text().splitlines()) == len(qa.items)
    lines = files[0].read_text().splitlines(keepends=True)
    files[0].write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while writing the second line
    again = evaluate_answers(qa, pipelines, store, oracle=False, closed_book=False, batch_size=1, cache_dir=tmp_path)
    assert [r.to_dict() for r in again.records][0] == first.records[0].to_dict()  # reused, timings included
    assert [r.prediction for r in again.records] == [r.prediction for r in first.records]
    entries = [json.loads(x) for x in files[0].read_text().splitlines()[2:]]
    assert len(entries) == len(qa.items) - 1  # the torn line is skipped, the other questions re-run
    assert len(GenerationCache(tmp_path, {"other": 1}).records) == 0


def test_hf_batches_give_the_same_answers(squad, store, tmp_path):
    lm = tiny_causal_lm(tmp_path / "lm", extra_text=" ".join(t for t, _ in PARAGRAPHS.values()))
    qa = load_qa_set(squad)
    config = PipelineConfig(k=2, budget=128, device="cpu", generator={"spec": f"hf:{lm}", "max_new_tokens": 4})
    runs = [evaluate_answers(qa, [NamedPipeline("tiny", config)], store, batch_size=size, oracle=False)
            for size in (1, 3)]
    assert [r.prediction for r in runs[0].records] == [r.prediction for r in runs[1].records]
    assert all(0 < r.generated_tokens <= 4 for r in runs[1].records if r.prediction)


def test_cli_json_rows_and_records(squad, tmp_path):
    config = tmp_path / "one.yaml"
    config.write_text("k: 1\nbudget: 200\ngenerator:\n  spec: extractive\n")
    out = tmp_path / "records.jsonl"
    result = CliRunner().invoke(main, ["eval", "answers", "--dataset", str(squad), "--config", str(config),
                                       "--config", "configs/pipelines/default.yaml", "--device", "cpu", "--json",
                                       "--no-cache", "--out", str(out), "--limit", "3"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["pipeline"] for r in rows] == ["one", "default", "closed-book", "oracle"]
    for row in rows:
        assert {"pipeline", "exact_match", "f1", "accuracy", "answer_in_context", "context_tokens"} <= set(row)
        assert 0 <= row["f1"] <= 100 and row["questions"] == 3
    assert len(out.read_text().splitlines()) == 4 * 3


def test_cli_table_and_errors(squad, tmp_path):
    runner = CliRunner()
    table = runner.invoke(main, ["eval", "answers", "--dataset", str(squad), "-k", "1", "--device", "cpu",
                                 "--no-cache", "--no-oracle"])
    assert table.exit_code == 0, table.output
    assert "dense k=1" in table.output and "closed-book" in table.output and "oracle" not in table.output
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "q?", "answers": ["a"], "references": []}))
    lonely = runner.invoke(main, ["eval", "answers", "--dataset", str(tmp_path / "q.jsonl")])
    assert lonely.exit_code != 0 and "give --datastore" in lonely.output and "Traceback" not in lonely.output
    bad = runner.invoke(main, ["eval", "answers", "--dataset", str(squad), "--generator", "hf:./nowhere/model"])
    assert bad.exit_code != 0 and "model path not found" in bad.output


# ------------------------------------------------------------------------------------------------
# the real SmolLM2-135M-Instruct on 2 SQuAD-style questions (shared session model, one thread)


def test_smollm2_on_two_squad_questions(smollm2, store, squad):
    from rag.generate.hf import HFGenerator

    qa = load_qa_set(squad)
    qa.items = [item for item in qa.items if item.id in ("Rivers-0", "Bridges-0")]
    system = "Answer the question with a short phrase copied from the passages. Do not explain."
    generator = HFGenerator(smollm2, max_new_tokens=12, system=system)
    config = PipelineConfig(k=2, budget=256, device="cpu", generator={"spec": "hf:smollm2", "system": system})
    result = evaluate_answers(qa, [NamedPipeline("smollm2", config)], store, generator=generator, batch_size=2)
    rows = {r.pipeline: r for r in result.rows}
    assert len(result.records) == 2 * 3 and all(r.prediction.strip() for r in result.records)
    assert all(0 < r.generated_tokens <= 12 for r in result.records)
    assert rows["oracle"].answer_in_context == 100.0
    # the gold passage in front: the model states at least half of the answers, more than closed-book
    assert rows["oracle"].accuracy >= 50 and rows["oracle"].accuracy > rows["closed-book"].accuracy
    assert rows["oracle"].f1 > 0 and rows["smollm2"].f1 > 0
