"""A datastore opened for reading: manifest, shards, search and statistics.

An open datastore follows its directory: before each search (and rows by id, statistics, SQL) it
compares ``os.stat`` of ``manifest.json`` (inode, mtime, size; writers replace the manifest
atomically, so every commit is a new file) with the one it read, and on a change loads the new
manifest (``Datastore.refresh``). Each call works on one ``Snapshot`` (manifest, shard readers,
caches) from start to end, so a search that starts after a commit has finished never returns a row
that commit deleted, and a search running during a commit sees the old state or the new, never a mix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import duckdb
import numpy as np

from datastores.bm25 import Bm25GlobalStats, Bm25Params, load_global_idf
from datastores.chunks import chunk_statistics, read_chunk_rows
from datastores.errors import DatastoreError, UserError
from datastores.filters import combine_masks, where_chunk_ids
from datastores.layout import DatastoreLayout
from datastores.locate import locate_ids, masks_of_ids
from datastores.manifest import Manifest, read_manifest
from datastores.ops.tombstones import deleted_chunk_ids
from datastores.records import Hit
from datastores.retrieval import Searcher
from datastores.search import KthBest, Ranked, ShardResult, merge_top_k
from datastores.shard import ShardFiles, ShardReader, check_sha256, check_shard_files
from datastores.sql import open_sql

QueryEncoder = Callable[[Sequence[str]], np.ndarray]
Stamp = tuple[int, int, int]
WHERE_CACHE_SIZE = 8  # filters whose per-shard masks an open datastore keeps


#: Times ``refresh`` reads the manifest again when the files it names were superseded while loading.
REFRESH_ATTEMPTS = 8


def manifest_stamp(layout: DatastoreLayout) -> Stamp | None:
    """(inode, mtime_ns, size) of ``manifest.json``, or None when there is none."""
    return _stamp(layout.manifest)


def _stamp(path: str | Path) -> Stamp | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def check_datastore_files(layout: DatastoreLayout, manifest: Manifest) -> None:
    """Presence and sizes of the files ``manifest`` references (cheap; no hashing)."""
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


def _same_settings(a: Manifest, b: Manifest) -> bool:
    """Whether shard files loaded under ``a`` read the same under ``b`` (BM25 statistics, dense settings)."""
    return a.bm25 == b.bm25 and a.dense_index == b.dense_index and a.embedder.get("dim") == b.embedder.get("dim")


@dataclass
class Snapshot:
    """One manifest generation of an open datastore: its shard readers and what is derived from it."""

    layout: DatastoreLayout
    manifest: Manifest
    stamp: Stamp | None
    shards: list[ShardReader]
    idf: dict[str, float] | None = None
    _sql: duckdb.DuckDBPyConnection | None = None
    _where: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, layout: DatastoreLayout, manifest: Manifest, stamp: Stamp | None,
             previous: "Snapshot | None" = None) -> "Snapshot":
        """Readers for ``manifest``; readers (and loaded files) of ``previous`` are reused for shards
        whose record and settings are unchanged, so a tombstone commit reloads only the bitmaps."""
        same = previous is not None and _same_settings(previous.manifest, manifest)
        old = {r.info.name: r for r in previous.shards} if same else {}
        dim = int(manifest.embedder["dim"])
        shards = []
        for info in manifest.shards:
            tombstone = manifest.tombstones.get(info.name)
            reader = old.get(info.name)
            if reader is None or reader.info != info:
                reader = ShardReader(ShardFiles(layout.shard(info.name), info, dim, manifest.dense_index), tombstone)
            elif reader.tombstone != tombstone:
                reader = ShardReader(reader.files, tombstone)
            shards.append(reader)
        return cls(layout, manifest, stamp, shards, idf=previous.idf if same else None)

    def __post_init__(self) -> None:
        self.bm25_params = Bm25Params.from_manifest(self.manifest.bm25)
        self.bm25_stats = Bm25GlobalStats.from_dict(self.manifest.bm25["stats"])

    def global_idf(self) -> dict[str, float]:
        """Global idf from ``bm25_terms.parquet`` (hashed when first read)."""
        if self.idf is None:
            with self._lock:
                if self.idf is None:
                    terms = self.layout.bm25_terms
                    check_sha256(terms, self.manifest.bm25["terms_file"].get("sha256"))
                    self.idf = load_global_idf(terms, self.bm25_params, self.bm25_stats)
        return self.idf

    def sql(self) -> duckdb.DuckDBPyConnection:
        """The read-only DuckDB connection of this generation (views over its chunk files)."""
        with self._lock:
            if self._sql is None:
                for reader in self.shards:
                    _ = reader.chunks_path  # hash each chunk table once before DuckDB reads it
                self._sql = open_sql(self.layout.root, self.manifest)
            return self._sql

    def row_masks(self, where: str | None = None) -> list[np.ndarray | None]:
        """Per shard, the rows a search may return: live and matching ``where`` (None: every row)."""
        masks = [shard.live_mask() for shard in self.shards]
        if where is not None:
            masks = [combine_masks(m, w) for m, w in zip(masks, self.where_masks(where))]
        return masks

    def where_masks(self, where: str) -> list[np.ndarray]:
        """Per-shard masks of one WHERE expression, evaluated by DuckDB once per generation; the
        last few are kept."""
        con = self.sql()
        with self._lock:
            masks = self._where.pop(where, None)
            if masks is None:
                masks = masks_of_ids(self.manifest.shards, where_chunk_ids(con, where))
            self._where[where] = masks  # most recent last
            while len(self._where) > WHERE_CACHE_SIZE:
                self._where.pop(next(iter(self._where)))
        return masks


def live_ids(shards: Sequence[ShardReader], chunk_ids: list[int]) -> list[int]:
    """The ids of ``chunk_ids`` whose rows are not tombstoned (ids outside ``shards`` are kept;
    reading them finds nothing)."""
    if not chunk_ids or all(s.tombstone is None for s in shards):
        return chunk_ids
    ids = np.asarray(chunk_ids, dtype=np.int64)
    which, rows = locate_ids([s.info for s in shards], ids)
    keep = np.ones(len(ids), dtype=bool)
    for index, shard in enumerate(shards):
        mask = shard.live_mask()
        here = which == index
        if mask is not None and here.any():
            keep[here] = mask[rows[here]]
    return ids[keep].tolist()


class Datastore(Searcher):
    """Read access to a datastore directory, searched through ``datastores.retrieval.Searcher``
    (``search``, ``search_many``, ``run``: dense, BM25 or hybrid, rerank, MMR, ``where``).

    Dense search needs a ``query_encoder`` (texts -> float32 [n, dim]); ``rag.Datastore`` supplies
    the embedder recorded in the manifest. ``search_vectors`` works without one.

    ``stamp`` is the ``manifest_stamp`` taken before ``manifest`` was read (``open`` passes it): the
    datastore then follows new commits. Without it, it stays on ``manifest``. ``shards`` restricts
    it to those shard numbers (a shard group; global BM25 statistics kept), in every generation.
    """

    def __init__(self, root: Path, manifest: Manifest, query_encoder: QueryEncoder | None = None, *,
                 stamp: Stamp | None = None, shards: Sequence[int] | None = None):
        self.root = Path(root)
        self.layout = DatastoreLayout(self.root)
        self.query_encoder = query_encoder
        #: candidates per hit taken from an approximate/binary index before rescoring (None: the manifest's)
        self.rescore_multiplier: int | None = None
        self._follows = stamp is not None
        self._manifest_path = str(self.layout.manifest)
        self._selection = None if shards is None else tuple(int(i) for i in shards)
        self._refresh_lock = threading.Lock()
        self._snapshot = Snapshot.load(self.layout, self._select(manifest), stamp)
        self._duckdb: duckdb.DuckDBPyConnection | None = None
        self._load_bitmaps(stamp)

    def _load_bitmaps(self, stamp: Stamp | None) -> None:
        """The first generation's tombstone bitmaps, now; when a commit already removed them, the
        next ``refresh`` loads that commit's generation instead."""
        try:
            for reader in self._snapshot.shards:
                reader.live_mask()
        except DatastoreError:
            if not self._follows or _stamp(self._manifest_path) == stamp:
                raise

    @classmethod
    def open(cls, path: str | Path, query_encoder: QueryEncoder | None = None, *,
             shards: Sequence[int] | None = None, **kwargs: Any) -> "Datastore":
        """Open and check a datastore; raises ``DatastoreError`` naming any missing or bad file."""
        layout = DatastoreLayout(Path(path))
        stamp = manifest_stamp(layout)
        manifest = read_manifest(layout)
        store = cls(layout.root, manifest, query_encoder, stamp=stamp, shards=shards, **kwargs)
        check_datastore_files(layout, store.manifest)
        return store

    def _select(self, manifest: Manifest) -> Manifest:
        if self._selection is None:
            return manifest
        missing = [i for i in self._selection if not 0 <= i < len(manifest.shards)]
        if missing:
            raise DatastoreError(f"{self.root} has {len(manifest.shards)} shards now; shard(s) "
                                 f"{', '.join(map(str, missing))} of this group no longer exist")
        return dataclasses.replace(manifest, shards=[manifest.shards[i] for i in self._selection])

    # -- generations ------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Load the manifest again if ``manifest.json`` changed since it was read (one ``os.stat``
        otherwise); True when a new generation was loaded. Thread-safe; runs before every search."""
        if not self._follows or _stamp(self._manifest_path) == self._snapshot.stamp:
            return False
        with self._refresh_lock:
            for _ in range(REFRESH_ATTEMPTS):
                stamp = _stamp(self._manifest_path)  # before reading: a commit in between reloads again later
                if stamp == self._snapshot.stamp:
                    return False
                try:
                    self._snapshot = self._load_generation(stamp)
                    return True
                except DatastoreError:
                    if _stamp(self._manifest_path) == stamp:  # not superseded: a real error
                        raise
            raise DatastoreError(f"{self.root}: the manifest changed {REFRESH_ATTEMPTS} times while it was read")

    def _load_generation(self, stamp: Stamp | None) -> Snapshot:
        """A snapshot of the manifest on disk with its tombstone bitmaps in memory, so a commit that
        removes them later cannot break a search that runs on it."""
        manifest = self._select(read_manifest(self.layout))
        check_datastore_files(self.layout, manifest)
        snapshot = Snapshot.load(self.layout, manifest, stamp, self._snapshot)
        for reader in snapshot.shards:
            reader.live_mask()
        return snapshot

    def snapshot(self) -> Snapshot:
        """The current generation, after ``refresh``; use one snapshot for a whole operation."""
        self.refresh()
        return self._snapshot

    @property
    def manifest(self) -> Manifest:
        return self._snapshot.manifest

    @property
    def shards(self) -> list[ShardReader]:
        return self._snapshot.shards

    @property
    def bm25_params(self) -> Bm25Params:
        return self._snapshot.bm25_params

    @property
    def bm25_stats(self) -> Bm25GlobalStats:
        return self._snapshot.bm25_stats

    @property
    def _where_cache(self) -> dict[str, list[np.ndarray]]:
        return self._snapshot._where

    def __len__(self) -> int:
        """Live chunks of this datastore (or shard group): tombstoned rows are not counted
        (``manifest.num_chunks`` counts every row)."""
        manifest = self.manifest
        tombstones = manifest.tombstones
        return sum(s.rows - (tombstones[s.name].deleted if s.name in tombstones else 0) for s in manifest.shards)

    def __repr__(self) -> str:
        return f"Datastore({str(self.root)!r}, chunks={len(self)}, shards={len(self.shards)})"

    # -- search -----------------------------------------------------------------------------

    def view(self) -> "SnapshotSearch":
        """The search primitives of the current generation (``Searcher.run`` uses one per search)."""
        return SnapshotSearch(self, self.snapshot())

    def locate(self, chunk_ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per global id, (index into ``shards``, row there) as int64 arrays; -1 for ids no shard holds."""
        return locate_ids(self.manifest.shards, chunk_ids)

    def vectors(self, chunk_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """float32 [len(chunk_ids), dim], in the order given: the stored float16 vectors, or the
        dequantized int8 / multi-bit rescoring layer of a quantized index (memory-mapped, only the
        rows asked for are read; ``datastores.dense.DenseShard.vectors``)."""
        snap = self.snapshot()
        shard, row = locate_ids(snap.manifest.shards, chunk_ids)
        if (shard < 0).any():
            missing = np.asarray(chunk_ids, dtype=np.int64).reshape(-1)[shard < 0]
            raise UserError(f"chunk id(s) {', '.join(map(str, missing[:5].tolist()))} are not in {self.root}")
        out = np.zeros((len(row), int(snap.manifest.embedder["dim"])), dtype=np.float32)
        for index in np.unique(shard).tolist():
            sel = np.flatnonzero(shard == index)
            sel = sel[np.argsort(row[sel], kind="stable")]
            out[sel] = snap.shards[index].dense_layer().vectors(row[sel])
        return out

    def row_masks(self, where: str | None = None) -> list[np.ndarray | None]:
        """Per shard, the rows a search may return: live (not tombstoned) and matching ``where``.

        None stands for "every row"."""
        return self.snapshot().row_masks(where)

    def sql(self) -> duckdb.DuckDBPyConnection:
        """A read-only DuckDB connection with the views ``chunks``, ``docs`` and ``shards``."""
        return self.snapshot().sql()

    def _merged_dense(self, snap: Snapshot, vectors: np.ndarray, k: int,
                      masks: list[np.ndarray | None]) -> list[list[tuple[int, int, float]]]:
        """The exact dense top-``k`` per query vector as (shard, row, score), across all shards."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        dim = int(snap.manifest.embedder["dim"])
        if vectors.shape[1] != dim:
            raise UserError(f"query vectors have dim {vectors.shape[1]}; the datastore has {dim}")
        per_shard = [shard.search_dense(vectors, k, mask, self.rescore_multiplier)
                     for shard, mask in zip(snap.shards, masks)]
        return [merge_top_k([ShardResult(i, scores[q], rows[q]) for i, (scores, rows) in enumerate(per_shard)], k)
                for q in range(len(vectors))]

    def _bm25_top_k(self, query: str, k: int, masks: list[np.ndarray | None]) -> list[tuple[int, int, float]]:
        return self._bm25_ranked(self.snapshot(), query, k, masks)

    @staticmethod
    def _bm25_ranked(snap: Snapshot, query: str, k: int,
                     masks: list[np.ndarray | None]) -> list[tuple[int, int, float]]:
        idf = snap.global_idf()
        counts = Counter(t for t in snap.bm25_params.tokenize(query) if t in idf)
        if not counts:
            return []
        args = (snap.bm25_params, snap.bm25_stats)
        results, kth = [], KthBest(k)
        for i, (shard, mask) in enumerate(zip(snap.shards, masks)):  # each shard prunes below the k-th so far
            scores, rows = shard.search_bm25(args, idf, counts, k, mask, kth.floor)
            results.append(ShardResult(i, scores, rows))
            kth.add(scores)
        return merge_top_k(results, k)

    def bm25_scores(self, query: str) -> np.ndarray:
        """BM25 score of every chunk in datastore order (0 where no query term occurs and at
        tombstoned chunks)."""
        snap = self.snapshot()
        idf = snap.global_idf()
        counts = Counter(t for t in snap.bm25_params.tokenize(query) if t in idf)
        out = np.zeros(snap.manifest.num_chunks, dtype=np.float64)
        for shard in snap.shards:
            rows, scores = shard.bm25(snap.bm25_params, snap.bm25_stats).score(idf, counts)
            live = shard.live_mask()
            if live is not None:
                rows, scores = rows[live[rows]], scores[live[rows]]
            out[shard.info.chunk_id_start + rows] = scores
        return out

    # -- rows -------------------------------------------------------------------------------

    def _connection(self) -> duckdb.DuckDBPyConnection:
        """A cursor of the one in-memory DuckDB connection of this datastore (a cursor per call, so
        threads never share one)."""
        with self._refresh_lock:
            if self._duckdb is None:
                self._duckdb = duckdb.connect()
        return self._duckdb.cursor()

    def get_chunks(self, chunk_ids: Sequence[int], include_deleted: bool = False) -> dict[int, dict[str, Any]]:
        """Chunk rows by global id (DuckDB over the shard Parquet files); tombstoned rows are left
        out unless ``include_deleted``."""
        snap = self.snapshot()
        ids = [int(i) for i in chunk_ids]
        if not include_deleted:
            ids = live_ids(snap.shards, ids)
        with self._connection() as con:
            return read_chunk_rows([s.chunks_path for s in snap.shards], ids, con)

    def statistics(self) -> dict[str, Any]:
        """Chunk, document and size statistics of the live (not tombstoned) chunks, computed by
        DuckDB from the Parquet files."""
        snap = self.snapshot()
        deleted = deleted_chunk_ids(self.root, snap.manifest) if snap.manifest.tombstones else None
        return chunk_statistics([s.chunks_path for s in snap.shards], exclude_ids=deleted)


def _metadata(record: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a row-store record (stored as a JSON string; a dict in older records)."""
    value = record.get("metadata") or {}
    if value == "{}":  # most rows: no second JSON parse
        return {}
    return json.loads(value) if isinstance(value, str) else dict(value)


class SnapshotSearch:
    """``Datastore``'s ``SearchView``: ranked chunk ids and rows of one ``Snapshot``, so the ids a
    search ranks and the rows it reads come from the same generation."""

    def __init__(self, store: Datastore, snap: Snapshot):
        self.store, self.snap = store, snap
        self.starts = np.array([s.chunk_id_start for s in snap.manifest.shards], dtype=np.int64)

    def ranked_vectors(self, vectors: np.ndarray, k: int, where: str | None) -> list[Ranked]:
        merged = self.store._merged_dense(self.snap, vectors, k, self.snap.row_masks(where))
        return [self._ids(ranked) for ranked in merged]

    def ranked_bm25(self, queries: Sequence[str], k: int, where: str | None) -> list[Ranked]:
        masks = self.snap.row_masks(where)
        return [self._ids(Datastore._bm25_ranked(self.snap, q, k, masks)) for q in queries]

    def _ids(self, ranked: list[tuple[int, int, float]]) -> Ranked:
        return [(int(self.starts[shard]) + row, score) for shard, row, score in ranked]

    def fetch(self, ranked: Sequence[Ranked]) -> list[list[Hit]]:
        """Hits for (chunk id, score) lists: the rows read from the row store (checked against their
        CRC32s, one ``json.loads`` per shard and call), with their metadata."""
        ids = np.fromiter((c for r in ranked for c, _ in r), dtype=np.int64, count=sum(len(r) for r in ranked))
        which, rows = locate_ids(self.snap.manifest.shards, ids)
        if (which < 0).any():
            raise DatastoreError(f"chunk id {int(ids[which < 0][0])} is not in {self.store.root}")
        records = self._records(which, rows)
        names = [s.info.name for s in self.snap.shards]
        hits = iter([_hit(record, names[shard], score) for record, shard, (_, score)
                     in zip(records, which.tolist(), (pair for r in ranked for pair in r))])
        return [[next(hits) for _ in r] for r in ranked]

    def _records(self, which: np.ndarray, rows: np.ndarray) -> list[dict[str, Any]]:
        """The row-store records of (shard index, row) pairs, in their order."""
        shards = np.unique(which)
        if len(shards) == 1:
            return self.snap.shards[int(shards[0])].rows().records(rows)
        out: list[dict[str, Any]] = [{}] * len(rows)
        for shard in shards.tolist():
            at = np.flatnonzero(which == shard)
            for i, record in zip(at.tolist(), self.snap.shards[shard].rows().records(rows[at])):
                out[i] = record
        return out


def _hit(record: dict[str, Any], shard: str, score: float) -> Hit:
    return Hit(record["chunk_id"], record["doc_id"], record["start"], record["end"], score, shard, record["text"],
               record["source"], _metadata(record))
