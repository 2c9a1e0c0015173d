"""Row filters: a SQL WHERE expression over the chunk table, turned into chunk ids (per-shard row
masks: ``datastores.locate.masks_of_ids``)."""

from __future__ import annotations

import json

import duckdb
import numpy as np

from datastores.sql import SqlError, check_read_only


def where_chunk_ids(con: duckdb.DuckDBPyConnection, where: str) -> np.ndarray:
    """Global ids of the chunks that satisfy ``where`` (a filter expression, nothing else).

    ``con`` is a read-only connection from ``datastores.sql.open_sql`` with a ``chunks`` view.
    """
    if not where or not where.strip():
        raise SqlError("the filter expression is empty")
    query = f"SELECT chunk_id FROM chunks WHERE ({where}\n)"
    check_read_only(con, query)
    _check_is_filter(con, query, where)
    try:
        return np.asarray(con.execute(query).fetchnumpy()["chunk_id"], dtype=np.int64)
    except duckdb.Error as exc:
        raise SqlError(f"invalid filter {where!r}: {exc}") from exc


def _check_is_filter(con: duckdb.DuckDBPyConnection, query: str, where: str) -> None:
    """Refuse text that closes the WHERE clause and adds a UNION, ORDER BY, GROUP BY and so on."""
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])
        node = tree["statements"][0]["node"]
    except (duckdb.Error, KeyError, IndexError, TypeError, json.JSONDecodeError) as exc:
        raise SqlError(f"invalid filter {where!r}: {exc}") from exc
    plain = (node.get("type") == "SELECT_NODE" and not node.get("modifiers") and not node.get("group_expressions")
             and node.get("having") is None and not node.get("cte_map", {}).get("map")
             and node.get("from_table", {}).get("table_name") == "chunks" and len(node.get("select_list", [])) == 1)
    if not plain:
        raise SqlError(f"{where!r} is not a filter expression over chunk columns")


def combine_masks(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Rows allowed by both masks (None means every row)."""
    if a is None:
        return b
    if b is None:
        return a
    return a & b
