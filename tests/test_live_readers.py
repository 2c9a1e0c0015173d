"""Open datastores see commits: a search that starts after a commit finished never returns a row
that commit deleted (Python API, shard-group views, the retriever behind `rag serve`, threads)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from _ops_data import CHUNKER, passages, text_vectors, write_texts
from datastores import Bm25Params, DatastoreError, DatastoreWriter
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest
from datastores.ops.tombstones import Operation, commit_tombstones
from datastores.records import Chunk
from rag import Datastore
from rag.retrieve import build_retriever

TEXTS = passages(words_per_passage=40, count=40)
DELETED = [3, 17, 18, 31]


@pytest.fixture
def root(tmp_path) -> Path:
    return write_texts(tmp_path / "ds", TEXTS, shard_size=10)


def _open(path: Path, **kwargs) -> Datastore:
    return Datastore.open(path, query_encoder=text_vectors, **kwargs)


def _tombstone(path: Path, ids) -> None:
    before = read_manifest(DatastoreLayout(path))
    commit_tombstones(path, before, np.asarray(ids), Operation("test", {"ids": list(ids)}))


def _ids(hit_lists) -> set[int]:
    return {h.chunk_id for hits in hit_lists for h in hits}


def test_open_datastore_sees_a_filter_committed_by_another_process(root):
    """After `rag datastore filter` (a real subprocess) commits, the open datastore's next dense,
    BM25, vector, SQL and statistics calls leave the deleted rows out."""
    ds = _open(root)
    queries = [TEXTS[i] for i in DELETED]
    assert [hits[0].chunk_id for hits in ds.search_many(queries, k=3)] == DELETED  # each finds itself first
    assert len(ds.sql().execute("SELECT * FROM chunks").fetchall()) == len(TEXTS)
    where = f"chunk_id NOT IN ({', '.join(map(str, DELETED))})"
    done = subprocess.run([sys.executable, "-m", "ragcli", "datastore", "filter", str(root), "--where", where],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    k = len(TEXTS)
    dense = ds.search_many(queries, k=k)
    bm25 = ds.search_many(queries, k=k, mode="bm25")
    vectors = ds.search_vectors(text_vectors(queries), k=k)
    assert _ids(dense + bm25 + vectors).isdisjoint(DELETED)
    assert len(_ids(dense)) == len(TEXTS) - len(DELETED)  # every live row is still found
    assert ds.sql().execute("SELECT count(*) FROM chunks").fetchone()[0] == len(TEXTS) - len(DELETED)
    assert ds.statistics()["chunks"] == len(TEXTS) - len(DELETED)
    assert ds.manifest.num_deleted == len(DELETED)


def test_a_tombstone_commit_reloads_only_what_changed(root):
    """A commit that touches one shard swaps in new readers for it; every shard's loaded files
    (FAISS index, row store, BM25) are reused, and nothing reloads without a commit."""
    ds = _open(root)
    ds.search_many(TEXTS[:2], k=3)
    ds.search_many(TEXTS[:2], k=3, mode="bm25")
    before = list(ds.shards)
    assert ds.refresh() is False
    _tombstone(root, [12])
    assert ds.refresh() is True and ds.refresh() is False
    assert [r.files for r in ds.shards] == [r.files for r in before]
    assert all(a.files is b.files for a, b in zip(ds.shards, before))
    assert [a is b for a, b in zip(ds.shards, before)] == [True, False, True, True]
    assert 12 not in _ids(ds.search_many([TEXTS[12]], k=len(TEXTS)))


def test_where_filters_are_evaluated_again_after_a_commit(root):
    """A cached WHERE mask from before a commit is not reused: filtered searches drop deleted rows."""
    ds = _open(root)
    where = "chunk_id < 20"
    assert 17 in _ids(ds.search_many([TEXTS[17]], k=20, where=where))
    _tombstone(root, [17])
    hits = ds.search_many([TEXTS[17]], k=20, where=where)[0]
    assert 17 not in {h.chunk_id for h in hits} and all(h.chunk_id < 20 for h in hits) and len(hits) == 19


def _rebuild(path: Path, texts: list[str], finish: bool = True) -> DatastoreWriter:
    writer = DatastoreWriter.overwrite(path, {"texts": len(texts)}, {"name": "hash-vectors", "normalized": True},
                                       CHUNKER, Bm25Params())
    chunks = [Chunk(f"new{i:04d}", 0, len(t), t, source="new.txt") for i, t in enumerate(texts)]
    for start in range(0, len(chunks), 7):
        writer.add_shard(chunks[start:start + 7], text_vectors([c.text for c in chunks[start:start + 7]]), start)
    if finish:
        writer.finish({"documents": len(chunks)}, text_vectors(["x"]).shape[1])
    return writer


def test_an_overwrite_rebuild_is_picked_up(root):
    """While `--overwrite` rebuilds the folder a search fails with a one-line error; once the new
    manifest is committed the same open datastore serves the new chunks and shards."""
    ds = _open(root)
    assert ds.search(TEXTS[5], k=1)[0].doc_id == "doc0005"
    new_texts = [t.upper() + " rebuilt" for t in TEXTS[:20]]
    writer = _rebuild(root, new_texts, finish=False)
    with pytest.raises(DatastoreError, match="unfinished build|manifest.json"):
        ds.search(TEXTS[5], k=1)
    writer.finish({"documents": len(new_texts)}, text_vectors(["x"]).shape[1])
    hits = ds.search(new_texts[5], k=1)
    assert hits[0].doc_id == "new0005" and hits[0].text == new_texts[5]
    assert len(ds) == 20 and len(ds.shards) == 3
    assert ds.search_many([new_texts[9]], k=1, mode="bm25")[0][0].doc_id == "new0009"


def test_shard_group_view_follows_commits(root):
    """A datastore opened on a group of shards (one Ray actor's view) keeps to its shards in every
    generation and drops rows deleted after it opened."""
    group = _open(root, shards=[1, 2])
    assert [s.info.name for s in group.shards] == ["shard-00001", "shard-00002"]
    assert 17 in _ids(group.search_many([TEXTS[17]], k=5))
    _tombstone(root, [17, 3])
    hits = group.search_many([TEXTS[17]], k=20)[0]
    assert [s.info.name for s in group.shards] == ["shard-00001", "shard-00002"]
    assert {h.chunk_id for h in hits} == set(range(10, 30)) - {17}
    _rebuild(root, TEXTS[:14])  # two shards now: this group's second shard is gone
    with pytest.raises(DatastoreError, match="no longer exist"):
        group.search(TEXTS[1], k=1)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_the_retriever_behind_rag_serve_sees_commits(root, mode):
    """`rag serve` answers through build_retriever over one open rag.Datastore: after a commit its
    next request (any mode, MMR on) leaves the deleted rows out."""
    ds = _open(root)
    retriever = build_retriever(ds, mode, depth=20, mmr=0.7)
    assert 18 in {h.chunk_id for h in retriever.retrieve(TEXTS[18], k=5)}
    _tombstone(root, [18])
    hits = retriever.retrieve(TEXTS[18], k=5)
    assert len(hits) == 5 and 18 not in {h.chunk_id for h in hits}


def test_searches_in_threads_never_see_rows_deleted_by_a_finished_commit(root):
    """Four threads search the rows being deleted while commits land one by one: no search that
    started after a commit returned shows a row that commit deleted, and every search succeeds."""
    ds = _open(root)
    rounds = [[2, 11], [22, 33], [5, 38], [14, 27], [8, 19]]
    targets = [i for ids in rounds for i in ids]
    committed = [0]  # rounds whose commit has returned
    violations, errors, searches = [], [], [0] * 4
    stop = threading.Event()

    def search(me: int) -> None:
        n = 0
        while not stop.is_set() or n < 3:
            done = committed[0]
            gone = {i for ids in rounds[:done] for i in ids}
            try:
                lists = ds.search_many([TEXTS[i] for i in targets], k=3, mode="bm25" if n % 2 else "dense")
            except Exception as exc:  # any failure is a finding
                errors.append(repr(exc))
                return
            seen = _ids(lists) & gone
            if seen:
                violations.append((done, sorted(seen)))
            n += 1
            searches[me] += 1

    threads = [threading.Thread(target=search, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for i, ids in enumerate(rounds):
        _tombstone(root, ids)
        committed[0] = i + 1
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not violations
    assert min(searches) >= 3
    assert _ids(ds.search_many([TEXTS[i] for i in targets], k=len(TEXTS))).isdisjoint(targets)
