"""Answer metrics (SQuAD EM/F1, answer in context) and the JSONL question format with offsets."""

from __future__ import annotations

import json

import pytest

from evaluators.answers import (answer_in_context, answer_metrics, exact_match, f1_score, normalize_answer)
from evaluators.datasets import jsonl_eval_dataset, load_corpus_texts, load_questions_jsonl


# -- SQuAD normalisation, EM, F1 ----------------------------------------------------------------------


def test_normalisation():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear and THE fig.") == "apple pear and fig"
    assert normalize_answer("theatre") == "theatre"          # articles only as whole words
    assert normalize_answer("  ") == ""


def test_exact_match_takes_the_best_gold():
    assert exact_match("the Eiffel tower.", ["Eiffel Tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower", "Tour Eiffel"]) == 0.0
    assert exact_match("tour eiffel", ["Eiffel Tower", "Tour Eiffel"]) == 1.0


def test_f1_hand_computed():
    # prediction tokens: [in, 1928, by, fleming]; gold: [alexander, fleming, in, 1928]
    # common: in, 1928, fleming = 3 → precision 3/4, recall 3/4, F1 0.75
    assert f1_score("in 1928 by Fleming", ["Alexander Fleming in 1928"]) == pytest.approx(0.75)
    # repeated tokens count with multiplicity: pred [paris, paris], gold [paris] → P 1/2, R 1, F1 2/3
    assert f1_score("Paris Paris", ["Paris"]) == pytest.approx(2 / 3)
    assert f1_score("London", ["Paris"]) == 0.0
    assert f1_score("the", ["a"]) == 1.0                    # both normalise to nothing
    assert f1_score("Paris", ["London", "the city of Paris"]) == pytest.approx(2 * (1 * 1 / 3) / (1 + 1 / 3))


def test_answer_in_context():
    contexts = ["Alexander Fleming discovered penicillin in 1928.", "Bees dance."]
    assert answer_in_context(contexts, ["Alexander Fleming"]) == 1.0
    assert answer_in_context(contexts, ["the penicillin"]) == 1.0           # normalised
    assert answer_in_context(contexts, ["art"]) == 0.0                      # not inside a word
    assert answer_in_context(contexts, ["Marie Curie", "1928"]) == 1.0
    assert answer_in_context([], ["1928"]) == 0.0
    assert answer_in_context(contexts, [""]) == 0.0


def test_answer_metrics_summary():
    golds = [["Paris"], ["1928", "nineteen twenty-eight"], []]
    summary = answer_metrics(golds, predictions=["paris", "in 1928", "x"],
                             contexts=[["Paris is in France"], ["no year here"], ["x"]])
    assert summary.questions == 2 and summary.skipped == 1
    assert summary.exact_match == pytest.approx(50.0)
    assert summary.f1 == pytest.approx(100 * (1.0 + 2 / 3) / 2)            # "in 1928" vs "1928": P 1/2, R 1
    assert summary.answer_in_context == pytest.approx(50.0)
    only_context = answer_metrics(golds, contexts=[["Paris"], ["1928"], []])
    assert only_context.exact_match is None and only_context.answer_in_context == 100.0
    with pytest.raises(ValueError, match="2 predictions for 3 questions"):
        answer_metrics(golds, predictions=["a", "b"])


# -- the JSONL question format -----------------------------------------------------------------------

TEXTS = {"alpha": "Alexander Fleming discovered penicillin in 1928.",
         "beta": "Honey bees dance to show where the flowers are."}


def write_lines(path, records):
    with open(path, "w", encoding="utf-8") as handle:
        for r in records:
            handle.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


