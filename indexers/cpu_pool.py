"""The CPU side of a build, in this process or in worker processes (``rag index --cpu-workers N``).

The build cuts its input into tasks (``tasks``): runs of input pieces (``indexers.readers.Piece``:
whole files, runs of JSON Lines as bytes, Arrow batches of Parquet rows) or of given documents,
about ``TASK_RECORDS`` records / ``TASK_BYTES`` bytes each. The cut does not depend on the worker
count. A ``ChunkWork`` turns a task into a ``ChunkedBatch`` (parse, chunk, count tokens, check the
precomputed vectors: one array per batch) or into its training-sample candidates.

With one worker the work runs in the build's process. With N > 1, N worker processes share it
(forked from a server process that imported the build's modules once; spawned where there is
none): at most ``2 N`` tasks are in flight and results are taken in submission order, so the
stream is exactly the one-process stream; the build's process only reads bytes and Arrow
batches. Shard
writes (``DatastoreWriter.write_shard``: chunk Parquet, row store, dense files, BM25 tokenizing
and term matrix, hashing) run in the workers too, with a pickled copy of the writer; the engine
keeps at most N writes in flight and records finished shards in order.

Same input, same tasks, same chunks, same shards: the datastore's bytes do not depend on N.
Embedding-based chunkers (``cluster``, ``kamradt``) chunk in the build's process (they need its
embedder).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from datastores.errors import UserError
from datastores.records import Chunk, Document
from datastores.sql import MetadataKinds
from indexers.chunkers import EMBEDDING_CHUNKERS, Chunker, make_chunker
from indexers.readers import Piece, ReaderOptions, ReadReport, read_piece
from indexers.training_sample import position, sample_keys
from indexers.vectors import VectorSpec, checked_vectors

#: A task ends once it holds this many records (documents, lines, rows) or bytes.
TASK_RECORDS = 256
TASK_BYTES = 1 << 20
#: ``cpu_workers`` None (auto) uses every usable core for inputs of at least this many bytes.
AUTO_MIN_BYTES = 64 << 20
#: The worker process's ``ChunkWork`` (set by ``_start_worker``).
_WORKER: dict[str, Any] = {}


class CpuPoolError(UserError):
    """Bad worker settings."""


@dataclass
class ChunkedBatch:
    """What a task became: its documents (ids, characters, tokens, chunks per document), their chunks
    in order, the chunks' precomputed vectors (None: the build embeds), the JSON types of their
    metadata and what the reader skipped."""

    doc_ids: list[str]
    characters: list[int]
    tokens: list[int]
    counts: list[int]
    chunks: list[Chunk]
    vectors: np.ndarray | None = None
    kinds: MetadataKinds = field(default_factory=MetadataKinds)
    read: ReadReport = field(default_factory=lambda: ReadReport(log=False))

    def without(self, drop: Sequence[int]) -> "ChunkedBatch":
        """This batch without the documents at indices ``drop`` (duplicate ids)."""
        keep_docs = np.ones(len(self.doc_ids), dtype=bool)
        keep_docs[list(drop)] = False
        keep_rows = np.repeat(keep_docs, self.counts)
        chunks = [c for c, keep in zip(self.chunks, keep_rows) if keep]
        kinds = MetadataKinds()
        for chunk in chunks:
            kinds.add(chunk.doc_id, chunk.metadata)
        pick = np.flatnonzero(keep_docs).tolist()
        return ChunkedBatch([self.doc_ids[i] for i in pick], [self.characters[i] for i in pick],
                            [self.tokens[i] for i in pick], [self.counts[i] for i in pick], chunks,
                            None if self.vectors is None else self.vectors[keep_rows], kinds, self.read)


@dataclass(frozen=True)
class ChunkRecipe:
    """A picklable recipe for the build's chunker, reader options and precomputed-vector checks."""

    name: str
    chunk_size: int
    overlap: int
    tokenizer: str
    vectors: VectorSpec | None = None
    reader: ReaderOptions = field(default_factory=ReaderOptions)

    def chunker(self) -> Chunker:
        return make_chunker(self.name, self.chunk_size, self.overlap, self.tokenizer)


