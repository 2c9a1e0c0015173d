"""One writer per datastore (issue 13, point 2): a second writer is refused at once naming the
holder, or waits with --wait; a dead holder's lock is taken over; concurrent `rag datastore filter`
runs never corrupt the datastore."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from _ops_data import CHUNKER, passages, text_vectors
from datastores import Bm25Params, Datastore, DatastoreWriter
from datastores.layout import DatastoreLayout
from datastores.lock import LOCK_FILE, DatastoreLockedError, acquire, read_holder, writer_lock
from datastores.manifest import read_manifest
from datastores.ops import tombstones
from datastores.ops.quality import QualityRules, find_low_quality
from datastores.ops.tombstones import Operation, commit_tombstones, deleted_chunk_ids
from datastores.records import Chunk
from datastores.verify import verify_datastore
from ragcli import main

pytestmark = pytest.mark.slow

HOLDER = """
import sys
from datastores.lock import acquire
lock = acquire(sys.argv[1], sys.argv[2])
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""

#: two filters that drop different chunks: short ones, and every fifth chunk id
RULES = {"short": (["--min-words", "40"], QualityRules(min_words=40)),
         "fifth": (["--where", "chunk_id % 5 <> 0"], QualityRules(where="chunk_id % 5 <> 0"))}


@pytest.fixture
def ds_copy(tmp_path, small_datastore):
    target = tmp_path / "ds"
    shutil.copytree(small_datastore, target)
    return target


def start_holder(root, operation="filter") -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), operation], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n", holder.stderr.read()
    return holder


def rag_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ragcli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def removed_by(small_datastore) -> dict[str, set[int]]:
    """The chunk ids each filter of RULES removes from the untouched datastore."""
    return {name: set(find_low_quality(small_datastore, rules).removed_ids)
            for name, (_, rules) in RULES.items()}


def union(removed_by, names) -> set[int]:
    return set().union(*(removed_by[n] for n in names))


def test_a_second_writer_is_refused_at_once_naming_the_holder(ds_copy, tmp_path, small_corpus):
    manifest = (ds_copy / "manifest.json").read_bytes()
    holder = start_holder(ds_copy)
    try:
        recorded = read_holder(ds_copy)
        assert recorded.pid == holder.pid and recorded.operation == "filter"
        with pytest.raises(DatastoreLockedError) as error:
            acquire(ds_copy, "dedup")
        message = str(error.value)
        assert f"pid {holder.pid}" in message and "`filter`" in message and f"started {recorded.started}" in message
        assert "--wait" in message and "\n" not in message
        with pytest.raises(DatastoreLockedError, match=f"pid {holder.pid}"):
            commit_tombstones(ds_copy, read_manifest(DatastoreLayout(ds_copy)), np.array([1]), Operation("x", {}))
        cli = CliRunner()
        for args in (["datastore", "filter", str(ds_copy), "--min-words", "30"],
                     ["datastore", "compact", str(ds_copy)],
                     ["index", str(small_corpus), "-o", str(ds_copy), "--overwrite", "--device", "cpu", "-q"]):
            result = cli.invoke(main, args)
            assert result.exit_code == 1, result.output
            assert f"is being changed by pid {holder.pid}" in result.output and "Traceback" not in result.output
        assert (ds_copy / "manifest.json").read_bytes() == manifest
        assert not (ds_copy / "tombstones").exists()
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert not (ds_copy / LOCK_FILE).exists()  # released and removed
    with writer_lock(ds_copy, "dedup") as lock:
        assert read_holder(ds_copy).pid == os.getpid() and lock.active


