"""The ``rag`` command line: each command parses arguments and calls the public Python API."""

from __future__ import annotations

import click

from ragcli.ask import ask_command
from ragcli.compress import compress_command
from ragcli.datastore import datastore_group
from ragcli.embed_bench import embed_bench_command
from ragcli.errors import ReportingGroup
from ragcli.eval import eval_group
from ragcli.index import index_command
from ragcli.info import info_command
from ragcli.prune import prune_command
from ragcli.runtime import configure_runtime
from ragcli.search import search_command
from ragcli.serve import serve_command
from ragcli.sweep import sweep_command
from ragcli.synth import synth_command


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="terarag")
def main() -> None:
    """terarag: index corpora into sharded datastores, search them, and answer from them."""
    configure_runtime()


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
