"""``rag prune``: an HTML page in, the page pruned to a token budget for a query out."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from datastores.layout import atomic_write_bytes
from ragcli.common import key_value_table, stderr


@click.command("prune")
@click.argument("page", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("-q", "--query", required=True, help="The question the pruned page should still answer.")
@click.option("--budget", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Most tokens of the pruned HTML, in --tokenizer.")
@click.option("--tokenizer", default="cl100k_base", show_default=True,
              help="The generator's tokenizer: a tiktoken encoding or a local Hugging Face tokenizer path.")
@click.option("--max-words", type=click.IntRange(min=1), default=256, show_default=True,
              help="Most words per block (step 1).")
@click.option("--lm", default=None, metavar="PATH_OR_NAME",
              help="A causal LM for step 2, generative fine-grained pruning of block paths.")
@click.option("--fine-max-words", type=click.IntRange(min=1), default=32, show_default=True,
              help="Most words per block in step 2.")
@click.option("--embedder", default=None, help="Step-1 embedder (default: all-MiniLM-L6-v2).")
@click.option("--allow-download", is_flag=True, help="Let --lm download from the Hugging Face Hub.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the pruned HTML here (default: standard output).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report (with the HTML unless -o is given).")
def prune_command(page: str, query: str, budget: int, tokenizer: str, max_words: int, lm: str | None,
                  fine_max_words: int, embedder: str | None, allow_download: bool, device: str,
                  output: str | None, as_json: bool) -> None:
    """Prune the HTML PAGE ('-' for standard input) to BUDGET tokens for QUERY; valid HTML out."""
    from rag.html import HtmlPruner

    if page == "-":
        data = sys.stdin.buffer.read()
    else:
        path = Path(page)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {page}")
        data = path.read_bytes()
    pruner = HtmlPruner(tokenizer=tokenizer, embedder=embedder, max_words=max_words, lm=lm,
                        fine_max_words=fine_max_words, device=device, allow_download=allow_download)
    result = pruner.prune(data, query, budget)
    if output:
        atomic_write_bytes(Path(output), result.html.encode("utf-8"))
    if as_json:
        report = {**result.to_dict(), "budget": budget, "tokenizer": tokenizer, "output": output}
        if not output:
            report["html"] = result.html
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    if not output:
        click.echo(result.html)
    stderr.print(key_value_table("pruned", [
        ("tokens", f"{result.tokens_before} → {result.tokens_after} (budget {budget}, {tokenizer})"),
        ("blocks kept", f"{result.blocks_kept} of {result.blocks}"),
        ("steps", "embedding + generative" if lm else "embedding"),
        ("time", f"{result.seconds:.2f} s"),
    ] + ([("written to", output)] if output else [])))
