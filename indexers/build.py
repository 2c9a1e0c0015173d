"""The streaming build: read -> chunk -> embed -> write, one shard in memory at a time.

The one way to write a datastore from texts: ``rag index`` gives paths, the evaluators give
documents or their own chunks (``indexers.build_input.BuildInput``); all are embedded with the
model's passage prefix and written the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from datastores import DatastoreWriter, Manifest
from datastores.errors import UserError
from datastores.lock import DatastoreLock, writer_lock
from datastores.writer import check_output
from datastores.sql import MetadataKinds, mixed_type_warning, parse_metadata_types
from indexers.chunkers import EMBEDDING_CHUNKERS, Chunker, build_chunker
from indexers.config import BuildConfig, ConfigError
from indexers.cpu_pool import ChunkedBatch, ChunkRecipe, CpuPool, auto_cpu_workers
from indexers.build_input import BuildInput
from indexers.embedding import Embedder, EmbedderOptions, EncodeStats
from indexers.embedding.backend import pick_device
from indexers.engines import (BuildProgress, ChunkBlock, ChunkRun, EmbedPlan, EngineError, EngineOptions,
                              chunk_blocks, run_local, shard_jobs)
from indexers.readers import ReadReport, SeenIds
from indexers.training_sample import BottomK, embed_training_sample, position
from indexers.vectors import NO_EMBEDDER, VectorSpec


logger = logging.getLogger(__name__)


class StrictModeError(UserError):
    """``strict`` was set and some inputs were skipped."""


@dataclass
class BuildReport:
    """What a build did and how long each stage took (seconds)."""

    manifest: Manifest
    read: ReadReport
    shards_written: int = 0
    shards_resumed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    #: the embedder's record (name, backend, ...) and what encoding did: texts, tokens, truncated
    #: (inputs cut at the model's max_seq_length), padded tokens (indexers.embedding.backend.EncodeStats)
    embedding: dict[str, Any] = field(default_factory=dict)
    #: one line per metadata field seen with mixed types that the config does not declare
    metadata_warnings: list[str] = field(default_factory=list)

    @property
    def chunks(self) -> int:
        return self.manifest.num_chunks


@dataclass
class _CorpusStats:
    documents: int = 0
    characters: int = 0
    tokens: int = 0
    metadata: MetadataKinds = field(default_factory=MetadataKinds)

    def add(self, batch: ChunkedBatch) -> None:
        """Count a batch's documents, characters, tokens and metadata types (first documents first)."""
        self.documents += len(batch.doc_ids)
        self.characters += sum(batch.characters)
        self.tokens += sum(batch.tokens)
        for key, kinds in batch.kinds.seen.items():
            for kind, doc_id in kinds.items():
                self.metadata.seen.setdefault(key, {}).setdefault(kind, doc_id)

    def as_dict(self, read: ReadReport, source: BuildInput) -> dict[str, Any]:
        if source.chunks is not None:  # given chunks: their documents' texts and tokens are not known
            return {"documents": self.documents, "characters": self.characters}
        return {"documents": self.documents, "characters": self.characters, "tokens": self.tokens,
                "files": read.files, "skipped": len(read.skipped)}


def _unique(batch: ChunkedBatch, seen: SeenIds, read: ReadReport) -> ChunkedBatch:
    """``batch`` without documents whose id came before (skipped in ``read``, as ``iter_documents`` does)."""
    fresh = seen.first_seen(batch.doc_ids)
    duplicates = np.flatnonzero(~fresh).tolist()
    for i in duplicates:
        read.skip(batch.doc_ids[i], "duplicate document id")
    read.documents += len(batch.doc_ids) - len(duplicates)
    return batch.without(duplicates) if duplicates else batch


def _runs(batches: Iterable[ChunkedBatch], unique: bool, stats: _CorpusStats, read: ReadReport,
          timings: dict[str, float]) -> Iterator[ChunkRun]:
    """The chunk runs of ``batches`` in order (with ``unique``, documents with an id read before are
    dropped), counted in ``stats``; the time spent waiting for them goes to ``read_chunk``."""
    seen = SeenIds()
    started = time.perf_counter()
    for batch in batches:
        read.merge(batch.read)
        if unique:
            batch = _unique(batch, seen, read)
        stats.add(batch)
        timings["read_chunk"] += time.perf_counter() - started
        yield ChunkRun(batch.chunks, batch.vectors)
        started = time.perf_counter()
    timings["read_chunk"] += time.perf_counter() - started


