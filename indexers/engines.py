"""Build engines: who embeds and writes each shard.

Both engines consume the same stream of ``ShardJob``s: the driver has the corpus read and chunked
in input order (``indexers.cpu_pool``, in its process or in worker processes) and cuts it into
shards of ``shard_size`` chunks, so shard ``i`` always holds the same chunks (same input → same
shards, whatever the engine or the number of workers).

- ``local`` (default): embeds and writes each shard in this process, one at a time. It never
  imports Ray.
- ``ray``: one Ray task per shard embeds it and writes its files to the shared filesystem; the
  driver keeps a bounded number of tasks in flight, records finished shards in order and commits
  the manifest (``indexers.ray_engine``; ``pip install terarag[ray]``).

Shards already on disk from an interrupted build are adopted, not rebuilt, by both engines.

The driver streams ``ChunkBlock``s of at most ``EMBED_BLOCK`` chunks, cut at fixed offsets inside
each shard. The local engine embeds each block as soon as it is read, while a background thread
reads and chunks the next blocks and another writes the previous shard, so reading, embedding and
writing overlap (a GPU is not left waiting for the CPU). Ray tasks embed their shard in the same
blocks, so both engines compute identical vectors.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from datastores import DatastoreWriter
from datastores.errors import UserError
from datastores.records import Chunk
from indexers.cpu_pool import CpuPool, done_future
from indexers.embed_pool import BlockEmbedder
from indexers.embedding import EncodeStats

ENGINES = ("local", "ray")
#: Chunks per ``encode`` call: the unit in which both engines embed a shard (blocks start at fixed
#: offsets of the shard, so the vectors do not depend on the engine or on a resume).
EMBED_BLOCK = 4096
#: Blocks read ahead by the local engine's reader thread.
PREFETCH_BLOCKS = 2

T = TypeVar("T")


class EngineError(UserError):
    """Bad engine settings (unknown engine, Ray missing, bad worker count)."""


class ShardBuildError(UserError):
    """A shard kept failing on the build engine; the build stopped and nothing was committed."""


@dataclass(frozen=True)
class EngineOptions:
    """Which engine builds the shards and how.

    ``address`` is a Ray cluster address (``auto`` joins the running cluster, None starts a local
    one); ``num_workers`` caps the shards embedded at once (default: the cluster's CPUs);
    ``max_retries`` is how often a failed shard task is run again before the build stops.
    ``task_hook`` (Ray only) is called in the worker with the shard index before the shard is
    built (monitoring, fault injection in tests); it must be picklable. ``overlap`` (local only)
    reads ahead and writes in background threads while embedding; off, each step waits. ``workers``
    (local only) embeds blocks in that many processes, each with ``cores // workers`` threads.
    ``cpu_workers`` (local only) reads, chunks and writes shards in that many processes
    (``indexers.cpu_pool``); the datastore is the same for any count. None (auto): every usable
    core for inputs of 64 MiB or more when the CPU does not embed (``auto_cpu_workers``), else 1.
    """

    name: str = "local"
    address: str | None = None
    num_workers: int | None = None
    max_retries: int = 3
    task_hook: Callable[[int], None] | None = None
    overlap: bool = True
    workers: int = 1
    cpu_workers: int | None = None

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise EngineError(f"unknown engine {self.name!r}; choose one of {', '.join(ENGINES)}")
        if self.num_workers is not None and self.num_workers < 1:
            raise EngineError(f"num_workers must be at least 1 (got {self.num_workers})")
        if self.max_retries < 0:
            raise EngineError(f"max_retries must be at least 0 (got {self.max_retries})")
        if self.name == "local" and (self.address is not None or self.num_workers is not None):
            raise EngineError("--address and --num-workers need --engine ray")
        if self.workers < 1:
            raise EngineError(f"workers must be at least 1 (got {self.workers})")
        if self.name != "local" and self.workers > 1:
            raise EngineError("--workers sets the local engine's embedding processes; with Ray use --num-workers")
        if self.cpu_workers is not None and self.cpu_workers < 1:
            raise EngineError(f"cpu_workers must be at least 1 (got {self.cpu_workers})")
        if self.name != "local" and (self.cpu_workers or 1) > 1:
            raise EngineError("--cpu-workers sets the local engine's chunking and writing processes")


@dataclass
class ShardJob:
    """Shard ``index``: its chunks, whose global ids start at ``first_chunk_id``."""

    index: int
    first_chunk_id: int
    chunks: list[Chunk]


@dataclass
class ChunkBlock:
    """Consecutive chunks of shard ``shard``, which starts at global chunk id ``shard_first_chunk_id``;
    ``closes_shard`` marks the shard's last block; ``vectors`` are the chunks' precomputed vectors
    (None: the engine embeds them)."""

    shard: int
    shard_first_chunk_id: int
    chunks: list[Chunk]
    closes_shard: bool
    vectors: np.ndarray | None = None


@dataclass
class ChunkRun:
    """Consecutive chunks of the build's stream, with their precomputed vectors [n, d] (or None)."""

    chunks: list[Chunk]
    vectors: np.ndarray | None = None


@dataclass
class BuildProgress:
    """What the engine reports back to the build: timings (seconds), encoding statistics, a bar."""

    timings: dict[str, float]
    encoded: EncodeStats = field(default_factory=EncodeStats)
    bar: Any = None
    #: documents read so far (shown next to the bar)
    documents: Callable[[], int] = lambda: 0

    def shard_done(self, writer: DatastoreWriter, chunks: int = 0) -> None:
        if self.bar is not None:
            if chunks:
                self.bar.update(chunks)
            self.bar.set_postfix(shards=len(writer.shards), docs=self.documents())


@dataclass(frozen=True)
class EmbedPlan:
    """The build's embedder in this process, its batch size, and the picklable recipe (``factory``)
    with which each worker process (``--workers``, Ray) loads its own copy."""

    embedder: Any
    batch_size: int | None = None
    factory: Callable[[], Any] | None = None


class _BlockCutter:
    """The block being filled by ``chunk_blocks``: its chunks and vector slices, and its place."""

    def __init__(self, shard_size: int, block_size: int):
        self.shard_size, self.block_size = shard_size, block_size
        self.chunks: list[Chunk] = []
        self.vectors: list[np.ndarray] = []
        self.shard = self.shard_first = self.in_shard = 0

    def room(self) -> int:
        return min(self.block_size - len(self.chunks), self.shard_size - self.in_shard)

    def take(self, run: ChunkRun, lo: int, hi: int) -> None:
        self.chunks.extend(run.chunks[lo:hi])
        if run.vectors is not None:
            self.vectors.append(run.vectors[lo:hi])
        self.in_shard += hi - lo

    def cut(self) -> ChunkBlock:
        """The filled block (closing its shard when the shard is full); the next starts empty."""
        vectors = np.concatenate(self.vectors) if self.vectors else None
        block = ChunkBlock(self.shard, self.shard_first, self.chunks, self.in_shard == self.shard_size, vectors)
        self.chunks, self.vectors = [], []
        if block.closes_shard:
            self.shard, self.shard_first, self.in_shard = self.shard + 1, self.shard_first + self.in_shard, 0
        return block


def chunk_blocks(runs: Iterable[ChunkRun], shard_size: int, block_size: int | None = None) -> Iterator[ChunkBlock]:
    """Cut a stream of chunk runs into shards of ``shard_size`` chunks and each shard into blocks
    of at most ``block_size`` (default ``EMBED_BLOCK``; the last shard and each shard's last block
    may be shorter), carrying the runs' vectors along."""
    cutter = _BlockCutter(shard_size, block_size or EMBED_BLOCK)
    full: ChunkBlock | None = None  # a full block, held until we know whether the stream ends after it
    for run in runs:
        lo = 0
        while lo < len(run.chunks):
            if full is not None:
                yield full
                full = None
            hi = min(len(run.chunks), lo + cutter.room())
            cutter.take(run, lo, hi)
            lo = hi
            if cutter.room() == 0:
                block = cutter.cut()
                if block.closes_shard:
                    yield block
                else:
                    full = block
    if full is not None:
        full.closes_shard = True
        yield full
    elif cutter.chunks:
        block = cutter.cut()
        block.closes_shard = True
        yield block


def shard_jobs(blocks: Iterable[ChunkBlock]) -> Iterator[ShardJob]:
    """Whole shards from a block stream."""
    chunks: list[Chunk] = []
    for block in blocks:
        chunks.extend(block.chunks)
        if block.closes_shard:
            yield ShardJob(block.shard, block.shard_first_chunk_id, chunks)
            chunks = []


def embed_in_blocks(embedder: Any, chunks: list[Chunk], batch_size: int | None, encoded: EncodeStats) -> np.ndarray:
    """A shard's vectors, one ``encode`` call per block of ``EMBED_BLOCK`` chunks (as the local
    engine embeds them), adding what encoding did to ``encoded``."""
    with BlockEmbedder(embedder, batch_size, encoded) as embed:
        return embed.gather(embed.submit_blocks([c.text for c in chunks], EMBED_BLOCK))


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


def read_ahead(items: Iterable[T], depth: int = PREFETCH_BLOCKS) -> Iterator[T]:
    """Yield ``items`` while a background thread produces up to ``depth`` of them ahead.

    An exception in the producer is raised here; when the consumer stops early the producer
    stops after its current item."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Failed(exc))

    thread = threading.Thread(target=produce, name="terarag-read", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


def _write(writer: DatastoreWriter, index: int, chunks: list[Chunk], vectors: np.ndarray,
           first: int) -> tuple[Any, float]:
    """Shard ``index`` written (in a thread or a worker process): its record and the seconds taken."""
    started = time.perf_counter()
    info = writer.write_shard(index, chunks, vectors, first)
    return info, time.perf_counter() - started


@dataclass
class _LocalRun:
    """The loop state of ``run_local``: the shard being read (its chunks, the futures of their
    vectors, whether it is embedded as it arrives or may be adopted from an interrupted run) and
    the shard writes not yet recorded."""

    writer: DatastoreWriter
    progress: BuildProgress
    embed: BlockEmbedder
    submit: Callable[..., Future]
    keep: int                        # shard writes left in flight after each shard (0: wait for each)
    chunks: list[Chunk] = field(default_factory=list)
    parts: list[Future] = field(default_factory=list)
    eager: bool = True
    pending: deque[Future] = field(default_factory=deque)

    def add(self, block: ChunkBlock) -> None:
        """Take one block: embed it now unless its shard may be adopted; write or adopt a closed shard."""
        if not self.chunks:
            self.eager = not self.writer.may_adopt(block.shard)
        self.chunks.extend(block.chunks)
        if block.vectors is not None:  # precomputed
            self.parts.append(done_future(block.vectors))
            if self.eager and self.progress.bar is not None:
                self.progress.bar.update(len(block.chunks))
        elif self.eager:
            self.parts.extend(self.embed.submit_blocks([c.text for c in block.chunks], EMBED_BLOCK))
        if block.closes_shard:
            self._close(block.shard, block.shard_first_chunk_id)
            self.chunks, self.parts = [], []

    def _close(self, index: int, first: int) -> None:
        adopted = None if self.eager else self.writer.adopt_shard(index, self.chunks, first)
        if adopted is None:
            parts = self.parts or self.embed.submit_blocks([c.text for c in self.chunks], EMBED_BLOCK)
            vectors = self.embed.gather(parts)
            self.pending.append(self.submit(_write, self.writer, index, self.chunks, vectors, first))
            self.record(self.keep)
            return
        self.record()
        self.writer.record_shard(adopted, resumed=True)
        self.progress.shard_done(self.writer, len(self.chunks))

    def record(self, keep: int = 0) -> None:
        """Record finished shard writes, in order, until at most ``keep`` are in flight."""
        while len(self.pending) > keep:
            info, seconds = self.pending.popleft().result()
            self.progress.timings["write"] += seconds
            self.writer.record_shard(info)
            self.progress.shard_done(self.writer)


def run_local(blocks: Iterable[ChunkBlock], writer: DatastoreWriter, plan: EmbedPlan, progress: BuildProgress,
              options: EngineOptions, cpu: CpuPool | None = None) -> None:
    """Embed and write every shard from this process (the streaming build).

    Blocks are embedded as they arrive unless their shard may be adopted from an interrupted build
    (``DatastoreWriter.adopt_shard`` decides; a shard it does not adopt is then embedded whole).
    With ``options.overlap`` a thread reads and chunks ahead and another writes the previous shard
    while the next one embeds; without it every step waits for the one before. ``options.workers``
    > 1 embeds blocks in that many processes (``indexers.embed_pool``), each loading
    ``plan.factory()``. With a ``cpu`` pool of several processes, up to that many shards are
    written at once in them."""
    bar = progress.bar
    depth = cpu.write_depth if cpu is not None and cpu.write_depth else 1
    stream = read_ahead(blocks) if options.overlap else iter(blocks)
    with BlockEmbedder(plan.embedder, plan.batch_size, progress.encoded, progress.timings,
                       bar.update if bar is not None else None, options.workers, plan.factory) as embed, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="terarag-write") as thread:
        run = _LocalRun(writer, progress, embed, cpu.submit if depth > 1 else thread.submit,
                        depth if options.overlap else 0)
        for block in stream:
            run.add(block)
        run.record()
