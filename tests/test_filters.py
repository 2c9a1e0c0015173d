"""Filtered search: a SQL WHERE expression restricts dense and BM25 search to matching chunks."""

from __future__ import annotations

import numpy as np
import pytest

from datastores.sql import SqlError
from rag import Datastore


@pytest.fixture(scope="module")
def ds(small_datastore, embedder):
    return Datastore.open(small_datastore, query_encoder=embedder.encode)


@pytest.mark.parametrize("mode", ["dense", "bm25"])
def test_filter_keeps_only_matching_chunks_and_returns_k(ds, mode):
    where = "source LIKE '%.html'"
    matching = ds.sql().execute(f"SELECT count(*) FROM chunks WHERE {where}").fetchone()[0]
    assert 10 < matching < len(ds)
    hits = ds.search("the army and the navy", k=10, mode=mode, where=where)
    assert len(hits) == 10
    assert all(h.source.endswith(".html") for h in hits)
    unfiltered = ds.search("the army and the navy", k=len(ds), mode=mode)
    expected = [h.chunk_id for h in unfiltered if h.source.endswith(".html")][:10]
    assert [h.chunk_id for h in hits] == expected


def test_filter_with_fewer_matches_than_k_returns_them_all(ds):
    ids = ds.sql().execute("SELECT chunk_id FROM chunks ORDER BY chunk_id LIMIT 3").fetchnumpy()["chunk_id"]
    where = f"chunk_id IN ({', '.join(str(i) for i in ids)})"
    hits = ds.search("government", k=10, mode="dense", where=where)
    assert sorted(h.chunk_id for h in hits) == sorted(ids.tolist())


def test_filter_matching_nothing_returns_nothing(ds):
    assert ds.search("government", k=5, mode="dense", where="doc_id = 'no such doc'") == []
    assert ds.search("government", k=5, mode="bm25", where="doc_id = 'no such doc'") == []


@pytest.mark.parametrize("where", ["true; DROP TABLE chunks", "no_such_column > 1", "1 = 1) UNION (SELECT 1",
                                   "", "chunk_id > 0; COPY chunks TO '/tmp/x.csv'"])
def test_bad_filters_are_rejected(ds, where):
    with pytest.raises(SqlError):
        ds.search("government", k=5, mode="bm25", where=where)


def test_search_vectors_filter_matches_brute_force(ds):
    vec = ds.query_encoder(["taxes and revenue"])
    where = "start > 1000"
    hits = ds.search_vectors(vec, k=5, where=where)[0]
    rows = ds.sql().execute(f"SELECT chunk_id FROM chunks WHERE {where}").fetchnumpy()["chunk_id"]
    assert {h.chunk_id for h in hits} <= set(rows.tolist())
    assert all(h.start > 1000 for h in hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert np.isclose(scores[0], ds.search_vectors(vec, k=len(ds), where=where)[0][0].score)
