"""Read-only SQL over a datastore: DuckDB views ``chunks``, ``docs`` and ``shards``.

The connection can read only files inside the datastore directory, only one SELECT (or EXPLAIN)
statement is accepted per call, and its configuration is locked, so a query cannot write files,
create tables or read elsewhere.
"""

from __future__ import annotations

from typing import Any

import duckdb

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
    con.execute("CREATE VIEW docs AS SELECT doc_id, any_value(source) AS source, count(*) AS chunks, "
                "min(start) AS first_start, max(\"end\") AS last_end, sum(\"end\" - start) AS chunk_chars "
                "FROM chunks GROUP BY doc_id")
    rows = ", ".join(f"({_quote(s.name)}, {s.rows}, {s.chunk_id_start}, {sum(f.bytes for f in s.files.values())})"
                     for s in manifest.shards)
    con.execute("CREATE VIEW shards AS SELECT * FROM (VALUES " + (rows or "(NULL, NULL, NULL, NULL)") +
                ") AS t(name, rows, chunk_id_start, bytes)" + ("" if rows else " WHERE false"))
    con.execute("SET lock_configuration=true")
    return con


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
