"""``rag info``: what a datastore holds and how it was built."""

from __future__ import annotations

import json

import click
from rich.table import Table

from datastores import Datastore
from ragcli.common import key_value_table, stdout


@click.command("info")
@click.argument("datastore", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and statistics as JSON.")
def info_command(datastore: str, as_json: bool) -> None:
    """Summarise DATASTORE: embedder, chunker, shards and statistics (computed with DuckDB)."""
    ds = Datastore.open(datastore)
    stats = ds.statistics()
    manifest = ds.manifest
    if as_json:
        click.echo(json.dumps({"manifest": manifest.to_dict(), "statistics": stats}, indent=2, default=str))
        return
    chunker, bm25, embedder = manifest.chunker, manifest.bm25, manifest.embedder
    stdout.print(key_value_table(f"datastore {datastore}", [
        ("format", f"{manifest.format} v{manifest.format_version}"),
        ("embedder", f"{embedder['name']} (dim {embedder['dim']}, "
                     f"{'normalized' if embedder.get('normalized') else 'raw'})"),
        ("chunker", f"{chunker['name']}, {chunker['chunk_size']} tokens, overlap {chunker['overlap']}, "
                    f"{chunker['tokenizer']}"),
        ("dense index", manifest.dense_index["type"]),
        ("bm25", f"k1={bm25['k1']} b={bm25['b']} epsilon={bm25['epsilon']}, "
                 f"{bm25['stats']['vocabulary']:,} terms, avg {bm25['stats']['avgdl']:.1f} tokens/chunk"),
        ("documents", f"{stats['documents']:,} ({stats['sources']:,} source files)"),
        ("chunks", f"{stats['chunks']:,} (mean {stats['mean_chunk_chars']:.0f} chars, "
                   f"max {stats['max_chunk_chars']:,})"),
        ("corpus", f"{manifest.stats.get('characters', 0):,} characters, "
                   f"{manifest.stats.get('tokens', 0):,} tokens"),
        ("checksum", manifest.content_checksum[:16]),
        *([("tombstoned", f"{manifest.num_deleted:,} of {manifest.num_chunks:,} chunks")]
          if manifest.tombstones else []),
    ]))
    shards = Table(title="shards", title_justify="left")
    for column in ("shard", "rows", "first chunk id", "size"):
        shards.add_column(column, justify="right" if column != "shard" else "left")
    for shard in manifest.shards:
        size = sum(f.bytes for f in shard.files.values())
        shards.add_row(shard.name, f"{shard.rows:,}", f"{shard.chunk_id_start:,}", f"{size / 1e6:.1f} MB")
    stdout.print(shards)
    if manifest.lineage:
        stdout.print(lineage_table(manifest.lineage))


def lineage_table(lineage: list[dict]) -> Table:
    """Every operation applied to the datastore, oldest first, with its parameters and counts."""
    table = Table(title="lineage", title_justify="left")
    for column in ("#", "operation", "time", "parameters", "counts"):
        table.add_column(column)
    for i, entry in enumerate(lineage, 1):
        params = ", ".join(f"{k}={v}" for k, v in entry.get("parameters", {}).items())
        counts = ", ".join(f"{k}={v}" for k, v in entry.get("counts", {}).items() if not isinstance(v, (list, dict)))
        table.add_row(str(i), entry.get("operation", "?"), f"{entry.get('time', '')} ({entry.get('seconds', 0):.1f}s)",
                      params, counts)
    return table