@pytest.fixture
def corpus_dir(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for doc_id, text in TEXTS.items():
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    return folder


def test_jsonl_questions_with_offsets(tmp_path, corpus_dir):
    path = write_lines(tmp_path / "q.jsonl", [
        {"id": "x1", "question": "Who discovered penicillin?",
         "references": [{"doc_id": "alpha", "start": 0, "end": 17, "content": "Alexander Fleming"}],
         "answers": ["Alexander Fleming"]},
        {"question": "How do bees show flowers?", "references": [{"doc_id": "beta", "start": 11, "end": 16}],
         "answers": "dance"},
    ])
    corpus = load_corpus_texts(corpus_dir)
    questions, bad = load_questions_jsonl(path, corpus)
    assert not bad and [q.id for q in questions] == ["x1", "1"]
    assert questions[0].references[0].doc_id == "alpha" and questions[1].answers == ("dance",)
    assert corpus["beta"][11:16] == "dance"
    data = jsonl_eval_dataset(path, corpus_dir)
    assert [q.corpus_id for q in data.questions] == ["alpha", "beta"]
    assert data.questions[0].contents == ("Alexander Fleming",) and set(data.corpora) == {"alpha", "beta"}


def test_jsonl_offsets_are_validated(tmp_path, corpus_dir):
    path = write_lines(tmp_path / "q.jsonl", [
        {"question": "ok", "references": [{"doc_id": "alpha", "start": 0, "end": 9}]},
        {"question": "past end", "references": [{"doc_id": "alpha", "start": 40, "end": 400}]},
        {"question": "unknown doc", "references": [{"doc_id": "gamma", "start": 0, "end": 1}]},
        {"question": "wrong content", "references": [{"doc_id": "beta", "start": 0, "end": 5, "content": "Bees!"}]},
        {"question": "reversed", "references": [{"doc_id": "beta", "start": 5, "end": 2}]},
        {"question": "", "references": []},
        "not json",
        {"question": "bad answers", "references": [], "answers": [1]},
    ])
    corpus = load_corpus_texts(corpus_dir)
    with pytest.raises(ValueError) as info:
        load_questions_jsonl(path, corpus)
    message = str(info.value)
    assert "7 bad line(s)" in message and "1, 2, 3, 4, 5, 6, 7" in message
    assert "past the end of 'alpha'" in message and "unknown document 'gamma'" in message
    assert "beta[0:5] != content" in message and "bad offsets [5, 2)" in message
    assert "not valid JSON" in message and "answers must be" in message
    questions, bad = load_questions_jsonl(path, corpus, strict=False)
    assert len(questions) == 1 and len(bad) == 7


def test_jsonl_corpus_and_chunking_evaluation(tmp_path, embedder):
    from evaluators.chunking import evaluate_chunking

    corpus = write_lines(tmp_path / "corpus.jsonl", [{"_id": k, "text": v} for k, v in TEXTS.items()])
    path = write_lines(tmp_path / "q.jsonl", [
        {"question": "Who discovered penicillin?", "references": [{"doc_id": "alpha", "start": 0, "end": 17}]},
        {"question": "multi", "references": [{"doc_id": "alpha", "start": 0, "end": 1},
                                             {"doc_id": "beta", "start": 0, "end": 1}]},
    ])
    with pytest.raises(ValueError, match="references in 2 documents"):
        jsonl_eval_dataset(path, corpus)
    data = jsonl_eval_dataset(path, corpus, strict=False)
    assert len(data.questions) == 1 and data.bad_rows[0].reason == "references in 2 documents"
    result = evaluate_chunking(data, "recursive", 50, 0, k=1, mode="bm25", embedder=embedder)
    assert result.rows[0].recall == pytest.approx(1.0)


def test_cli_chunking_with_jsonl_questions(tmp_path, corpus_dir):
    from click.testing import CliRunner

    from ragcli.eval import eval_group

    path = write_lines(tmp_path / "q.jsonl", [
        {"question": "Who discovered penicillin?", "references": [{"doc_id": "alpha", "start": 0, "end": 17}]},
        {"question": "How do bees show flowers?", "references": [{"doc_id": "beta", "start": 11, "end": 16}]},
    ])
    runner = CliRunner()
    result = runner.invoke(eval_group, ["chunking", "--questions", str(path), "--documents", str(corpus_dir),
                                        "--chunker", "paragraph", "--chunk-size", "50", "-k", "1", "--mode", "bm25",
                                        "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["questions"] == 2 and data["recall_mean"] == pytest.approx(100.0) and data["chunker"] == "paragraph"
    both = runner.invoke(eval_group, ["chunking", "--questions", str(path)])
    assert both.exit_code == 1 and "--questions needs --documents" in both.output
    neither = runner.invoke(eval_group, ["chunking"])
    assert neither.exit_code == 1 and "give either --dataset" in neither.output
