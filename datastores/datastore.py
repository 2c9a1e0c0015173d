"""A datastore opened for reading: manifest, shards, search and statistics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import duckdb
import numpy as np

from datastores.bm25 import Bm25GlobalStats, Bm25Params, load_global_idf
from datastores.chunks import chunk_statistics, read_chunk_rows
from datastores.errors import DatastoreError
from datastores.filters import combine_masks, shard_masks, where_chunk_ids
from datastores.layout import DatastoreLayout
from datastores.manifest import Manifest, read_manifest
from datastores.ops.tombstones import deleted_chunk_ids
from datastores.records import Hit
from datastores.search import ShardResult, merge_top_k
from datastores.shard import ShardReader, check_shard_files
from datastores.sql import open_sql

QueryEncoder = Callable[[Sequence[str]], np.ndarray]
SEARCH_MODES = ("dense", "bm25")
WHERE_CACHE_SIZE = 8  # filters whose per-shard masks an open datastore keeps


class Datastore:
    """Read access to a datastore directory.

    Dense search needs a ``query_encoder`` (texts -> float32 [n, dim]); ``rag.Datastore`` supplies
    the embedder recorded in the manifest. ``search_vectors`` works without one.
    """

    def __init__(self, root: Path, manifest: Manifest, query_encoder: QueryEncoder | None = None):
        self.root = Path(root)
        self.layout = DatastoreLayout(self.root)
        self.manifest = manifest
        self.query_encoder = query_encoder
        dim = int(manifest.embedder["dim"])
        self.shards = [ShardReader(self.layout.shard(s.name), s, dim, manifest.tombstones.get(s.name),
                                   dense_index=manifest.dense_index)
                       for s in manifest.shards]
        #: candidates per hit taken from an approximate/binary index before rescoring (None: the manifest's)
        self.rescore_multiplier: int | None = None
        self.bm25_params = Bm25Params.from_manifest(manifest.bm25)
        self.bm25_stats = Bm25GlobalStats.from_dict(manifest.bm25["stats"])
        self._idf: dict[str, float] | None = None
        self._duckdb: duckdb.DuckDBPyConnection | None = None
        self._sql: duckdb.DuckDBPyConnection | None = None
        self._where_cache: dict[str, list[np.ndarray]] = {}

    @classmethod
    def open(cls, path: str | Path, query_encoder: QueryEncoder | None = None) -> "Datastore":
        """Open and check a datastore; raises ``DatastoreError`` naming any missing or bad file."""
        layout = DatastoreLayout(Path(path))
        manifest = read_manifest(layout)
        for info in manifest.shards:
            check_shard_files(layout.shard(info.name), info)
        for name, tombstone in manifest.tombstones.items():
            path = layout.root / tombstone.file
            if not path.is_file() or path.stat().st_size != tombstone.bytes:
                raise DatastoreError(f"{path} (tombstones of {name}) is missing or does not have the recorded size")
        terms = layout.bm25_terms
        if not terms.is_file():
            raise DatastoreError(f"{terms} is missing")
        if terms.stat().st_size != manifest.bm25["terms_file"]["bytes"]:
            raise DatastoreError(f"{terms} does not have the size the manifest records (truncated or altered)")
        return cls(layout.root, manifest, query_encoder)

    def __len__(self) -> int:
        return self.manifest.num_chunks

    def __repr__(self) -> str:
        return f"Datastore({str(self.root)!r}, chunks={len(self)}, shards={len(self.shards)})"

    # -- search -----------------------------------------------------------------------------

    def search(self, query: str, k: int = 5, mode: str = "dense", where: str | None = None) -> list[Hit]:
        """Top-``k`` chunks for one query text, best first."""
        return self.search_many([query], k=k, mode=mode, where=where)[0]

    def search_many(self, queries: Sequence[str], k: int = 5, mode: str = "dense",
                    where: str | None = None) -> list[list[Hit]]:
        """Top-``k`` chunks for each query text; ``where`` is a SQL filter over chunk columns."""
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}; choose one of {', '.join(SEARCH_MODES)}")
        if k < 1:
            raise ValueError(f"k must be at least 1 (got {k})")
        masks = self.row_masks(where)
        if mode == "bm25":
            return [self._hits(self._bm25_top_k(q, k, masks)) for q in queries]
        if self.query_encoder is None:
            raise DatastoreError("dense search needs a query encoder; open the datastore with rag.Datastore.open")
        vectors = np.asarray(self.query_encoder(list(queries)), dtype=np.float32)
        return self._search_vectors_masked(vectors, k, masks)

    def row_masks(self, where: str | None = None) -> list[np.ndarray | None]:
        """Per shard, the rows a search may return: live (not tombstoned) and matching ``where``.

        None stands for "every row"."""
        masks = [shard.live_mask() for shard in self.shards]
        if where is not None:
            masks = [combine_masks(m, w) for m, w in zip(masks, self._where_masks(where))]
        return masks

    def _where_masks(self, where: str) -> list[np.ndarray]:
        """Per-shard masks of one WHERE expression, evaluated by DuckDB once per open datastore
        (the chunk tables never change under an open manifest); the last few are kept."""
        masks = self._where_cache.pop(where, None)
        if masks is None:
            masks = shard_masks(self.manifest.shards, where_chunk_ids(self.sql(), where))
        self._where_cache[where] = masks  # most recent last
        while len(self._where_cache) > WHERE_CACHE_SIZE:
            self._where_cache.pop(next(iter(self._where_cache)))
        return masks

    def sql(self) -> duckdb.DuckDBPyConnection:
        """A read-only DuckDB connection with the views ``chunks``, ``docs`` and ``shards``."""
        if self._sql is None:
            self._sql = open_sql(self.root, self.manifest)
        return self._sql

    def search_vectors(self, vectors: np.ndarray, k: int = 5, where: str | None = None) -> list[list[Hit]]:
        """Exact inner-product top-``k`` for each row of ``vectors`` [n, dim], across all shards."""
        return self._search_vectors_masked(vectors, k, self.row_masks(where))

    def _search_vectors_masked(self, vectors: np.ndarray, k: int,
                               masks: list[np.ndarray | None]) -> list[list[Hit]]:
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        dim = int(self.manifest.embedder["dim"])
        if vectors.shape[1] != dim:
            raise ValueError(f"query vectors have dim {vectors.shape[1]}; the datastore has {dim}")
        per_shard = [shard.search_dense(vectors, k, mask, self.rescore_multiplier)
                     for shard, mask in zip(self.shards, masks)]
        merged = []
        for q in range(len(vectors)):
            results = [ShardResult(i, scores[q], rows[q]) for i, (scores, rows) in enumerate(per_shard)]
            merged.append(merge_top_k(results, k))
        return self._hits_many(merged)

    def _bm25_top_k(self, query: str, k: int, masks: list[np.ndarray | None]) -> list[tuple[int, int, float]]:
        if self._idf is None:
            self._idf = load_global_idf(self.layout.bm25_terms, self.bm25_params, self.bm25_stats)
        counts = Counter(t for t in self.bm25_params.tokenize(query) if t in self._idf)
        if not counts:
            return []
        args = (self.bm25_params, self.bm25_stats)
        results = []
        for i, (shard, mask) in enumerate(zip(self.shards, masks)):
            scores, rows = shard.search_bm25(args, self._idf, counts, k, mask)
            results.append(ShardResult(i, scores, rows))
        return merge_top_k(results, k)

    def bm25_scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk in datastore order (0 where no query term occurs and at
        tombstoned chunks)."""
        if self._idf is None:
            self._idf = load_global_idf(self.layout.bm25_terms, self.bm25_params, self.bm25_stats)
        counts = Counter(t for t in self.bm25_params.tokenize(query) if t in self._idf)
        out = np.zeros(len(self), dtype=np.float64)
        for shard in self.shards:
            rows, scores = shard.bm25(self.bm25_params, self.bm25_stats).score(self._idf, counts)
            live = shard.live_mask()
            if live is not None:
                rows, scores = rows[live[rows]], scores[live[rows]]
            out[shard.info.chunk_id_start + rows] = scores
        return out

    # -- rows -------------------------------------------------------------------------------

    def _hits(self, ranked: list[tuple[int, int, float]]) -> list[Hit]:
        return self._hits_many([ranked])[0]

    def _hits_many(self, ranked_lists: list[list[tuple[int, int, float]]]) -> list[list[Hit]]:
        out = []
        for ranked in ranked_lists:
            hits = []
            for shard, row, score in ranked:
                reader = self.shards[shard]
                record = reader.rows().get(row)
                hits.append(Hit(record["chunk_id"], record["doc_id"], record["start"], record["end"], score,
                                reader.info.name, record["text"], record["source"]))
            out.append(hits)
        return out

    def _connection(self) -> duckdb.DuckDBPyConnection:
        """One in-memory DuckDB connection per open datastore, reused by every row lookup."""
        if self._duckdb is None:
            self._duckdb = duckdb.connect()
        return self._duckdb

    def get_chunks(self, chunk_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Chunk rows by global id (DuckDB over the shard Parquet files)."""
        return read_chunk_rows([s.chunks_path for s in self.shards], list(chunk_ids), self._connection())

    def statistics(self) -> dict[str, Any]:
        """Chunk, document and size statistics of the live (not tombstoned) chunks, computed by
        DuckDB from the Parquet files."""
        deleted = deleted_chunk_ids(self.root, self.manifest) if self.manifest.tombstones else None
        return chunk_statistics([s.chunks_path for s in self.shards], exclude_ids=deleted)
