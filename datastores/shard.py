"""Reading one shard: its chunk table, dense index and BM25 matrix, loaded on first use."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from datastores.bm25 import Bm25GlobalStats, Bm25Params, Bm25Scorer, TermMatrix
from datastores.dense import DenseShard, DenseSpec, training_from_manifest
from datastores.errors import DatastoreError
from datastores.layout import BM25_DIR, CHUNKS_FILE
from datastores.manifest import ShardInfo, TombstoneInfo
from datastores.ops.tombstones import read_deleted_mask
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
    tombstone: TombstoneInfo | None = None
    _live: np.ndarray | None = field(default=None, repr=False)
    _dense: faiss.Index | None = field(default=None, repr=False)
    _bm25: Bm25Scorer | None = field(default=None, repr=False)
    _rows: RowStore | None = field(default=None, repr=False)
    #: the manifest's ``dense_index`` dict (type, rescoring, frozen int8 calibration); {} = float-flat
    dense_index: dict = field(default_factory=dict, repr=False)
    _dense_layer: DenseShard | None = field(default=None, repr=False)

    @property
    def chunks_path(self) -> Path:
        return self.folder / CHUNKS_FILE

    def rows(self) -> RowStore:
        if self._rows is None:
            self._rows = RowStore(self.folder, self.info.rows)
        return self._rows

    def dense_layer(self) -> DenseShard:
        """The shard's dense index and rescoring layer (memory-mapped), opened on first use."""
        if self._dense_layer is None:
            spec = DenseSpec.coerce(self.dense_index or "float-flat")
            self._dense_layer = DenseShard(self.folder, spec, training_from_manifest(self.dense_index), self.dim,
                                           self.info.rows)
        return self._dense_layer

    def dense(self) -> faiss.Index | faiss.IndexBinary:
        if self._dense is None:
            self._dense = self.dense_layer().index
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
        if self.tombstone is None:
            return None
        if self._live is None:
            root = self.folder.parent.parent  # <root>/shards/<name>
            self._live = ~read_deleted_mask(root, self.tombstone, self.info.rows)
        return self._live

    def search_dense(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
                     rescore_multiplier: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-shard top-``k`` (scores, rows): exact for float-flat; otherwise ``k × rescore_multiplier``
        index candidates rescored with the float query (manifest default multiplier when None)."""
        return self.dense_layer().search(queries, k, allowed, rescore_multiplier)

    def search_bm25(self, scorer_args: tuple[Bm25Params, Bm25GlobalStats], idf: dict[str, float],
                    counts: Counter, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.bm25(*scorer_args).top_k(idf, counts, k, allowed)
