"""Reading one shard: its chunk table, dense index, BM25 matrix and row store, loaded on first use.

Integrity at read time: a shard's dense files, BM25 files, row-store index files and chunk table
are hashed (sha256 against the manifest's record) once, when first loaded; every row a search returns is
checked against its CRC32 (``datastores.rowstore``). A mismatch is a ``DatastoreError`` naming
the file. ``ShardFiles`` holds what was loaded and is shared by the readers of every manifest
generation that records the same shard, so a new generation reloads only what changed.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import faiss
import numpy as np

from datastores.bm25 import Bm25GlobalStats, Bm25Params, Bm25Scorer, TermMatrix
from datastores.dense import DENSE_FILES, DenseShard, DenseSpec, training_from_manifest
from datastores.errors import DatastoreError
from datastores.layout import BM25_DIR, CHUNKS_FILE, sha256_file
from datastores.manifest import ShardInfo, TombstoneInfo
from datastores.ops.tombstones import read_deleted_mask
from datastores.rowstore import ROW_CRC_FILE, ROW_OFFSETS_FILE, RowStore

T = TypeVar("T")


def check_shard_files(folder: Path, info: ShardInfo) -> None:
    """Every file the manifest lists exists with the recorded size (cheap; no hashing)."""
    for name, expected in info.files.items():
        path = folder / name
        if not path.is_file():
            raise DatastoreError(f"{path} is missing (shard {info.name})")
        size = path.stat().st_size
        if size != expected.bytes:
            raise DatastoreError(
                f"{path} has {size} bytes but the manifest records {expected.bytes} (truncated or altered)"
            )


def check_sha256(path: Path, expected: str | None) -> None:
    """Raise ``DatastoreError`` naming ``path`` unless its sha256 is ``expected``."""
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise DatastoreError(f"{path} is unreadable: {exc}") from exc
    if actual != expected:
        raise DatastoreError(f"{path} does not match the sha256 the manifest records "
                             "(altered or corrupt; run rag datastore verify)")


@dataclass
class ShardFiles:
    """The read-only structures of one shard's files (``info`` fixed), each loaded once, after its
    files are checked against the manifest's sha256; safe to share between threads."""

    folder: Path
    info: ShardInfo
    dim: int
    #: the manifest's ``dense_index`` dict (type, rescoring, frozen int8 calibration); {} = float-flat
    dense_index: dict = field(default_factory=dict, repr=False)
    _loaded: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _once(self, key: str, names: Iterable[str], load: Callable[[], T]) -> T:
        """``load()`` once, after hashing the listed files ``names`` that this shard has."""
        with self._lock:
            value = self._loaded.get(key)
            if value is None:
                for name in names:
                    if name in self.info.files:
                        check_sha256(self.folder / name, self.info.files[name].sha256)
                value = self._loaded[key] = load()
        return value

    @property
    def chunks_path(self) -> Path:
        """``chunks.parquet``, hashed the first time it is asked for (SQL, filters, rows by id)."""
        return self._once("chunks", [CHUNKS_FILE], lambda: self.folder / CHUNKS_FILE)

    def rows(self) -> RowStore:
        rows = self._loaded.get("rows")  # the hot path: once per hit
        if rows is None:
            rows = self._once("rows", [ROW_OFFSETS_FILE, ROW_CRC_FILE], lambda: RowStore(self.folder, self.info.rows))
        return rows

    def dense_layer(self) -> DenseShard:
        """The shard's dense index (hashed and read now) and rescoring layer (each array hashed and
        memory-mapped when first used: float-flat search never reads the float16 copy)."""
        return self._loaded.get("dense") or self._once("dense", [], self._load_dense)

    def _load_dense(self) -> DenseShard:
        spec = DenseSpec.coerce(self.dense_index or "float-flat")
        layer = DenseShard(self.folder, spec, training_from_manifest(self.dense_index), self.dim, self.info.rows,
                           check=self._check_dense_file)
        _ = layer.index  # read the index under the lock, not in the first search of each thread
        return layer

    def _check_dense_file(self, name: str) -> None:
        if name in DENSE_FILES and name in self.info.files:
            check_sha256(self.folder / name, self.info.files[name].sha256)

    def bm25(self, params: Bm25Params, stats: Bm25GlobalStats) -> Bm25Scorer:
        """The shard's BM25 scorer under the datastore's ``params`` and ``stats`` (fixed per generation)."""
        names = [name for name in self.info.files if name.startswith(f"{BM25_DIR}/")]
        return self._once("bm25", names, lambda: self._load_bm25(params, stats))

    def _load_bm25(self, params: Bm25Params, stats: Bm25GlobalStats) -> Bm25Scorer:
        matrix = TermMatrix.load(self.folder / BM25_DIR)
        if matrix.tf.shape[0] != self.info.rows:
            raise DatastoreError(
                f"{self.folder / BM25_DIR} holds {matrix.tf.shape[0]} documents; the manifest says {self.info.rows}"
            )
        return Bm25Scorer(matrix, params, stats)


@dataclass
class ShardReader:
    """One shard as one manifest generation sees it: its (shared) files and its tombstones."""

    files: ShardFiles
    tombstone: TombstoneInfo | None = None
    _live: np.ndarray | None = field(default=None, repr=False)

    @property
    def folder(self) -> Path:
        return self.files.folder

    @property
    def info(self) -> ShardInfo:
        return self.files.info

    @property
    def dim(self) -> int:
        return self.files.dim

    @property
    def chunks_path(self) -> Path:
        return self.files.chunks_path

    def rows(self) -> RowStore:
        return self.files.rows()

    def dense_layer(self) -> DenseShard:
        return self.files.dense_layer()

    def dense(self) -> faiss.Index | faiss.IndexBinary:
        return self.dense_layer().index

    def bm25(self, params: Bm25Params, stats: Bm25GlobalStats) -> Bm25Scorer:
        return self.files.bm25(params, stats)

    def live_mask(self) -> np.ndarray | None:
        """Rows that are not tombstoned, or None when every row is live (bitmap hashed when read)."""
        if self.tombstone is None:
            return None
        if self._live is None:
            root = self.folder.parent.parent  # <root>/shards/<name>
            check_sha256(root / self.tombstone.file, self.tombstone.sha256)
            self._live = ~read_deleted_mask(root, self.tombstone, self.info.rows)
        return self._live

    def search_dense(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
                     rescore_multiplier: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-shard top-``k`` (scores, rows): exact for float-flat; otherwise ``k × rescore_multiplier``
        index candidates rescored with the float query (manifest default multiplier when None)."""
        return self.dense_layer().search(queries, k, allowed, rescore_multiplier)

    def search_bm25(self, scorer_args: tuple[Bm25Params, Bm25GlobalStats], idf: dict[str, float],
                    counts: Counter, k: int, allowed: np.ndarray | None = None,
                    floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        return self.bm25(*scorer_args).top_k(idf, counts, k, allowed, floor)
