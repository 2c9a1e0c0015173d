"""``rag datastore``: inspect and audit a datastore (info, verify, sql, export)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.table import Table

from datastores import Datastore
from datastores.sql import run_sql
from datastores.verify import verify_datastore
from rag.cli.common import stdout, user_errors
from rag.cli.info import info_command


@click.group("datastore")
def datastore_group() -> None:
    """Inspect and audit datastores."""


datastore_group.add_command(info_command, "info")


@datastore_group.command("verify")
@click.argument("datastore", type=click.Path())
@user_errors
def verify_command(datastore: str) -> None:
    """Re-hash every file of DATASTORE and check row counts; exit 1 on any problem."""
    report = verify_datastore(datastore)
    if report.ok:
        stdout.print(f"ok: {report.files} files, {report.bytes / 1e6:.1f} MB verified in {report.seconds:.2f}s")
        return
    click.echo(f"{len(report.problems)} problem(s) in {datastore}:")
    for problem in report.problems:
        click.echo(f"  {os.path.relpath(problem.path, datastore)}: {problem.problem}")
    sys.exit(1)


@datastore_group.command("sql")
@click.argument("datastore", type=click.Path())
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print rows as a JSON list of objects.")
@click.option("--max-width", default=80, show_default=True, help="Truncate cells to this many characters.")
@user_errors
def sql_command(datastore: str, query: str, as_json: bool, max_width: int) -> None:
    """Run a read-only SQL QUERY over the views chunks, docs and shards of DATASTORE."""
    ds = Datastore.open(datastore)
    columns, rows = run_sql(ds.sql(), query)
    if as_json:
        click.echo(json.dumps([dict(zip(columns, r)) for r in rows], indent=2, default=str, ensure_ascii=False))
        return
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[(" ".join(str(v).split())[:max_width]) for v in row])
    stdout.print(table)
    stdout.print(f"{len(rows)} row(s)")


@datastore_group.command("export")
@click.argument("datastore", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl"]), default="parquet", show_default=True)
@user_errors
def export_command(datastore: str, output: str, fmt: str) -> None:
    """Write all chunk rows of DATASTORE, in chunk-id order, to OUTPUT/chunks.parquet or .jsonl."""
    import duckdb

    ds = Datastore.open(datastore)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"chunks.{fmt}"
    tmp = out / f".chunks.{fmt}.tmp"
    paths = ", ".join("'" + str(s.chunks_path).replace("'", "''") + "'" for s in ds.shards)
    option = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT json"
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT * FROM read_parquet([{paths}]) ORDER BY chunk_id) TO "
                    f"'{str(tmp).replace(chr(39), chr(39) * 2)}' ({option})")
    tmp.replace(target)
    stdout.print(f"wrote {len(ds):,} chunks to {target}")