@dataclass
class ChunkWork:
    """What a worker (or the build's process) does with a task."""

    chunker: Chunker
    vectors: VectorSpec | None
    reader: ReaderOptions

    def documents(self, task: list[Piece] | list[Document]) -> tuple[list[Document], ReadReport]:
        """The documents of a task of pieces (read here) or of given documents."""
        report = ReadReport(log=False)
        if not task or not isinstance(task[0], Piece):
            return list(task), report
        documents = []
        for piece in task:
            found, read = read_piece(piece, self.reader)
            documents.extend(found)
            report.skipped.extend(read.skipped)
            report.decoded.extend(read.decoded)
        return documents, report

    def chunk(self, task: list[Piece] | list[Document]) -> ChunkedBatch:
        """The task's documents chunked, tokens counted, precomputed vectors checked."""
        documents, read = self.documents(task)
        chunked = [self.chunker.chunk_counted(d) for d in documents]
        counts = [len(chunks) for chunks, _ in chunked]
        chunks = [c for cs, _ in chunked for c in cs]
        vectors = None if self.vectors is None else checked_vectors(documents, self.vectors, counts)
        kinds = MetadataKinds()
        for chunk in chunks:
            kinds.add(chunk.doc_id, chunk.metadata)
        return ChunkedBatch([d.id for d in documents], [len(d.text) for d in documents],
                            [tokens for _, tokens in chunked], counts, chunks, vectors, kinds, read)

    def sample(self, task: list[Piece] | list[Document], number: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Training-sample candidates of task ``number``: (positions, vectors) of its documents'
        checked vectors whose key is below ``limit`` (the sample's current bound)."""
        documents, _ = self.documents(task)
        vectors = checked_vectors(documents, self.vectors)
        positions = position(number, len(vectors))
        keep = sample_keys(positions) < np.uint64(limit)
        return positions[keep], vectors[keep]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_cpu_workers(input_bytes: int, cpu_embeds: bool, cores: int | None = None,
                     min_bytes: int = AUTO_MIN_BYTES) -> int:
    """``--cpu-workers auto``: every usable core when the input holds at least ``min_bytes`` and the
    CPU does not also embed (precomputed vectors, a GPU embedder), else 1. Measured on an idle
    2-core VM: 2 workers took 0.60x of one on 100,000 chunks and 0.77x on 20,000
    (docs/benchmarks.md); a pool costs ~2 CPU-seconds to start, and next to a CPU embedder the
    workers would take its cores (not measured), so small inputs and CPU embedding keep one."""
    if cpu_embeds or input_bytes < min_bytes:
        return 1
    return max(1, cores or usable_cores())


def _start_worker(recipe: ChunkRecipe) -> None:
    _WORKER["work"] = ChunkWork(recipe.chunker(), recipe.vectors, recipe.reader)
    _WORKER["work"].chunker.chunk_counted(Document("warm-up", "warm up", ""))  # load the tokenizer now


def _in_worker(method: str, *args: Any) -> Any:
    return getattr(_WORKER["work"], method)(*args)


def done_future(result: Any) -> Future:
    """A future that already holds ``result``."""
    future: Future = Future()
    future.set_result(result)
    return future


def _weight(item: Piece | Document) -> tuple[int, int]:
    return item.weight if isinstance(item, Piece) else (1, len(item.text))


def tasks(items: Iterable[Piece | Document]) -> Iterator[list[Piece | Document]]:
    """Consecutive runs of pieces or documents, closed once they reach ``TASK_RECORDS`` records or
    ``TASK_BYTES`` bytes."""
    task: list[Piece | Document] = []
    records = size = 0
    for item in items:
        task.append(item)
        weight = _weight(item)
        records, size = records + weight[0], size + weight[1]
        if records >= TASK_RECORDS or size >= TASK_BYTES:
            yield task
            task, records, size = [], 0, 0
    if task:
        yield task


def _context() -> Any:
    """Workers fork from a server process that has imported the build's modules once (fast starts,
    and no fork of this process's threads); where there is none, they are spawned."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["indexers.cpu_pool", "datastores.writer"])
    return context


class CpuPool:
    """``workers`` spawned processes that chunk tasks and write shards (see the module doc).

    ``recipe`` None (embedding chunkers, given chunks) keeps chunking in the build's process with
    ``chunker``; writes still go to the workers. Use as a context manager; ``workers`` = 1 starts
    no process."""

    def __init__(self, workers: int, recipe: ChunkRecipe | None, chunker: Chunker,
                 vectors: VectorSpec | None = None, reader: ReaderOptions | None = None):
        if workers < 1:
            raise CpuPoolError(f"cpu_workers must be at least 1 (got {workers})")
        if recipe is not None and recipe.name in EMBEDDING_CHUNKERS:
            recipe = None
        self.workers = workers
        self.recipe = recipe
        self.local = ChunkWork(chunker, vectors, reader or ReaderOptions())
        self.executor: ProcessPoolExecutor | None = None
        if workers > 1:
            self.executor = ProcessPoolExecutor(workers, mp_context=_context(),
                                                initializer=_start_worker if recipe else None,
                                                initargs=(recipe,) if recipe else ())
            for _ in range(workers):  # start every worker now: they start while this process sets up
                self.executor.submit(int)

    def __enter__(self) -> "CpuPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)

    @property
    def write_depth(self) -> int:
        """Shard writes the engine keeps in flight (0: write in a thread of this process)."""
        return self.workers if self.executor is not None else 0

    def run(self, method: str, calls: Iterable[tuple]) -> Iterator[Any]:
        """``ChunkWork.<method>(*call)`` for each call, results in order: in the workers when
        there are any (at most ``2 N`` in flight; ``calls`` is drawn lazily), else here."""
        if self.executor is None or self.recipe is None:
            for call in calls:
                yield getattr(self.local, method)(*call)
            return
        in_flight: deque[Future] = deque()
        for call in calls:
            in_flight.append(self.executor.submit(_in_worker, method, *call))
            while len(in_flight) >= 2 * self.workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()

    def chunk(self, work: Iterable[list]) -> Iterator[ChunkedBatch]:
        """Every task of ``work`` chunked (``ChunkWork.chunk``), in order."""
        return self.run("chunk", ((task,) for task in work))

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        """Run ``function(*args)`` in a worker (picklable function and arguments)."""
        if self.executor is None:
            raise CpuPoolError("no worker processes (cpu_workers = 1)")
        return self.executor.submit(function, *args)
