"""Every kill point of a writer is recoverable and nothing is left behind (issue 13, point 6).

Each killed run is a real `rag` process that SIGKILLs itself at an exact point of the real code:
the child wraps one function (``os.replace`` of a given temporary, ``DatastoreWriter.finish``,
compact's directory exchange) so that it kills the process before or after the real call. What
the dead process left is then resumed, overwritten or cleaned up by the next writer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datastores import Datastore, DatastoreError, IncompleteBuildError
from datastores.layout import DatastoreLayout, output_state
from datastores.lock import LOCK_FILE
from datastores.manifest import read_manifest
from datastores.ops.compact import compact
from datastores.ops.merge import merge
from datastores.ops.subsample import subsample
from datastores.ops.tombstones import Operation, commit_tombstones
from indexers.build import build_datastore

pytestmark = pytest.mark.slow

KILLER = r"""
import importlib, os, signal, sys
target, when, moment = sys.argv[1:4]
module_name, _, path = target.partition(":")
owner = importlib.import_module(module_name)
*parents, name = path.split(".")
for part in parents:
    owner = getattr(owner, part)
real = getattr(owner, name)

def killer(*args, **kwargs):
    hit = eval(when)
    if hit and moment == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*args, **kwargs)
    if hit:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(owner, name, killer)