def _batches(source: BuildInput, config: BuildConfig, cpu: CpuPool, read: ReadReport) -> Iterator[ChunkedBatch]:
    """The input chunked: the given chunks, or its tasks chunked (by ``cpu``'s workers)."""
    if source.chunks is not None:
        return source.given_batches()
    return cpu.chunk(source.tasks(config.reader_options, read))


def _train(writer: DatastoreWriter, source: BuildInput, config: BuildConfig, embedder: Any, cpu: CpuPool,
           progress: bool, timings: dict[str, float]) -> None:
    """The int8 range / IVF centroids, once, from a sample of the whole input (when the index needs
    them): of the precomputed vectors (no chunking), else of the chunk texts, embedded."""
    if not writer.needs_dense_training():
        return
    source.check_rereadable()
    started = time.perf_counter()
    sample = BottomK(config.dense.train_sample)
    if cpu.local.vectors is not None:
        drawn = _vector_sample(source, config, cpu, sample)
        writer.train_dense(drawn if drawn is not None else np.zeros((0, embedder.dim), dtype=np.float32))
    else:
        texts = _text_sample(source, config, cpu, sample)
        writer.train_dense(embed_training_sample(texts, embedder, config.batch_size, progress))
    timings["train"] += time.perf_counter() - started


def _vector_sample(source: BuildInput, config: BuildConfig, cpu: CpuPool, sample: BottomK) -> np.ndarray | None:
    """The sampled precomputed vectors: Parquet files read for their text and vector columns only,
    nothing chunked; each task's candidates are those below the sample's bound when it is sent."""
    options = config.reader_options
    work = source.tasks(options, ReadReport(log=False), [options.text_field, options.vectors_field])
    for positions, vectors in cpu.run("sample", ((task, n, sample.limit) for n, task in enumerate(work))):
        sample.add(positions, vectors)
    return sample.sample()


def _text_sample(source: BuildInput, config: BuildConfig, cpu: CpuPool, sample: BottomK) -> list[str]:
    """The sampled chunk texts (a read+chunk pass; the build's own pass reports what it skips)."""
    quiet = ReadReport(log=False)
    runs = _runs(_batches(source, config, cpu, quiet), source.paths != (), _CorpusStats(), quiet,
                 {"read_chunk": 0.0})
    for number, run in enumerate(runs):
        sample.add(position(number, len(run.chunks)), np.array([c.text for c in run.chunks], dtype=object))
    texts = sample.sample()
    return [] if texts is None else texts.tolist()


def _stream(source: BuildInput, config: BuildConfig, embedder: Any, cpu: CpuPool, writer: DatastoreWriter,
            engine: EngineOptions, embedder_factory: Callable[[], Any] | None, progress: bool, read: ReadReport,
            stats: _CorpusStats, timings: dict[str, float]) -> EncodeStats:
    """Read, chunk, embed (or take the precomputed vectors) and write every shard; what encoding did."""
    bar = tqdm(desc="indexing", unit="chunk", disable=not progress or None, dynamic_ncols=True)
    tracker = BuildProgress(timings, bar=bar, documents=lambda: stats.documents)
    if (engine.name != "local" or engine.workers > 1) and embedder_factory is None:
        embedder_factory = embedder.fresh  # picklable: each worker loads its own copy
    runs = _runs(_batches(source, config, cpu, read), source.paths != (), stats, read, timings)
    _run_engine(engine, chunk_blocks(runs, config.shard_size), writer,
                EmbedPlan(embedder, config.batch_size, embedder_factory), tracker, cpu)
    bar.close()
    return tracker.encoded


