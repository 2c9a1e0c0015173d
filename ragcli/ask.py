"""``rag ask``: retrieve, prune, compress, reorder and answer with citations."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
from rich.table import Table

from ragcli.common import snippet, stdout
from rag.compress import METHODS
from rag.datastore import Datastore
from rag.pipeline import Answer, Pipeline, PipelineConfig


def config_from_options(config: str | None, **flags: Any) -> PipelineConfig:
    """The config file (or the defaults) with every command-line flag that was given laid over it."""
    base = PipelineConfig.load(config) if config else PipelineConfig()
    changes: dict[str, Any] = {}
    for key in ("k", "budget", "tokenizer", "device"):
        if flags[key] is not None:
            changes[key] = flags[key]
    if flags["mode"]:
        changes["retriever"] = {**base.retriever, "mode": flags["mode"]}
    if flags["prune"]:
        changes["pruner"] = None if flags["prune"] == "none" else {**(base.pruner or {}), "method": flags["prune"]}
    if flags["compress"]:
        compressor = None if flags["compress"] == "none" else {"method": flags["compress"]}
        if compressor and base.compressor and base.compressor.get("method") == flags["compress"]:
            compressor = {**base.compressor}
        if compressor and flags["compress_model"]:
            compressor["model"] = flags["compress_model"]
        if compressor and flags["allow_download"] and flags["compress"] in ("token", "summary"):
            compressor["allow_download"] = True
        changes["compressor"] = compressor
    if flags["reorder"] is not None:
        changes["reorder"] = flags["reorder"]
    generator = dict(base.generator)
    if flags["generator"]:
        generator = {"spec": flags["generator"]}
    spec = generator.get("spec", "extractive")
    if spec.startswith("hf:"):
        if flags["allow_download"]:
            generator["allow_download"] = True
        if flags["max_tokens"] is not None:
            generator["max_new_tokens"] = flags["max_tokens"]
    if spec.startswith("openai:"):
        for key in ("base_url", "timeout", "max_tokens"):
            if flags[key] is not None:
                generator[key] = flags[key]
    elif flags["base_url"]:
        raise click.UsageError("--base-url only applies to --generator openai:MODEL")
    changes["generator"] = generator
    return dataclasses.replace(base, **changes)


def print_answer(answer: Answer, streamed: bool, show_context: bool, verbose: bool) -> None:
    if streamed:
        stdout.print()
    else:
        stdout.print(answer.text, markup=False, highlight=False)
    if answer.citations:
        table = Table(title="citations", title_justify="left")
        for column in ("#", "doc", "chunk", "span", "quote"):
            table.add_column(column, justify="right" if column in ("#", "chunk", "span") else "left")
        for c in answer.citations:
            span = f"{c.quote_start}-{c.quote_end}" if c.quote_start is not None else f"{c.start}-{c.end}"
            table.add_row(str(c.number), c.doc_id, str(c.chunk_id), span, snippet(c.quote or "", 70))
        stdout.print(table)
    if show_context:
        table = Table(title=f"context ({answer.context_tokens} tokens)", title_justify="left")
        for column in ("#", "doc", "span", "score", "text"):
            table.add_column(column)
        for p in answer.context:
            table.add_row(str(p.number), p.doc_id, f"{p.start}-{p.end}", f"{p.score:.4f}", p.text.strip())
        stdout.print(table)
    if verbose:
        table = Table(title=f"stages (generator {answer.generator})", title_justify="left")
        for column in ("stage", "tokens before", "tokens after", "ratio", "passages", "seconds"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for s in answer.stages:
            table.add_row(s.name, str(s.tokens_before), str(s.tokens_after), f"{s.ratio:.3f}",
                          f"{s.passages_before} → {s.passages_after}", f"{s.seconds:.3f}")
        shown = {s.name for s in answer.stages}  # "retrieve" is a stage row when no context stage ran
        for name in ("retrieve", "generate", "total"):
            if name in answer.timings and name not in shown:
                table.add_row(name, "", "", "", "", f"{answer.timings[name]:.3f}")
        if answer.prompt_tokens is not None:
            table.add_row("prompt / completion tokens", str(answer.prompt_tokens), str(answer.completion_tokens),
                          "", "", "")
        stdout.print(table)


@click.command("ask")
@click.argument("datastore", type=click.Path())
@click.argument("question")
@click.option("--config", type=click.Path(dir_okay=False), help="Pipeline YAML (configs/pipelines/*.yaml).")
@click.option("-k", "k", type=click.IntRange(min=1), help="Passages to retrieve [config: 5].")
@click.option("--mode", type=click.Choice(["dense", "bm25", "hybrid"]), help="Retrieval mode [config: dense].")
@click.option("--where", help="Metadata filter expression for retrieval.")
@click.option("--budget", type=click.IntRange(min=1), help="Context budget in tokens of --tokenizer.")
@click.option("--tokenizer", help="Tokenizer the budget is counted in [cl100k_base].")
@click.option("--prune", type=click.Choice(["html", "none"]), help="Prune HTML passages block by block.")
@click.option("--compress", type=click.Choice([*METHODS, "none"]), help="Compression method.")
@click.option("--compress-model", help="Causal LM (token) or seq2seq model (summary) for --compress.")
@click.option("--reorder/--no-reorder", default=None, help="Best passage first, second best last, inward.")
@click.option("--generator", help="extractive | hf:PATH_OR_NAME | openai:MODEL [config: extractive].")
@click.option("--base-url", help="OpenAI-compatible server URL (openai: generators); key from OPENAI_API_KEY.")
@click.option("--timeout", type=float, help="Seconds per request to the server (openai:).")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Most tokens to generate (hf:, openai:).")
@click.option("--allow-download", is_flag=True, help="Let hf: models download from the Hugging Face Hub.")
@click.option("--show-context", is_flag=True, help="Print the passages the generator saw.")
@click.option("--verbose", "-v", is_flag=True, help="Print tokens and seconds per stage.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer, citations, context and stages as JSON.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]))
def ask_command(datastore: str, question: str, config: str | None, where: str | None, show_context: bool,
                verbose: bool, as_json: bool, **flags: Any) -> None:
    """Answer QUESTION from DATASTORE with cited passages (offline by default: extractive answer)."""
    settings = config_from_options(config, **flags)
    pipeline = Pipeline.from_config(settings, datastore=Datastore.open(datastore, device=settings.device))
    stream = not as_json and getattr(pipeline.generator, "name", "extractive") != "extractive"

    def on_token(piece: str) -> None:
        click.echo(piece, nl=False)

    answer = pipeline.ask(question, where=where, on_token=on_token if stream else None)
    if as_json:
        click.echo(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
        return
    print_answer(answer, stream, show_context, verbose)
