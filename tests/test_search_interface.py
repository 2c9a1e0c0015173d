"""The one search interface (datastores.retrieval.Searcher), chunk id -> (shard, row), stored vectors
and the row metadata hits carry. Local and Ray searchers agree: tests/test_ray_engine.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datastores import Datastore as StoredDatastore
from datastores import DatastoreError
from datastores.locate import locate_ids, masks_of_ids, rows_by_shard
from datastores.manifest import ShardInfo
from datastores.retrieval import SearchRequest
from rag.retrieve import build_retriever
from test_filters import meta_ds  # noqa: F401 - JSONL records with metadata

QUERIES = ["taxes and the public revenue", "the militia and the defense of the frontier"]


@pytest.fixture(scope="module")
def ds(small_datastore):
    from rag import Datastore

    return Datastore.open(small_datastore, device="cpu")


def _infos(sizes: list[int]) -> list[ShardInfo]:
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    return [ShardInfo(f"s{i}", n, int(s), {}) for i, (n, s) in enumerate(zip(sizes, starts))]


def test_locate_maps_every_id_to_its_shard_and_row(ds):
    shards = ds.manifest.shards
    assert len(shards) > 1
    ids = np.arange(-2, ds.manifest.num_chunks + 3)
    shard, row = ds.locate(ids)
    valid = (ids >= 0) & (ids < ds.manifest.num_chunks)
    assert (shard[~valid] == -1).all() and (row[~valid] == -1).all()
    starts = np.array([shards[s].chunk_id_start for s in shard[valid]])
    sizes = np.array([shards[s].rows for s in shard[valid]])
    assert (starts + row[valid] == ids[valid]).all() and (row[valid] < sizes).all() and (row[valid] >= 0).all()


def test_locate_in_a_shard_group_knows_only_its_shards(small_datastore):
    group = StoredDatastore.open(small_datastore, shards=[0, 2])
    full = group.manifest.shards
    first, third = full[0], full[1]
    ids = [first.chunk_id_start + 1, third.chunk_id_start - 1, third.chunk_id_start + 2]  # the middle id: shard 1
    shard, row = group.locate(ids)
    assert shard.tolist() == [0, -1, 1] and row.tolist() == [1, -1, 2]


def test_masks_and_rows_by_shard_match_a_plain_loop():
    infos = _infos([5, 0, 7, 3])
    rng = np.random.default_rng(0)
    ids = rng.integers(-3, 18, size=40)
    masks = masks_of_ids(infos, ids)
    for info, mask, rows in zip(infos, masks, rows_by_shard(infos, ids)):
        expected = sorted({int(i) - info.chunk_id_start for i in ids
                           if info.chunk_id_start <= i < info.chunk_id_start + info.rows})
        assert np.flatnonzero(mask).tolist() == expected and rows.tolist() == expected
    assert [len(m) for m in masks] == [5, 0, 7, 3]
    assert locate_ids([], [0, 1])[0].tolist() == [-1, -1]


def test_vectors_are_the_stored_vectors_in_the_order_given(ds, embedder):
    last = ds.manifest.num_chunks - 1
    ids = [last, 0, 41, 41, 7]
    vectors = ds.vectors(ids)
    texts = ds.get_chunks(ids)
    exact = embedder.encode_passages([texts[i]["text"] for i in ids])
    assert vectors.shape == (5, embedder.dim) and vectors.dtype == np.float32
    assert np.max(np.abs(vectors - exact)) < 2e-3          # stored as float16
    assert np.array_equal(vectors[2], vectors[3]) and not np.array_equal(vectors[0], vectors[1])
    with pytest.raises(ValueError, match="not in"):
        ds.vectors([0, last + 1])


def test_hits_carry_the_rows_metadata(meta_ds):  # noqa: F811
    hits = meta_ds.search("report on the treaty with Spain", k=24, mode="bm25")
    assert len(hits) == 24
    rows = meta_ds.get_chunks([h.chunk_id for h in hits])
    for hit in hits:
        assert hit.metadata == json.loads(rows[hit.chunk_id]["metadata"])
        assert hit.metadata["year"] - 2010 == int(hit.text.split()[1])    # "Report {i} on ..."
    assert {"note": "only one record has a note"}.items() <= next(h for h in hits if "Report 5 " in h.text).metadata.items()
    assert hits[0].to_dict()["metadata"] == hits[0].metadata


def test_search_many_run_and_a_retriever_are_one_path(ds):
    options = dict(mode="hybrid", fusion="convex", alpha=0.3, depth=30, mmr=0.5)
    request = SearchRequest(k=6, **options)
    timings: dict[str, float] = {}
    by_run = ds.run(QUERIES, request, timings=timings)
    by_keywords = ds.search_many(QUERIES, k=6, **options)
    by_retriever = build_retriever(ds, **options).retrieve_many(QUERIES, 6)
    ids = [[h.chunk_id for h in hits] for hits in by_run]
    assert ids == [[h.chunk_id for h in hits] for hits in by_keywords]
    assert ids == [[h.chunk_id for h in hits] for hits in by_retriever]
    assert all(len(hits) == 6 for hits in by_run)
    assert set(timings) == {"encode", "dense", "bm25", "fuse", "mmr"}
    plain = ds.search_many(QUERIES, k=6, mode="hybrid", fusion="convex", alpha=0.3, depth=30)
    assert ids != [[h.chunk_id for h in hits] for hits in plain]    # MMR changed the lists


def test_a_stored_datastore_offers_the_same_interface(small_datastore, ds):
    stored = StoredDatastore.open(small_datastore)
    got = stored.search_many(QUERIES, k=5, mode="bm25", mmr=0.4, depth=25, where="chunk_id % 2 = 0")
    want = ds.search_many(QUERIES, k=5, mode="bm25", mmr=0.4, depth=25, where="chunk_id % 2 = 0")
    assert [[h.chunk_id for h in hits] for hits in got] == [[h.chunk_id for h in hits] for hits in want]
    assert all(h.chunk_id % 2 == 0 for hits in got for h in hits)
    with pytest.raises(DatastoreError, match="query encoder"):
        stored.search(QUERIES[0], mode="hybrid")


@pytest.mark.parametrize("options, message", [({"mode": "sparse"}, "retrieval mode"), ({"k": 0}, "k must be"),
                                              ({"alpha": 2.0}, "alpha"), ({"mmr": -0.1}, "MMR"),
                                              ({"depth": 0}, "depth must be")])
def test_a_bad_request_is_one_clear_error(ds, options, message):
    with pytest.raises(ValueError, match=message):
        ds.search(QUERIES[0], **options)


@pytest.mark.parametrize("fusion", ["rrf", "convex"])
def test_hybrid_search_many_equals_per_query_search_and_fusing_full_hit_lists(ds, fusion):
    """Rows are read only for the fused ids returned: the hits equal one query at a time and equal
    fusing the two first stages' full hit lists (what hybrid search returned when it read every row)."""
    from dataclasses import replace

    from datastores.fusion import fuse

    queries = [*QUERIES, "the treaty with Spain", "navigation of the Mississippi"]
    options = dict(fusion=fusion, alpha=0.4, depth=20, normalization="calibrated")
    many = ds.search_many(queries, k=8, mode="hybrid", **options)
    assert many == [ds.search(q, k=8, mode="hybrid", **options) for q in queries]
    for query, hits in zip(queries, many):
        dense, sparse = ds.top_k([query], 20, "dense")[0], ds.top_k([query], 20, "bm25")[0]
        by_id = {h.chunk_id: h for h in sparse} | {h.chunk_id: h for h in dense}
        fused = fuse([(h.chunk_id, h.score) for h in dense], [(h.chunk_id, h.score) for h in sparse], fusion,
                     alpha=0.4, normalization="calibrated")
        assert hits == [replace(by_id[c], score=s) for c, s in fused[:8]]
        assert all(h.text and h.doc_id for h in hits)