def _run_engine(options: EngineOptions, blocks: Iterable[ChunkBlock], writer: DatastoreWriter, plan: EmbedPlan,
                progress: BuildProgress, cpu: CpuPool) -> None:
    """Build every shard of ``blocks`` with the chosen engine, recorded in ``writer`` in order."""
    if options.name == "local":
        run_local(blocks, writer, plan, progress, options, cpu)
        return
    try:
        from indexers.ray_engine import run_ray
    except ImportError as exc:
        raise EngineError(f"--engine ray needs Ray: pip install 'terarag[ray]' ({exc})") from exc
    if plan.factory is None:
        raise EngineError("the Ray engine needs an embedder factory (each worker loads its own embedder)")
    run_ray(options, shard_jobs(blocks), writer, plan.factory, plan.batch_size, progress)


def _build_embedder(config: BuildConfig, embedder: Embedder | None) -> Embedder:
    """The build's embedder (``embedder``, else the one the config names) with the config's prefixes."""
    if embedder is None and config.embedder == NO_EMBEDDER:
        embedder = Embedder.precomputed(config.dim or 0)
    if embedder is None:
        options = EmbedderOptions(config.embedder, config.embed_backend, config.device, config.batch_size)
        embedder = Embedder(options).load()
    return embedder.with_prefixes(config.query_prefix, config.passage_prefix)


def _vector_spec(config: BuildConfig, dim: int, engine: EngineOptions) -> VectorSpec | None:
    """The checked precomputed-vector settings of a build (None: the build embeds)."""
    spec = config.vector_spec()
    if spec is None:
        return None
    if config.dim is not None and config.dim != dim:
        raise ConfigError(f"--dim {config.dim} does not match the dimension {dim} of embedder {config.embedder}")
    if engine.name != "local" or engine.workers > 1:
        raise EngineError("precomputed vectors are written by the local engine without embedding "
                          "processes; drop --engine ray / --workers")
    return spec.with_dim(dim)


def build_datastore(inputs: BuildInput | Sequence[str | Path], output: str | Path, config: BuildConfig | None = None,
                    *, resume: bool = False, overwrite: bool = False,
                    embedder: Embedder | None = None, progress: bool = True,
                    engine: EngineOptions | None = None,
                    embedder_factory: Callable[[], Any] | None = None,
                    wait: bool = False, wait_timeout: float | None = None) -> BuildReport:
    """Index ``inputs`` into a datastore at ``output``.

    ``inputs`` are paths of files and folders, or a ``BuildInput`` of documents or of chunks made
    by the caller (``indexers.build_input``); either way the chunks are embedded with the model's
    passage prefix (``config.passage_prefix``) and written as ``rag index`` writes them.

    With ``resume``, shards already written by an interrupted build with the same settings are
    kept and the result equals an uninterrupted build; ``resume`` and ``overwrite`` accept any
    folder holding only what terarag writers leave (a datastore or a killed run's partial output).
    ``embedder`` lets callers reuse a loaded model; it must be the one ``config.embedder`` names
    (the config's prefixes apply to it).
    ``engine`` picks who embeds and writes the shards (``indexers.engines``: local by default, or
    Ray); the datastore is the same either way. Ray workers load their own embedder with
    ``embedder_factory`` (default: ``embedder.fresh``, an unloaded copy of the build's; a given
    factory returns the whole ``Embedder``, prefixes included). The build holds ``output``'s writer
    lock from start to commit; another writer there makes it fail at once, or, with ``wait``,
    wait (at most ``wait_timeout`` seconds).
    """
    if resume and overwrite:
        raise UserError("choose either resume or overwrite, not both")
    source = BuildInput.of(inputs)
    mode = "resume" if resume else ("overwrite" if overwrite else "create")
    check_output(output, mode)  # refuse before a lock file is created or a model loaded
    operation = "index" if mode == "create" else f"index --{mode}"
    with writer_lock(output, operation, wait=wait, timeout=wait_timeout, create=True) as lock:
        return _build(source, output, config or BuildConfig(), mode, embedder, progress,
                      engine or EngineOptions(), embedder_factory, lock)


def _params(source: BuildInput, config: BuildConfig) -> dict[str, Any]:
    """The build parameters (fingerprint and manifest): the input and the config's result settings
    (without the chunker settings when the caller made the chunks: the chunker's spec says how)."""
    params = {"inputs": source.recorded, **config.result_params()}
    if source.chunks is not None:
        for name in ("chunker", "chunk_size", "overlap", "tokenizer"):
            params.pop(name, None)
    return params


