"""The one embedder type: explicit query / passage encoding, prefixes from the model's saved prompts,
a picklable recipe that loads on first use, one cache, and vectors that do not depend on the batch."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from indexers.build import build_datastore
from indexers.config import BuildConfig
from indexers.embedding import (CachingEmbedder, Embedder, EmbedderError, EmbedderOptions, load_embedder,
                                locate_model)
from rag import Datastore

TEXTS = ["The treaty of peace was signed at Ghent.", "x", "", "who signed it",
         "Bananas are rich in potassium; ÉLAN, naïve café — 42% of 1,000 items! " * 3,
         "The Congress shall have power to lay and collect taxes, duties, imposts and excises. " * 12,
         "tariffs on imported goods", "the navy and commerce of the United States " * 5]
QUERIES = ["treaty with Spain", "the militia and the public debt", "commerce and navigation", "Indian tribes",
           "the mint and coinage", "post office and post roads", "naturalization of foreigners",
           "the national bank", "piracy in the Mediterranean", "relations with France", "the judiciary",
           "manufactures and agriculture", "the western territory", "revenue from imports",
           "the army and fortifications", "peace with Great Britain", "public credit", "education of youth",
           "the sinking fund", "slaves and the slave trade"]


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_a_texts_vector_is_bit_identical_alone_and_in_any_batch(backend):
    embedder = load_embedder(device="cpu", backend=backend)
    alone = np.stack([embedder.encode_passages([t])[0] for t in TEXTS])
    for batch_size in (2, 3, 64):
        assert np.array_equal(embedder.encode_passages(TEXTS, batch_size=batch_size), alone), batch_size
    mixed = TEXTS[::-1] + ["another companion of a different length " * 4, "y"]
    assert np.array_equal(embedder.encode_passages(mixed, batch_size=5)[:len(TEXTS)][::-1], alone)
    assert embedder.spec["backend"] == backend


@pytest.fixture(scope="module")
def prompted_model(tmp_path_factory) -> Path:
    """The bundled MiniLM's files linked into a folder whose sentence-transformers config saves prompts."""
    source = Path(locate_model("all-MiniLM-L6-v2").path_or_name)
    folder = tmp_path_factory.mktemp("prompted") / "minilm-prompts"
    folder.mkdir()
    for item in source.iterdir():
        if item.name != "config_sentence_transformers.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((source / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "query: ", "document": "passage: "}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    return folder


def test_saved_prompts_are_the_prefixes_recorded_and_applied(prompted_model, small_corpus, embedder, tmp_path):
    prompted = Embedder(EmbedderOptions(str(prompted_model), device="cpu"))
    assert prompted.prefixes == ("query: ", "passage: ")
    assert Embedder(EmbedderOptions(str(prompted_model)), "Q: ", "").prefixes == ("Q: ", "")  # explicit wins
    config = BuildConfig(embedder=str(prompted_model), chunk_size=200, shard_size=30, device="cpu",
                         include=("*.md",))
    build_datastore([small_corpus], tmp_path / "ds", config, progress=False)
    record = json.loads((tmp_path / "ds" / "manifest.json").read_text())["embedder"]
    assert (record["query_prefix"], record["passage_prefix"]) == ("query: ", "passage: ")
    ds = Datastore.open(tmp_path / "ds", device="cpu")
    query = "the navy and commerce"
    got = ds.query_encoder([query])[0]
    assert np.array_equal(got, embedder.encode_passages(["query: " + query])[0])
    assert np.abs(got - embedder.encode_passages([query])[0]).max() > 1e-2


def test_embedder_pickles_as_a_recipe_and_loads_on_first_use(embedder):
    copy = pickle.loads(pickle.dumps(embedder))
    assert len(pickle.dumps(embedder)) < 2_000 and not copy.loaded
    assert np.array_equal(copy.encode_queries(["who signed the treaty"]),
                          embedder.encode_queries(["who signed the treaty"]))
    assert copy.loaded and copy.spec == embedder.spec
    view = embedder.with_prefixes("q: ", "p: ")
    assert view.backend is embedder.backend and view.spec["query_prefix"] == "q: "
    assert np.array_equal(view.encode_passages(["a"]), embedder.encode_passages(["p: a"]))


def test_from_manifest_takes_the_recorded_prefixes_and_weights(embedder):
    record = {**embedder.spec, "query_prefix": "query: ", "passage_prefix": ""}
    encoder = Embedder.from_manifest(record, device="cpu")
    assert not encoder.loaded and encoder.prefixes == ("query: ", "")
    assert np.array_equal(encoder.encode_queries(["x"]), embedder.encode_passages(["query: x"]))
    with pytest.raises(EmbedderError, match="weights sha256"):
        Embedder.from_manifest({**record, "weights_sha256": "0" * 64}, device="cpu").encode_queries(["x"])
    with pytest.raises(EmbedderError, match="without a query embedder"):
        Embedder.from_manifest({"name": None, "dim": 8}).encode_queries(["x"])


def test_caching_embedder_encodes_each_text_once_per_kind(embedder):
    seen = []

    class Recording:
        name, dim, spec = "recording", embedder.dim, {"name": "recording"}

        def encode(self, texts, batch_size=None, progress=None):
            seen.extend(texts)
            return embedder.encode_passages(texts)

    cached = CachingEmbedder(Embedder(backend=Recording(), query_prefix="Q ", passage_prefix=""))
    first = cached.encode_passages(["a", "b", "a"])
    assert seen == ["a", "b"] and np.array_equal(first[0], first[2])
    cached.encode_passages(["b", "a"])
    cached.encode_queries(["a"])
    assert seen == ["a", "b", "Q a"]
    assert cached.encode_queries([]).shape == (0, embedder.dim)


@pytest.fixture(scope="module")
def shardings(tmp_path_factory, small_corpus, embedder):
    """The small corpus in a few hundred chunks, built in one shard and in shards of 17 chunks."""
    stores = {}
    for name, shard_size in (("one", 100_000), ("many", 17)):
        out = tmp_path_factory.mktemp(name) / "ds"
        config = BuildConfig(chunk_size=60, overlap=0, shard_size=shard_size, device="cpu")
        build_datastore([small_corpus], out, config, embedder=embedder, progress=False)
        stores[name] = Datastore.open(out, device="cpu")
    return stores


@pytest.mark.parametrize("mode", ["dense", "bm25"])
def test_sharded_and_single_shard_builds_return_identical_hits(shardings, mode):
    one, many = shardings["one"], shardings["many"]
    assert len(one.shards) == 1 and len(many.shards) > 10 and len(one) == len(many) > 200
    for query in QUERIES:
        a = [(h.chunk_id, h.score) for h in one.search(query, k=10, mode=mode)]
        b = [(h.chunk_id, h.score) for h in many.search(query, k=10, mode=mode)]
        assert a == b, query
