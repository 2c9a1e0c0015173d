"""Synthetic QA: excerpt location, rejection, de-duplication, and ``rag synth`` end to end against a
local OpenAI-compatible server (tests/openai_server.py) with fixed completions."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
from click.testing import CliRunner
from openai_server import completion, error

from evaluators.datasets import jsonl_eval_dataset, load_corpus_texts, load_questions_jsonl
from evaluators.synth import (ExcerptLocator, ProposalError, SynthConfig, normalize, parse_proposal,
                              sample_window, synthesize)
from ragcli import main
from rag.generate.openai import OpenAIGenerator
from rag.generate.openai_client import OpenAIClient

DOCS = {
    "treaty.txt": "The treaty with Spain was signed in  October 1795.\nIt opened the Mississippi  river to "
                  "American trade.\n\tPinckney negotiated the terms in Madrid.\n",
    "expedition.md": "# Expedition\n\nThe expedition followed the Missouri River west.\nIt reached the "
                     "Pacific coast in\nNovember 1805.\n",
    "navy/fleet.txt": "The fleet had   twelve ships.\nThe admiral sailed from Norfolk in\nthe spring of 1801.\n",
}
QUESTIONS = ["When was the treaty with Spain signed?", "Which river did the expedition follow west?",
             "How many ships were in the fleet?", "Who negotiated the terms in Madrid?",
             "Where did the admiral sail from?", "What did the treaty open to American trade?"]


def collapse(text: str) -> str:
    return " ".join(text.split())


def passage_of(payload: dict) -> str:
    user = payload["messages"][-1]["content"]
    return user.split("<<<\n", 1)[1].split("\n>>>", 1)[0]


def stand_in_excerpts(passage: str) -> list[str]:
    """The first line and the last two lines of the passage (lines of 3+ words), whitespace collapsed."""
    lines = [line for line in passage.splitlines() if len(line.split()) >= 3]
    return [collapse(lines[0]), collapse(" ".join(lines[-2:]))]


def stand_in_model():
    """A deterministic 'model': a fresh question each call, excerpts copied from the passage it was
    shown with whitespace collapsed (so they cross line breaks), every other reply in a code fence."""
    counter = itertools.count()

    def respond(payload: dict):
        k = next(counter)
        body = json.dumps({"question": QUESTIONS[k % len(QUESTIONS)],
                           "excerpts": stand_in_excerpts(passage_of(payload)),
                           "answer": f"answer {k}"})
        return completion(f"Here it is:\n```json\n{body}\n```" if k % 2 else body)

    return respond


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    for name, text in DOCS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def complete_with(server, max_retries: int = 2):
    client = OpenAIClient(server.base_url, "sk-test", max_retries=max_retries, sleep=lambda s: None,
                          rng=random.Random(0))
    generator = OpenAIGenerator("stand-in", client=client)
    return lambda messages: generator.chat(messages).text


def docs_of(corpus):
    from indexers.readers import iter_documents

    return list(iter_documents([corpus]))


# -- locating excerpts ---------------------------------------------------------------------------


def test_locator_maps_whitespace_tolerant_matches_to_real_offsets():
    text = "😀 Intro.\n\nThe  “quick”\n brown\tfox\u00a0jumps —  over.  The quick brown fox."
    locator = ExcerptLocator(text)
    start, end = locator.locate('The "quick" brown fox jumps - over.')
    assert text[start:end] == "The  “quick”\n brown\tfox\u00a0jumps —  over."
    start, end = locator.locate("  quick brown fox.\n")
    assert text[start:end] == "quick brown fox." and start == text.rindex("quick")
    assert locator.locate("quick brown cat") is None
    assert locator.locate("   ") is None


def test_locator_prefers_the_occurrence_in_the_passage_window():
    text = "alpha beta. " * 3 + "gamma alpha   beta. delta"
    locator = ExcerptLocator(text)
    assert [s for s, _ in locator.occurrences("alpha beta.")] == [0, 12, 24, 42]
    assert locator.locate("alpha beta.", window=(36, len(text))) == (42, 55)   # "alpha   beta."
    assert locator.locate("alpha beta.", window=(13, 36)) == (24, 35)   # fully inside wins over overlapping
    assert locator.locate("alpha beta.", window=(58, 60)) == (42, 55)   # else the nearest
    assert locator.locate("alpha beta.") == (0, 11)


def test_parse_proposal_tolerates_fences_and_rejects_bad_replies():
    fenced = 'Sure.\n```json\n{"question": " When  was it? ", "excerpts": ["a b"], "answer": "1795"}\n```\nBye'
    assert parse_proposal(fenced).question == "When was it?"
    assert parse_proposal(fenced).answer == "1795"
    loose = 'The JSON: {"question": "Q?", "excerpts": [{"content": "x y"}, "  "]} -- done'
    assert parse_proposal(loose).excerpts == ("x y",)
    for reply, reason in [("not json at all", "malformed JSON"), ('{"question": "Q?"', "malformed JSON"),
                          ('{"question": "Q?", "excerpts": []}', "missing question or excerpts"),
                          ('{"excerpts": ["a"]}', "missing question or excerpts"), ("[1, 2]", "malformed JSON")]:
        with pytest.raises(ProposalError) as info:
            parse_proposal(reply)
        assert info.value.reason == reason


def test_sample_window_is_seeded_and_in_bounds():
    text = " ".join(f"Sentence number {i} ends here." for i in range(400))
    a = [sample_window(text, np.random.default_rng(7), 500) for _ in range(3)]
    b = [sample_window(text, np.random.default_rng(7), 500) for _ in range(3)]
    assert a == b
    for start, end in a:
        assert 0 <= start < end <= len(text) and end - start <= 500
        assert text[start:start + 9] == "Sentence "          # starts at a sentence start
    assert sample_window("short text", np.random.default_rng(0), 500) == (0, 10)


# -- synthesize against the local server ---------------------------------------------------------


def test_synthesize_locates_every_excerpt_exactly(openai_server, corpus):
    openai_server.responder = stand_in_model()
    docs = docs_of(corpus)
    texts = {d.id: d.text for d in docs}
    result = synthesize(docs, complete_with(openai_server), SynthConfig(n=5, seed=3))
    assert result.report.generated == 5 and len(result.questions) == 5
    assert result.report.calls == 5 and not result.report.rejected
    crossing = 0
    for question, request in zip(result.questions, openai_server.requests):
        passage = passage_of(request.payload)
        excerpts = stand_in_excerpts(passage)
        spans = [(r.start, r.end) for r in question.references]
        assert spans == sorted(spans) and all(e1 < s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))  # merged
        for ref in question.references:
            assert texts[ref.doc_id][ref.start:ref.end] == ref.content
            assert ref.content in passage                     # the occurrence the model was shown
            crossing += "\n" in ref.content
        for excerpt in excerpts:                              # each excerpt lies inside one reference
            assert any(excerpt in collapse(r.content) for r in question.references)
        assert question.answers[0].startswith("answer ")
    assert crossing >= 5                                       # whitespace-collapsed excerpts mapped back


def test_malformed_json_is_asked_again_then_rejected(openai_server, corpus):
    good = json.dumps({"question": "How many ships were in the fleet?", "excerpts": ["The fleet had twelve ships."]})
    docs = [d for d in docs_of(corpus) if d.id == "navy/fleet.txt"]
    openai_server.push(completion("I think the question is about ships"), completion(good))
    result = synthesize(docs, complete_with(openai_server), SynthConfig(n=1, json_retries=2))
    assert result.report.generated == 1 and result.report.calls == 2 and not result.report.rejected
    ref = result.questions[0].references[0]
    assert docs[0].text[ref.start:ref.end] == "The fleet had   twelve ships."

    openai_server.push(*[completion("{broken")] * 3, completion(good))
    result = synthesize(docs, complete_with(openai_server), SynthConfig(n=1, json_retries=2))
    assert result.report.rejected == {"malformed JSON": 1}
    assert result.report.calls == 4 and result.report.passages == 2 and result.report.generated == 1


def test_unlocatable_excerpt_rejects_the_question(openai_server, corpus):
    docs = [d for d in docs_of(corpus) if d.id == "navy/fleet.txt"]
    one_bad = {"question": "How many ships?", "excerpts": ["The fleet had twelve ships.", "thirteen frigates"]}
    openai_server.push(completion(json.dumps(one_bad)),
                       completion(json.dumps({"question": "Q?", "excerpts": ["The fleet had twelve boats."]})))
    result = synthesize(docs, complete_with(openai_server), SynthConfig(n=1, max_passages=2))
    assert result.questions == []
    assert result.report.rejected == {"excerpt not found in the document": 2}
    assert result.report.generated == 0 and result.report.passages == 2


def test_near_duplicate_questions_are_dropped(openai_server, corpus, embedder):
    first, near, other = ("How many ships were in the fleet?", "How many ships were in the fleet exactly?",
                          "From which port did the admiral sail?")
    vectors = embedder.encode_passages([first, near, other])
    assert float(vectors[0] @ vectors[1]) >= 0.9 > float(vectors[0] @ vectors[2])   # premise of the test
    docs = [d for d in docs_of(corpus) if d.id == "navy/fleet.txt"]
    excerpt = ["The fleet had twelve ships."]
    openai_server.push(*(completion(json.dumps({"question": q, "excerpts": excerpt})) for q in (first, first, near, other)))
    result = synthesize(docs, complete_with(openai_server), SynthConfig(n=2, max_passages=4), embedder=embedder)
    assert [q.question for q in result.questions] == [first, other]
    assert result.report.duplicates == 2
    openai_server.push(*(completion(json.dumps({"question": q, "excerpts": excerpt})) for q in (first, near)))
    looser = synthesize(docs, complete_with(openai_server), SynthConfig(n=2, max_passages=2, dedup_threshold=0.999),
                        embedder=embedder)
    assert [q.question for q in looser.questions] == [first, near] and looser.report.duplicates == 0


def test_http_errors_are_retried_then_propagate(openai_server, corpus):
    docs = [d for d in docs_of(corpus) if d.id == "navy/fleet.txt"]
    good = json.dumps({"question": "How many ships?", "excerpts": ["twelve ships."]})
    openai_server.push(error(500, "hiccup"), error(429, "slow down", retry_after="0"), completion(good))
    result = synthesize(docs, complete_with(openai_server), SynthConfig(n=1))
    assert result.report.generated == 1 and len(openai_server.requests) == 3
    from rag.generate.openai_client import OpenAIError

    openai_server.push(*[error(502, "upstream down")] * 3)
    with pytest.raises(OpenAIError, match=r"HTTP 502.*after 3 attempts: upstream down"):
        synthesize(docs, complete_with(openai_server), SynthConfig(n=1))


# -- the command ---------------------------------------------------------------------------------


def run_synth(server, corpus, out, *extra):
    args = ["synth", str(corpus), "--generator", "openai:stand-in", "--base-url", server.base_url, "-o", str(out),
            "--max-retries", "1", "--device", "cpu", *extra]
    return CliRunner().invoke(main, args, env={"OPENAI_API_KEY": "sk-cli-SECRET"})


def test_cli_writes_questions_that_rag_eval_chunking_accepts(openai_server, corpus, tmp_path):
    openai_server.responder = stand_in_model()
    out = tmp_path / "questions.jsonl"
    result = run_synth(openai_server, corpus, out, "-n", "4", "--seed", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["requested"] == 4 and summary["generated"] == 4 and summary["rejected"] == 0
    docs_file = tmp_path / "questions.documents.jsonl"
    assert summary["documents_file"] == str(docs_file)
    texts = load_corpus_texts(docs_file)
    assert set(texts) == set(DOCS)
    questions, bad = load_questions_jsonl(out, texts)         # strict: content == text[start:end]
    assert len(questions) == 4 and not bad
    assert jsonl_eval_dataset(out, docs_file).questions
    payload = openai_server.requests[0].payload
    assert payload["response_format"] == {"type": "json_object"} and payload["temperature"] == 0.7
    assert openai_server.requests[0].headers["Authorization"] == "Bearer sk-cli-SECRET"

    first = out.read_bytes()
    openai_server.responder = stand_in_model()
    again = run_synth(openai_server, corpus, out, "-n", "4", "--seed", "1", "--json")
    assert again.exit_code == 0 and out.read_bytes() == first    # seeded: the same passages, same output

    evaluated = CliRunner().invoke(main, ["eval", "chunking", "--dataset", str(out),   # documents found beside it
                                          "--chunker", "recursive", "--chunk-size", "20", "-k", "2", "--device", "cpu",
                                          "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    scores = json.loads(evaluated.output.strip().splitlines()[-1])
    assert 0 < scores["recall_mean"] <= 100


def test_cli_summary_table_and_clear_http_error(openai_server, corpus, tmp_path):
    openai_server.responder = stand_in_model()
    openai_server.push(completion("no json here"), completion("still none"), completion("nope"))
    out = tmp_path / "q.jsonl"
    result = run_synth(openai_server, corpus, out, "-n", "2", "--no-documents")
    assert result.exit_code == 0, result.output
    for label in ("requested", "generated", "malformed JSON", "duplicates dropped"):
        assert label in result.output
    assert len(out.read_text().splitlines()) == 2
    assert not (tmp_path / "q.documents.jsonl").exists()

    openai_server.responder = None
    openai_server.push(*[error(500, "the model crashed")] * 2)
    failed = run_synth(openai_server, corpus, tmp_path / "never.jsonl", "-n", "2")
    assert failed.exit_code != 0
    assert "HTTP 500" in failed.output and "the model crashed" in failed.output and "nothing was written" in failed.output
    assert "sk-cli-SECRET" not in failed.output
    assert not (tmp_path / "never.jsonl").exists()


def test_cli_rejects_a_non_openai_generator_and_bad_settings(corpus, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["synth", str(corpus), "--generator", "extractive", "-o", str(tmp_path / "q.jsonl")])
    assert result.exit_code != 0 and "openai:MODEL" in result.output
    result = runner.invoke(main, ["synth", str(corpus), "--generator", "openai:m", "--base-url", "http://127.0.0.1:1/v1",
                                  "-n", "0", "-o", str(tmp_path / "q.jsonl")])
    assert result.exit_code != 0 and "must be positive" in result.output


def test_normalize_folds_whitespace_and_typography():
    assert normalize("  a\u00a0\n b — “c”  ") == 'a b - "c"'
