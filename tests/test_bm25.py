"""BM25: scores identical to rank-bm25's BM25Okapi, and sharding never changes results."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from conftest import CHROMA
from datastores import Bm25Params, Datastore, DatastoreWriter
from datastores.bm25 import simple_tokenize
from datastores.records import Document
from indexers.chunkers import make_chunker


@pytest.fixture(scope="module")
def chroma_chunks():
    chunker = make_chunker("recursive", 200, 0)
    chunks = []
    for path in sorted((CHROMA / "corpora").glob("*.md")):
        doc = Document(path.stem, path.read_text(encoding="utf-8"), path.name)
        chunks.extend(chunker.chunk(doc))
    return chunks


@pytest.fixture(scope="module")
def questions():
    with open(CHROMA / "questions_df.csv", newline="", encoding="utf-8") as handle:
        return [row["question"] for row in csv.DictReader(handle)]


def write_datastore(root: Path, chunks, shard_size: int, vectors: np.ndarray | None = None) -> Datastore:
    """A datastore written straight through DatastoreWriter (vectors are given, not embedded)."""
    if vectors is None:
        vectors = np.random.default_rng(0).standard_normal((len(chunks), 8)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    writer = DatastoreWriter.create(root, {"test": True}, {"name": "random", "normalized": True},
                                    {"name": "recursive"}, Bm25Params.rank_bm25())  # rank-bm25 parity option
    for lo in range(0, len(chunks), shard_size):
        writer.add_shard(chunks[lo:lo + shard_size], vectors[lo:lo + shard_size], lo)
    writer.finish({"documents": len({c.doc_id for c in chunks})}, vectors.shape[1])
    return Datastore.open(root)


@pytest.fixture(scope="module")
def single_and_sharded(tmp_path_factory, chroma_chunks):
    base = tmp_path_factory.mktemp("bm25")
    return (write_datastore(base / "one", chroma_chunks, 10**9),
            write_datastore(base / "many", chroma_chunks, 257))


def test_scores_equal_rank_bm25_on_real_corpus(single_and_sharded, chroma_chunks, questions):
    _, sharded = single_and_sharded
    reference = BM25Okapi([simple_tokenize(c.text) for c in chroma_chunks])
    assert len(chroma_chunks) > 2000
    for question in questions[::8]:
        expected = reference.get_scores(simple_tokenize(question))
        ours = sharded.bm25_scores(question)
        np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)
        top = np.lexsort((np.arange(len(expected)), -expected))[:10]
        top = [int(i) for i in top if expected[i] != 0]
        hits = sharded.search(question, k=10, mode="bm25")
        assert [h.chunk_id for h in hits] == top[: len(hits)]


def test_negative_idf_gets_epsilon_floor_like_rank_bm25(tmp_path):
    # "the" occurs in 3 of 4 chunks: its raw idf is negative and is floored at epsilon * mean idf.
    texts = ["the cat sat", "the dog ran", "the cat and the dog", "a bird flew"]
    chunks = [Document(str(i), t, "s") for i, t in enumerate(texts)]
    from datastores.records import Chunk

    chunks = [Chunk(d.id, 0, len(d.text), d.text, "s") for d in chunks]
    ds = write_datastore(tmp_path / "ds", chunks, 2)
    reference = BM25Okapi([simple_tokenize(t) for t in texts])
    assert reference.idf["the"] < 0.5  # the floor applied
    for query in ["the", "the cat", "cat dog bird", "the the cat"]:
        np.testing.assert_allclose(ds.bm25_scores(query), reference.get_scores(simple_tokenize(query)), rtol=1e-12)


def test_sharded_bm25_equals_single_shard(single_and_sharded, questions):
    single, sharded = single_and_sharded
    assert len(single.shards) == 1 and len(sharded.shards) > 5
    for question in questions[::5]:
        a = single.search(question, k=10, mode="bm25")
        b = sharded.search(question, k=10, mode="bm25")
        assert [(h.chunk_id, h.score) for h in a] == [(h.chunk_id, h.score) for h in b]
        assert [h.shard for h in a] == ["shard-00000"] * len(a)


def test_sharded_dense_equals_single_index(single_and_sharded):
    single, sharded = single_and_sharded
    queries = np.random.default_rng(1).standard_normal((20, 8)).astype(np.float32)
    for a, b in zip(single.search_vectors(queries, 10), sharded.search_vectors(queries, 10)):
        assert [h.chunk_id for h in a] == [h.chunk_id for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-6)
        assert {h.doc_id for h in b} <= {"chatlogs", "finance", "pubmed", "state_of_the_union", "wikitexts"}


def test_dense_merge_breaks_ties_by_chunk_order(tmp_path):
    from datastores.records import Chunk

    chunks = [Chunk(f"d{i}", 0, 4, "same", "s") for i in range(9)]
    vectors = np.tile(np.array([[1.0, 0.0]], np.float32), (9, 1))
    single = write_datastore(tmp_path / "one", chunks, 100, vectors)
    sharded = write_datastore(tmp_path / "many", chunks, 2, vectors)
    for ds in (single, sharded):
        assert [h.chunk_id for h in ds.search_vectors(np.array([[1.0, 0.0]]), 4)[0]] == [0, 1, 2, 3]
        assert [h.chunk_id for h in ds.search("same", k=4, mode="bm25")] == [0, 1, 2, 3]


def test_query_without_known_terms_returns_nothing(single_and_sharded):
    _, sharded = single_and_sharded
    assert sharded.search("zzzqqq xyzzy", k=5, mode="bm25") == []
    assert sharded.search("!!!", k=5, mode="bm25") == []
