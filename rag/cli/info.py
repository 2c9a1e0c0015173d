"""``rag info``: what a datastore holds and how it was built."""

from __future__ import annotations

import json

import click
from rich.table import Table

from datastores import Datastore
from rag.cli.common import stdout, user_errors


@click.command("info")
@click.argument("datastore", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and statistics as JSON.")
@user_errors
def info_command(datastore: str, as_json: bool) -> None:
    """Summarise DATASTORE: embedder, chunker, shards and statistics (computed with DuckDB)."""
    ds = Datastore.open(datastore)
    stats = ds.statistics()
    manifest = ds.manifest
    if as_json:
        click.echo(json.dumps({"manifest": manifest.to_dict(), "statistics": stats}, indent=2, default=str))
        return
    summary = Table(title=f"datastore {datastore}", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    chunker = manifest.chunker
    summary.add_row("format", f"{manifest.format} v{manifest.format_version}")
    summary.add_row("embedder", f"{manifest.embedder['name']} (dim {manifest.embedder['dim']}, "
                                f"{'normalized' if manifest.embedder.get('normalized') else 'raw'})")
    summary.add_row("chunker", f"{chunker['name']}, {chunker['chunk_size']} tokens, overlap {chunker['overlap']}, "
                               f"{chunker['tokenizer']}")
    summary.add_row("dense index", manifest.dense_index["type"])
    bm25 = manifest.bm25
    summary.add_row("bm25", f"k1={bm25['k1']} b={bm25['b']} epsilon={bm25['epsilon']}, "
                            f"{bm25['stats']['vocabulary']:,} terms, avg {bm25['stats']['avgdl']:.1f} tokens/chunk")
    summary.add_row("documents", f"{stats['documents']:,} ({stats['sources']:,} source files)")
    summary.add_row("chunks", f"{stats['chunks']:,} (mean {stats['mean_chunk_chars']:.0f} chars, "
                              f"max {stats['max_chunk_chars']:,})")
    summary.add_row("corpus", f"{manifest.stats.get('characters', 0):,} characters, "
                              f"{manifest.stats.get('tokens', 0):,} tokens")
    summary.add_row("checksum", manifest.content_checksum[:16])
    stdout.print(summary)
    shards = Table(title="shards", title_justify="left")
    for column in ("shard", "rows", "first chunk id", "size"):
        shards.add_column(column, justify="right" if column != "shard" else "left")
    for shard in manifest.shards:
        size = sum(f.bytes for f in shard.files.values())
        shards.add_row(shard.name, f"{shard.rows:,}", f"{shard.chunk_id_start:,}", f"{size / 1e6:.1f} MB")
    stdout.print(shards)
