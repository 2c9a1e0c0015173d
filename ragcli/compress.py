"""``rag compress``: shorten a text to a token budget or rate, query-aware."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from datastores.errors import UserError
from datastores.layout import atomic_write_bytes

from ragcli.common import key_value_table, stderr
from rag.compress import METHODS, load_compressor


@click.command("compress")
@click.argument("path", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--query", "-q", default="", help="The question the kept text should serve.")
@click.option("--method", type=click.Choice(METHODS), default="sentence", show_default=True)
@click.option("--rate", type=click.FloatRange(0, 1, min_open=True), help="Fraction of tokens to keep.")
@click.option("--budget", type=click.IntRange(min=1), help="Most tokens to keep (with --rate: the smaller).")
@click.option("--tokenizer", default="cl100k_base", show_default=True, help="Tokenizer of rate and budget.")
@click.option("--model", help="Causal LM (token) or seq2seq model (summary): a name or local path.")
@click.option("--allow-download", is_flag=True, help="Let --model download from the Hugging Face Hub.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the compressed text here.")
@click.option("--json", "as_json", is_flag=True, help="Print text and token counts as JSON.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
def compress_command(path: str, query: str, method: str, rate: float | None, budget: int | None,
                     output: str | None, as_json: bool, **options: Any) -> None:
    """Compress the text in PATH ('-' for stdin) with METHOD to --rate or --budget tokens."""
    if rate is None and budget is None:
        raise click.UsageError("give --rate or --budget")
    with click.open_file(path, encoding="utf-8", errors="strict") as handle:
        text = handle.read()
    if not text.strip():
        raise UserError(f"{path} holds no text")
    if method in ("sentence", "semantic") and not query.strip():
        raise click.UsageError(f"--method {method} ranks text against a --query; give one")
    options = {k: v for k, v in options.items() if v is not None and v is not False}
    compressor = load_compressor(method, rate=rate, **options)
    result = compressor.compress_text(query, text, budget)
    if output:
        atomic_write_bytes(Path(output), result.text.encode("utf-8"))
    if as_json:
        click.echo(json.dumps({"method": method, "tokens_before": result.tokens_before,
                               "tokens_after": result.tokens_after, "ratio": result.ratio,
                               "text": result.text}, ensure_ascii=False, indent=2))
    elif not output:
        click.echo(result.text)
    if not as_json:
        stderr.print(key_value_table(f"{method} compression", [
            ("tokens", f"{result.tokens_before} → {result.tokens_after} ({options.get('tokenizer')})"),
            ("ratio", f"{result.ratio:.3f}")]))
