"""Reading one shard: its chunk table, dense index and BM25 matrix, loaded on first use."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from datastores.bm25 import Bm25GlobalStats, Bm25Params, Bm25Scorer, TermMatrix
from datastores.dense import read_dense_index, search_dense
from datastores.errors import DatastoreError
from datastores.layout import BM25_DIR, CHUNKS_FILE, DENSE_INDEX_FILE
from datastores.manifest import ShardInfo
from datastores.rowstore import RowStore


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


@dataclass
class ShardReader:
    """Lazily opened search structures of one shard."""

    folder: Path
    info: ShardInfo
    dim: int
    _dense: faiss.Index | None = field(default=None, repr=False)
    _bm25: Bm25Scorer | None = field(default=None, repr=False)
    _rows: RowStore | None = field(default=None, repr=False)

    @property
    def chunks_path(self) -> Path:
        return self.folder / CHUNKS_FILE

    def rows(self) -> RowStore:
        if self._rows is None:
            self._rows = RowStore(self.folder, self.info.rows)
        return self._rows

    def dense(self) -> faiss.Index:
        if self._dense is None:
            self._dense = read_dense_index(self.folder / DENSE_INDEX_FILE, self.dim, self.info.rows)
        return self._dense

    def bm25(self, params: Bm25Params, stats: Bm25GlobalStats) -> Bm25Scorer:
        if self._bm25 is None:
            matrix = TermMatrix.load(self.folder / BM25_DIR)
            if matrix.tf.shape[0] != self.info.rows:
                raise DatastoreError(
                    f"{self.folder / BM25_DIR} holds {matrix.tf.shape[0]} documents; the manifest says {self.info.rows}"
                )
            self._bm25 = Bm25Scorer(matrix, params, stats)
        return self._bm25

    def live_mask(self) -> np.ndarray | None:
        """Rows that are not tombstoned, or None when every row is live."""
        return None

    def search_dense(self, queries: np.ndarray, k: int,
                     allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return search_dense(self.dense(), queries, k, allowed)

    def search_bm25(self, scorer_args: tuple[Bm25Params, Bm25GlobalStats], idf: dict[str, float],
                    counts: Counter, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.bm25(*scorer_args).top_k(idf, counts, k, allowed)
