"""Issue 18's defaults: English BM25 tokens, the chosen hybrid fusion everywhere, documents ranked by their chunks."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from click.testing import CliRunner

from datastores import Bm25Params, DatastoreWriter
from datastores.records import Chunk, Hit
from evaluators.retrieval import document_ranking
from indexers.config import BuildConfig
from rag.retrieve import build_retriever, fuse, rank_documents
from rag.retrieve.retriever import RetrieverConfig

#: The fusion chosen in docs/benchmarks.md ("Retrieval defaults"), by best worst case over nine collections.
CHOSEN = {"fusion": "convex", "alpha": 0.4, "normalization": "calibrated", "depth": 100}
QUERY = "the army and the navy"


def test_default_tokenizer_stems_and_drops_stop_words():
    text = "The armies of the States were running to a connection"
    assert Bm25Params().tokenize(text) == ["armi", "state", "were", "run", "connect"]
    plain = Bm25Params(tokenizer="simple", stopwords="none")
    assert plain.tokenize(text) == ["the", "armies", "of", "the", "states", "were", "running", "to", "a", "connection"]
    assert (Bm25Params().idf, Bm25Params.rank_bm25().idf) == ("lucene", "rank-bm25")
    config = BuildConfig()
    assert (config.bm25.tokenizer, config.bm25.stopwords, config.bm25.idf) == ("stemmed", "english", "lucene")


def test_a_manifest_without_options_keeps_rank_bm25():
    old = {"k1": 1.2, "b": 0.7, "epsilon": 0.25, "stats": {}}  # written before the options were recorded
    assert Bm25Params.from_manifest(old) == Bm25Params.rank_bm25(k1=1.2, b=0.7)
    assert Bm25Params.from_manifest(Bm25Params().to_dict()) == Bm25Params()


def test_chosen_fusion_is_the_default_everywhere():
    config = RetrieverConfig()
    assert {name: getattr(config, name) for name in CHOSEN} == CHOSEN
    defaults = {n: p.default for n, p in inspect.signature(build_retriever).parameters.items()}
    assert {name: defaults[name] for name in CHOSEN} == CHOSEN
    from ragcli.search import search_command

    flags = {p.name: p.default for p in search_command.params}
    assert {name: flags[name] for name in CHOSEN} == CHOSEN


@pytest.fixture(scope="module")
def ds(small_datastore):
    from rag import Datastore

    return Datastore.open(small_datastore, device="cpu")


def test_default_hybrid_is_the_chosen_fusion_end_to_end(ds, small_datastore):
    from ragcli import main

    hits = build_retriever(ds, "hybrid").retrieve(QUERY, 5)
    depth = CHOSEN["depth"]
    dense = [(h.chunk_id, h.score) for h in ds.search(QUERY, k=depth, mode="dense")]
    sparse = [(h.chunk_id, h.score) for h in ds.search(QUERY, k=depth, mode="bm25")]
    options = {k: v for k, v in CHOSEN.items() if k not in ("fusion", "depth")}
    expected = fuse(dense, sparse, CHOSEN["fusion"], **options)[:5]
    assert [(h.chunk_id, round(h.score, 12)) for h in hits] == [(c, round(s, 12)) for c, s in expected]
    result = CliRunner().invoke(main, ["search", str(small_datastore), QUERY, "--mode", "hybrid", "-k", "5",
                                       "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert [h["chunk_id"] for h in json.loads(result.output)] == [h.chunk_id for h in hits]


def hit(chunk_id: int, doc_id: str, score: float) -> Hit:
    return Hit(chunk_id=chunk_id, doc_id=doc_id, start=0, end=1, score=score, shard="shard-00000", text="x")


#: Hits of one query, best first: document a has one strong chunk; b two good ones; c one weak one.
HITS = [hit(1, "a", 0.90), hit(2, "b", 0.85), hit(3, "b", 0.80), hit(4, "c", 0.30), hit(5, "a", 0.10)]


def test_rank_documents_max_and_decay_on_a_constructed_case():
    by_max = rank_documents(HITS, "max")
    assert [(d.doc_id, d.score) for d in by_max] == [("a", 0.90), ("b", 0.85), ("c", 0.30)]
    assert [h.chunk_id for h in by_max[0].hits] == [1, 5]
    by_decay = rank_documents(HITS, "decay")  # a: 0.9 + 0.1 * 0.1 = 0.91; b: 0.85 + 0.1 * 0.8 = 0.93
    assert [d.doc_id for d in by_decay] == ["b", "a", "c"]
    assert [d.score for d in by_decay] == pytest.approx([0.93, 0.91, 0.30])
    assert document_ranking(HITS, 2) == ["a", "b"]
    assert document_ranking(HITS, 10, "decay") == ["b", "a", "c"]
    with pytest.raises(ValueError, match="aggregation"):
        rank_documents(HITS, "mean")


def test_retrieve_documents_ranks_a_datastores_documents(tmp_path):
    from datastores import Datastore

    texts = {"navy": ["the navy sails", "navy ships and navy men"], "army": ["the army marches"],
             "farm": ["wheat and corn", "the navy buys corn"]}
    chunks = [Chunk(doc, 0, len(t), t, doc) for doc, parts in texts.items() for t in parts]
    writer = DatastoreWriter.create(tmp_path / "ds", {}, {"name": "random"}, {"name": "given"}, Bm25Params())
    writer.add_shard(chunks, np.eye(len(chunks), 8, dtype=np.float32), 0)
    writer.finish({}, 8)
    retriever = build_retriever(Datastore.open(tmp_path / "ds"), "bm25")
    docs = retriever.retrieve_documents("navy", 5)
    assert [d.doc_id for d in docs] == [d.doc_id for d in rank_documents(retriever.retrieve("navy", 15))]
    assert [d.doc_id for d in docs] == ["navy", "farm"]  # the army has no "navy"
    assert [h.text for h in docs[0].hits] == ["navy ships and navy men", "the navy sails"]
    assert len(retriever.retrieve_documents("navy", 1)) == 1