def test_a_view_fetches_the_rows_of_ranked_ids_in_the_order_given(ds):
    view = ds.view()
    ranked = view.ranked_bm25(QUERIES, 5, None)
    assert [[c for c, _ in r] for r in ranked] == [[h.chunk_id for h in hits] for hits in ds.top_k(QUERIES, 5, "bm25")]
    swapped = [list(reversed(r)) for r in ranked] + [[]]
    hits = view.fetch(swapped)
    assert [[(h.chunk_id, h.score) for h in hs] for hs in hits] == swapped
    rows = ds.get_chunks([c for r in ranked for c, _ in r])
    assert all(h.text == rows[h.chunk_id]["text"] for hs in hits for h in hs)
    with pytest.raises(DatastoreError, match="not in"):
        view.fetch([[(ds.manifest.num_chunks + 5, 1.0)]])


def test_fetch_reads_exactly_the_stored_rows_across_shards_and_orders(ds):
    """Rows read together (one JSON decode per shard and call) are exactly the Parquet rows, in the
    order given, with repeats, lists of any length and ids spread over every shard."""
    rng = np.random.default_rng(0)
    n = ds.manifest.num_chunks
    ranked = [[(int(c), float(rng.random())) for c in rng.integers(0, n, size)] for size in (7, 0, 1, 25, 3)]
    ranked[3][5] = ranked[3][2]
    ids = [c for r in ranked for c, _ in r]
    assert len(set(ds.locate(ids)[0].tolist())) == len(ds.manifest.shards) > 1
    rows = ds.get_chunks(ids)
    names = [ds.manifest.shards[s].name for s in ds.locate(ids)[0].tolist()]
    hits = ds.view().fetch(ranked)
    assert [len(h) for h in hits] == [len(r) for r in ranked]
    for hit, (chunk_id, score), shard in zip([h for hs in hits for h in hs], [p for r in ranked for p in r], names):
        row = rows[chunk_id]
        assert (hit.chunk_id, hit.score, hit.shard) == (chunk_id, score, shard)
        assert (hit.doc_id, hit.start, hit.end, hit.text, hit.source) == (row["doc_id"], row["start"], row["end"],
                                                                          row["text"], row["source"])
        assert hit.metadata == json.loads(row["metadata"])


