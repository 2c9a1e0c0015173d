"""Writing a new datastore from selected rows of existing ones, without re-embedding.

Used by ``compact`` (drop tombstoned rows), ``subsample`` and ``merge``. Each source shard with
at least one selected row becomes one output shard:

- every row kept, same first chunk id: the shard's files are hard-linked (copied across devices);
- every row kept, new first chunk id: only the chunk table and row store (which carry chunk ids)
  are rewritten, every index file is hard-linked;
- some rows dropped: the kept rows and their stored vectors go through ``DatastoreWriter``'s own
  shard writer, so every index type it writes is rebuilt the same way as in a build.

Global BM25 statistics are recomputed by the writer from the output shards' term tables, and the
manifest is committed last, so a killed run leaves a directory that reads as an unfinished build
of that operation; running it again with ``overwrite`` replaces it. The output is written under
its writer lock (``datastores.lock``).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import faiss
import numpy as np
import pyarrow.parquet as pq

from datastores.bm25 import Bm25Params
from datastores.errors import DatastoreError, UserError
from datastores.layout import (
    CHUNKS_FILE,
    DENSE_INDEX_FILE,
    SHARD_INFO,
    DatastoreLayout,
    atomic_directory,
    atomic_write_json,
    sha256_file,
    shard_name,
)
from datastores.chunks import write_chunk_table
from datastores.dense import CODES_FILE, DenseSpec, open_faiss_index, stored_vectors, training_from_manifest
from datastores.lock import DatastoreLock, writer_lock
from datastores.manifest import FileInfo, Manifest, ShardInfo, write_manifest
from datastores.ops.tombstones import Operation
from datastores.records import Chunk
from datastores.rowstore import ROW_STORE_FILES, write_row_store
from datastores.writer import DatastoreWriter, check_output

ID_FILES = (CHUNKS_FILE, *ROW_STORE_FILES, SHARD_INFO)  # rows.bin records (and their CRC32s) hold chunk ids


@dataclass(frozen=True)
class SourceShard:
    """Rows of one stored shard to carry over: ``keep`` is a boolean mask, None for every row."""

    root: Path
    info: ShardInfo
    keep: np.ndarray | None = None
    #: put before every document id of this shard (merge --prefix); "" leaves them as they are
    doc_prefix: str = ""

    @property
    def folder(self) -> Path:
        return DatastoreLayout(self.root).shard(self.info.name)

    @property
    def kept(self) -> int:
        return self.info.rows if self.keep is None else int(np.count_nonzero(self.keep))


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target``; copy when a link is impossible (another device)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def read_shard_chunks(folder: Path, keep: np.ndarray | None, doc_prefix: str = "") -> list[Chunk]:
    """The (kept) rows of a shard's chunk table as ``Chunk`` records (document ids prefixed)."""
    table = pq.read_table(folder / CHUNKS_FILE).to_pylist()
    rows = table if keep is None else [r for r, k in zip(table, keep) if k]
    return [Chunk(doc_prefix + r["doc_id"], r["start"], r["end"], r["text"], r["source"] or "",
                  json.loads(r["metadata"]) if r["metadata"] else {}) for r in rows]


def _sign_codes(folder: Path, spec: DenseSpec, index: faiss.IndexBinary) -> np.ndarray:
    """The shard's stored ``ubinary`` sign codes [rows, dim/8] (plane 0 of multi-bit codes)."""
    if spec.bits > 1:
        return np.asarray(np.load(folder / CODES_FILE, mmap_mode="r")[:, 0])
    if spec.ivf:  # reconstruct needs the IVF direct map
        index.make_direct_map()
    return index.reconstruct_n(0, index.ntotal)


def shard_vectors(folder: Path, dim: int, dense_index: dict[str, Any] | None = None) -> np.ndarray:
    """The shard's float32 vectors: exact from a flat FAISS index, else the best approximation its
    rescoring layer holds (``datastores.dense.stored_vectors``: float16, dequantized int8, multi-bit).

    For binary indexes each value is moved, within its int8 level, to the side of zero its stored
    sign bit records, so that the rewritten shard has the same sign codes (and int8 codes) as the
    source and searches it the same way."""
    spec = DenseSpec.coerce(dense_index or "float-flat")
    index = open_faiss_index(folder / DENSE_INDEX_FILE)
    if isinstance(index, faiss.IndexFlat) and index.d == dim:
        return index.reconstruct_n(0, index.ntotal)
    try:
        vectors = stored_vectors(folder, spec, training_from_manifest(dense_index or {}), dim)
    except DatastoreError as exc:
        raise DatastoreError(f"{exc}; its rows cannot be rewritten without re-embedding") from exc
    if spec.binary:
        positive = np.unpackbits(_sign_codes(folder, spec, index), axis=1, count=dim).astype(bool)
        tiny = np.finfo(np.float32).tiny
        vectors = np.where(positive, np.maximum(vectors, tiny), np.minimum(vectors, 0.0)).astype(np.float32)
    return vectors


