"""Read-only SQL over a datastore: DuckDB views ``chunks``, ``docs`` and ``shards``.

``chunks`` holds the live rows; ``all_chunks`` adds tombstoned ones and a ``deleted`` column.

User SQL is sealed in two independent ways:

1. The connection has no path to the file system. The shard Parquet files are handed to DuckDB as
   Arrow datasets by this process before the connection is locked; DuckDB itself runs with
   ``enable_external_access=false``, no allowed directories, no temporary directory, no Python
   replacement scans and no extension loading, and its configuration is locked. So no statement
   (``COPY``, ``EXPLAIN ANALYZE COPY``, ``ATTACH``, ``INSTALL``/``LOAD``, ``read_*``, ``glob``,
   ``getenv``...) can read or write a file or change a setting, whatever the parser lets through.
2. The statement is checked with DuckDB's own parser: exactly one statement, of type SELECT, or an
   EXPLAIN [ANALYZE] whose explained statement (parsed again by DuckDB) is a SELECT. ``CHECKPOINT``,
   ``PRAGMA``, ``CALL``, ``SET``, ``CREATE`` and every other type are refused before they run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads

from datastores.errors import DatastoreError, UserError
from datastores.layout import CHUNKS_FILE
from datastores.manifest import Manifest

#: settings of every connection that runs user SQL (applied at connect, then locked)
SEALED_CONFIG = {
    "enable_external_access": False,
    "python_enable_replacements": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "temp_directory": "",
}
_EMPTY_CHUNKS = pa.schema([("chunk_id", pa.int64()), ("doc_id", pa.string()), ("source", pa.string()),
                           ("start", pa.int64()), ("end", pa.int64()), ("text", pa.string()),
                           ("metadata", pa.string())])


class SqlError(DatastoreError):
    """The SQL text is invalid or is not a single read-only statement."""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def open_sql(root, manifest: Manifest) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the datastore's views and no access to any file."""
    con = duckdb.connect(config=dict(SEALED_CONFIG))
    folder = root.resolve()
    paths = [str(folder / "shards" / s.name / CHUNKS_FILE) for s in manifest.shards]
    con.register("_chunk_files", pads.dataset(paths, format="parquet") if paths else _EMPTY_CHUNKS.empty_table())
    con.execute("CREATE VIEW chunks AS SELECT * FROM _chunk_files")
    _expose_metadata(con, declared_metadata_types(manifest))
    _hide_tombstoned(con, root, manifest)
    con.execute("CREATE VIEW docs AS SELECT doc_id, any_value(source) AS source, count(*) AS chunks, "
                "min(start) AS first_start, max(\"end\") AS last_end, sum(\"end\" - start) AS chunk_chars "
                "FROM chunks GROUP BY doc_id")
    con.register("_shard_table", pa.table({
        "name": pa.array([s.name for s in manifest.shards], pa.string()),
        "rows": pa.array([s.rows for s in manifest.shards], pa.int64()),
        "chunk_id_start": pa.array([s.chunk_id_start for s in manifest.shards], pa.int64()),
        "bytes": pa.array([sum(f.bytes for f in s.files.values()) for s in manifest.shards], pa.int64())}))
    con.execute("CREATE VIEW shards AS SELECT * FROM _shard_table")
    con.execute("SET lock_configuration=true")
    return con


#: metadata field types a build config may declare (``metadata_types: [year:integer]``) -> DuckDB type
METADATA_TYPES = {"integer": "BIGINT", "int": "BIGINT", "number": "DOUBLE", "float": "DOUBLE", "double": "DOUBLE",
                  "string": "VARCHAR", "text": "VARCHAR", "varchar": "VARCHAR", "boolean": "BOOLEAN",
                  "bool": "BOOLEAN", "date": "DATE", "timestamp": "TIMESTAMP"}


def parse_metadata_types(items: Sequence[str]) -> dict[str, str]:
    """``["year:integer", ...]`` -> ``{"year": "BIGINT"}``; a bad item raises ``ValueError`` naming it."""
    out = {}
    for item in items:
        key, sep, kind = str(item).rpartition(":")
        if not sep or not key or kind.strip().lower() not in METADATA_TYPES:
            raise UserError(f"metadata type {item!r} must be FIELD:TYPE with TYPE one of {', '.join(METADATA_TYPES)}")
        out[key.strip()] = METADATA_TYPES[kind.strip().lower()]
    return out


