"""``rag serve``: keep a datastore loaded and answer over HTTP (FastAPI + uvicorn), or stdin lines.

HTTP: ``/search``, ``/ask`` (server-sent events), ``/info``, ``/health``, ``/docs`` (``rag.service``).
With ``--engine ray`` the shards are split into ``--groups`` groups held by Ray actors; the
endpoints are the same. ``--stdin`` reads one query per line and prints one JSON line each.
"""

from __future__ import annotations

import sys

import click

from ragcli.common import stderr
from rag.retrieve import MODES


@click.command("serve")
@click.argument("datastore", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: a free port.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process holds every shard; ray: actors hold shard groups.")
@click.option("--address", default=None, help="Ray cluster address ('auto' joins a running one; default: start one).")
@click.option("--groups", type=click.IntRange(min=1), default=2, show_default=True, help="Ray actors (shard groups).")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Default hits per query.")
@click.option("--mode", type=click.Choice(MODES), default="dense", show_default=True, help="Default search mode.")
@click.option("--rerank", default=None, metavar="KIND:MODEL",
              help="Reranker loaded once; requests opt in with rerank=true.")
@click.option("--config", type=click.Path(dir_okay=False), default=None, help="Pipeline YAML for /ask.")
@click.option("--generator", default=None, help="/ask generator: extractive | hf:PATH | openai:MODEL [extractive].")
@click.option("--max-k", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Largest k a request may ask.")
@click.option("--max-depth", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Largest first-stage depth and rerank depth a request may ask.")
@click.option("--max-query-chars", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=65536, show_default=True)
@click.option("--max-url-bytes", type=click.IntRange(min=1), default=8192, show_default=True)
@click.option("--max-header-bytes", type=click.IntRange(min=1), default=16384, show_default=True)
@click.option("--limit-concurrency", type=click.IntRange(min=1), default=256, show_default=True,
              help="Connections + requests at once before answering 503.")
@click.option("--timeout-keep-alive", type=click.IntRange(min=1), default=5, show_default=True, help="Seconds.")
@click.option("--graceful-timeout", type=click.IntRange(min=1), default=30, show_default=True,
              help="Seconds in-flight requests get after SIGTERM/SIGINT.")
@click.option("--api-key-env", default=None, metavar="NAME",
              help="Require the key in this environment variable (default: TERARAG_API_KEY when it is set).")
@click.option("--access-log", is_flag=True, help="Log every request (method, path, status).")
@click.option("--stdin", "from_stdin", is_flag=True, help="Answer queries from stdin (one per line) as JSON lines.")
@click.option("--where", default=None, help="--stdin: SQL filter applied to every query.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
def serve_command(datastore: str, host: str, port: int, engine: str, address: str | None, groups: int, k: int,
                  mode: str, rerank: str | None, config: str | None, generator: str | None, from_stdin: bool,
                  where: str | None, device: str, **limits: int | bool | str | None) -> None:
    """Serve DATASTORE: search and answer over HTTP (or stdin with --stdin)."""
    from rag.serve import build_engine, open_searcher

    if where is not None and not from_stdin:
        raise click.UsageError("--where applies to --stdin; HTTP requests pass where= themselves")
    settings = _service_settings(k, mode, limits)      # checked before anything loads
    searcher = open_searcher(datastore, engine, groups=groups, address=address, device=device)
    try:
        pipeline = _pipeline(config, generator, device)
        query_engine = build_engine(searcher, engine, rerank=rerank, pipeline_config=pipeline, device=device)
        if from_stdin:
            _serve_stdin(query_engine, datastore, k, mode, where)
        else:
            _serve_http(query_engine, datastore, host, port, settings, limits)
    finally:
        close = getattr(searcher, "close", None)
        if callable(close):
            close()


def _service_settings(k: int, mode: str, limits: dict):
    from rag.service import ServiceSettings, api_key_from_env

    return ServiceSettings(default_k=k, default_mode=mode, max_k=limits["max_k"],
                           max_depth=limits["max_depth"], max_query_chars=limits["max_query_chars"],
                           max_body_bytes=limits["max_body_bytes"], max_url_bytes=limits["max_url_bytes"],
                           max_header_bytes=limits["max_header_bytes"], api_key=api_key_from_env(limits["api_key_env"]))


def _pipeline(config: str | None, generator: str | None, device: str):
    import dataclasses

    from rag.pipeline import PipelineConfig

    base = PipelineConfig.load(config) if config else PipelineConfig(device=device)
    return dataclasses.replace(base, generator={"spec": generator}) if generator else base


def _serve_stdin(engine, datastore: str, k: int, mode: str, where: str | None) -> None:
    from rag.retrieve import RetrieverConfig
    from rag.serve import serve_lines

    stderr.print(f"[green]serving[/green] {datastore} ({engine.engine} engine); one query per line on stdin")
    serve_lines(engine, sys.stdin, sys.stdout, k, where, RetrieverConfig(mode=mode))


def _serve_http(engine, datastore: str, host: str, port: int, settings, limits: dict) -> None:
    from rag.service import ServerOptions, create_app, listen, run_server, socket_url

    engine.warm_up()
    app = create_app(engine, settings)
    options = ServerOptions(limits["limit_concurrency"], limits["timeout_keep_alive"], limits["graceful_timeout"],
                            settings.max_url_bytes + settings.max_header_bytes, bool(limits["access_log"]))
    sock = listen(host, port)
    auth = "API key required" if settings.api_key else "no API key"
    stderr.print(f"serving {datastore} ({engine.engine} engine, {auth}) at {socket_url(sock)} "
                 f"(docs: {socket_url(sock)}/docs)", markup=False, highlight=False, soft_wrap=True)
    run_server(app, sock, options)