def _shard_record(folder: Path) -> dict[str, Any]:
    return json.loads((folder / SHARD_INFO).read_text(encoding="utf-8"))


def _link_shard(source: SourceShard, writer: DatastoreWriter, index: int, first_chunk_id: int) -> ShardInfo:
    """Carry a fully kept shard over by hard links, rewriting only files that hold chunk ids."""
    writer.check_lock()
    name = shard_name(index)
    record = _shard_record(source.folder)
    same_ids = first_chunk_id == source.info.chunk_id_start and not source.doc_prefix
    with atomic_directory(writer.layout.shard(name)) as tmp:
        files = dict(source.info.files)
        for rel in source.info.files:
            if same_ids or rel not in ID_FILES:
                link_or_copy(source.folder / rel, tmp / rel)
        if not same_ids:
            chunks = read_shard_chunks(source.folder, None, source.doc_prefix)
            write_chunk_table(tmp / CHUNKS_FILE, chunks, first_chunk_id)
            write_row_store(tmp, chunks, first_chunk_id)
            for rel in (CHUNKS_FILE, *ROW_STORE_FILES):
                files[rel] = FileInfo((tmp / rel).stat().st_size, sha256_file(tmp / rel))
        info = ShardInfo(name, source.info.rows, first_chunk_id, files)
        atomic_write_json(tmp / SHARD_INFO, {**record, "shard": asdict(info), "chunk_id_start": first_chunk_id,
                                             "fingerprint": writer.fingerprint})
    return info


def _writer(output: Path, base: Manifest, base_root: Path, params: dict[str, Any], mode: str,
            lock: DatastoreLock) -> DatastoreWriter:
    """A writer with the base datastore's embedder, chunker, BM25 and dense index settings; a
    trained dense index (IVF centroids, int8 range) reuses the base's training, so rewritten and
    linked shards agree."""
    embedder = {k: v for k, v in base.embedder.items() if k != "dim"}
    bm25 = Bm25Params.from_manifest(base.bm25)
    settings = (output, params, embedder, base.chunker, bm25, DenseSpec.coerce(base.dense_index or "float-flat"))
    if mode == "overwrite":
        writer = DatastoreWriter.overwrite(*settings, lock=lock)
    else:
        writer = DatastoreWriter.create(*settings, lock=lock, resumable=False)
    if writer.needs_dense_training():
        writer.reuse_dense_training(base.dense_index, base_root)
    return writer


class _Packer:
    """Rows waiting to fill output shards of ``shard_size`` rows (re-packing), written in order."""

    def __init__(self, writer: DatastoreWriter, shard_size: int):
        self.writer = writer
        self.shard_size = shard_size
        self.chunks: list[Chunk] = []
        self.vectors: list[np.ndarray] = []
        self.next_id = 0

    @property
    def empty(self) -> bool:
        return not self.chunks

    def add(self, chunks: list[Chunk], vectors: np.ndarray) -> None:
        if self.shard_size < 1:
            raise UserError(f"shard size must be at least 1 (got {self.shard_size})")
        self.chunks.extend(chunks)
        self.vectors.append(vectors)
        if len(self.chunks) >= self.shard_size:
            self.flush(whole_only=True)

    def flush(self, whole_only: bool = False) -> None:
        """Write full shards (and, unless ``whole_only``, the remainder as a last shorter one)."""
        if not self.chunks:
            return
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, 0), np.float32)
        done = 0
        while len(self.chunks) - done >= self.shard_size or (not whole_only and done < len(self.chunks)):
            size = min(self.shard_size, len(self.chunks) - done)
            self.writer.add_shard(self.chunks[done:done + size], vectors[done:done + size], self.next_id)
            self.next_id += size
            done += size
        self.chunks, self.vectors = self.chunks[done:], [vectors[done:]] if done < len(vectors) else []


