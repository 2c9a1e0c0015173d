"""``rag eval``: evaluation commands. ``rag eval chunking`` scores a chunker with Chroma's span metrics."""

from __future__ import annotations

import json
import math

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from evaluators.spans import METRICS, UNITS
from indexers.chunkers import CHUNKERS
from indexers.tokenizers import DEFAULT_TOKENIZER
from rag.cli.common import stdout, user_errors

METRIC_LABELS = {"recall": "Recall", "precision": "Precision", "precision_omega": "Precision-Ω", "iou": "IoU"}


def _k_value(text: str) -> int | str:
    from evaluators.chunking import parse_k

    try:
        return parse_k(text)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _cell(stat) -> str:
    if math.isnan(stat.mean):
        return "–"
    return f"{stat.mean:.1f} ± {stat.std:.1f}"


@click.group("eval")
def eval_group() -> None:
    """Evaluate chunking and retrieval against labelled data."""


@eval_group.command("chunking")
@click.option("--dataset", "dataset", required=True, type=click.Path(),
              help="Folder with questions_df.csv and corpora/ (Chroma's format).")
@click.option("--chunker", type=click.Choice(sorted(CHUNKERS)), default="recursive", show_default=True)
@click.option("--chunk-size", type=int, default=200, show_default=True, help="Chunk size in tokens.")
@click.option("--overlap", type=int, default=0, show_default=True, help="Overlap in tokens.")
@click.option("-k", "k", default="5", show_default=True, help="Chunks retrieved per question, or 'min'.")
@click.option("--unit", type=click.Choice(UNITS), default="char", show_default=True,
              help="Count characters (the published numbers) or tokens.")
@click.option("--mode", type=click.Choice(["dense", "bm25"]), default="dense", show_default=True,
              help="Retrieval: exact cosine (FAISS flat inner product) or BM25.")
@click.option("--tokenizer", default=DEFAULT_TOKENIZER, show_default=True,
              help="Tokenizer that measures chunk sizes.")
@click.option("--unit-tokenizer", default=None, help="Tokenizer of the token unit (default: --tokenizer).")
@click.option("--embedder", "embedder_name", default="all-MiniLM-L6-v2", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("--duplicate-ties", type=click.Choice(["document-order", "engine"]), default="document-order",
              show_default=True, help="Which copy of an identical chunk text counts as retrieved.")
@click.option("--corpus", "corpora", multiple=True, help="Only this corpus id (repeatable).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write per-question rows (.parquet, .csv or .jsonl).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@user_errors
def chunking_command(dataset: str, chunker: str, chunk_size: int, overlap: int, k: str, unit: str, mode: str,
                     tokenizer: str, unit_tokenizer: str | None, embedder_name: str, device: str,
                     duplicate_ties: str, corpora: tuple[str, ...], out: str | None, as_json: bool) -> None:
    """Chunk every corpus, index all chunks in one datastore, retrieve top-k per question and
    report Recall, Precision, Precision-Ω and IoU (mean ± std, ×100), pooled and per corpus."""
    from evaluators.chunking import evaluate_chunking
    from evaluators.datasets import load_dataset
    from indexers.chunkers import make_chunker
    from indexers.embedders import load_embedder

    k_value = _k_value(k)
    data = load_dataset(dataset, corpora or None)
    chunker_obj = make_chunker(chunker, chunk_size, overlap, tokenizer)
    embedder = load_embedder(embedder_name, device=device)
    result = evaluate_chunking(data, chunker_obj, k=k_value, unit=unit, mode=mode, embedder=embedder,
                               unit_tokenizer=unit_tokenizer, duplicate_ties=duplicate_ties)
    if out:
        result.write_rows(out)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    s = result.settings
    title = (f"{s['chunker']} {s['chunk_size']}/{s['overlap']} · k={s['k']} · {s['mode']} ({s['engine']}) · "
             f"unit={s['unit']}" + (f" ({s['unit_tokenizer']})" if s["unit_tokenizer"] else ""))
    table = Table(title=title, title_justify="left",
                  caption=(f"{s['chunks']} chunks ({s['duplicate_chunks']} with duplicated text, ties: "
                           f"{s['duplicate_ties']}) · embedder {s['embedder']} · mean ± std ×100 (population std)"),
                  caption_justify="left")
    table.add_column("corpus", no_wrap=True)
    table.add_column("questions", justify="right", no_wrap=True)
    table.add_column("skipped", justify="right", no_wrap=True)
    for name in METRICS:
        table.add_column(METRIC_LABELS[name], justify="right", no_wrap=True)
    summary = result.summary
    table.add_row("all", str(summary.questions), str(summary.skipped),
                  *(_cell(summary.metric(m)) for m in METRICS), style="bold")
    for corpus_id, part in summary.per_corpus.items():
        table.add_row(corpus_id, str(part.questions), str(part.skipped), *(_cell(part.metric(m)) for m in METRICS))
    # Never wrap the numbers: widen past a narrow (or non-terminal, 80-column) console if needed.
    needed = Measurement.get(stdout, stdout.options.update_width(1000), table).maximum
    console = stdout if needed <= stdout.width else Console(width=needed, soft_wrap=False)
    console.print(table)
    if out:
        stdout.print(f"rows written to {out}")


__all__ = ["chunking_command", "eval_group"]
