"""Where things live inside a datastore directory, and atomic write helpers.

    ds/
      manifest.json          committed last; its presence makes the datastore valid
      build.json             present while a build runs (parameters, for --resume)
      .writer.lock           flock-ed by the one writer at a time (datastores.lock)
      bm25_terms.parquet     global BM25 document frequencies (term, df)
      shards/shard-00000/    one folder per shard, renamed into place when complete
        shard.json           rows, first chunk id, file sizes and sha256
        chunks.parquet       chunk_id, doc_id, source, start, end, text, metadata
        rows.bin, row_offsets.npy   the same rows, memory-mapped for hits
        embeddings.f16.npy   float16 [rows, dim], memory-mapped when read
        dense.faiss          FAISS index over the embeddings
        bm25/                sparse term-frequency matrix (CSC) and the shard's terms
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

MANIFEST = "manifest.json"
BUILD_STATE = "build.json"
BM25_TERMS = "bm25_terms.parquet"
SHARDS_DIR = "shards"
SHARD_INFO = "shard.json"
CHUNKS_FILE = "chunks.parquet"
EMBEDDINGS_FILE = "embeddings.f16.npy"
DENSE_INDEX_FILE = "dense.faiss"
BM25_DIR = "bm25"
TOMBSTONES_DIR = "tombstones"
TRAINED_FILE = "dense_trained.faiss"  # the same name as datastores.dense.TRAINED_FILE
LOCK_FILE = ".writer.lock"

#: Everything a terarag writer puts at the top of a datastore folder.
WRITER_NAMES = frozenset({MANIFEST, BUILD_STATE, BM25_TERMS, SHARDS_DIR, TOMBSTONES_DIR, TRAINED_FILE, LOCK_FILE})
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp(-\d+)?$")  # atomic_write_bytes / atomic_directory leftovers
_CHILD_NAMES = {SHARDS_DIR: re.compile(r"^shard-\d{5}$"), TOMBSTONES_DIR: re.compile(r"^shard-\d{5}\..+\.bits$")}


def shard_name(index: int) -> str:
    """The folder name of shard number ``index``."""
    return f"shard-{index:05d}"


@dataclass(frozen=True)
class DatastoreLayout:
    """Paths of one datastore directory."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def build_state(self) -> Path:
        return self.root / BUILD_STATE

    @property
    def bm25_terms(self) -> Path:
        return self.root / BM25_TERMS

    @property
    def shards_dir(self) -> Path:
        return self.root / SHARDS_DIR

    def shard(self, name: str) -> Path:
        return self.shards_dir / name


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it is renamed to ``final`` in one step.

    A crash leaves only a ``.tmp`` folder, which readers ignore and the next build removes.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for child in tmp.rglob("*"):
            if child.is_file():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(folder: Path) -> None:
    """Delete ``.NAME.tmp`` / ``.NAME.tmp-PID`` leftovers of killed writers in ``folder``."""
    if not folder.exists():
        return
    for child in folder.iterdir():
        if _temporary_of(child.name):
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _temporary_of(name: str) -> str | None:
    """The final name of a temporary ``.NAME.tmp[-PID]`` file or folder, else None."""
    match = _TEMPORARY.match(name)
    return match["name"] if match else None


def _written_by_terarag(entry: Path) -> bool:
    """Whether a top-level entry of a datastore folder is one a terarag writer creates."""
    name = _temporary_of(entry.name) or entry.name
    if name not in WRITER_NAMES:
        return False
    pattern = _CHILD_NAMES.get(name)
    if pattern is None or entry.name != name or not entry.is_dir():
        return True
    return all(pattern.match(_temporary_of(c.name) or c.name) for c in entry.iterdir())


def _is_leftover(entry: Path) -> bool:
    """The lock file, a temporary of a killed writer or an empty shards/tombstones folder."""
    if entry.name == LOCK_FILE or _temporary_of(entry.name):
        return True
    return entry.is_dir() and entry.name in _CHILD_NAMES and not any(entry.iterdir())


@dataclass(frozen=True)
class OutputState:
    """What a folder holds, for writers deciding whether they may create, resume or replace it.

    ``kind``: ``absent``; ``empty`` (at most the lock file and leftovers of killed writers);
    ``datastore`` (a manifest); ``partial`` (only names terarag writers leave, e.g. a killed build,
    merge, subsample or compact output); ``foreign`` (something terarag did not write, named in
    ``foreign``)."""

    kind: str
    foreign: tuple[str, ...] = ()
    has_build: bool = False  # manifest.json or build.json present: a resume can check its parameters

    @property
    def terarag(self) -> bool:
        return self.kind in ("datastore", "partial")


def output_state(root: str | Path) -> OutputState:
    """Classify ``root`` from the names a terarag writer can leave in it (see ``OutputState``).

    A folder with ``manifest.json`` or ``build.json`` is terarag's whatever else it holds; without
    them every entry must be one a terarag writer leaves (lock, temporaries, shards, ...)."""
    root = Path(root)
    if not root.exists():
        return OutputState("absent")
    if not root.is_dir():
        return OutputState("foreign", (root.name,))
    if (root / MANIFEST).is_file():
        return OutputState("datastore", has_build=True)
    if (root / BUILD_STATE).is_file():
        return OutputState("partial", has_build=True)
    entries = sorted(root.iterdir())
    foreign = tuple(e.name for e in entries if not _written_by_terarag(e))
    if foreign:
        return OutputState("foreign", foreign)
    return OutputState("empty" if all(_is_leftover(e) for e in entries) else "partial")


def clear_folder(root: Path, keep: str = LOCK_FILE) -> None:
    """Delete everything in ``root`` but ``keep`` (the lock file its writer holds)."""
    for child in root.iterdir():
        if child.name == keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def unfinished_advice(layout: DatastoreLayout) -> str:
    """How to finish or replace the unfinished build in ``layout`` (its build.json names who wrote it)."""
    try:
        params = json.loads(layout.build_state.read_text(encoding="utf-8")).get("params", {})
    except (OSError, ValueError, AttributeError):
        params = {}
    operation = params.get("operation") if isinstance(params, dict) else None
    if operation:
        return (f"it is the output of a `rag datastore {operation}` that did not finish; run that command "
                "again with --overwrite")
    return "finish it with `rag index ... --resume` (same inputs and settings) or start over with --overwrite"