def test_the_stale_lock_of_a_killed_holder_is_taken_over(ds_copy, removed_by):
    holder = start_holder(ds_copy, "compact")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    stale = read_holder(ds_copy)
    assert stale.pid == holder.pid  # the file is still there, but nobody holds the flock
    result = CliRunner().invoke(main, ["datastore", "filter", str(ds_copy), "--min-words", "40"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(DatastoreLayout(ds_copy))
    assert [e["operation"] for e in manifest.lineage] == ["filter"]
    assert set(deleted_chunk_ids(ds_copy, manifest).tolist()) == removed_by["short"]
    assert not (ds_copy / LOCK_FILE).exists()


def test_waiting_gives_up_after_the_timeout_naming_the_holder(ds_copy):
    with writer_lock(ds_copy, "prune-importance"):
        started = time.monotonic()
        with pytest.raises(DatastoreLockedError, match=r"pid \d+ .*`prune-importance`.*waited 0.3s"):
            acquire(ds_copy, "filter", wait=True, timeout=0.3)
        assert time.monotonic() - started >= 0.3  # it did wait (a lower bound, not a speed claim)
        result = CliRunner().invoke(main, ["datastore", "filter", str(ds_copy), "--min-words", "40", "--wait",
                                           "--wait-timeout", "0.2"])
        assert result.exit_code == 1 and "waited 0.2s" in result.output
    assert read_manifest(DatastoreLayout(ds_copy)).lineage == []


def test_with_wait_a_writer_runs_once_the_holder_is_done(ds_copy):
    lock = acquire(ds_copy, "dedup")
    try:
        waiter = rag_process("datastore", "filter", str(ds_copy), *RULES["short"][0], "--wait", "--wait-timeout", "240")
        said = ""
        while "waiting for the writer lock" not in " ".join(said.split()):
            line = waiter.stderr.readline()
            assert line, f"the waiter ended without waiting: {said}"
            said += line
        assert read_manifest(DatastoreLayout(ds_copy)).lineage == []  # it waits while the lock is held
    finally:
        lock.release()
    out, err = waiter.communicate(timeout=240)
    assert waiter.returncode == 0, err
    manifest = read_manifest(DatastoreLayout(ds_copy))
    assert [e["operation"] for e in manifest.lineage] == ["filter"]


@pytest.mark.parametrize("trial", range(3))
def test_concurrent_filters_never_corrupt_the_datastore(ds_copy, removed_by, trial):
    names = ["short", "fifth"] if trial % 2 == 0 else ["fifth", "short"]
    runs = {name: rag_process("datastore", "filter", str(ds_copy), *RULES[name][0]) for name in names}
    results = {name: (proc.wait(timeout=240), proc.stderr.read()) for name, proc in runs.items()}
    committed = [name for name, (code, _) in results.items() if code == 0]
    assert committed, results
    for name, (code, err) in results.items():
        if code != 0:  # refused at once, naming the other run as the holder
            other = runs[next(n for n in names if n != name)]
            assert code == 1 and f"is being changed by pid {other.pid}" in " ".join(err.split()), err
            assert "`filter`" in err
    ds = Datastore.open(ds_copy)
    assert [e["operation"] for e in ds.manifest.lineage] == ["filter"] * len(committed)
    assert set(deleted_chunk_ids(ds_copy, ds.manifest).tolist()) == union(removed_by, committed)
    hits = ds.search("the United States and Congress", k=ds.manifest.num_chunks, mode="bm25")
    assert hits and not {h.chunk_id for h in hits} & set(deleted_chunk_ids(ds_copy, ds.manifest).tolist())
    assert verify_datastore(ds_copy).ok


def test_concurrent_filters_with_wait_both_commit_in_turn(ds_copy, removed_by):
    runs = [rag_process("datastore", "filter", str(ds_copy), *RULES[name][0], "--wait") for name in RULES]
    for proc in runs:
        assert proc.wait(timeout=240) == 0, proc.stderr.read()
    ds = Datastore.open(ds_copy)
    assert [e["operation"] for e in ds.manifest.lineage] == ["filter", "filter"]
    assert {e["parameters"].get("min_words") for e in ds.manifest.lineage} == {40, None}
    assert set(deleted_chunk_ids(ds_copy, ds.manifest).tolist()) == union(removed_by, RULES)
    assert verify_datastore(ds_copy).ok


def test_bitmap_names_are_unique_per_operation(ds_copy):
    manifest = read_manifest(DatastoreLayout(ds_copy))
    names = {tombstones._bitmap_name(manifest, "shard-00000") for _ in range(50)}
    assert len(names) == 50 and all(".op0001-" in n and str(os.getpid()) in n for n in names)


def test_a_writer_whose_lock_was_taken_over_stops_writing(tmp_path):
    """A shard task orphaned by a killed build (e.g. a Ray task) must not write into a datastore
    that another writer now holds."""
    root = tmp_path / "ds"
    texts = passages(count=10)
    chunks = [Chunk(f"d{i}", 0, len(t), t) for i, t in enumerate(texts)]
    lock = acquire(root, "index", create=True)
    writer = DatastoreWriter.create(root, {"texts": 10}, {"name": "hash-vectors"}, CHUNKER, Bm25Params(), lock=lock)
    writer.add_shard(chunks[:5], text_vectors(texts[:5]), 0)
    lock.release()  # as if the build's process had died
    with writer_lock(root, "index --overwrite"):
        with pytest.raises(DatastoreLockedError, match="no longer locked by this build"):
            writer.add_shard(chunks[5:], text_vectors(texts[5:]), 5)
    assert not (root / "shards" / "shard-00001").exists()
