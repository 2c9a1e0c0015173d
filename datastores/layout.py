"""Where things live inside a datastore directory, and atomic write helpers.

    ds/
      manifest.json          committed last; its presence makes the datastore valid
      build.json             present while a build runs (parameters, for --resume)
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
    """Delete ``.*.tmp-*`` leftovers of killed writers below ``folder``."""
    if not folder.exists():
        return
    for child in folder.iterdir():
        if child.name.startswith(".") and ".tmp-" in child.name:
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
