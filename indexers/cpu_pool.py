"""The CPU side of a build in worker processes (``rag index --cpu-workers N``).

With one worker (the default of the API) everything runs in the build's process, as it always
did. With N > 1, N spawned processes share two jobs:

- chunking: the build's process reads documents (``indexers.readers``) and sends them in batches
  of about ``TASK_DOCUMENTS`` documents / ``TASK_CHARACTERS`` characters to the workers, which chunk
  them, count their tokens and check their precomputed vectors; at most ``2 N`` batches are in
  flight and results are taken in submission order, so the chunk stream is exactly the
  one-process stream;
- shard writes: ``DatastoreWriter.write_shard`` (chunk Parquet, row store, dense files, BM25
  tokenizing and term matrix, hashing) runs in a worker with a pickled copy of the writer; the
  engine keeps at most N writes in flight and records finished shards in order.

Same input, same chunks, same shards: the datastore's bytes do not depend on N. Embedding-based
chunkers (``cluster``, ``kamradt``) chunk in the build's process (they need its embedder).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from datastores.errors import UserError
from datastores.records import Chunk, Document
from indexers.chunkers import EMBEDDING_CHUNKERS, Chunker, make_chunker
from indexers.vectors import VectorSpec, attach_vectors

#: A chunking task ends after this many documents or characters, whichever comes first.
TASK_DOCUMENTS = 256
TASK_CHARACTERS = 1 << 20
#: The worker process's chunker and vector spec (set by ``_start_worker``).
_WORKER: dict[str, Any] = {}


class CpuPoolError(UserError):
    """Bad worker settings."""


@dataclass
class ChunkedDocument:
    """A document's chunks and what the build counts of it."""

    characters: int
    tokens: int
    chunks: list[Chunk]


@dataclass(frozen=True)
class ChunkRecipe:
    """A picklable recipe for the build's chunker and its precomputed-vector checks."""

    name: str
    chunk_size: int
    overlap: int
    tokenizer: str
    vectors: VectorSpec | None = None

    def chunker(self) -> Chunker:
        return make_chunker(self.name, self.chunk_size, self.overlap, self.tokenizer)


def chunk_document(document: Document, chunker: Chunker, vectors: VectorSpec | None) -> ChunkedDocument:
    """``document`` chunked, its tokens counted, its precomputed vectors checked and attached."""
    chunks = chunker.chunk(document)
    if vectors is not None:
        chunks = attach_vectors(document, chunks, vectors)
    return ChunkedDocument(len(document.text), chunker.tokenizer.count(document.text), chunks)


def chunk_documents(documents: Iterable[Document], chunker: Chunker,
                    vectors: VectorSpec | None) -> Iterator[ChunkedDocument]:
    """``chunk_document`` for each document, in this process."""
    for document in documents:
        yield chunk_document(document, chunker, vectors)


def _start_worker(recipe: ChunkRecipe | None) -> None:
    if recipe is not None:
        _WORKER["chunker"] = recipe.chunker()
        _WORKER["vectors"] = recipe.vectors


def _chunk_task(documents: list[Document]) -> list[ChunkedDocument]:
    return [chunk_document(d, _WORKER["chunker"], _WORKER["vectors"]) for d in documents]


def document_batches(documents: Iterable[Document]) -> Iterator[list[Document]]:
    """Consecutive batches of at most ``TASK_DOCUMENTS`` documents and about ``TASK_CHARACTERS``."""
    batch: list[Document] = []
    characters = 0
    for document in documents:
        batch.append(document)
        characters += len(document.text)
        if len(batch) >= TASK_DOCUMENTS or characters >= TASK_CHARACTERS:
            yield batch
            batch, characters = [], 0
    if batch:
        yield batch


class CpuPool:
    """``workers`` spawned processes that chunk documents and write shards (see the module doc).

    ``recipe`` None keeps chunking in the build's process (embedding chunkers); writes still go to
    the workers. Use as a context manager; ``workers`` = 1 starts no process."""

    def __init__(self, workers: int, recipe: ChunkRecipe | None):
        if workers < 1:
            raise CpuPoolError(f"cpu_workers must be at least 1 (got {workers})")
        if recipe is not None and recipe.name in EMBEDDING_CHUNKERS:
            recipe = None
        self.workers = workers
        self.recipe = recipe
        self.executor: ProcessPoolExecutor | None = None
        if workers > 1:
            self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_start_worker, initargs=(recipe,))

    def __enter__(self) -> "CpuPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)

    @property
    def write_depth(self) -> int:
        """Shard writes the engine keeps in flight (0: write in a thread of this process)."""
        return self.workers if self.executor is not None else 0

    def chunk_documents(self, documents: Iterable[Document], chunker: Chunker,
                        vectors: VectorSpec | None) -> Iterator[ChunkedDocument]:
        """The chunked documents, in input order, chunked by the workers when there are any."""
        if self.executor is None or self.recipe is None:
            yield from chunk_documents(documents, chunker, vectors)
            return
        in_flight: deque[Future] = deque()
        for batch in document_batches(documents):
            in_flight.append(self.executor.submit(_chunk_task, batch))
            while len(in_flight) > 2 * self.workers:
                yield from in_flight.popleft().result()
        while in_flight:
            yield from in_flight.popleft().result()

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        """Run ``function(*args)`` in a worker (picklable function and arguments)."""
        if self.executor is None:
            raise CpuPoolError("no worker processes (cpu_workers = 1)")
        return self.executor.submit(function, *args)