from ragcli import main
main(sys.argv[4:], prog_name="rag")
"""

BUILD_FLAGS = ["--chunker", "recursive", "--chunk-size", "100", "--overlap", "0", "--shard-size", "8",
               "--device", "cpu", "-q"]


def rag(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragcli", *args], capture_output=True, text=True, timeout=timeout)


def killed(target: str, when: str, *args: str, moment: str = "before") -> None:
    """Run `rag ARGS` in a process that SIGKILLs itself when ``target`` is called with ``when`` true."""
    proc = subprocess.run([sys.executable, "-c", KILLER, target, when, moment, *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, f"not killed at {target} ({proc.returncode}): {proc.stderr[-2000:]}"


def temporary_named(prefix: str) -> str:
    """A ``when`` for ``os:replace``: the file renamed into place is a temporary starting with ``prefix``."""
    return f"os.path.basename(str(args[0])).startswith({prefix!r})"


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, small_corpus) -> Path:
    root = tmp_path_factory.mktemp("tiny_corpus")
    for name in ("1790-washington.txt", "1795-washington.txt"):
        shutil.copy(small_corpus / "sotu" / name, root / name)
    return root


@pytest.fixture(scope="module")
def tiny_config(small_config):
    return small_config.replace(shard_size=8)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_corpus, tiny_config, embedder) -> Datastore:
    out = tmp_path_factory.mktemp("reference") / "ds"
    build_datastore([tiny_corpus], out, tiny_config, embedder=embedder, progress=False)
    ds = Datastore.open(out)
    assert len(ds.shards) >= 3
    return ds


def rebuild(corpus, out, config, embedder, **mode) -> Datastore:
    build_datastore([corpus], out, config, embedder=embedder, progress=False, **mode)
    return Datastore.open(out)


def test_build_killed_while_its_build_state_was_a_temporary(tmp_path, tiny_corpus, tiny_config, embedder, reference):
    out = tmp_path / "killed"
    killed("os:replace", temporary_named(".build.json.tmp"), "index", str(tiny_corpus), "-o", str(out), *BUILD_FLAGS)
    names = {p.name for p in out.iterdir()}
    assert not (out / "build.json").exists() and any(n.startswith(".build.json.tmp-") for n in names), names
    assert output_state(out).kind in ("empty", "partial")
    copies = {mode: tmp_path / mode for mode in ("resume", "overwrite", "plain")}
    for copy in copies.values():
        shutil.copytree(out, copy)
    resumed = rag("index", str(tiny_corpus), "-o", str(copies["resume"]), *BUILD_FLAGS, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert Datastore.open(copies["resume"]).manifest.content_checksum == reference.manifest.content_checksum
    replaced = rebuild(tiny_corpus, copies["overwrite"], tiny_config, embedder, overwrite=True)
    again = rebuild(tiny_corpus, copies["plain"], tiny_config, embedder)  # nothing but leftovers: a plain rerun too
    assert replaced.manifest.content_checksum == again.manifest.content_checksum == reference.manifest.content_checksum
    for copy in copies.values():
        assert sorted(p.name for p in copy.iterdir()) == ["bm25_terms.parquet", "manifest.json", "shards"]


def test_build_killed_inside_a_shard_resumes_and_overwrites(tmp_path, tiny_corpus, tiny_config, embedder, reference):
    out = tmp_path / "killed"
    killed("os:replace", temporary_named(".shard-00001.tmp"), "index", str(tiny_corpus), "-o", str(out), *BUILD_FLAGS)
    assert any(p.name.startswith(".shard-00001.tmp-") for p in (out / "shards").iterdir())
    assert (out / LOCK_FILE).exists()  # the dead writer's lock file stays, unlocked
    with pytest.raises(IncompleteBuildError, match="--resume"):
        Datastore.open(out)
    plain = rag("index", str(tiny_corpus), "-o", str(out), *BUILD_FLAGS)
    assert plain.returncode == 1 and "--resume" in plain.stderr and "--overwrite" in plain.stderr
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    resumed = rebuild(tiny_corpus, out, tiny_config, embedder, resume=True)
    replaced = rebuild(tiny_corpus, copy, tiny_config, embedder, overwrite=True)
    expected = reference.manifest.content_checksum
    assert resumed.manifest.content_checksum == replaced.manifest.content_checksum == expected
    assert not any(p.name.startswith(".") for p in (out / "shards").iterdir())
    assert not (out / LOCK_FILE).exists() and not (copy / LOCK_FILE).exists()


STALE_LOCK = '{"host": "h", "operation": "index", "pid": 999999, "started": "2020-01-01T00:00:00+00:00", "token": "x"}'

PARTIAL_OUTPUTS = {
    "only the lock file": {LOCK_FILE: STALE_LOCK},
    "only shards with a half-written one": {"shards/.shard-00000.tmp-999999/chunks.parquet": "x"},
    "a finished shard without its build state": {"shards/shard-00001": None},
    "trained index and temporaries": {"dense_trained.faiss": "x", ".bm25_terms.parquet.tmp": "x",
                                      ".manifest.json.tmp-12": "{", LOCK_FILE: STALE_LOCK},
}


@pytest.mark.parametrize("mode", ["resume", "overwrite"])
@pytest.mark.parametrize("leftovers", list(PARTIAL_OUTPUTS), ids=lambda s: s.replace(" ", "-"))
def test_every_partial_output_is_resumable_and_overwritable(tmp_path, tiny_corpus, tiny_config, embedder, reference,
                                                            leftovers, mode):
    out = tmp_path / "partial"
    for rel, text in PARTIAL_OUTPUTS[leftovers].items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        if text is None:  # a shard this very build wrote before its build.json was lost
            shutil.copytree(reference.root / rel, out / rel)
        else:
            (out / rel).write_text(text)
    assert output_state(out).kind in ("empty", "partial")
    build_datastore([tiny_corpus], out, tiny_config, embedder=embedder, progress=False, **{mode: True})
    ds = Datastore.open(out)
    assert ds.manifest.content_checksum == reference.manifest.content_checksum
    assert sorted(p.name for p in out.iterdir()) == ["bm25_terms.parquet", "manifest.json", "shards"]
    assert sorted(p.name for p in (out / "shards").iterdir()) == [s.name for s in reference.manifest.shards]


def test_folders_terarag_did_not_write_are_left_untouched(tmp_path, tiny_corpus, tiny_config, embedder, reference):
    out = tmp_path / "mine"
    (out / "shards").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    for mode, message in [({}, "choose another folder"), ({"resume": True}, "no terarag build to resume"),
                          ({"overwrite": True}, "refusing to delete it")]:
        with pytest.raises(DatastoreError, match=message):
            build_datastore([tiny_corpus], out, tiny_config, embedder=embedder, progress=False, **mode)
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # not even a lock file
    refused = rag("datastore", "merge", str(reference.root), str(reference.root), "-o", str(out), "--overwrite",
                  "--prefix")
    assert refused.returncode == 1 and "refusing to delete it" in refused.stderr, refused.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


@pytest.fixture
def two_datastores(tmp_path, small_datastore):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(small_datastore, a)
    shutil.copytree(small_datastore, b)
    commit_tombstones(a, read_manifest(DatastoreLayout(a)), np.arange(0, 60, 3), Operation("manual", {}))
    return a, b


@pytest.mark.parametrize("command", ["merge", "subsample"])
def test_a_killed_merge_or_subsample_is_fixed_by_the_advice_it_prints(tmp_path, two_datastores, command):
    a, b = two_datastores
    out, expected_out = tmp_path / "out", tmp_path / "expected"
    args = ["datastore", "merge", str(a), str(b), "-o", str(out), "--prefix"] if command == "merge" else \
        ["datastore", "subsample", str(a), "-p", "0.5", "--seed", "1", "-o", str(out)]
    killed("datastores.writer:DatastoreWriter.finish", "True", *args)
    assert (out / "shards" / "shard-00000" / "shard.json").exists() and not (out / "manifest.json").exists()
    with pytest.raises(IncompleteBuildError) as error:
        Datastore.open(out)
    message = str(error.value)
    assert f"rag datastore {command}" in message and "--overwrite" in message and "rag index" not in message
    again = rag(*args)
    assert again.returncode == 1 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    fixed = rag(*args, "--overwrite")
    assert fixed.returncode == 0, fixed.stderr
    expected = merge([a, b], expected_out, prefix=True) if command == "merge" else subsample(a, expected_out, 0.5, seed=1)
    got = Datastore.open(out)
    assert got.manifest.content_checksum == expected.content_checksum
    assert [e["operation"] for e in got.manifest.lineage] == [e["operation"] for e in expected.lineage]
    assert not (out / LOCK_FILE).exists()


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.parent.iterdir() if p.name.startswith(f".{root.name}.compact-")]


def test_a_compact_killed_before_its_exchange_leaves_the_datastore_and_a_folder_the_next_writer_removes(
        two_datastores):
    a, _ = two_datastores
    manifest_bytes = (a / "manifest.json").read_bytes()
    killed("datastores.ops.compact:exchange_paths", "True", "datastore", "compact", str(a))
    assert len(_leftovers(a)) == 1 and (a / "manifest.json").read_bytes() == manifest_bytes
    before = Datastore.open(a)
    assert before.manifest.num_deleted == 20 and len(before.search("congress", k=5, mode="bm25")) == 5
    # any writer of the datastore removes it: here a tombstone commit
    commit_tombstones(a, before.manifest, np.array([1]), Operation("manual", {}))
    assert _leftovers(a) == []
    killed("datastores.ops.compact:exchange_paths", "True", "datastore", "compact", str(a))
    assert len(_leftovers(a)) == 1
    manifest = compact(a)
    assert manifest.num_chunks == before.manifest.num_live - 1 and not manifest.tombstones
    assert _leftovers(a) == [] and not (a / LOCK_FILE).exists()


def test_a_compact_killed_after_its_exchange_is_complete_and_its_old_copy_is_removed(two_datastores):
    a, _ = two_datastores
    live = Datastore.open(a).manifest.num_live
    killed("datastores.ops.compact:exchange_paths", "True", "datastore", "compact", str(a), moment="after")
    [old] = _leftovers(a)
    assert Datastore.open(old).manifest.num_deleted == 20  # the old datastore, swapped out
    compacted = Datastore.open(a)
    assert compacted.manifest.num_chunks == live and not compacted.manifest.tombstones
    result = rag("datastore", "compact", str(a))  # nothing to compact, but a writer: it sweeps
    assert result.returncode == 0, result.stderr
    assert _leftovers(a) == []
    assert Datastore.open(a).manifest.content_checksum == compacted.manifest.content_checksum


def test_a_live_compact_folder_is_not_removed(two_datastores):
    """Only folders whose writer is dead (their lock is free) are swept."""
    from datastores.lock import acquire, staging_folder

    a, _ = two_datastores
    staging = staging_folder(a)
    held = acquire(staging, "compact", create=True)
    try:
        commit_tombstones(a, read_manifest(DatastoreLayout(a)), np.array([2]), Operation("manual", {}))
        assert _leftovers(a) == [staging]
    finally:
        held.release()
        shutil.rmtree(staging)
