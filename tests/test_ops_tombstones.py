"""Tombstones: every search path skips deleted chunks, commits are atomic, compaction drops them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from datastores import Datastore, DatastoreError
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest
from datastores.ops import tombstones
from datastores.ops.compact import compact
from datastores.ops.tombstones import Operation, commit_tombstones, deleted_chunk_ids
from datastores.verify import verify_datastore
from ragcli import main

DELETED = [0, 3, 41, 42, 128]


@pytest.fixture
def ds_copy(tmp_path, small_datastore):
    target = tmp_path / "ds"
    shutil.copytree(small_datastore, target)
    return target


def _vectors(root, ids):
    ds = Datastore.open(root)
    out = []
    for cid in ids:
        shard = next(s for s in ds.manifest.shards if s.chunk_id_start <= cid < s.chunk_id_start + s.rows)
        emb = np.load(root / "shards" / shard.name / "embeddings.f16.npy")
        out.append(emb[cid - shard.chunk_id_start].astype(np.float32))
    return np.asarray(out)


def _tombstone(root, ids, name="test"):
    before = read_manifest(DatastoreLayout(root))
    return commit_tombstones(root, before, np.asarray(ids), Operation(name, {"ids": list(ids)}))


def test_search_paths_skip_tombstoned_chunks(ds_copy):
    queries = _vectors(ds_copy, DELETED)
    texts = Datastore.open(ds_copy).get_chunks(DELETED)
    before = Datastore.open(ds_copy).search_vectors(queries, k=3)
    assert [hits[0].chunk_id for hits in before] == DELETED  # each chunk is its own best match
    manifest = _tombstone(ds_copy, DELETED)
    assert manifest.num_deleted == len(DELETED) and manifest.num_live == manifest.num_chunks - len(DELETED)
    ds = Datastore.open(ds_copy)
    dense = ds.search_vectors(queries, k=ds.manifest.num_chunks)
    bm25 = ds.search_many([texts[i]["text"][:200] for i in DELETED], k=ds.manifest.num_chunks, mode="bm25")
    where = ds.search_vectors(queries, k=50, where="chunk_id < 50")
    for hits in dense + bm25 + where:
        assert not {h.chunk_id for h in hits} & set(DELETED)
    assert len(dense[0]) == ds.manifest.num_live
    scores = ds.bm25_scores(texts[41]["text"])
    assert (scores[DELETED] == 0).all() and scores.max() > 0
    assert ds.statistics()["chunks"] == ds.manifest.num_live
    assert ds.sql().execute("SELECT count(*) FROM chunks").fetchone()[0] == ds.manifest.num_live
    deleted = ds.sql().execute("SELECT chunk_id FROM all_chunks WHERE deleted ORDER BY 1").fetchall()
    assert [d[0] for d in deleted] == DELETED
    assert verify_datastore(ds_copy).ok


def test_tombstones_accumulate_and_are_recorded_in_lineage(ds_copy):
    _tombstone(ds_copy, [1, 2], "first")
    manifest = _tombstone(ds_copy, [2, 50], "second")
    assert deleted_chunk_ids(ds_copy, manifest).tolist() == [1, 2, 50]
    assert [e["operation"] for e in manifest.lineage] == ["first", "second"]
    assert manifest.lineage[1]["counts"]["removed"] == 1  # chunk 2 was already deleted
    assert manifest.lineage[1]["parameters"] == {"ids": [2, 50]}
    # superseded bitmap files are gone; the referenced ones are the only files left
    assert sorted(p.name for p in (ds_copy / "tombstones").iterdir()) == sorted(
        os.path.basename(t.file) for t in manifest.tombstones.values())
    result = CliRunner().invoke(main, ["datastore", "info", str(ds_copy)])
    assert result.exit_code == 0, result.output
    assert "lineage" in result.output and "second" in result.output and "tombstoned" in result.output


def test_tombstones_are_part_of_the_content_checksum(ds_copy):
    manifest = _tombstone(ds_copy, [5])
    data = json.loads((ds_copy / "manifest.json").read_text())
    assert data["content_checksum"] == manifest.content_checksum
    data["tombstones"]["shard-00000"]["deleted"] = 0
    (ds_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DatastoreError, match="checksum"):
        Datastore.open(ds_copy)


def test_verify_names_an_altered_bitmap(ds_copy):
    manifest = _tombstone(ds_copy, [5, 6])
    path = ds_copy / manifest.tombstones["shard-00000"].file
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    problems = verify_datastore(ds_copy).problems
    assert [p.path for p in problems] == [str(path)]


def test_an_operation_failing_before_commit_leaves_the_previous_state(ds_copy, monkeypatch):
    _tombstone(ds_copy, [7])
    manifest_bytes = (ds_copy / "manifest.json").read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("killed before commit")

    monkeypatch.setattr(tombstones, "write_manifest", crash)
    with pytest.raises(RuntimeError, match="killed"):
        _tombstone(ds_copy, [8, 60])
    assert (ds_copy / "manifest.json").read_bytes() == manifest_bytes
    ds = Datastore.open(ds_copy)
    assert deleted_chunk_ids(ds_copy, ds.manifest).tolist() == [7]
    assert verify_datastore(ds_copy).ok
    monkeypatch.undo()
    manifest = _tombstone(ds_copy, [9])  # the next commit cleans up the stray bitmap files
    assert len(list((ds_copy / "tombstones").iterdir())) == len(manifest.tombstones)


def test_a_killed_process_leaves_the_previous_state_readable(ds_copy):
    before = (ds_copy / "manifest.json").read_bytes()
    script = (
        "import os, signal, sys, numpy as np\n"
        "from datastores.ops import tombstones\n"
        "from datastores.layout import DatastoreLayout\n"
        "from datastores.manifest import read_manifest\n"
        "tombstones.write_manifest = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        "root = sys.argv[1]\n"
        "m = read_manifest(DatastoreLayout(__import__('pathlib').Path(root)))\n"
        "tombstones.commit_tombstones(root, m, np.arange(0, 100), tombstones.Operation('kill', {}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(ds_copy)], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert list((ds_copy / "tombstones").iterdir())  # the bitmaps were written ...
    assert (ds_copy / "manifest.json").read_bytes() == before  # ... but never committed
    ds = Datastore.open(ds_copy)
    assert ds.manifest.num_deleted == 0 and len(ds.search("congress", k=5, mode="bm25")) == 5
    assert verify_datastore(ds_copy).ok


def test_a_stale_manifest_cannot_commit(ds_copy):
    stale = read_manifest(DatastoreLayout(ds_copy))
    _tombstone(ds_copy, [1])
    with pytest.raises(DatastoreError, match="changed by another operation"):
        commit_tombstones(ds_copy, stale, np.array([2]), Operation("late", {}))


def test_out_of_range_ids_are_refused(ds_copy):
    with pytest.raises(ValueError, match="chunk ids"):
        _tombstone(ds_copy, [10_000])


def test_compact_in_place_drops_tombstoned_rows_and_links_untouched_shards(ds_copy, tmp_path):
    _tombstone(ds_copy, [41, 42, 128])  # shard 0 untouched
    ds = Datastore.open(ds_copy)
    queries = _vectors(ds_copy, [5, 60, 100])
    expected = [[(h.text, round(h.score, 4)) for h in hits] for hits in ds.search_vectors(queries, k=10)]
    bm25_expected = [(h.text, h.score) for h in ds.search("constitution of the united states", k=5, mode="bm25")]
    export = tmp_path / "export"
    assert CliRunner().invoke(main, ["datastore", "export", str(ds_copy), "-o", str(export),
                                     "--format", "jsonl"]).exit_code == 0
    assert len((export / "chunks.jsonl").read_text().splitlines()) == ds.manifest.num_live
    inode = (ds_copy / "shards" / "shard-00000" / "dense.faiss").stat().st_ino
    manifest = compact(ds_copy)
    assert manifest.num_chunks == ds.manifest.num_live and not manifest.tombstones
    assert [e["operation"] for e in manifest.lineage] == ["test", "compact"]
    assert (ds_copy / "shards" / "shard-00000" / "dense.faiss").stat().st_ino == inode  # hard link
    assert not any(p.name.startswith(".ds.compact") for p in ds_copy.parent.iterdir())
    compacted = Datastore.open(ds_copy)
    got = [[(h.text, round(h.score, 4)) for h in hits] for hits in compacted.search_vectors(queries, k=10)]
    assert got == expected
    # BM25 statistics are recomputed over the live rows only
    stats = compacted.manifest.bm25["stats"]
    lengths = [np.load(ds_copy / "shards" / s.name / "bm25" / "doc_len.npy") for s in compacted.manifest.shards]
    assert stats["documents"] == manifest.num_chunks == sum(len(x) for x in lengths)
    assert stats["total_length"] == sum(int(x.sum()) for x in lengths) < ds.manifest.bm25["stats"]["total_length"]
    assert {h.text for h in compacted.search(bm25_expected[0][0][:300], k=1, mode="bm25")} == {bm25_expected[0][0]}
    assert verify_datastore(ds_copy).ok


def test_cli_compact_flag_and_json(ds_copy):
    result = CliRunner().invoke(main, ["datastore", "filter", str(ds_copy), "--min-words", "30", "--compact",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["removed"] > 0 and report["compacted_chunks"] == report["live"]
    assert Datastore.open(ds_copy).manifest.num_chunks == report["live"]


def test_manifests_without_tombstones_or_lineage_stay_readable(ds_copy):
    path = ds_copy / "manifest.json"
    data = json.loads(path.read_text())
    del data["tombstones"], data["lineage"]  # as written before these keys existed
    path.write_text(json.dumps(data))
    ds = Datastore.open(ds_copy)
    assert ds.manifest.num_deleted == 0 and ds.manifest.lineage == []
    assert all(shard.live_mask() is None for shard in ds.shards)


def test_a_missing_bitmap_is_named_when_opening(ds_copy):
    manifest = _tombstone(ds_copy, [3])
    path = ds_copy / manifest.tombstones["shard-00000"].file
    path.unlink()
    with pytest.raises(DatastoreError, match=path.name):
        Datastore.open(ds_copy)
    assert str(path) in {p.path for p in verify_datastore(ds_copy).problems}
