"""Filtered search: a SQL WHERE expression restricts dense and BM25 search to matching chunks."""

from __future__ import annotations

import numpy as np
import pytest

from datastores.sql import SqlError
from rag import Datastore


@pytest.fixture(scope="module")
def ds(small_datastore, embedder):
    return Datastore.open(small_datastore, query_encoder=embedder.encode_queries)


@pytest.mark.parametrize("mode", ["dense", "bm25"])
def test_filter_keeps_only_matching_chunks_and_returns_k(ds, mode):
    where = "source LIKE '%.html'"
    matching = ds.sql().execute(f"SELECT count(*) FROM chunks WHERE {where}").fetchone()[0]
    assert 10 < matching < len(ds)
    hits = ds.search("the army and the navy of the united states", k=10, mode=mode, where=where)
    assert len(hits) == 10
    assert all(h.source.endswith(".html") for h in hits)
    unfiltered = ds.search("the army and the navy of the united states", k=len(ds), mode=mode)
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


# -- metadata columns ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def meta_ds(tmp_path_factory, embedder):
    """JSONL records whose extra fields (year, tag, start) become chunk metadata."""
    import json

    from indexers.build import build_datastore
    from indexers.config import BuildConfig

    root = tmp_path_factory.mktemp("meta")
    topics = ["the army and the navy", "taxes and public revenue", "commerce with foreign nations",
              "the militia of the states", "roads and canals", "the treaty with Spain"]
    with open(root / "records.jsonl", "w", encoding="utf-8") as handle:
        for i in range(24):
            record = {"id": i, "text": f"Report {i} on {topics[i % len(topics)]}.", "year": 2010 + i,
                      "tag": "odd" if i % 2 else "even", "start": "collides with a chunk column"}
            if i == 5:
                record["note"] = "only one record has a note"
            handle.write(json.dumps(record) + "\n")
    out = root / "ds"
    build_datastore([root], out, BuildConfig(chunk_size=50, shard_size=7, device="cpu"), embedder=embedder,
                    progress=False)
    return Datastore.open(out, query_encoder=embedder.encode_queries)


def test_metadata_keys_are_typed_columns(meta_ds):
    con = meta_ds.sql()
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE chunks)").fetchall())
    assert types["year"] in ("BIGINT", "UBIGINT") and types["tag"] == "VARCHAR" and types["note"] == "VARCHAR"
    assert types["start"] == "BIGINT"  # the chunk column, not the metadata key of the same name
    assert con.execute("SELECT count(*) FROM chunks WHERE year >= 2020").fetchone()[0] == 14
    assert con.execute("SELECT count(*) FROM chunks WHERE note IS NOT NULL").fetchone()[0] == 1


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_metadata_filter_in_every_mode(meta_ds, mode):
    from rag.retrieve import build_retriever

    where = "year >= 2020 AND tag = 'odd' AND source LIKE '%.jsonl'"
    allowed = {int(i) for i in meta_ds.sql().execute(f"SELECT chunk_id FROM chunks WHERE {where}").fetchnumpy()[
        "chunk_id"]}
    assert len(allowed) == 7
    hits = build_retriever(meta_ds, mode, depth=50).retrieve("report on the army and the navy", 5, where=where)
    assert len(hits) == 5 and {h.chunk_id for h in hits} <= allowed
    everything = build_retriever(meta_ds, mode, depth=50).retrieve("report on the army and the navy", 24)
    if mode != "hybrid":  # a filtered single retriever equals the unfiltered ranking restricted to the filter
        assert [h.chunk_id for h in hits] == [h.chunk_id for h in everything if h.chunk_id in allowed][:5]


def test_datastore_sql_cli_sees_metadata_columns(meta_ds):
    from click.testing import CliRunner

    from ragcli import main

    result = CliRunner().invoke(main, ["datastore", "sql", str(meta_ds.root),
                                       "SELECT tag, count(*) AS n FROM chunks WHERE year < 2016 GROUP BY tag ORDER BY tag"])
    assert result.exit_code == 0, result.output
    assert "even" in result.output and "odd" in result.output and "3" in result.output


def test_a_filter_is_evaluated_once_per_open_datastore(small_datastore, embedder):
    """Hybrid search runs dense and BM25 with the same filter: DuckDB evaluates it once."""
    ds = Datastore.open(small_datastore, query_encoder=embedder.encode_queries)
    where = "source LIKE '%.html'"
    first = ds.row_masks(where)
    assert ds.row_masks(where)[0] is first[0]
    ds.search("the navy", k=3, mode="dense", where=where)
    ds.search("the navy", k=3, mode="bm25", where=where)
    assert list(ds._where_cache) == [where]
