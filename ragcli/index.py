"""``rag index``: build (or resume) a datastore from files and folders."""

from __future__ import annotations

import click
from rich.markup import escape

from indexers.build import build_datastore
from indexers.config import BuildConfig, load_config
from indexers.engines import ENGINES, EngineOptions
from indexers.vectors import NO_EMBEDDER
from ragcli.common import key_value_table, stderr, stdout
from ragcli.config_options import build_config_options, config_overrides
from ragcli.datastore import lock_options


@click.command("index")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Datastore folder to write.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML build config (configs/datastores/default.yaml); flags override it.")
@build_config_options
@click.option("--resume", is_flag=True, help="Continue an interrupted build with the same settings (any partial "
                                            "output of a killed build is accepted).")
@click.option("--overwrite", is_flag=True, help="Replace an existing datastore (or a killed run's partial output).")
@lock_options
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@click.option("--engine", type=click.Choice(list(ENGINES)), default="local", show_default=True,
              help="Who embeds and writes shards: this process, or one Ray task per shard (same datastore).")
@click.option("--address", default=None, help="Ray cluster address ('auto' joins a running one; "
                                                "default: start a local cluster).")
@click.option("--num-workers", type=int, default=None, help="Ray: shards built at once (default: cluster CPUs).")
@click.option("--max-retries", type=int, default=3, show_default=True, help="Ray: reruns of a failed shard task.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local engine: embedding processes, each with cores/N threads; each block is split "
                   "among them. No faster than one process on 2 cores (docs/benchmarks.md).")
@click.option("--cpu-workers", type=click.IntRange(min=1), default=None,
              help="Local engine: processes that read and chunk the input and write shards (BM25 tokenizing, "
                   "Parquet, indexes, hashing); the datastore is the same for any count. Default (auto): every "
                   "core for inputs of 64 MiB or more whose vectors are given (--vectors-field) or embedded "
                   "on a GPU, else 1 (docs/benchmarks.md: 0.60x the time with 2 on 100,000 chunks).")
@click.option("--overlap-io/--no-overlap-io", default=True, show_default=True,
              help="Local engine: read and chunk ahead, and write the previous shard, in background threads "
                   "while embedding.")
def index_command(inputs, output, config_file, resume, overwrite, wait, wait_timeout, quiet,
                  engine, address, num_workers, max_retries, workers, cpu_workers, overlap_io, **settings) -> None:
    """Index INPUTS (files or folders of .txt .md .jsonl .parquet .html) into a datastore."""
    engine_options = EngineOptions(engine, address, num_workers, max_retries,
                                   overlap=overlap_io if engine == "local" else True, workers=workers,
                                   cpu_workers=cpu_workers)
    overrides = config_overrides(settings)
    given = overrides.keys()
    if {"vectors_field", "dim"} <= given and "embedder" not in given and config_file is None:
        overrides["embedder"] = NO_EMBEDDER  # --dim without --embedder: no query embedder
    config = (load_config(config_file) if config_file else BuildConfig()).replace(**overrides)
    report = build_datastore(inputs, output, config, resume=resume, overwrite=overwrite, progress=not quiet,
                             engine=engine_options, wait=wait, wait_timeout=wait_timeout)
    manifest = report.manifest
    stats, t = manifest.stats, report.timings
    stdout.print(key_value_table(f"datastore {output}", [
        ("documents", f"{stats['documents']:,} from {stats['files']:,} files"),
        ("chunks", f"{manifest.num_chunks:,} ({config.chunker}, {config.chunk_size} tokens, "
                   f"overlap {config.overlap}, {config.tokenizer})"),
        ("shards", f"{len(manifest.shards)} ({report.shards_written} written, "
                   f"{report.shards_resumed} kept from an earlier run)"),
        ("embedder", _embedder_line(manifest.embedder)),
        ("truncated", _truncation(report.embedding)),
        ("skipped inputs", str(len(report.read.skipped))),
        ("time", f"read+chunk {t['read_chunk']:.1f}s, embed {t['embed']:.1f}s, write {t['write']:.1f}s"
                 + (f", training sample {t['train']:.1f}s" if t.get("train") else "")),
    ]))
    for warning in report.metadata_warnings:
        stderr.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    if report.read.skipped:
        stderr.print(f"[yellow]{len(report.read.skipped)} input(s) skipped[/yellow] (see the warnings above)")


def _embedder_line(record: dict) -> str:
    """The manifest's embedder, and where precomputed vectors came from."""
    vectors = record.get("vectors")
    name = record["name"] or "none (dense search by query vectors)"
    line = f"{name} (dim {record['dim']}, backend {record.get('backend', '?')})"
    if vectors:
        line += f"; precomputed vectors from field {vectors['field']!r}, one per {vectors['per']}"
    return line


def _truncation(embedding: dict) -> str:
    """How many embedded chunks were longer than the model's max_seq_length."""
    texts, truncated = embedding.get("texts", 0), embedding.get("truncated", 0)
    if not texts:
        return "nothing embedded in this run"
    limit = embedding.get("max_seq_length")
    if not truncated:
        return f"none of {texts:,} chunks over {limit} model tokens"
    return f"{truncated:,} of {texts:,} chunks ({truncated / texts:.1%}) over {limit} model tokens: embedded up to there"
