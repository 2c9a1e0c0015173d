"""The answer path composes (issue 16): HTML pruning touches only passages from HTML sources and
leaves plain text to the compressor, the budget split by rank; the semantic compressor follows
the query; ``--verbose`` lists each stage once; extractive answers keep sentence-final periods."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from indexers.chunkers import make_chunker
from indexers.tokenizers import load_tokenizer
from ragcli import main
from rag.compress import allocate_budget, load_compressor
from rag.generate.extractive import ExtractiveGenerator
from rag.records import Passage
from tests.conftest import EXAMPLES

QUESTION = "Which branches of manufactures and navigation suffered a depression after the peace of Europe?"
BUDGET = 300


@pytest.fixture(scope="module")
def pipeline(small_datastore):
    from rag.datastore import Datastore
    from rag.pipeline import Pipeline

    config = {"k": 6, "budget": BUDGET, "device": "cpu", "retriever": {"mode": "hybrid"},
              "pruner": {"method": "html"}, "compressor": {"method": "sentence"}}
    return Pipeline.from_config(config, datastore=Datastore.open(small_datastore, device="cpu"))


def test_html_pruning_touches_only_html_passages_within_their_rank_share(pipeline):
    cl100k = load_tokenizer("cl100k_base")
    passages = pipeline.retrieve(QUESTION)
    kinds = [pipeline.pruner.kind(p) for p in passages]
    assert "html-source" in kinds and "plain" in kinds, [p.source for p in passages]  # txt, md and html mixed
    pruned = pipeline.pruner.apply(QUESTION, passages, BUDGET)
    by_id = {p.chunk_id: p for p in pruned}
    plain = [p for p, kind in zip(passages, kinds) if kind == "plain"]
    assert all(by_id[p.chunk_id] == p for p in plain)  # plain passages pass untouched, none dropped
    assert [p.chunk_id for p in pruned] == [p.chunk_id for p in passages if p.chunk_id in by_id]  # rank order
    shares = allocate_budget([cl100k.count(p.text) for p in passages], BUDGET, "rank")
    html = [(p, share) for p, kind, share in zip(passages, kinds, shares) if kind == "html-source"]
    assert sum(cl100k.count(by_id[p.chunk_id].text) for p, _ in html if p.chunk_id in by_id) <= \
        sum(share for _, share in html)
    for original, _ in html:
        if original.chunk_id in by_id:  # what is kept is whole sentences of the chunk, in order
            kept = by_id[original.chunk_id].text
            assert kept.strip() and all(line in original.text for line in re.split(r"(?<=[.!?])\s+|\n", kept))


def test_rag_ask_with_prune_and_compress_hands_every_passage_on(small_datastore):
    result = CliRunner().invoke(main, ["ask", str(small_datastore), QUESTION, "--budget", str(BUDGET), "--prune",
                                       "html", "--compress", "sentence", "--mode", "hybrid", "-k", "6", "--json",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    stages = {s["name"]: s for s in answer["stages"]}
    assert [s["name"] for s in answer["stages"]][:2] == ["html", "sentence"]
    html_sources = sum(1 for c in answer["context"] if c["source"].endswith(".html"))
    assert stages["html"]["passages_before"] == 6
    assert stages["html"]["passages_after"] >= 6 - html_sources  # no plain passage is dropped by the pruner
    assert stages["sentence"]["passages_before"] == stages["html"]["passages_after"]
    assert stages["sentence"]["tokens_after"] <= BUDGET and answer["answer"].strip()


def test_semantic_compression_follows_the_query(embedder):
    frontier = ("Frequent incursions have been made on our frontier settlements by bands of Indians. "
                "Treaties with the Indian tribes of the frontier must be kept and the frontier posts defended. ")
    economy = ("The agriculture of the country prospers and our manufactures grow each year. "
               "Commerce with foreign ports brings revenue, and the merchant marine carries our produce. ")
    text = (frontier + economy) * 2
    compressor = load_compressor("semantic", embedder=embedder, rate=0.3)
    a = compressor.compress_text("Indians frontier treaties", text).text
    b = compressor.compress_text("agriculture manufactures commerce", text).text
    assert a != b

    def count(out: str, words: tuple[str, ...]) -> int:
        return sum(out.lower().count(w) for w in words)

    topic_a, topic_b = ("indian", "frontier", "treat"), ("agricultur", "manufactur", "commerce", "merchant")
    assert count(a, topic_a) > count(b, topic_a) and count(b, topic_b) > count(a, topic_b)


def test_verbose_lists_the_retrieve_stage_once(small_datastore):
    result = CliRunner().invoke(main, ["ask", str(small_datastore), "Who signed the treaty?", "--verbose",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if re.match(r"^\W*retrieve\b", line)]
    assert len(rows) == 1, result.output
    assert re.search(r"\d+\.\d{3}\s*\W*$", rows[0])  # the row carries the retrieval time


def test_extractive_answers_keep_sentence_final_periods(embedder):
    from datastores.records import Document

    text = (EXAMPLES / "sotu" / "1790-washington.txt").read_text(encoding="utf-8")
    document = Document("w", text, "w.txt", {})

    def passages(chunker: str) -> list[Passage]:
        chunks = make_chunker(chunker, 60, 0, "cl100k_base").chunk(document)
        return [Passage(i, c.text, i, "w", c.start, c.end, "w.txt") for i, c in enumerate(chunks, start=1)]

    def period_left_behind(p: Passage, end: int) -> bool:  # the document goes on with the quote's period
        return text[p.start + end:p.start + end + 1] == "."

    old = passages("recursive-start")  # the old default: the period starts the next chunk
    assert sum(period_left_behind(p, len(p.text)) for p in old) > len(old) // 2
    new = passages("recursive")
    generation = ExtractiveGenerator(embedder=embedder, max_sentences=5).generate(
        "What did the President say about public credit and the army?", new)
    quotes = generation.metadata["quotes"]
    assert len(quotes) == 5
    assert not any(period_left_behind(new[q.number - 1], q.end) for q in quotes), [q.text for q in quotes]
    assert re.search(r"\. \[\d+\] [A-Z]", generation.text), generation.text  # "...purpose. [3] The ..."
