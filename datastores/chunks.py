"""Chunk tables: one Parquet file per shard, read back with DuckDB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from datastores.errors import DatastoreError
from datastores.records import Chunk

# Small row groups let DuckDB skip most of a shard when it reads rows by id (chunk ids are sorted,
# so each row group's min/max statistics prune it).
ROW_GROUP_SIZE = 1024

CHUNK_SCHEMA = pa.schema(
    [
        ("chunk_id", pa.int64()),
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.string()),
        ("metadata", pa.string()),
    ]
)


def write_chunk_table(path: Path, chunks: Sequence[Chunk], first_chunk_id: int) -> None:
    """Write ``chunks`` with consecutive ids starting at ``first_chunk_id``."""
    table = pa.table(
        {
            "chunk_id": pa.array(range(first_chunk_id, first_chunk_id + len(chunks)), pa.int64()),
            "doc_id": [c.doc_id for c in chunks],
            "source": [c.source for c in chunks],
            "start": pa.array([c.start for c in chunks], pa.int64()),
            "end": pa.array([c.end for c in chunks], pa.int64()),
            "text": [c.text for c in chunks],
            "metadata": [json.dumps(c.metadata, sort_keys=True, ensure_ascii=False) for c in chunks],
        },
        schema=CHUNK_SCHEMA,
    )
    pq.write_table(table, path, compression="zstd", row_group_size=ROW_GROUP_SIZE, write_statistics=True)


def _sql_path_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _run(query: str, what: str, con: duckdb.DuckDBPyConnection | None = None,
         params: Sequence[Any] | None = None) -> list[tuple]:
    """Run a read-only DuckDB query (on ``con`` or a new in-memory connection)."""
    try:
        if con is not None:
            return con.execute(query, params).fetchall()
        with duckdb.connect() as fresh:
            return fresh.execute(query, params).fetchall()
    except duckdb.Error as exc:
        raise DatastoreError(f"cannot read {what}: {exc}") from exc


def read_chunk_rows(paths: Sequence[Path], chunk_ids: Sequence[int],
                    con: duckdb.DuckDBPyConnection | None = None) -> dict[int, dict[str, Any]]:
    """Rows for ``chunk_ids`` from the given Parquet files, keyed by chunk id.

    Pass a long-lived ``con`` when reading often: opening a DuckDB connection costs milliseconds.
    """
    if not chunk_ids:
        return {}
    query = (
        "SELECT chunk_id, doc_id, source, start, \"end\", text, metadata "
        f"FROM read_parquet({_sql_path_list(paths)}) WHERE chunk_id = ANY(?)"
    )
    rows = _run(query, f"chunk rows from {', '.join(map(str, paths))}", con, [[int(i) for i in chunk_ids]])
    columns = ("chunk_id", "doc_id", "source", "start", "end", "text", "metadata")
    return {row[0]: dict(zip(columns, row)) for row in rows}


def chunk_statistics(paths: Sequence[Path], exclude_ids: Sequence[int] | None = None) -> dict[str, Any]:
    """Corpus statistics computed by DuckDB straight from the chunk Parquet files, leaving out
    the chunks in ``exclude_ids`` (tombstoned ones)."""
    if not paths:
        return {"chunks": 0, "documents": 0, "sources": 0, "characters": 0,
                "mean_chunk_chars": 0.0, "max_chunk_chars": 0}
    query = (
        "SELECT count(*), count(DISTINCT doc_id), count(DISTINCT source), "
        "coalesce(sum(\"end\" - start), 0), coalesce(avg(\"end\" - start), 0), coalesce(max(\"end\" - start), 0) "
        f"FROM read_parquet({_sql_path_list(paths)})"
    )
    params = None
    if exclude_ids is not None and len(exclude_ids):
        query += " WHERE NOT (chunk_id = ANY(?))"
        params = [[int(i) for i in exclude_ids]]
    row = _run(query, "statistics of the chunk tables", params=params)[0]
    keys = ("chunks", "documents", "sources", "characters", "mean_chunk_chars", "max_chunk_chars")
    return dict(zip(keys, row))

