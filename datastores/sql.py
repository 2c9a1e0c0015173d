"""Read-only SQL over a datastore: DuckDB views ``chunks``, ``docs`` and ``shards``.

``chunks`` holds the live rows; ``all_chunks`` adds tombstoned ones and a ``deleted`` column.

The connection can read only files inside the datastore directory, only one SELECT (or EXPLAIN)
statement is accepted per call, and its configuration is locked, so a query cannot write files,
create tables or read elsewhere.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pyarrow as pa

from datastores.errors import DatastoreError
from datastores.layout import CHUNKS_FILE
from datastores.manifest import Manifest

READ_ONLY_STATEMENTS = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)


class SqlError(DatastoreError):
    """The SQL text is invalid or is not a single read-only statement."""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def open_sql(root, manifest: Manifest) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the datastore's views, confined to its directory."""
    con = duckdb.connect()
    folder = str(root.resolve())
    con.execute(f"SET allowed_directories=[{_quote(folder + '/')}]")
    con.execute("SET enable_external_access=false")
    paths = ", ".join(_quote(f"{folder}/shards/{s.name}/{CHUNKS_FILE}") for s in manifest.shards)
    con.execute(f"CREATE VIEW chunks AS SELECT * FROM read_parquet([{paths}])" if paths else
                "CREATE VIEW chunks AS SELECT NULL::BIGINT AS chunk_id, NULL::VARCHAR AS doc_id, "
                "NULL::VARCHAR AS source, NULL::BIGINT AS start, NULL::BIGINT AS \"end\", NULL::VARCHAR AS text, "
                "NULL::VARCHAR AS metadata WHERE false")
    _expose_metadata(con)
    _hide_tombstoned(con, root, manifest)
    con.execute("CREATE VIEW docs AS SELECT doc_id, any_value(source) AS source, count(*) AS chunks, "
                "min(start) AS first_start, max(\"end\") AS last_end, sum(\"end\" - start) AS chunk_chars "
                "FROM chunks GROUP BY doc_id")
    rows = ", ".join(f"({_quote(s.name)}, {s.rows}, {s.chunk_id_start}, {sum(f.bytes for f in s.files.values())})"
                     for s in manifest.shards)
    con.execute("CREATE VIEW shards AS SELECT * FROM (VALUES " + (rows or "(NULL, NULL, NULL, NULL)") +
                ") AS t(name, rows, chunk_id_start, bytes)" + ("" if rows else " WHERE false"))
    con.execute("SET lock_configuration=true")
    return con


def _expose_metadata(con: duckdb.DuckDBPyConnection) -> None:
    """Add one typed column per key of the chunks' JSON ``metadata`` (types inferred by DuckDB's
    ``json_group_structure`` over all chunks; keys with mixed types become VARCHAR), so filters
    can say ``year >= 2020``. Keys named like a chunk column (in any case) stay in ``metadata`` only."""
    structure = con.execute("SELECT json_group_structure(json(metadata)) FROM chunks "
                            "WHERE metadata IS NOT NULL AND metadata NOT IN ('', '{}')").fetchone()[0]
    keys = json.loads(structure) if structure else None
    if not isinstance(keys, dict) or not keys:
        return
    taken = {d[0].lower() for d in con.execute("SELECT * FROM chunks LIMIT 0").description} | {"__meta"}
    columns = []
    for key in keys:
        if key.lower() not in taken:
            taken.add(key.lower())
            columns.append(f"__meta.{_ident(key)} AS {_ident(key)}")
    if not columns:
        return
    typed = _quote(json.dumps(keys).replace('"JSON"', '"VARCHAR"'))
    con.execute("ALTER VIEW chunks RENAME TO _chunks_with_json")
    con.execute(f"CREATE VIEW chunks AS SELECT * EXCLUDE (__meta), {', '.join(columns)} FROM "
                f"(SELECT *, json_transform(metadata, {typed}) AS __meta FROM _chunks_with_json)")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _hide_tombstoned(con: duckdb.DuckDBPyConnection, root, manifest: Manifest) -> None:
    """``all_chunks`` = every stored row plus a boolean ``deleted`` column; ``chunks`` = the live
    rows only (tombstoned chunks are invisible to queries and filters)."""
    from datastores.ops.tombstones import deleted_chunk_ids

    con.execute("ALTER VIEW chunks RENAME TO _stored_chunks")
    con.register("_tombstoned", pa.table({"chunk_id": pa.array(deleted_chunk_ids(root, manifest), pa.int64())}))
    con.execute("CREATE VIEW all_chunks AS SELECT *, chunk_id IN (SELECT chunk_id FROM _tombstoned) AS deleted "
                "FROM _stored_chunks")
    con.execute("CREATE VIEW chunks AS SELECT * EXCLUDE (deleted) FROM all_chunks WHERE NOT deleted")


def check_read_only(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """Raise ``SqlError`` unless ``query`` parses as exactly one SELECT or EXPLAIN statement."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise SqlError(f"invalid SQL: {exc}") from exc
    if len(statements) != 1:
        raise SqlError(f"expected exactly one statement, got {len(statements)}")
    if statements[0].type not in READ_ONLY_STATEMENTS:
        raise SqlError(f"only SELECT queries are allowed (got {statements[0].type.name})")


def run_sql(con: duckdb.DuckDBPyConnection, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of one read-only statement; anything else raises ``SqlError``."""
    check_read_only(con, query)
    try:
        result = con.execute(query)
        return [d[0] for d in result.description], result.fetchall()
    except duckdb.Error as exc:
        raise SqlError(f"query failed: {exc}") from exc