def _chunker(source: BuildInput, config: BuildConfig, embedder: Any, engine: EngineOptions,
             vectors: VectorSpec | None) -> tuple[Chunker, Any]:
    """The build's chunker (the caller's, for given chunks) and the embedder the build embeds with."""
    if source.chunker is not None:
        if vectors is not None:
            raise ConfigError("precomputed vectors come with documents; given chunks are embedded")
        return source.chunker, embedder
    if config.chunker in EMBEDDING_CHUNKERS and ((engine.cpu_workers or 1) > 1 or vectors is not None):
        raise ConfigError(f"the {config.chunker} chunker embeds with the build's embedder in this process: "
                          "drop --cpu-workers and precomputed vectors")
    return build_chunker(config.chunker, config.chunk_size, config.overlap, config.tokenizer, embedder)


def _cpu_workers(source: BuildInput, config: BuildConfig, embedder: Embedder, engine: EngineOptions,
                 recipe: ChunkRecipe | None) -> int:
    """The build's CPU worker count: ``engine.cpu_workers``, else (auto) every usable core for a
    large file input whose vectors are given or embedded off the CPU (``auto_cpu_workers``)."""
    if engine.cpu_workers is not None:
        return engine.cpu_workers
    if engine.name != "local" or recipe is None or recipe.name in EMBEDDING_CHUNKERS or not source.paths:
        return 1
    if recipe.vectors is None and pick_device(embedder.options.device) == "cpu":
        return 1  # the workers would take the CPU embedder's cores
    workers = auto_cpu_workers(source.input_bytes(), cpu_embeds=False)
    if workers > 1:
        logger.info("reading, chunking and writing in %d CPU worker processes (--cpu-workers auto)", workers)
    return workers


def _build(source: BuildInput, output: str | Path, config: BuildConfig, mode: str,
           embedder: Embedder | None, progress: bool, engine: EngineOptions,
           embedder_factory: Callable[[], Any] | None, lock: DatastoreLock) -> BuildReport:
    """``build_datastore`` while holding ``lock``."""
    embedder = _build_embedder(config, embedder)
    vectors = _vector_spec(config, embedder.dim, engine)
    chunker, embedder = _chunker(source, config, embedder, engine, vectors)
    params = _params(source, config)
    spec = {**embedder.spec, "vectors": vectors.provenance()} if vectors else embedder.spec
    writer = DatastoreWriter.for_mode(mode, output, params, spec, chunker.spec, config.bm25, config.dense, lock=lock)
    read = ReadReport()
    stats = _CorpusStats()
    timings = {"train": 0.0, "read_chunk": 0.0, "embed": 0.0, "write": 0.0}
    recipe = None if source.chunks is not None else ChunkRecipe(config.chunker, config.chunk_size, config.overlap,
                                                                config.tokenizer, vectors, config.reader_options)
    with CpuPool(_cpu_workers(source, config, embedder, engine, recipe), recipe, chunker, vectors,
                 config.reader_options) as cpu:
        _train(writer, source, config, embedder, cpu, progress, timings)
        encoded = _stream(source, config, embedder, cpu, writer, engine, embedder_factory, progress, read,
                          stats, timings)
    if config.strict and read.skipped:
        raise StrictModeError(f"{len(read.skipped)} input(s) were skipped and strict mode is on")
    if stats.documents == 0:
        raise UserError(f"no documents found in {', '.join(source.recorded)}")
    started = time.perf_counter()
    manifest = writer.finish(stats.as_dict(read, source), embedder.dim)
    timings["write"] += time.perf_counter() - started
    embedding = {**embedder.spec, **encoded.as_dict()}
    warnings = [mixed_type_warning(k, kinds) for k, kinds in stats.metadata.mixed(
        list(parse_metadata_types(config.metadata_types))).items()]
    for warning in warnings:
        logger.warning(warning)
    return BuildReport(manifest, read, len(writer.shards) - writer.resumed_shards, writer.resumed_shards, timings,
                       embedding, warnings)
