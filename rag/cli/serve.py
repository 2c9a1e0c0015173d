"""``rag serve-shards``: keep a datastore's shards loaded and answer queries.

With ``--engine ray`` the shards are split into ``--groups`` contiguous groups, each held by a Ray
actor; queries fan out to every group and merge exactly. Queries come from stdin, one per line,
each answered by one JSON line ``{"query", "hits"}``; with ``--port`` a local HTTP endpoint answers
``GET /search?q=TEXT&k=10&mode=dense`` instead.
"""

from __future__ import annotations

import sys

import click

from rag.cli.common import stderr, user_errors


@click.command("serve-shards")
@click.argument("datastore", type=click.Path(file_okay=False))
@click.option("--engine", type=click.Choice(["local", "ray"]), default="ray", show_default=True,
              help="ray: actors hold shard groups; local: this process holds every shard.")
@click.option("--address", default=None, help="Ray cluster address ('auto' joins a running one; default: start one).")
@click.option("--groups", type=int, default=2, show_default=True, help="Ray actors, each holding a group of shards.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Hits per query (HTTP: default of ?k=).")
@click.option("--mode", type=click.Choice(["dense", "bm25"]), default="dense", show_default=True)
@click.option("--where", default=None, help="SQL filter over chunk columns, applied to every query (stdin mode).")
@click.option("--port", type=int, default=None, help="Serve HTTP on this port instead of reading stdin.")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP bind address.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
              help="Device of the query embedder.")
@user_errors
def serve_shards_command(datastore: str, engine: str, address: str | None, groups: int, k: int, mode: str,
                         where: str | None, port: int | None, host: str, device: str) -> None:
    """Load DATASTORE's shards once and answer queries from stdin (JSON lines) or over HTTP."""
    from rag.serve import RayShardSearcher, make_http_server, serve_lines

    if k < 1:
        raise click.ClickException(f"-k must be at least 1 (got {k})")
    if engine == "ray":
        searcher = RayShardSearcher(datastore, groups, address, device)
        where_held = f"{len(searcher.groups)} Ray actors (shards per group: {[len(g) for g in searcher.groups]})"
    else:
        if address is not None:
            raise click.ClickException("--address needs --engine ray")
        from rag import Datastore

        searcher = Datastore.open(datastore, device=device)
        where_held = "this process"
    try:
        if port is None:
            stderr.print(f"[green]serving[/green] {datastore} from {where_held}; one query per line on stdin")
            serve_lines(searcher, sys.stdin, sys.stdout, k, mode, where)
        else:
            server = make_http_server(searcher, host, port, k, mode)
            stderr.print(f"[green]serving[/green] {datastore} from {where_held} at "
                         f"http://{host}:{server.server_address[1]}/search?q=...")
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            finally:
                server.server_close()
    finally:
        close = getattr(searcher, "close", None)
        if callable(close):
            close()