def _write_shards(writer: DatastoreWriter, sources: Sequence[SourceShard], dim: int, dense_index: dict[str, Any],
                  progress: Callable[[int], Any] | None, shard_size: int | None = None) -> set[str]:
    """Write the kept rows of every source shard: one output shard per source, or, with
    ``shard_size``, re-packed into shards of that many rows (fully kept shards of that size are
    still hard-linked when they start a shard). Returns the document ids kept."""
    packer = _Packer(writer, shard_size or 0)
    doc_ids: set[str] = set()
    for source in sources:
        kept = source.kept
        if kept == 0:
            continue
        whole = source.keep is None or kept == source.info.rows
        if whole and packer.empty and (shard_size is None or kept == shard_size):
            index = len(writer.shards)
            writer.record_shard(_link_shard(SourceShard(source.root, source.info, None, source.doc_prefix), writer,
                                            index, packer.next_id))
            packer.next_id += kept
            doc_ids.update(source.doc_prefix + d for d in
                           pq.read_table(source.folder / CHUNKS_FILE, columns=["doc_id"]).column(0).to_pylist())
        else:
            chunks = read_shard_chunks(source.folder, source.keep, source.doc_prefix)
            vectors = shard_vectors(source.folder, dim, dense_index)
            vectors = vectors if source.keep is None else vectors[source.keep]
            doc_ids.update(c.doc_id for c in chunks)
            if shard_size is None:
                writer.add_shard(chunks, vectors, packer.next_id)
                packer.next_id += kept
            else:
                packer.add(chunks, vectors)
        if progress is not None:
            progress(kept)
    packer.flush()
    return doc_ids


def configured_shard_size(manifest: Manifest) -> int:
    """The shard size a datastore was built (or last rewritten) with: its build parameter, else
    its largest shard."""
    size = manifest.build.get("params", {}).get("shard_size")
    return int(size) if size else max((s.rows for s in manifest.shards), default=1)


def write_selection(output: str | Path, base: Manifest, sources: Sequence[SourceShard], operation: Operation,
                    lineage: Sequence[dict[str, Any]] = (), progress: Callable[[int], Any] | None = None, *,
                    overwrite: bool = False, lock: DatastoreLock | None = None,
                    shard_size: int | None = None) -> Manifest:
    """Write the selected rows of ``sources`` (in order, ids renumbered from 0) as a new datastore
    with ``base``'s settings (the manifest of ``sources[0].root``), holding ``output``'s writer lock
    (``lock`` if the caller holds it). With ``shard_size`` the rows are re-packed into shards of
    that many rows (recorded as the output's ``shard_size``). ``overwrite`` replaces a datastore or
    a killed run's partial output there; folders holding anything else are refused."""
    if not any(source.kept for source in sources):
        raise DatastoreError("the selection is empty: no chunk would be left in the new datastore")
    output = Path(output)
    if output.resolve() in {Path(s.root).resolve() for s in sources}:
        raise DatastoreError(f"{output} is one of the datastores read; choose another output folder")
    mode = "overwrite" if overwrite else "create"
    check_output(output, mode, resumable=False)
    with writer_lock(output, operation.operation, create=True, held=lock) as held:
        declared = base.build.get("params", {}).get("metadata_types")
        params = {"operation": operation.operation, **operation.parameters,
                  "shard_size": shard_size or configured_shard_size(base),
                  **({"metadata_types": declared} if declared else {})}
        writer = _writer(output, base, sources[0].root, params, mode, held)
        doc_ids = _write_shards(writer, sources, int(base.embedder["dim"]), base.dense_index, progress, shard_size)
        manifest = writer.finish({"documents": len(doc_ids), "derived": operation.operation},
                                 int(base.embedder["dim"]))
        manifest.lineage = [*lineage]
        operation.counts = {**operation.counts, "chunks": manifest.num_chunks}
        manifest.lineage.append(operation.record())
        write_manifest(writer.layout, manifest)
    return manifest


def exchange_paths(a: Path, b: Path) -> None:
    """Swap two directories: atomically with Linux ``renameat2(RENAME_EXCHANGE)``, else by renames."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
    spare = a.with_name(a.name + ".exchange")
    os.rename(a, spare)
    os.rename(b, a)
    os.rename(spare, b)
