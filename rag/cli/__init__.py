"""The ``rag`` command line: each command parses arguments and calls the public Python API."""

from __future__ import annotations

import logging

import click

from rag.cli.ask import ask_command
from rag.cli.common import console_handler
from rag.cli.compress import compress_command
from rag.cli.datastore import datastore_group
from rag.cli.embed_bench import embed_bench_command
from rag.cli.eval import eval_group
from rag.cli.index import index_command
from rag.cli.info import info_command
from rag.cli.prune import prune_command
from rag.cli.search import search_command
from rag.cli.serve import serve_command
from rag.cli.sweep import sweep_command
from rag.cli.synth import synth_command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="terarag")
def main() -> None:
    """terarag: index corpora into sharded datastores, search them, and answer from them."""
    root = logging.getLogger("terarag")
    if not root.handlers:
        root.addHandler(console_handler())
        root.setLevel(logging.INFO)
        root.propagate = False


main.add_command(index_command)
main.add_command(info_command)
main.add_command(search_command)
main.add_command(prune_command)
main.add_command(ask_command)
main.add_command(compress_command)
main.add_command(serve_command)
main.add_command(datastore_group)
main.add_command(eval_group)
main.add_command(sweep_command)
main.add_command(embed_bench_command)
main.add_command(synth_command)

__all__ = ["main"]
