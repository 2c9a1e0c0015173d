"""``rag embed-bench``: embedding throughput (docs/s, tokens/s) and single-query latency per backend.

The measuring functions are shared with ``benchmarks/embedding.py``. Repetitions of the
backends are interleaved (round-robin) so that load from other processes spreads evenly over
them; medians are reported, with CPU seconds (all threads of this process) next to wall time.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import click
import numpy as np

from ragcli.common import stdout

#: The names ``--backends`` accepts: the embedder backends, and ``st`` for plain
#: ``SentenceTransformer.encode`` (the baseline: default arguments, normalized output).
BENCH_BACKENDS = ("st", "torch", "onnx", "onnx-int8")
BASELINE = "st"


def load_texts(paths: Sequence[str | Path], limit: int | None = 500, chunk_size: int = 200) -> list[str]:
    """Chunks of the files under ``paths`` (recursive chunker, cl100k tokens, no overlap), in order."""
    from indexers import make_chunker
    from indexers.readers import iter_documents

    chunker = make_chunker("recursive", chunk_size, 0)
    texts: list[str] = []
    for document in iter_documents(list(paths)):
        texts.extend(chunk.text for chunk in chunker.chunk(document))
        if limit and len(texts) >= limit:
            break
    if not texts:
        raise click.ClickException(f"no text found in {', '.join(map(str, paths))}")
    return texts[:limit] if limit else texts


class PlainSentenceTransformer:
    """The baseline: ``SentenceTransformer(path).encode(texts, normalize_embeddings=True)``."""

    backend = BASELINE

    def __init__(self, model: str, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer
        from indexers.embedding import locate_model

        location = locate_model(model)
        self.name = location.name
        self.model = SentenceTransformer(location.path_or_name, device=device, local_files_only=True)

    def encode(self, texts: Sequence[str], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        kwargs = {"batch_size": batch_size} if batch_size else {}
        return self.model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False, **kwargs)


def make_embedder(backend: str, model: str, device: str = "cpu", batch_size: int = 64) -> Any:
    if backend == BASELINE:
        return PlainSentenceTransformer(model, device)
    from indexers.embedding import load_embedder

    return load_embedder(model, device=device, batch_size=batch_size, backend=backend).backend


def count_tokens(model: str, texts: Sequence[str]) -> tuple[int, int]:
    """Model tokens the texts are embedded as (after truncation), and how many texts are truncated."""
    from indexers.embedding import locate_model, token_lengths
    from indexers.embedding.onnx_backend import load_fast_tokenizer

    location = locate_model(model)
    max_length = 256
    config = Path(location.path_or_name) / "sentence_bert_config.json"
    if config.is_file():
        max_length = int(json.loads(config.read_text()).get("max_seq_length", max_length))
    lengths, truncated = token_lengths(load_fast_tokenizer(location.path_or_name, max_length), texts)
    return int(lengths.sum()), int(truncated.sum())


@dataclass
class BackendResult:
    backend: str
    load_seconds: float
    wall_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    query_ms: list[float] = field(default_factory=list)
    vectors: np.ndarray | None = None

    def summary(self, docs: int, tokens: int) -> dict[str, Any]:
        wall = statistics.median(self.wall_seconds)
        return {"backend": self.backend, "load_s": round(self.load_seconds, 2),
                "wall_s_median": round(wall, 3), "wall_s": [round(x, 3) for x in self.wall_seconds],
                "cpu_s_median": round(statistics.median(self.cpu_seconds), 3),
                "docs_per_s": round(docs / wall, 1), "tokens_per_s": round(tokens / wall, 0),
                "docs_per_s_best": round(docs / min(self.wall_seconds), 1),
                "query_ms_median": round(statistics.median(self.query_ms), 2) if self.query_ms else None,
                "query_ms_p90": round(float(np.percentile(self.query_ms, 90)), 2) if self.query_ms else None}


def run_benchmark(model: str, texts: Sequence[str], backends: Sequence[str], repeats: int = 3,
                  batch_size: int = 64, queries: Sequence[str] = (), device: str = "cpu", block: int = 100,
                  log: Callable[[str], None] | None = None) -> dict[str, BackendResult]:
    """Load every backend, encode ``texts`` ``repeats`` times, time single queries.

    Each repetition goes through ``texts`` in blocks of ``block`` texts; every backend encodes
    each block (one ``encode`` call: its own sorting and batching), in an order that rotates from
    block to block. A backend's time for a repetition is the sum over the blocks. Interleaving at
    this grain (seconds, not minutes) gives every backend the same share of whatever else runs
    on the machine.
    """
    log = log or (lambda message: None)
    embedders, results = {}, {}
    for backend in backends:
        started = time.perf_counter()
        embedders[backend] = make_embedder(backend, model, device, batch_size)
        results[backend] = BackendResult(backend, time.perf_counter() - started)
        embedders[backend].encode(list(texts[:8]), batch_size)  # warm-up (allocations, first-call costs)
        log(f"loaded {backend} in {results[backend].load_seconds:.1f}s")
    texts = list(texts)
    block = block if block and block > 0 else len(texts)
    blocks = [texts[lo:lo + block] for lo in range(0, len(texts), block)]
    turn = 0
    for repeat in range(repeats):
        wall = dict.fromkeys(backends, 0.0)
        cpu = dict.fromkeys(backends, 0.0)
        parts: dict[str, list[np.ndarray]] = {b: [] for b in backends}
        for part in blocks:
            order = list(backends[turn % len(backends):]) + list(backends[:turn % len(backends)])
            turn += 1
            for backend in order:
                gc.collect()
                w, c = time.perf_counter(), time.process_time()
                size = None if backend == BASELINE else batch_size  # the baseline keeps its default (32)
                vectors = embedders[backend].encode(part, size)
                wall[backend] += time.perf_counter() - w
                cpu[backend] += time.process_time() - c
                parts[backend].append(np.asarray(vectors, dtype=np.float32))
        for backend in backends:
            results[backend].wall_seconds.append(wall[backend])
            results[backend].cpu_seconds.append(cpu[backend])
            results[backend].vectors = np.concatenate(parts[backend])
        log(f"repeat {repeat + 1}/{repeats}: " + ", ".join(f"{b} {wall[b]:.1f}s" for b in backends))
    for query in queries:
        for backend in backends:
            started = time.perf_counter()
            embedders[backend].encode([query])
            results[backend].query_ms.append((time.perf_counter() - started) * 1000)
    return results


def quality_against(results: dict[str, BackendResult], reference: str) -> dict[str, dict[str, float]]:
    """Cosine of each backend's vectors to ``reference``'s (same texts)."""
    ref = results[reference].vectors
    out = {}
    for backend, result in results.items():
        if result.vectors is None or ref is None:
            continue
        cos = np.sum(result.vectors * ref, axis=1) / (
            np.linalg.norm(result.vectors, axis=1) * np.linalg.norm(ref, axis=1))
        out[backend] = {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}
    return out


def results_table(title: str, rows: list[dict[str, Any]], baseline: str | None, cosine: dict[str, dict] | None,
                  reference: str | None = "torch"):
    from rich.table import Table

    table = Table(title=title, title_justify="left",
                  caption="docs/s, tokens/s: medians over repetitions; best: docs/s of the fastest repetition; "
                          "query ms: median single-query encode; cos: min cosine to the reference backend")
    for column in ("backend", "docs/s", "best", "tokens/s", f"× {baseline}", "query ms", "load s",
                   f"cos vs {reference}"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    base = next((r for r in rows if r["backend"] == baseline), None)
    for row in rows:
        speedup = f"{row['docs_per_s'] / base['docs_per_s']:.2f}" if base else "–"
        cos = (cosine or {}).get(row["backend"])
        table.add_row(row["backend"], f"{row['docs_per_s']:.1f}", f"{row['docs_per_s_best']:.1f}",
                      f"{row['tokens_per_s']:,.0f}", speedup,
                      "–" if row["query_ms_median"] is None else f"{row['query_ms_median']:.1f}",
                      f"{row['load_s']:.1f}", f"{cos['min']:.5f}" if cos else "–")
    return table


@click.command("embed-bench")
@click.option("--model", default="all-MiniLM-L6-v2", show_default=True, help="Embedding model name or folder.")
@click.option("--texts", "paths", multiple=True, default=["examples/corpus"], show_default=True,
              type=click.Path(exists=True), help="Files or folders to chunk into benchmark texts (repeatable).")
@click.option("--backends", default="torch,onnx,onnx-int8", show_default=True,
              help=f"Comma-separated, from {', '.join(BENCH_BACKENDS)} (st: plain SentenceTransformer.encode).")
@click.option("--limit", default=500, show_default=True, help="Number of chunks to embed.")
@click.option("--chunk-size", default=200, show_default=True, help="Chunk size in cl100k tokens.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--repeats", default=3, show_default=True, help="Timed repetitions per backend (median).")
@click.option("--block", default=100, show_default=True,
              help="Texts per interleaving block (each backend encodes each block in turn).")
@click.option("--queries", "n_queries", default=20, show_default=True, help="Single-query encodes to time.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def embed_bench_command(model, paths, backends, limit, chunk_size, batch_size, repeats, block, n_queries, device,
                        as_json) -> None:
    """Embedding throughput of each backend on chunks of TEXTS: docs/s, tokens/s, query latency."""
    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BENCH_BACKENDS))
    if unknown or not chosen:
        raise click.BadParameter(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BENCH_BACKENDS)}",
                                 param_hint="--backends")
    texts = load_texts(paths, limit, chunk_size)
    tokens, truncated = count_tokens(model, texts)
    queries = [t.split(".")[0][:120] or t[:120] for t in texts[: max(n_queries, 0)]]
    results = run_benchmark(model, texts, chosen, repeats, batch_size, queries, device, block,
                            log=None if as_json else (lambda m: stdout.print(f"[dim]{m}[/dim]")))
    rows = [results[b].summary(len(texts), tokens) for b in chosen]
    reference = "torch" if "torch" in results else ("st" if "st" in results else None)
    cosine = quality_against(results, reference) if reference else None
    if as_json:
        stdout.print_json(json.dumps({"model": model, "texts": len(texts), "tokens": tokens,
                                      "truncated": truncated, "batch_size": batch_size, "repeats": repeats,
                                      "block": block,
                                      "results": rows, "cosine_vs": reference, "cosine": cosine}))
        return
    title = (f"{model}: {len(texts)} chunks ({tokens:,} model tokens, {truncated} truncated), batch {batch_size}, "
             f"median of {repeats}")
    stdout.print(results_table(title, rows, "st" if "st" in results else reference, cosine, reference))
