"""Constant-time access to a shard's chunk rows for filling in search hits.

``rows.bin`` holds one compact JSON record per chunk (the same fields as ``chunks.parquet``),
``row_offsets.npy`` the byte offset of each record (rows + 1 entries) and ``row_crc.npy`` the
CRC32 of each record (uint32 [rows]). They are memory-mapped: a hit costs one slice and one CRC32,
and the hits of a search are decoded by one ``json.loads`` of their records joined into one JSON
array, where reading Parquet would decompress whole row groups. Every record a
search returns is checked against its CRC32, so an altered row is an error, never served text.
Row stores written before checksums existed have no ``row_crc.npy`` and are read unchecked.
The Parquet table stays the table of record for SQL and statistics.
"""

from __future__ import annotations

import json
import mmap
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datastores.errors import DatastoreError
from datastores.records import Chunk

ROWS_FILE = "rows.bin"
ROW_OFFSETS_FILE = "row_offsets.npy"
ROW_CRC_FILE = "row_crc.npy"
ROW_STORE_FILES = (ROWS_FILE, ROW_OFFSETS_FILE, ROW_CRC_FILE)


def _record_bytes(chunk: Chunk, chunk_id: int) -> bytes:
    record = {"chunk_id": chunk_id, "doc_id": chunk.doc_id, "source": chunk.source, "start": chunk.start,
              "end": chunk.end, "text": chunk.text,
              "metadata": json.dumps(chunk.metadata, sort_keys=True, ensure_ascii=False)}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def write_row_store(folder: Path, chunks: Sequence[Chunk], first_chunk_id: int) -> None:
    """Write the records of ``chunks`` (ids from ``first_chunk_id``), their offsets and CRC32s."""
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    crcs = np.zeros(len(chunks), dtype=np.uint32)
    with open(folder / ROWS_FILE, "wb") as handle:
        for i, chunk in enumerate(chunks):
            data = _record_bytes(chunk, first_chunk_id + i)
            handle.write(data)
            offsets[i + 1] = offsets[i] + len(data)
            crcs[i] = zlib.crc32(data)
    np.save(folder / ROW_OFFSETS_FILE, offsets)
    np.save(folder / ROW_CRC_FILE, crcs)


def row_checksums(data: bytes | mmap.mmap, offsets: np.ndarray) -> np.ndarray:
    """CRC32 of every record of a row store's ``data`` (uint32 [rows])."""
    bounds = np.asarray(offsets, dtype=np.int64).tolist()
    return np.fromiter((zlib.crc32(data[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])),
                       dtype=np.uint32, count=max(len(bounds) - 1, 0))


def _load_npy(path: Path) -> np.ndarray:
    """Memory-map ``path`` as a plain ndarray view (indexing an ``np.memmap`` costs a Python call)."""
    try:
        return np.load(path, mmap_mode="r").view(np.ndarray)
    except (OSError, ValueError) as exc:
        raise DatastoreError(f"{path} is unreadable: {exc}") from exc


class RowStore:
    """Memory-mapped, checksummed records of one shard."""

    def __init__(self, folder: Path, rows: int):
        self.path = folder / ROWS_FILE
        self.offsets = _load_npy(folder / ROW_OFFSETS_FILE)
        try:
            with open(self.path, "rb") as handle:
                size = self.path.stat().st_size
                self.data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as exc:
            raise DatastoreError(f"{self.path} is unreadable: {exc}") from exc
        if len(self.offsets) != rows + 1 or int(self.offsets[-1]) != size:
            raise DatastoreError(f"{self.path} does not match {ROW_OFFSETS_FILE} (truncated or altered)")
        crc_path = folder / ROW_CRC_FILE
        #: CRC32 per row, or None for a row store written before checksums existed
        self.crc = _load_npy(crc_path) if crc_path.is_file() else None
        if self.crc is not None and len(self.crc) != rows:
            raise DatastoreError(f"{crc_path} holds {len(self.crc)} checksums for {rows} rows (truncated or altered)")

    def records(self, rows: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """The records of ``rows`` (0-based within the shard), in that order, each checked against
        its CRC32 and all decoded by one ``json.loads``."""
        rows = np.asarray(rows, dtype=np.int64)
        data = self.data
        pieces = [data[lo:hi] for lo, hi in zip(self.offsets[rows].tolist(), self.offsets[rows + 1].tolist())]
        if self.crc is not None:
            crcs = np.fromiter(map(zlib.crc32, pieces), dtype=np.uint32, count=len(pieces))
            bad = np.flatnonzero(crcs != self.crc[rows])
            if len(bad):
                raise DatastoreError(f"{self.path}: row {int(rows[bad[0]])} does not match its checksum in "
                                     f"{ROW_CRC_FILE} (altered or corrupt; run rag datastore verify)")
        try:
            records = json.loads((b"[" + b",".join(pieces) + b"]").decode("utf-8"))  # str: no encoding guess
        except (UnicodeDecodeError, json.JSONDecodeError):
            records = None
        if records is None or len(records) != len(pieces):
            self._raise_corrupt(rows.tolist(), pieces)
        return records

    def _raise_corrupt(self, rows: list[int], pieces: list[bytes]) -> None:
        """Name the first of ``rows`` whose record is not one JSON value (``records`` found one)."""
        for row, piece in zip(rows, pieces):
            try:
                json.loads(piece.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DatastoreError(f"{self.path}: row {row} is corrupt: {exc}") from exc
        raise DatastoreError(f"{self.path}: rows {rows} do not decode to one record each (corrupt)")
