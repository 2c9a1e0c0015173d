"""The streaming build: read -> chunk -> embed -> write, one shard in memory at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm.auto import tqdm

from datastores import Bm25Params, DatastoreWriter, Manifest
from datastores.records import Chunk
from indexers.chunkers import Chunker, make_chunker
from indexers.config import BuildConfig
from indexers.embedders import EncodeStats, SentenceTransformerEmbedder, load_embedder
from indexers.readers import ReadReport, iter_documents


class StrictModeError(RuntimeError):
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
    #: (inputs cut at the model's max_seq_length), padded tokens (indexers.embedders.EncodeStats)
    embedding: dict[str, Any] = field(default_factory=dict)

    @property
    def chunks(self) -> int:
        return self.manifest.num_chunks


@dataclass
class _CorpusStats:
    documents: int = 0
    characters: int = 0
    tokens: int = 0

    def as_dict(self, read: ReadReport) -> dict[str, Any]:
        return {"documents": self.documents, "characters": self.characters, "tokens": self.tokens,
                "files": read.files, "skipped": len(read.skipped)}


def _shards_of_chunks(documents, chunker: Chunker, shard_size: int, stats: _CorpusStats,
                      timings: dict[str, float]) -> Iterator[list[Chunk]]:
    """Group the chunks of streamed documents into lists of ``shard_size`` (the last may be shorter)."""
    buffer: list[Chunk] = []
    started = time.perf_counter()
    for document in documents:
        stats.documents += 1
        stats.characters += len(document.text)
        stats.tokens += chunker.tokenizer.count(document.text)
        for chunk in chunker.chunk(document):
            buffer.append(chunk)
            if len(buffer) == shard_size:
                timings["read_chunk"] += time.perf_counter() - started
                yield buffer
                buffer = []
                started = time.perf_counter()
    timings["read_chunk"] += time.perf_counter() - started
    if buffer:
        yield buffer


def build_datastore(inputs: Sequence[str | Path], output: str | Path, config: BuildConfig | None = None,
                    *, resume: bool = False, overwrite: bool = False,
                    embedder: SentenceTransformerEmbedder | None = None, progress: bool = True) -> BuildReport:
    """Index ``inputs`` into a datastore at ``output``.

    With ``resume``, shards already written by an interrupted build with the same settings are
    kept and the result equals an uninterrupted build. ``embedder`` lets callers reuse a loaded
    model; it must be the one ``config.embedder`` names.
    """
    config = config or BuildConfig()
    if resume and overwrite:
        raise ValueError("choose either resume or overwrite, not both")
    chunker = make_chunker(config.chunker, config.chunk_size, config.overlap, config.tokenizer)
    embedder = embedder or load_embedder(config.embedder, config.device, config.batch_size,
                                         backend=config.embed_backend)
    params = {"inputs": [str(p) for p in inputs], **config.result_params()}
    bm25 = Bm25Params(config.bm25_k1, config.bm25_b, config.bm25_epsilon)
    writer = DatastoreWriter(output, params, embedder.spec, chunker.spec, bm25, config.dense_index,
                             mode="resume" if resume else ("overwrite" if overwrite else "create"))
    read = ReadReport()
    stats = _CorpusStats()
    timings = {"read_chunk": 0.0, "embed": 0.0, "write": 0.0}
    documents = iter_documents(inputs, config.reader_options, read)
    bar = tqdm(desc="indexing", unit="chunk", disable=not progress or None, dynamic_ncols=True)
    next_chunk_id = 0
    encoded = EncodeStats()
    for chunks in _shards_of_chunks(documents, chunker, config.shard_size, stats, timings):
        if writer.shard_is_done(chunks, next_chunk_id):
            writer.add_shard(chunks, None, next_chunk_id)
        else:
            started = time.perf_counter()
            vectors = embedder.encode([c.text for c in chunks], config.batch_size, progress=bar.update)
            timings["embed"] += time.perf_counter() - started
            last = getattr(embedder, "last_stats", None)
            if isinstance(last, EncodeStats):
                encoded.add(last)
            started = time.perf_counter()
            writer.add_shard(chunks, vectors, next_chunk_id)
            timings["write"] += time.perf_counter() - started
        next_chunk_id += len(chunks)
        bar.set_postfix(shards=len(writer.shards), docs=stats.documents)
    bar.close()
    if config.strict and read.skipped:
        raise StrictModeError(f"{len(read.skipped)} input(s) were skipped and strict mode is on")
    if stats.documents == 0:
        raise ValueError(f"no documents found in {', '.join(map(str, inputs))}")
    started = time.perf_counter()
    manifest = writer.finish(stats.as_dict(read), embedder.dim)
    timings["write"] += time.perf_counter() - started
    embedding = {**embedder.spec, **encoded.as_dict()}
    return BuildReport(manifest, read, len(writer.shards) - writer.resumed_shards, writer.resumed_shards, timings,
                       embedding)
