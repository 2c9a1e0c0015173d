"""Query and passage prefixes: recorded in the manifest at index time and used to encode queries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from datastores.dense import read_embeddings
from datastores.layout import EMBEDDINGS_FILE
from indexers.embedding import default_prefixes, resolve_prefixes


@pytest.mark.parametrize("model, expected", [
    ("intfloat/e5-base-v2", ("query: ", "passage: ")),
    ("intfloat/multilingual-e5-small", ("query: ", "passage: ")),
    ("BAAI/bge-small-en-v1.5", ("Represent this sentence for searching relevant passages: ", "")),
    ("nomic-ai/nomic-embed-text-v1.5", ("search_query: ", "search_document: ")),
    ("all-MiniLM-L6-v2", ("", "")),
    ("/models/my-e5-large/", ("query: ", "passage: ")),
])
def test_default_prefixes_of_known_families(model, expected):
    assert default_prefixes(model) == expected


def test_explicit_prefixes_win_over_defaults():
    assert resolve_prefixes("intfloat/e5-base-v2", "", "doc: ") == ("", "doc: ")
    assert resolve_prefixes("intfloat/e5-base-v2") == ("query: ", "passage: ")


@pytest.fixture(scope="module")
def prefixed(tmp_path_factory, small_corpus, embedder):
    from indexers.build import build_datastore
    from indexers.config import BuildConfig

    out = tmp_path_factory.mktemp("prefixed") / "ds"
    config = BuildConfig(chunk_size=200, shard_size=30, device="cpu", query_prefix="query: ",
                         passage_prefix="passage: ", include=("*.md",))
    build_datastore([small_corpus], out, config, embedder=embedder, progress=False)
    return out


def test_manifest_records_the_prefixes(prefixed):
    manifest = json.loads((prefixed / "manifest.json").read_text())
    assert manifest["embedder"]["query_prefix"] == "query: "
    assert manifest["embedder"]["passage_prefix"] == "passage: "


def test_stored_vectors_embed_prefix_plus_text(prefixed, embedder):
    from rag import Datastore

    ds = Datastore.open(prefixed, device="cpu")
    shard = ds.shards[0]
    stored = np.asarray(read_embeddings(shard.folder / EMBEDDINGS_FILE), dtype=np.float32)
    texts = [r["text"] for r in shard.rows().records(range(len(stored)))]
    with_prefix = embedder.encode_passages(["passage: " + t for t in texts])
    without = embedder.encode_passages(texts)
    assert np.abs(stored - with_prefix).max() < 2e-3
    assert np.abs(stored - without).max() > 1e-2  # the prefix does change the vectors


def test_queries_get_the_query_prefix(prefixed, embedder):
    from rag import Datastore

    ds = Datastore.open(prefixed, device="cpu")
    assert ds.query_prefix == "query: "
    query = "the navy and commerce"
    vector = ds.query_encoder([query])[0]
    assert np.abs(vector - embedder.encode_passages(["query: " + query])[0]).max() < 1e-4
    assert np.abs(vector - embedder.encode_passages([query])[0]).max() > 1e-2
    hit = ds.search(query, k=1)[0]
    stored = ds.search_vectors(embedder.encode_passages(["query: " + query]), k=1)[0][0]
    assert (hit.chunk_id, hit.score) == pytest.approx((stored.chunk_id, stored.score), abs=1e-5)


def test_default_model_records_empty_prefixes(small_datastore):
    manifest = json.loads((small_datastore / "manifest.json").read_text())
    assert manifest["embedder"]["query_prefix"] == "" and manifest["embedder"]["passage_prefix"] == ""


def test_index_cli_prefix_options(tmp_path, small_corpus):
    from ragcli import main

    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["index", str(small_corpus), "-o", str(out), "--include", "*.md", "-q",
                                       "--device", "cpu", "--query-prefix", "Q: ", "--passage-prefix", ""])
    assert result.exit_code == 0, result.output
    embedder = json.loads((out / "manifest.json").read_text())["embedder"]
    assert (embedder["query_prefix"], embedder["passage_prefix"]) == ("Q: ", "")
