"""`rag datastore subsample | merge | compact -o`: new datastores from stored rows, no re-embedding."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from _ops_data import CHUNKER, passages, text_vectors, write_texts
from datastores import Datastore, DatastoreError
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest
from datastores.ops.merge import merge
from datastores.ops.subsample import subsample
from datastores.ops.tombstones import Operation, commit_tombstones
from datastores.verify import verify_datastore
from ragcli import main

QUERIES = ["the United States and Congress", "treaty with foreign nations", "public credit revenue",
           "militia and defense of the frontiers"]


def _texts(ds: Datastore) -> list[str]:
    return [ds.get_chunks([i])[i]["text"] for i in range(len(ds))]


def test_subsample_is_seeded_deterministic_and_skips_tombstones(tmp_path):
    texts = passages(count=45)
    root = write_texts(tmp_path / "ds", texts, shard_size=10)
    commit_tombstones(root, read_manifest(DatastoreLayout(root)), np.array([0, 17]), Operation("manual", {}))
    a = subsample(root, tmp_path / "a", 0.5, seed=3)
    b = subsample(root, tmp_path / "b", 0.5, seed=3)
    c = subsample(root, tmp_path / "c", 0.5, seed=4)
    assert a.num_chunks == b.num_chunks == round(0.5 * 43)
    ta, tb, tc = (_texts(Datastore.open(tmp_path / x)) for x in "abc")
    assert ta == tb and ta != tc
    assert not {texts[0], texts[17]} & set(ta)
    assert ta == [t for t in texts if t in set(ta)]  # datastore order is kept
    assert [e["operation"] for e in a.lineage] == ["manual", "subsample"]
    assert a.lineage[-1]["parameters"]["seed"] == 3
    # stored vectors travel with their rows: each row is still its own best match
    ds = Datastore.open(tmp_path / "a")
    hits = ds.search_vectors(text_vectors(ta[:5]), k=1)
    assert [h[0].text for h in hits] == ta[:5] and all(h[0].score > 0.999 for h in hits)
    assert verify_datastore(tmp_path / "a").ok


def test_full_subsample_hard_links_every_shard(tmp_path):
    root = write_texts(tmp_path / "ds", passages(count=25), shard_size=10)
    out = tmp_path / "all"
    subsample(root, out, 1.0, seed=0)
    for name in ("dense.faiss", "embeddings.f16.npy", "chunks.parquet", "bm25/data.npy"):
        assert (out / "shards" / "shard-00001" / name).stat().st_ino == (root / "shards" / "shard-00001" / name).stat().st_ino
    assert verify_datastore(out).ok
    with pytest.raises(ValueError, match="fraction"):
        subsample(root, tmp_path / "bad", 1.5)
    with pytest.raises(DatastoreError, match="not empty"):
        subsample(root, out, 0.5)


def test_subsample_of_a_built_datastore_via_cli(tmp_path, small_datastore):
    out = tmp_path / "sub"
    result = CliRunner().invoke(main, ["datastore", "subsample", str(small_datastore), "-p", "0.25", "--seed", "0",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    ds = Datastore.open(out)
    assert len(ds) == round(0.25 * len(Datastore.open(small_datastore)))
    assert ds.manifest.embedder == Datastore.open(small_datastore).manifest.embedder
    assert verify_datastore(out).ok
    sentence = ds.get_chunks([3])[3]["text"][:300]
    assert ds.search(sentence, k=1, mode="bm25")[0].chunk_id == 3


def test_merge_equals_a_datastore_built_from_the_union(tmp_path):
    texts = passages(count=30)
    union = Datastore.open(write_texts(tmp_path / "union", texts, shard_size=10))
    write_texts(tmp_path / "a", texts[:13], shard_size=7)
    write_texts(tmp_path / "b", texts[13:], shard_size=7, first=13)
    manifest = merge([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")
    merged = Datastore.open(tmp_path / "ab")
    assert len(merged) == len(union) == 30
    for key in ("documents", "total_length", "vocabulary"):
        assert manifest.bm25["stats"][key] == union.manifest.bm25["stats"][key]
    assert manifest.bm25["stats"]["average_idf"] == pytest.approx(union.manifest.bm25["stats"]["average_idf"])
    assert pq.read_table(tmp_path / "ab" / "bm25_terms.parquet").equals(
        pq.read_table(tmp_path / "union" / "bm25_terms.parquet"))
    for mode_hits in (merged.search_many(QUERIES, k=8, mode="bm25"), union.search_many(QUERIES, k=8, mode="bm25")):
        assert all(len(h) >= 3 for h in mode_hits)  # the comparison below is not vacuous
    for got, want in zip(merged.search_many(QUERIES, k=8, mode="bm25"), union.search_many(QUERIES, k=8, mode="bm25")):
        assert [(h.chunk_id, h.doc_id, h.text) for h in got] == [(h.chunk_id, h.doc_id, h.text) for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want])
    vectors = text_vectors(["query one", "query two", texts[20]])
    for got, want in zip(merged.search_vectors(vectors, k=10), union.search_vectors(vectors, k=10)):
        assert [(h.chunk_id, h.doc_id) for h in got] == [(h.chunk_id, h.doc_id) for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
    assert np.allclose(merged.bm25_scores(QUERIES[0]), union.bm25_scores(QUERIES[0]))
    assert manifest.lineage[-1]["operation"] == "merge" and verify_datastore(tmp_path / "ab").ok
    # the first source's shards keep their ids, so they are linked rather than copied
    assert (tmp_path / "ab" / "shards" / "shard-00000" / "dense.faiss").stat().st_ino == \
        (tmp_path / "a" / "shards" / "shard-00000" / "dense.faiss").stat().st_ino


def test_merge_drops_tombstoned_rows(tmp_path):
    texts = passages(count=20)
    a = write_texts(tmp_path / "a", texts[:10], shard_size=4)
    b = write_texts(tmp_path / "b", texts[10:], shard_size=4, first=10)
    commit_tombstones(a, read_manifest(DatastoreLayout(a)), np.array([1, 2]), Operation("manual", {}))
    merge([a, b], tmp_path / "ab")
    assert _texts(Datastore.open(tmp_path / "ab")) == texts[:1] + texts[3:]


def test_merge_refuses_mismatched_datastores(tmp_path):
    texts = passages(count=6)
    a = write_texts(tmp_path / "a", texts[:3])
    b = write_texts(tmp_path / "b", texts[3:], chunker={**CHUNKER, "chunk_size": 256})
    with pytest.raises(DatastoreError, match=r"chunker differs \(chunk_size: 0 vs 256\)"):
        merge([a, b], tmp_path / "ab")
    assert not (tmp_path / "ab").exists()
    result = CliRunner().invoke(main, ["datastore", "merge", str(a), str(b), "-o", str(tmp_path / "ab")])
    assert result.exit_code != 0 and "chunker differs" in result.output and "Traceback" not in result.output


def test_merge_with_a_different_embedder_names_it(tmp_path, small_datastore):
    a = write_texts(tmp_path / "a", passages(count=3))
    with pytest.raises(DatastoreError, match="embedder differs"):
        merge([a, small_datastore], tmp_path / "ab")


def test_compact_to_a_new_directory_leaves_the_source_untouched(tmp_path):
    texts = passages(count=12)
    root = write_texts(tmp_path / "ds", texts, shard_size=5)
    commit_tombstones(root, read_manifest(DatastoreLayout(root)), np.array([4, 5, 6]), Operation("manual", {}))
    before = (root / "manifest.json").read_bytes()
    result = CliRunner().invoke(main, ["datastore", "compact", str(root), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    assert (root / "manifest.json").read_bytes() == before
    out = Datastore.open(tmp_path / "out")
    assert _texts(out) == texts[:4] + texts[7:] and not out.manifest.tombstones
    assert [s.rows for s in out.manifest.shards] == [5, 4]  # re-packed to the shard size, 5
    assert verify_datastore(tmp_path / "out").ok
