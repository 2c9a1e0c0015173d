"""``rag synth``: synthetic questions with exact reference spans from a chat model behind an
OpenAI-compatible server (see :mod:`evaluators.synth`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ragcli.common import key_value_table, stderr, stdout


@click.command("synth")
@click.argument("corpus", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--generator", "generator_spec", required=True, help="openai:MODEL (an OpenAI-compatible chat server).")
@click.option("--base-url", default=None, help="Server URL, e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL "
              "or https://api.openai.com/v1).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the API key (never printed).")
@click.option("-n", "n", type=int, default=100, show_default=True, help="Questions wanted.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Questions JSONL to write.")
@click.option("--documents-out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the document texts the offsets point into (default: OUTPUT.documents.jsonl).")
@click.option("--no-documents", is_flag=True, help="Do not write the documents file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the passage sampling.")
@click.option("--passage-chars", type=int, default=3000, show_default=True, help="Characters shown to the model.")
@click.option("--max-passages", type=int, default=None, help="Passages tried at most (default 3n+10).")
@click.option("--json-retries", type=int, default=2, show_default=True,
              help="Asks again of one passage after a reply that is not the JSON asked for.")
@click.option("--dedup-threshold", type=float, default=0.9, show_default=True,
              help="Drop a question whose embedding cosine to a kept one is at least this.")
@click.option("--max-excerpts", type=int, default=5, show_default=True)
@click.option("--embedder", "embedder_name", default="all-MiniLM-L6-v2", show_default=True,
              help="Embedder for near-duplicate questions.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--max-tokens", type=int, default=512, show_default=True)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds per request.")
@click.option("--max-retries", type=int, default=3, show_default=True,
              help="Retries of a request on 429/5xx/connection errors (exponential backoff).")
@click.option("--json-mode/--no-json-mode", default=True, show_default=True,
              help='Send response_format {"type": "json_object"} (turn off for servers that reject it).')
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def synth_command(corpus: tuple[str, ...], generator_spec: str, base_url: str | None, api_key_env: str, n: int,
                  output: str, documents_out: str | None, no_documents: bool, seed: int, passage_chars: int,
                  max_passages: int | None, json_retries: int, dedup_threshold: float, max_excerpts: int,
                  embedder_name: str, device: str, temperature: float, max_tokens: int, timeout: float,
                  max_retries: int, json_mode: bool, as_json: bool) -> None:
    """Generate N questions over CORPUS (files or folders) with verbatim excerpts located exactly in
    the documents, and write them as JSONL {question, references: [{doc_id, start, end, content}], answers}."""
    from evaluators.synth import SynthConfig, documents_file_for, synthesize, write_documents, write_questions
    from indexers.embedding import load_embedder
    from indexers.readers import ReadReport, iter_documents
    from rag.generate.factory import load_generator
    from rag.generate.openai_client import OpenAIError

    config = SynthConfig(n=n, seed=seed, passage_chars=passage_chars, max_passages=max_passages,
                         json_retries=json_retries, dedup_threshold=dedup_threshold, max_excerpts=max_excerpts)
    if not generator_spec.lower().startswith("openai:"):
        raise click.ClickException(f"rag synth needs a chat model behind an OpenAI-compatible server: "
                                   f"--generator openai:MODEL (got {generator_spec!r})")
    generator = load_generator(generator_spec, base_url=base_url, api_key=os.environ.get(api_key_env, ""),
                               timeout=timeout, max_retries=max_retries, temperature=temperature,
                               max_tokens=max_tokens)
    extra = {"response_format": {"type": "json_object"}} if json_mode else {}

    def complete(messages: list[dict[str, str]]) -> str:
        return generator.chat(messages, **extra).text

    read = ReadReport()
    documents = list(iter_documents(list(corpus), report=read))
    if not documents:
        raise click.ClickException(f"no readable documents in {', '.join(corpus)} ({len(read.skipped)} skipped)")
    embedder = load_embedder(embedder_name, device=device)
    try:
        result = synthesize(documents, complete, config, embedder=embedder, progress=not as_json)
    except OpenAIError as exc:
        raise click.ClickException(f"{generator.name}: {exc} (nothing was written)") from None

    out = Path(output)
    write_questions(out, result.questions)
    docs_path = None
    if not no_documents:
        docs_path = Path(documents_out) if documents_out else documents_file_for(out)
        write_documents(docs_path, documents)
    summary = result.report.to_dict()
    summary.update({"output": str(out), "documents_file": str(docs_path) if docs_path else None,
                    "skipped_inputs": len(read.skipped)})
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    report = result.report
    rows = [("requested", str(report.requested)), ("generated", str(report.generated)),
            ("documents", str(report.documents)), ("passages tried", str(report.passages)),
            ("model calls", str(report.calls)), ("rejected", str(sum(report.rejected.values())))]
    rows += [(f"  {reason}", str(count)) for reason, count in sorted(report.rejected.items())]
    rows += [("duplicates dropped", f"{report.duplicates} (cosine ≥ {config.dedup_threshold:g})"),
             ("questions", str(out))]
    if docs_path:
        rows.append(("documents file", str(docs_path)))
    stdout.print(key_value_table(f"rag synth · {generator.name}", rows))
    if report.generated < report.requested:
        stderr.print(f"[yellow]only {report.generated} of {report.requested} questions after "
                     f"{report.passages} passages (raise --max-passages for more)[/yellow]")
    if docs_path:
        hint = f"--dataset {out}" if docs_path == documents_file_for(out) else f"--questions {out} --documents {docs_path}"
        stdout.print(f"evaluate with: rag eval chunking {hint}", soft_wrap=True)


__all__ = ["synth_command"]
