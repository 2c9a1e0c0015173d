"""User SQL cannot write anything, anywhere, read outside the datastore's tables or change settings.

Every attack runs through each SQL entry (``rag datastore sql``'s ``run_sql``, a ``where=`` filter
of the Python API) against a copy of a real datastore, with the working directory in a temporary
folder; after each one the datastore's files are byte-identical, no file was created anywhere we
can see, and searching still works.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from datastores import Datastore
from datastores.sql import SqlError, check_read_only, open_sql, run_sql
from ragcli import main

SECRET = "s3cr3t-value-never-shown"


def _writes(target: str) -> dict[str, str]:
    return {
        "copy": f"COPY (SELECT 1 AS a) TO '{target}'",
        "copy-table": f"COPY chunks TO '{target}' (FORMAT csv)",
        "create-table": "CREATE TABLE t AS SELECT 1",
        "create-view": "CREATE VIEW v AS SELECT 1",
        "create-macro": "CREATE MACRO m(x) AS x",
        "create-secret": "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
        "insert": "INSERT INTO chunks VALUES (1)",
        "update": "UPDATE chunks SET text = 'x'",
        "delete": "DELETE FROM chunks",
        "drop": "DROP VIEW chunks",
        "alter": "ALTER VIEW chunks RENAME TO c2",
        "attach": f"ATTACH '{target}' AS other",
        "detach": "DETACH memory",
        "use": "USE memory",
        "install": "INSTALL httpfs",
        "load": "LOAD httpfs",
        "pragma": "PRAGMA enable_profiling",
        "pragma-set": f"PRAGMA profiling_output='{target}'",
        "set": "SET enable_external_access = true",
        "set-dirs": "SET allowed_directories = ['/']",
        "set-lock": "SET lock_configuration = false",
        "reset": "RESET threads",
        "call": "CALL pragma_database_size()",
        "checkpoint": "CHECKPOINT",
        "vacuum": "VACUUM",
        "analyze": "ANALYZE",
        "export": f"EXPORT DATABASE '{Path(target).parent}/export'",
        "import": f"IMPORT DATABASE '{Path(target).parent}'",
        "transaction": "BEGIN TRANSACTION",
        "cte-insert": "WITH x AS (SELECT 1) INSERT INTO chunks SELECT * FROM x",
        "cte-copy": f"WITH x AS (SELECT 1) COPY (SELECT * FROM x) TO '{target}'",
    }


def _reads(ds: Path, outside: Path) -> dict[str, str]:
    return {
        "read_csv": f"SELECT * FROM read_csv('{outside}')",
        "read_text": f"SELECT * FROM read_text('{outside}')",
        "read_blob": f"SELECT * FROM read_blob('{ds}/manifest.json')",
        "read_json": f"SELECT * FROM read_json('{ds}/manifest.json')",
        "read_parquet-own-file": f"SELECT * FROM read_parquet('{ds}/shards/shard-00000/chunks.parquet')",
        "replacement-scan": f"SELECT * FROM '{outside}'",
        "glob": "SELECT * FROM glob('/*')",
        "getenv": "SELECT getenv('TERARAG_TEST_SECRET')",
        "query-write": "SELECT * FROM query('CREATE TABLE q AS SELECT 1')",
        "python-variable": "SELECT * FROM SECRET",
    }


def _attacks(ds: Path, tmp: Path) -> dict[str, str]:
    outside = tmp / "outside.txt"
    attacks = {}
    for target in (str(ds / "manifest.json"), str(ds / "shards" / "shard-00000" / "rows.bin"),
                   str(tmp / "new.csv"), ".tmp/x.csv"):
        tag = Path(target).name
        for name, sql in _writes(target).items():
            attacks[f"{name}[{tag}]"] = sql
            attacks[f"explain-{name}[{tag}]"] = f"EXPLAIN {sql}"
            attacks[f"explain-analyze-{name}[{tag}]"] = f"EXPLAIN ANALYZE {sql}"
            attacks[f"explain-options-{name}[{tag}]"] = f"EXPLAIN (ANALYZE, FORMAT json) {sql}"
            attacks[f"multi-{name}[{tag}]"] = f"SELECT 1; {sql}"
            attacks[f"comment-{name}[{tag}]"] = f"/* SELECT */ -- SELECT\n{sql}"
            attacks[f"comment-semicolon-{name}[{tag}]"] = f"SELECT 1 /* ; */ ; {sql} -- ;"
    for name, sql in _reads(ds, outside).items():
        attacks[name] = sql
        attacks[f"explain-analyze-{name}"] = f"EXPLAIN ANALYZE {sql}"
    return attacks


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sealed(tmp_path_factory, small_datastore):
    tmp = tmp_path_factory.mktemp("sql_attacks")
    ds = tmp / "ds"
    shutil.copytree(small_datastore, ds)
    (tmp / "outside.txt").write_text(f"secret,{SECRET}\n")
    store = Datastore.open(ds)
    return tmp, ds, store, open_sql(ds, store.manifest)


def _attack_ids():
    fake = Path("/ds")
    return sorted(_attacks(fake, Path("/tmp")))


@pytest.mark.parametrize("attack", _attack_ids())
def test_every_attack_is_refused_and_changes_nothing(sealed, attack, monkeypatch):
    tmp, ds, store, con = sealed
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("TERARAG_TEST_SECRET", SECRET)
    sql = _attacks(ds, tmp)[attack]
    before, outside_before = _snapshot(ds), _snapshot(tmp)
    with pytest.raises(SqlError) as refused:
        run_sql(con, sql)
    assert SECRET not in str(refused.value)
    assert "\n" not in str(refused.value)
    assert _snapshot(ds) == before
    assert _snapshot(tmp) == outside_before
    assert not (tmp / ".tmp").exists()
    assert run_sql(con, "SELECT count(*) FROM chunks")[1][0][0] == store.manifest.num_live


@pytest.mark.parametrize("where", [
    "1=1); COPY (SELECT 1) TO 'x.csv'; SELECT (1",
    "1=1) UNION SELECT chunk_id FROM all_chunks WHERE (1=1",
    "chunk_id IN (SELECT length(content) FROM read_text('outside.txt'))",
    "getenv('TERARAG_TEST_SECRET') IS NOT NULL",
    "1=1\n) -- \n; CHECKPOINT; SELECT (1",
    "true) ORDER BY (1",
    "text = (SELECT * FROM query('SELECT 1'))::VARCHAR OR (1=1",
])
def test_where_filters_cannot_escape(sealed, where, monkeypatch):
    tmp, ds, store, _ = sealed
    monkeypatch.chdir(tmp)
    monkeypatch.setenv("TERARAG_TEST_SECRET", SECRET)
    before = _snapshot(tmp)
    with pytest.raises(SqlError) as refused:
        store.search("treaty", k=3, mode="bm25", where=where)
    assert SECRET not in str(refused.value)
    assert _snapshot(tmp) == before


def test_the_published_attack_leaves_the_datastore_searchable(sealed, monkeypatch):
    """The issue's reproduction: EXPLAIN ANALYZE COPY over manifest.json through the command line."""
    tmp, ds, store, _ = sealed
    monkeypatch.chdir(tmp)
    attack = f"EXPLAIN ANALYZE COPY (SELECT '{{}}' AS a) TO '{ds}/manifest.json' (FORMAT csv, HEADER false, QUOTE '')"
    result = CliRunner().invoke(main, ["datastore", "sql", str(ds), attack])
    assert result.exit_code == 1 and "only SELECT" in result.output
    searched = CliRunner().invoke(main, ["search", str(ds), "treaty", "--mode", "bm25", "--json"])
    assert searched.exit_code == 0, searched.output


@pytest.mark.parametrize("query", [
    "SELECT count(*) FROM chunks",
    "WITH c AS (SELECT doc_id FROM chunks) SELECT count(DISTINCT doc_id) FROM c",
    "EXPLAIN SELECT * FROM chunks WHERE start > 10",
    "EXPLAIN ANALYZE SELECT count(*) FROM docs",
    "/* a comment */ SELECT name FROM shards -- trailing",
    "SELECT count(*) FROM all_chunks WHERE deleted",
])
def test_reading_the_datastore_tables_still_works(sealed, query):
    _, _, _, con = sealed
    check_read_only(con, query)
    columns, rows = run_sql(con, query)
    assert columns and rows