@pytest.mark.parametrize("options", [{"mode": "dense"}, {"mode": "bm25", "where": "chunk_id % 3 = 0"},
                                     {"mode": "hybrid"}, {"mode": "hybrid", "fusion": "rrf", "depth": 30, "mmr": 0.5}])
def test_search_ids_are_search_many_without_the_rows(ds, options):
    ids = ds.search_ids(QUERIES, k=7, **options)
    hits = ds.search_many(QUERIES, k=7, **options)
    assert ids == [[(h.chunk_id, h.score) for h in hs] for hs in hits]
    assert all(0 < len(r) <= 7 for r in ids) and ds.search_ids([], k=7, **options) == []


def test_merge_ranked_keeps_merge_top_k_order():
    from datastores.search import ShardResult, merge_ranked, merge_top_k

    infos = _infos([6, 4, 9])
    rng = np.random.default_rng(1)
    per_shard = [(rng.integers(0, 3, info.rows).astype(float), np.arange(info.rows)) for info in infos]
    expected = [(infos[s].chunk_id_start + r, score) for s, r, score in
                merge_top_k([ShardResult(i, sc, rows) for i, (sc, rows) in enumerate(per_shard)], 11)]
    groups = [[(info.chunk_id_start + int(r), float(sc)) for sc, r in zip(*per_shard[i])] for i, info in enumerate(infos)]
    assert merge_ranked([groups[2], groups[0] + groups[1]], 11) == expected
    assert merge_ranked([[], []], 3) == [] and merge_ranked(groups, 0) == []
