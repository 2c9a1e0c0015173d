"""BM25 options: stemmed / Hugging Face tokenizers, stop words, k1/b and Lucene's idf, recorded in the manifest."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rank_bm25 import BM25Okapi

from datastores import Bm25Params, Datastore, DatastoreWriter
from datastores.records import Document
from indexers.chunkers import make_chunker

QUERIES = ["the army and the navy", "Running the public debts", "commerce with foreign nations",
           "militia of the several states"]


@pytest.fixture(scope="module")
def chunks(small_corpus):
    chunker = make_chunker("recursive", 120, 0)
    out = []
    for path in sorted(small_corpus.rglob("*.txt")):
        out.extend(chunker.chunk(Document(path.name, path.read_text(encoding="utf-8"), path.name)))
    return out


def write(root: Path, chunks, params: Bm25Params, shard_size: int = 25) -> Datastore:
    vectors = np.random.default_rng(0).standard_normal((len(chunks), 8)).astype(np.float32)
    writer = DatastoreWriter.create(root, {"test": True}, {"name": "random"}, {"name": "recursive"}, params)
    for lo in range(0, len(chunks), shard_size):
        writer.add_shard(chunks[lo:lo + shard_size], vectors[lo:lo + shard_size], lo)
    writer.finish({"documents": 2}, 8)
    return Datastore.open(root)


def brute_force(chunks, params: Bm25Params, query: str, lucene: bool) -> np.ndarray:
    """BM25 of every chunk computed from scratch with ``params.tokenize``."""
    docs = [Counter(params.tokenize(c.text)) for c in chunks]
    lengths = np.array([sum(d.values()) for d in docs], dtype=np.float64)
    n, avgdl = len(docs), lengths.mean()
    df = Counter(t for d in docs for t in d)
    assert lucene
    scores = np.zeros(n)
    for term in params.tokenize(query):
        if term not in df:
            continue
        idf = np.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
        tf = np.array([d.get(term, 0) for d in docs], dtype=np.float64)
        scores += idf * tf * (params.k1 + 1) / (tf + params.k1 * (1 - params.b + params.b * lengths / avgdl))
    return scores


def test_tokenizer_options():
    assert Bm25Params(tokenizer="stemmed").tokenize("Running ARMIES connected") == ["run", "armi", "connect"]
    assert Bm25Params(tokenizer="stemmed", stopwords="english").tokenize("the army of the states") == [
        "armi", "state"]
    assert Bm25Params(tokenizer="simple", stopwords="english").tokenize("The army and THE navy") == ["army", "navy"]
    assert Bm25Params(tokenizer="stemmed:german").tokenize("Häuser") == ["haus"]
    hf = Bm25Params(tokenizer="hf:all-MiniLM-L6-v2").tokenize("Taxation QUIXOTICALLY")
    assert hf == ["taxation", "qui", "##x", "##otic", "##ally"]  # MiniLM's WordPiece pieces


@pytest.mark.parametrize("kwargs, match", [
    ({"tokenizer": "porter"}, "tokenizer"), ({"tokenizer": "stemmed:klingon"}, "stemmer"),
    ({"stopwords": "french"}, "stopwords"), ({"idf": "bm25+"}, "idf"), ({"b": 1.5}, "b"),
    ({"tokenizer": "hf:/no/such/tokenizer"}, "tokenizer"),
])
def test_bad_options_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Bm25Params(**kwargs)


def test_rank_bm25_option_matches_bm25okapi(tmp_path, chunks):
    params = Bm25Params.rank_bm25()
    ds = write(tmp_path / "rank-bm25", chunks, params)
    manifest = json.loads((tmp_path / "rank-bm25" / "manifest.json").read_text())["bm25"]
    assert (manifest["tokenizer"], manifest["stopwords"], manifest["idf"]) == ("simple", "none", "rank-bm25")
    reference = BM25Okapi([params.tokenize(c.text) for c in chunks])
    for query in QUERIES:
        expected = reference.get_scores(params.tokenize(query))
        assert np.allclose(ds.bm25_scores(query), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("params", [
    Bm25Params(k1=0.9, b=0.4, idf="lucene"),
    Bm25Params(idf="lucene", tokenizer="stemmed", stopwords="english"),
])
def test_lucene_idf_and_options_match_brute_force(tmp_path, chunks, params):
    ds = write(tmp_path / "ds", chunks, params)
    recorded = Bm25Params.from_manifest(json.loads((tmp_path / "ds" / "manifest.json").read_text())["bm25"])
    assert recorded == params
    assert ds.bm25_params == params
    for query in QUERIES:
        expected = brute_force(chunks, params, query, lucene=True)
        assert np.allclose(ds.bm25_scores(query), expected, rtol=1e-9, atol=1e-9)
        hits = ds.search(query, k=5, mode="bm25")
        top = np.lexsort((np.arange(len(expected)), -expected))[:5]
        assert [h.chunk_id for h in hits] == [int(i) for i in top if expected[i] > 0]


def test_stemming_changes_what_matches(tmp_path, chunks):
    plain = write(tmp_path / "plain", chunks, Bm25Params(tokenizer="simple"))
    stemmed = write(tmp_path / "stemmed", chunks, Bm25Params(tokenizer="stemmed"))
    query = "debted armies"  # neither word occurs as such; their stems do
    assert not plain.search(query, k=3, mode="bm25")
    assert len(stemmed.search(query, k=3, mode="bm25")) == 3


def test_index_cli_records_bm25_options(tmp_path, small_corpus):
    from ragcli import main

    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["index", str(small_corpus), "-o", str(out), "--include", "*.md", "-q",
                                       "--device", "cpu", "--bm25-tokenizer", "stemmed", "--bm25-stopwords",
                                       "english", "--bm25-idf", "lucene", "--bm25-k1", "1.2", "--bm25-b", "0.6"])
    assert result.exit_code == 0, result.output
    bm25 = json.loads((out / "manifest.json").read_text())["bm25"]
    assert {k: bm25[k] for k in ("tokenizer", "stopwords", "idf", "k1", "b")} == {
        "tokenizer": "stemmed", "stopwords": "english", "idf": "lucene", "k1": 1.2, "b": 0.6}
    bad = CliRunner().invoke(main, ["index", str(small_corpus), "-o", str(tmp_path / "bad"), "--bm25-tokenizer", "x"])
    assert bad.exit_code != 0 and "unknown BM25 tokenizer" in bad.output
