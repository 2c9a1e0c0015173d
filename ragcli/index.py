"""``rag index``: build (or resume) a datastore from files and folders."""

from __future__ import annotations

import click
from rich.markup import escape

from datastores.dense import DENSE_INDEX_TYPES, INDEX_ALIASES, RESCORE_TYPES
from indexers.build import StrictModeError, build_datastore
from indexers.chunkers import CHUNKER_NAMES
from indexers.config import BuildConfig, load_config
from indexers.embedding import BACKENDS
from indexers.engines import ENGINES, EngineOptions, ShardBuildError
from indexers.vectors import NO_EMBEDDER, VECTORS_PER
from ragcli.common import key_value_table, stderr, stdout, user_errors
from ragcli.datastore import lock_options


@click.command("index")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Datastore folder to write.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML build config (configs/datastores/default.yaml); flags override it.")
@click.option("--chunker", type=click.Choice(list(CHUNKER_NAMES)),
              help="Chunking strategy; cluster and kamradt cut where the --embedder's vectors of "
                   "~50-token pieces change (overlap 0; cluster needs --chunk-size >= 50).")
@click.option("--chunk-size", type=int, help="Chunk size in tokens.")
@click.option("--overlap", type=int, help="Overlap between chunks in tokens.")
@click.option("--tokenizer", help="Tokenizer for sizes: a tiktoken encoding or a Hugging Face name/path.")
@click.option("--embedder", help="sentence-transformers model name or local path.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), help="Embedding device.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Texts per embedding batch (default: 64 on CPU, "
                                                               "1024 on a GPU).")
@click.option("--embed-backend", type=click.Choice(list(BACKENDS)),
              help="Embedding backend: auto (ONNX on CPU when available, torch fp16 on CUDA), torch, onnx, "
                   "onnx-int8 (faster, slightly different vectors).")
@click.option("--shard-size", type=int, help="Chunks per shard.")
@click.option("--dense-index", type=click.Choice(list(DENSE_INDEX_TYPES) + list(INDEX_ALIASES)),
              help=f"Dense index: {', '.join(DENSE_INDEX_TYPES)} (float-flat: exact, the default).")
@click.option("--rescore", type=click.Choice(["auto", *RESCORE_TYPES]),
              help="Rescoring layer of approximate/binary indexes (memory-mapped): int8 (default), float16, none.")
@click.option("--bits", type=int, help="Bits per dimension of binary codes (>1: multi-bit residual codes).")
@click.option("--train-sample", type=int, help="Chunks sampled across the input for the int8 range / IVF.")
@click.option("--hnsw-m", type=int, help="HNSW neighbours per node (float-hnsw, binary-hnsw).")
@click.option("--hnsw-ef-construction", type=int, help="HNSW build beam width.")
@click.option("--hnsw-ef-search", type=int, help="HNSW search beam width (default for searches).")
@click.option("--ivf-nlist", type=int, help="IVF lists (float-ivf, float-ivfpq, binary-ivf; default: "
                                             "about 4*sqrt(training sample), >= 39 vectors per list).")
@click.option("--ivf-nprobe", type=int, help="IVF lists probed per search.")
@click.option("--query-prefix", help="Text put before each query when it is embedded (default: the model "
                                     "family's, e.g. e5 'query: '; '' for none). Recorded in the manifest.")
@click.option("--passage-prefix", help="Text put before each chunk when it is embedded (e5: 'passage: ').")
@click.option("--bm25-tokenizer", help="BM25 tokens: simple | stemmed[:LANGUAGE] | hf:NAME_OR_PATH.")
@click.option("--bm25-stopwords", type=click.Choice(["none", "english"]), help="Stop words BM25 drops.")
@click.option("--bm25-idf", type=click.Choice(["rank-bm25", "lucene"]), help="BM25 idf variant.")
@click.option("--bm25-k1", type=float, help="BM25 k1 (default 1.5).")
@click.option("--bm25-b", type=float, help="BM25 b (default 0.75).")
@click.option("--metadata-type", "metadata_types", multiple=True, metavar="FIELD:TYPE",
              help="Declare a metadata field's SQL type (integer, number, string, boolean, date, timestamp), "
                   "e.g. year:integer; filters then compare it as that type (repeatable).")
@click.option("--include", multiple=True, help="Glob of files to read in folders (repeatable).")
@click.option("--exclude", multiple=True, help="Glob of files to leave out (repeatable).")
@click.option("--resume", is_flag=True, help="Continue an interrupted build with the same settings (any partial "
                                            "output of a killed build is accepted).")
@click.option("--overwrite", is_flag=True, help="Replace an existing datastore (or a killed run's partial output).")
@lock_options
@click.option("--strict/--no-strict", default=None, help="Exit non-zero if any input was skipped.")
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
@click.option("--cpu-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local engine: processes that chunk documents and write shards (BM25 tokenizing, "
                   "Parquet, indexes, hashing); the datastore is the same for any count.")
@click.option("--vectors-field", help="Precomputed vectors: the JSONL/Parquet field holding them (no embedding; "
                                      "--embedder names the query embedder, or give --dim for none).")
@click.option("--vectors-per", type=click.Choice(list(VECTORS_PER)),
              help="Precomputed vectors: one per document (default) or a list with one per chunk.")
@click.option("--dim", type=click.IntRange(min=1), help="Precomputed vectors: their dimension (with no --embedder: "
                                                       "a datastore searched by query vectors or BM25).")
@click.option("--normalize", is_flag=True, default=None,
              help="Precomputed vectors: scale to unit length (else a vector of another length is an error).")
@click.option("--overlap-io/--no-overlap-io", default=True, show_default=True,
              help="Local engine: read and chunk ahead, and write the previous shard, in background threads "
                   "while embedding.")
@user_errors
def index_command(inputs, output, config_file, chunker, chunk_size, overlap, tokenizer, embedder, device,
                  batch_size, embed_backend, shard_size, query_prefix, passage_prefix,
                  bm25_tokenizer, bm25_stopwords, bm25_idf, bm25_k1, bm25_b, metadata_types, include, exclude,
                  resume, overwrite,
                  wait, wait_timeout, strict, quiet,
                  engine, address, num_workers, max_retries, workers, cpu_workers, overlap_io,
                  vectors_field, vectors_per, dim, normalize, **dense_options) -> None:
    """Index INPUTS (files or folders of .txt .md .jsonl .parquet .html) into a datastore."""
    engine_options = EngineOptions(engine, address, num_workers, max_retries,
                                   overlap=overlap_io if engine == "local" else True, workers=workers,
                                   cpu_workers=cpu_workers)
    config = load_config(config_file) if config_file else BuildConfig()
    config = config.replace(chunker=chunker, chunk_size=chunk_size, overlap=overlap, tokenizer=tokenizer,
                            embedder=embedder, device=device, batch_size=batch_size, embed_backend=embed_backend,
                            shard_size=shard_size, query_prefix=query_prefix, passage_prefix=passage_prefix,
                            bm25_tokenizer=bm25_tokenizer, bm25_stopwords=bm25_stopwords, bm25_idf=bm25_idf,
                            bm25_k1=bm25_k1, bm25_b=bm25_b,
                            include=list(include) or None, exclude=list(exclude) or None, strict=strict,
                            metadata_types=list(metadata_types) or None)
    config = config.replace(**dense_options)
    if vectors_field and embedder is None and dim is not None and config_file is None:
        embedder = NO_EMBEDDER  # --dim without --embedder: no query embedder
    config = config.replace(vectors_field=vectors_field, vectors_per=vectors_per, dim=dim, normalize=normalize,
                            embedder=embedder)
    try:
        report = build_datastore(inputs, output, config, resume=resume, overwrite=overwrite, progress=not quiet,
                                 engine=engine_options, wait=wait, wait_timeout=wait_timeout)
    except (StrictModeError, ShardBuildError) as exc:
        raise click.ClickException(str(exc)) from exc
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