def json_kind(value: Any) -> str | None:
    """The JSON type of a metadata value as SQL would see it (None for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), "string")


@dataclass
class MetadataKinds:
    """The JSON types seen per metadata field while indexing, with the first document of each."""

    seen: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, doc_id: str, metadata: dict[str, Any]) -> None:
        for key, value in metadata.items():
            kind = json_kind(value)
            if kind is not None:
                self.seen.setdefault(key, {}).setdefault(kind, doc_id)

    def mixed(self, declared: Sequence[str] = ()) -> dict[str, dict[str, str]]:
        """Fields with more than one type that the config does not declare."""
        return {k: v for k, v in self.seen.items() if len(v) > 1 and k not in declared}


def mixed_type_warning(key: str, kinds: dict[str, str]) -> str:
    """One line naming a mixed-type field, its types (with a document of each) and the fix."""
    found = ", ".join(f"{kind} (document {doc!r})" for kind, doc in kinds.items())
    return (f"metadata field {key!r} has mixed types: {found}; SQL sees it as VARCHAR, so comparisons such as "
            f"{key} >= 10 fail. Declare its type: metadata_types: [{key}:integer] in the config "
            f"(rag index --metadata-type {key}:integer)")


def _expose_metadata(con: duckdb.DuckDBPyConnection, declared: dict[str, str] | None = None) -> None:
    """Add one typed column per key of the chunks' JSON ``metadata`` (types inferred by DuckDB's
    ``json_group_structure`` over all chunks; keys with mixed types become VARCHAR, unless
    ``declared`` gives their DuckDB type: then values are cast to it, NULL where they do not
    convert), so filters can say ``year >= 2020``. Keys named like a chunk column (in any case)
    stay in ``metadata`` only."""
    structure = con.execute("SELECT json_group_structure(json(metadata)) FROM chunks "
                            "WHERE metadata IS NOT NULL AND metadata NOT IN ('', '{}')").fetchone()[0]
    keys = json.loads(structure) if structure else None
    if not isinstance(keys, dict) or not keys:
        return
    keys = {k: (declared or {}).get(k, v) for k, v in keys.items()}
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


def declared_metadata_types(manifest: Manifest) -> dict[str, str]:
    """The metadata field types the datastore's build config declared (``metadata_types``)."""
    return parse_metadata_types(manifest.build.get("params", {}).get("metadata_types") or ())


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
    """Raise ``SqlError`` unless DuckDB parses ``query`` as exactly one SELECT statement, or one
    EXPLAIN [ANALYZE] of a SELECT statement."""
    statement = _single_statement(con, query)
    if statement.type == duckdb.StatementType.EXPLAIN:
        statement = _single_statement(con, _explained_text(query))
        if statement.type != duckdb.StatementType.SELECT:
            raise SqlError(f"only SELECT queries can be explained (got EXPLAIN {statement.type.name})")
    elif statement.type != duckdb.StatementType.SELECT:
        raise SqlError(f"only SELECT queries are allowed (got {statement.type.name})")


def _single_statement(con: duckdb.DuckDBPyConnection, query: str):
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as exc:
        raise SqlError(f"invalid SQL: {_first_line(exc)}") from exc
    if len(statements) != 1:
        raise SqlError(f"expected exactly one statement, got {len(statements)}")
    return statements[0]


def _explained_text(query: str) -> str:
    """The statement an EXPLAIN statement explains: the text after DuckDB's tokens ``EXPLAIN``,
    an optional ``ANALYZE`` and an optional parenthesised option list (comments skipped)."""
    starts = [pos for pos, kind in duckdb.tokenize(query) if kind != duckdb.token_type.comment]
    texts = [query[a:b].strip() for a, b in zip(starts, starts[1:] + [len(query)])]
    i = 1  # texts[0] is EXPLAIN: the parser said so
    if i < len(texts) and texts[i].upper().startswith("ANALYZE"):
        i += 1
    if i < len(texts) and texts[i].startswith("("):
        depth = 0
        while i < len(texts):
            depth += texts[i].count("(") - texts[i].count(")")
            i += 1
            if depth <= 0:
                break
    if i >= len(texts):
        raise SqlError("EXPLAIN needs a statement to explain")
    return query[starts[i]:]


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def run_sql(con: duckdb.DuckDBPyConnection, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of one read-only statement; anything else raises ``SqlError``."""
    check_read_only(con, query)
    try:
        result = con.execute(query)
        return [d[0] for d in result.description], result.fetchall()
    except duckdb.Error as exc:
        raise SqlError(f"query failed: {_first_line(exc)}") from exc
