"""Generators: prompts and citations, the extractive default, and hf: with tiny random causal LMs."""

from __future__ import annotations

import pytest
from _tiny_models import CHAT_TEMPLATE, tiny_causal_lm

from rag.generate.base import build_messages, build_prompt, parse_citations
from rag.generate.factory import load_generator
from rag.records import Passage

PASSAGES = [
    Passage(1, "Congress met in Philadelphia in the winter. The weather was cold.", 3, "a.txt", 100, 165),
    Passage(2, "The Treaty of Paris was signed on September 3, 1783. It ended the war.", 7, "b.txt", 40, 111),
    Passage(3, "Washington retired to Mount Vernon after two terms.", 9, "c.txt", 0, 51),
]


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("generator_models")
    return {"chat": tiny_causal_lm(root / "chat", chat_template=CHAT_TEMPLATE),
            "plain": tiny_causal_lm(root / "plain"),
            "cites": tiny_causal_lm(root / "cites", emit="[2]"),
            "cites_out_of_range": tiny_causal_lm(root / "cites9", emit="[9]")}


def test_parse_citations_forms_order_and_range():
    assert parse_citations("A [2]. B [1, 3]. C [2][4-5]. D [0] [7] [x]", 5) == [2, 1, 3, 4, 5]
    assert parse_citations("no citations here", 3) == []
    assert parse_citations("[3]", 2) == []


def test_messages_number_passages_and_ask_for_citations():
    messages = build_messages("When was the treaty signed?", PASSAGES)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "[n]" in messages[1]["content"] and "[1]" in messages[0]["content"]
    user = messages[1]["content"]
    for i, p in enumerate(PASSAGES, 1):
        assert f"[{i}] {p.text}" in user
    assert user.index("[1] ") < user.index("[2] ") < user.index("[3] ")
    assert "When was the treaty signed?" in build_prompt("When was the treaty signed?", PASSAGES)
    assert build_messages("q", [], system="Be brief.")[0]["content"] == "Be brief."


def test_load_generator_rejects_bad_specs():
    with pytest.raises(ValueError, match="unknown generator"):
        load_generator("gpt5")
    with pytest.raises(ValueError, match="needs a model"):
        load_generator("hf:")


def test_extractive_answers_with_the_supporting_sentence(embedder):
    gen = load_generator("extractive", embedder=embedder, max_sentences=2)
    pieces: list[str] = []
    out = gen.generate("When was the Treaty of Paris signed?", PASSAGES, on_token=pieces.append)
    assert out.text.startswith("The Treaty of Paris was signed on September 3, 1783. [2]")
    assert out.citations[0] == 2 and set(out.citations) <= {1, 2, 3}
    assert "".join(pieces) == out.text
    quotes = out.metadata["quotes"]
    assert len(quotes) == 2
    for quote in quotes:
        assert PASSAGES[quote.number - 1].text[quote.start:quote.end] == quote.text


def test_extractive_with_nothing_to_quote(embedder):
    out = load_generator("extractive", embedder=embedder).generate("anything?", [])
    assert out.citations == [] and "No passage" in out.text


@pytest.mark.parametrize("kind", ["chat", "plain"])
def test_hf_generator_with_and_without_chat_template(kind, lms):
    gen = load_generator(f"hf:{lms[kind]}", max_new_tokens=6, device="cpu")
    assert gen.has_chat_template is (kind == "chat")
    prompt = gen.prompt("When was the treaty signed?", PASSAGES)
    assert ("<|assistant|>" in prompt) is (kind == "chat")
    assert "[2] The Treaty of Paris was signed" in prompt
    pieces: list[str] = []
    out = gen.generate("When was the treaty signed?", PASSAGES, on_token=pieces.append)
    assert 1 <= out.completion_tokens <= 6
    assert out.prompt_tokens == len(gen.tokenizer(prompt, add_special_tokens=kind != "chat")["input_ids"])
    assert "".join(pieces).strip() == out.text
    assert out.citations == parse_citations(out.text, len(PASSAGES))


def test_hf_citations_come_from_the_generated_text(lms):
    out = load_generator(f"hf:{lms['cites']}", max_new_tokens=3, device="cpu").generate("q?", PASSAGES)
    assert out.text == "[2] [2] [2]" and out.citations == [2]
    stray = load_generator(f"hf:{lms['cites_out_of_range']}", max_new_tokens=2, device="cpu")
    assert stray.generate("q?", PASSAGES).citations == []  # [9] names no passage


def test_hf_loads_local_files_only_by_default(tmp_path):
    with pytest.raises(ValueError, match="allow_download"):
        load_generator("hf:no-such-org/no-such-model-for-terarag")
    with pytest.raises(ValueError, match="max_new_tokens"):
        load_generator(f"hf:{tmp_path}", max_new_tokens=0)
