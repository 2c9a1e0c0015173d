"""``rag search``: top-k chunks for a query (dense, BM25 or hybrid; rerank; MMR; filters), as a table or JSON."""

from __future__ import annotations

import json
import time

import click
from rich.table import Table

from datastores.dense import DEFAULT_RESCORE_MULTIPLIER
from ragcli.common import key_value_table, snippet, stderr, stdout
from rag.datastore import Datastore
from rag.retrieve import FUSIONS, MODES, NORMALIZATIONS, RetrieverConfig, build_retriever


@click.command("search")
@click.argument("datastore", type=click.Path())
@click.argument("query")
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(min=1), help="Number of hits.")
@click.option("--mode", type=click.Choice(MODES), default="dense", show_default=True)
@click.option("--fusion", type=click.Choice(FUSIONS), default=RetrieverConfig.fusion, show_default=True,
              help="Hybrid fusion: reciprocal rank fusion or a convex combination of normalised scores.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=RetrieverConfig.alpha, show_default=True,
              help="Weight of the dense side (1 - alpha for BM25); RRF weighs its lists 2*alpha and 2*(1 - alpha).")
@click.option("--rrf-k", type=click.IntRange(min=0), default=RetrieverConfig.rrf_k, show_default=True,
              help="RRF constant.")
@click.option("--normalization", type=click.Choice(NORMALIZATIONS), default=RetrieverConfig.normalization,
              show_default=True, help="Convex fusion: score normalisation.")
@click.option("--depth", type=click.IntRange(min=1), default=RetrieverConfig.depth, show_default=True,
              help="Hits asked of each retriever before fusion (and the MMR candidate pool).")
@click.option("--rerank", default=None, metavar="KIND:MODEL",
              help="Rerank with cross-encoder:PATH_OR_NAME (or bi-encoder:PATH_OR_NAME).")
@click.option("--rerank-depth", type=click.IntRange(min=1), default=RetrieverConfig.rerank_depth, show_default=True,
              help="Candidates the reranker rescores.")
@click.option("--mmr", type=click.FloatRange(0, 1), default=None,
              help="Diversify the final k by maximal marginal relevance with this lambda (1 = no diversity).")
@click.option("--where", default=None, help="SQL filter over chunk columns and metadata, e.g. \"source LIKE '%.html'\".")
@click.option("--json", "as_json", is_flag=True, help="Print hits as a JSON list.")
@click.option("-v", "--verbose", is_flag=True, help="Print the time spent per stage (to stderr).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("--rescore-multiplier", type=click.IntRange(min=1), default=None,
              help="Binary/approximate indexes: candidates per hit to rescore (default: the one the datastore's "
                   f"manifest records, {DEFAULT_RESCORE_MULTIPLIER} for datastores built now).")
def search_command(datastore: str, query: str, k: int, mode: str, fusion: str, alpha: float, rrf_k: int,
                   normalization: str, depth: int, rerank: str | None, rerank_depth: int, mmr: float | None,
                   where: str | None, as_json: bool, verbose: bool, device: str,
                   rescore_multiplier: int | None = None) -> None:
    """Search DATASTORE for QUERY."""
    started = time.perf_counter()
    ds = Datastore.open(datastore, device=device)
    ds.rescore_multiplier = rescore_multiplier
    retriever = build_retriever(ds, mode, fusion=fusion, alpha=alpha, rrf_k=rrf_k, depth=depth, rerank=rerank,
                                rerank_depth=rerank_depth, mmr=mmr, normalization=normalization, device=device)
    if verbose and mode != "bm25":
        ds.embedder.load()  # load the query model here, so that "dense" below times encoding and search alone
    loaded = time.perf_counter()
    hits = retriever.retrieve(query, k, where=where)
    done = time.perf_counter()
    if as_json:
        click.echo(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False))
    else:
        stdout.print(_hits_table(hits, _title(query, mode, fusion, rerank, mmr, where)))
        if not hits:
            stdout.print("no matching chunks")
    if verbose:
        rows = [("open + load models", f"{loaded - started:.3f} s")]
        rows += [(stage, f"{seconds:.3f} s") for stage, seconds in retriever.timings.items()]
        rows.append(("retrieve (total)", f"{done - loaded:.3f} s"))
        stderr.print(key_value_table("timings", rows))


def _title(query: str, mode: str, fusion: str, rerank: str | None, mmr: float | None, where: str | None) -> str:
    parts = [f"{mode} ({fusion})" if mode == "hybrid" else mode]
    if rerank:
        parts.append(f"rerank {rerank}")
    if mmr is not None:
        parts.append(f"MMR λ={mmr}")
    if where:
        parts.append(f"where {where}")
    return f"{' · '.join(parts)} search: {query!r}"


def _hits_table(hits, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("doc")
    table.add_column("span", justify="right")
    table.add_column("text")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), f"{hit.score:.4f}", hit.doc_id, f"{hit.start}-{hit.end}", snippet(hit.text))
    return table
