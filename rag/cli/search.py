"""``rag search``: top-k chunks for a query, as a table or JSON."""

from __future__ import annotations

import json

import click
from rich.table import Table

from datastores.datastore import SEARCH_MODES
from rag.cli.common import snippet, stdout, user_errors
from rag.datastore import Datastore


@click.command("search")
@click.argument("datastore", type=click.Path())
@click.argument("query")
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(min=1), help="Number of hits.")
@click.option("--mode", type=click.Choice(SEARCH_MODES), default="dense", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print hits as a JSON list.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@user_errors
def search_command(datastore: str, query: str, k: int, mode: str, as_json: bool, device: str) -> None:
    """Search DATASTORE for QUERY."""
    ds = Datastore.open(datastore, device=device)
    hits = ds.search(query, k=k, mode=mode)
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{mode} search: {query!r}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("doc")
    table.add_column("span", justify="right")
    table.add_column("text")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), f"{hit.score:.4f}", hit.doc_id, f"{hit.start}-{hit.end}", snippet(hit.text))
    stdout.print(table)
    if not hits:
        stdout.print("no matching chunks")
