"""`rag datastore verify | sql | export` on a real datastore."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datastores import Datastore
from datastores.sql import SqlError, open_sql, run_sql
from datastores.verify import verify_datastore
from ragcli import main


@pytest.fixture
def copy(tmp_path, small_datastore):
    target = tmp_path / "ds"
    shutil.copytree(small_datastore, target)
    return target


def test_verify_passes_on_an_intact_datastore(small_datastore):
    report = verify_datastore(small_datastore)
    assert report.ok, report.problems
    shards = Datastore.open(small_datastore).manifest.shards
    # every listed shard file and each shard.json, plus manifest.json and bm25_terms.parquet
    assert report.files == sum(len(s.files) + 1 for s in shards) + 2
    assert all("row_crc.npy" in s.files for s in shards) and not report.warnings


@pytest.mark.parametrize("name", ["chunks.parquet", "dense.faiss", "rows.bin", "bm25/indices.npy"])
def test_verify_names_an_altered_file(copy, name):
    path = copy / "shards" / "shard-00001" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    report = verify_datastore(copy)
    assert [p.path for p in report.problems if "sha256" in p.problem] == [str(path)]
    result = CliRunner().invoke(main, ["datastore", "verify", str(copy)])
    assert result.exit_code == 1
    assert name.split("/")[-1] in result.output


def test_verify_reports_truncation_extra_and_missing_files(copy):
    (copy / "shards" / "shard-00000" / "embeddings.f16.npy").write_bytes(b"\x93NUMPY")
    (copy / "shards" / "shard-00000" / "stray.bin").write_bytes(b"x")
    (copy / "shards" / "shard-00002" / "dense.faiss").unlink()
    problems = {p.path.split("shards/")[-1]: p.problem for p in verify_datastore(copy).problems}
    assert "truncated" in problems["shard-00000/embeddings.f16.npy"]
    assert "not listed" in problems["shard-00000/stray.bin"]
    assert problems["shard-00002/dense.faiss"] == "missing"


def test_sql_views_and_counts(small_datastore):
    ds = Datastore.open(small_datastore)
    con = open_sql(ds.root, ds.manifest)
    columns, rows = run_sql(con, "SELECT count(*) AS n, count(DISTINCT doc_id) FROM chunks")
    assert columns[0] == "n" and rows[0] == (len(ds), 4)
    _, docs = run_sql(con, "SELECT sum(chunks) FROM docs")
    assert docs[0][0] == len(ds)
    _, shards = run_sql(con, "SELECT name, rows FROM shards ORDER BY name")
    assert [(s.name, s.rows) for s in ds.manifest.shards] == shards


@pytest.mark.parametrize("query", [
    "COPY (SELECT 1) TO 'out.csv'",
    "CREATE TABLE t AS SELECT 1",
    "SELECT 1; SELECT 2",
    "SET lock_configuration=false",
    "ATTACH 'other.db'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELEC nonsense",
])
def test_sql_refuses_anything_but_reading_the_datastore(small_datastore, query):
    ds = Datastore.open(small_datastore)
    with pytest.raises(SqlError):
        run_sql(open_sql(ds.root, ds.manifest), query)


def test_sql_and_export_commands(tmp_path, small_datastore):
    runner = CliRunner()
    result = runner.invoke(main, ["datastore", "sql", str(small_datastore),
                                  "SELECT source, count(*) AS n FROM chunks GROUP BY 1 ORDER BY 1", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sum(r["n"] for r in rows) == len(Datastore.open(small_datastore))
    refused = runner.invoke(main, ["datastore", "sql", str(small_datastore), "DROP VIEW chunks"])
    assert refused.exit_code == 1 and "only SELECT" in refused.output
    for fmt in ("parquet", "jsonl"):
        out = tmp_path / fmt
        assert runner.invoke(main, ["datastore", "export", str(small_datastore), "-o", str(out),
                                    "--format", fmt]).exit_code == 0
    table = pq.read_table(tmp_path / "parquet" / "chunks.parquet")
    assert table.column("chunk_id").to_pylist() == list(range(len(Datastore.open(small_datastore))))
    lines = (tmp_path / "jsonl" / "chunks.jsonl").read_text().splitlines()
    assert json.loads(lines[3])["chunk_id"] == 3 and len(lines) == table.num_rows
