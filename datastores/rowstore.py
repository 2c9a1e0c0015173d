"""Constant-time access to a shard's chunk rows for filling in search hits.

``rows.bin`` holds one compact JSON record per chunk (the same fields as ``chunks.parquet``),
``row_offsets.npy`` the byte offset of each record (rows + 1 entries). Both are memory-mapped:
a hit costs one slice and one ``json.loads``, where reading Parquet would decompress whole row
groups. The Parquet table stays the table of record for SQL and statistics.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datastores.errors import DatastoreError
from datastores.records import Chunk

ROWS_FILE = "rows.bin"
ROW_OFFSETS_FILE = "row_offsets.npy"


def write_row_store(folder: Path, chunks: Sequence[Chunk], first_chunk_id: int) -> None:
    """Write the records of ``chunks`` (ids from ``first_chunk_id``) and their offsets."""
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    with open(folder / ROWS_FILE, "wb") as handle:
        for i, c in enumerate(chunks):
            record = {"chunk_id": first_chunk_id + i, "doc_id": c.doc_id, "source": c.source, "start": c.start,
                      "end": c.end, "text": c.text,
                      "metadata": json.dumps(c.metadata, sort_keys=True, ensure_ascii=False)}
            data = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            handle.write(data)
            offsets[i + 1] = offsets[i] + len(data)
    np.save(folder / ROW_OFFSETS_FILE, offsets)


class RowStore:
    """Memory-mapped records of one shard."""

    def __init__(self, folder: Path, rows: int):
        path = folder / ROWS_FILE
        try:
            self.offsets = np.load(folder / ROW_OFFSETS_FILE, mmap_mode="r")
            with open(path, "rb") as handle:
                size = path.stat().st_size
                self.data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except (OSError, ValueError) as exc:
            raise DatastoreError(f"row store in {folder} is unreadable: {exc}") from exc
        if len(self.offsets) != rows + 1 or int(self.offsets[-1]) != size:
            raise DatastoreError(f"{path} does not match {ROW_OFFSETS_FILE} (truncated or altered)")

    def get(self, row: int) -> dict[str, Any]:
        """The record of ``row`` (0-based within the shard)."""
        lo, hi = int(self.offsets[row]), int(self.offsets[row + 1])
        try:
            return json.loads(self.data[lo:hi])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatastoreError(f"row {row} of the row store is corrupt: {exc}") from exc
