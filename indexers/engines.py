"""Build engines: who embeds and writes each shard.

Both engines consume the same stream of ``ShardJob``s: the driver reads and chunks the corpus in
input order and cuts it into shards of ``shard_size`` chunks, so shard ``i`` always holds the same
chunks (same input → same shards, whatever the engine or the number of workers).

- ``local`` (default): embeds and writes each shard in this process, one at a time. It never
  imports Ray.
- ``ray``: one Ray task per shard embeds it and writes its files to the shared filesystem; the
  driver keeps a bounded number of tasks in flight, records finished shards in order and commits
  the manifest (``indexers.ray_engine``; ``pip install terarag[ray]``).

Shards already on disk from an interrupted build are adopted, not rebuilt, by both engines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from datastores import DatastoreWriter
from datastores.records import Chunk
from indexers.embedders import EncodeStats, load_embedder

ENGINES = ("local", "ray")


class EngineError(ValueError):
    """Bad engine settings (unknown engine, Ray missing, bad worker count)."""


class ShardBuildError(RuntimeError):
    """A shard kept failing on the build engine; the build stopped and nothing was committed."""


@dataclass(frozen=True)
class EngineOptions:
    """Which engine builds the shards and how.

    ``address`` is a Ray cluster address (``auto`` joins the running cluster, None starts a local
    one); ``num_workers`` caps the shards embedded at once (default: the cluster's CPUs);
    ``max_retries`` is how often a failed shard task is run again before the build stops.
    ``task_hook`` (Ray only) is called in the worker with the shard index before the shard is
    built (monitoring, fault injection in tests); it must be picklable.
    """

    name: str = "local"
    address: str | None = None
    num_workers: int | None = None
    max_retries: int = 3
    task_hook: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise EngineError(f"unknown engine {self.name!r}; choose one of {', '.join(ENGINES)}")
        if self.num_workers is not None and self.num_workers < 1:
            raise EngineError(f"num_workers must be at least 1 (got {self.num_workers})")
        if self.max_retries < 0:
            raise EngineError(f"max_retries must be at least 0 (got {self.max_retries})")
        if self.name == "local" and (self.address is not None or self.num_workers is not None):
            raise EngineError("--address and --num-workers need --engine ray")


@dataclass(frozen=True)
class EmbedderFactory:
    """A picklable recipe for the build's embedder, so that each worker loads its own copy."""

    name: str
    device: str = "auto"
    batch_size: int = 64
    backend: str = "auto"

    def __call__(self) -> Any:
        return load_embedder(self.name, self.device, self.batch_size, backend=self.backend)


@dataclass
class ShardJob:
    """Shard ``index``: its chunks, whose global ids start at ``first_chunk_id``."""

    index: int
    first_chunk_id: int
    chunks: list[Chunk]


@dataclass
class BuildProgress:
    """What the engine reports back to the build: timings (seconds), encoding statistics, a bar."""

    timings: dict[str, float]
    encoded: EncodeStats = field(default_factory=EncodeStats)
    bar: Any = None

    def shard_done(self, writer: DatastoreWriter, documents: int, chunks: int = 0) -> None:
        if self.bar is not None:
            if chunks:
                self.bar.update(chunks)
            self.bar.set_postfix(shards=len(writer.shards), docs=documents)


def shard_jobs(shards: Iterable[list[Chunk]]) -> Iterator[ShardJob]:
    """Number the shards of a chunk stream and give each its first global chunk id."""
    first = 0
    for index, chunks in enumerate(shards):
        yield ShardJob(index, first, chunks)
        first += len(chunks)


def run_local(jobs: Iterable[ShardJob], writer: DatastoreWriter, embedder: Any, batch_size: int,
              progress: BuildProgress, documents: Callable[[], int]) -> None:
    """Embed and write every shard in this process, one at a time (the streaming build)."""
    timings, bar = progress.timings, progress.bar
    for job in jobs:
        chunks = job.chunks
        if writer.shard_is_done(chunks, job.first_chunk_id):
            writer.add_shard(chunks, None, job.first_chunk_id)
        else:
            started = time.perf_counter()
            vectors = embedder.encode([c.text for c in chunks], batch_size,
                                      progress=bar.update if bar is not None else None)
            timings["embed"] += time.perf_counter() - started
            last = getattr(embedder, "last_stats", None)
            if isinstance(last, EncodeStats):
                progress.encoded.add(last)
            started = time.perf_counter()
            writer.add_shard(chunks, vectors, job.first_chunk_id)
            timings["write"] += time.perf_counter() - started
        progress.shard_done(writer, documents())


def run_engine(options: EngineOptions, jobs: Iterable[ShardJob], writer: DatastoreWriter, embedder: Any,
               embedder_factory: Callable[[], Any] | None, batch_size: int, progress: BuildProgress,
               documents: Callable[[], int]) -> None:
    """Build every shard of ``jobs`` with the chosen engine and record them in ``writer`` in order."""
    if options.name == "local":
        run_local(jobs, writer, embedder, batch_size, progress, documents)
        return
    try:
        from indexers.ray_engine import run_ray
    except ImportError as exc:
        raise EngineError(f"--engine ray needs Ray: pip install 'terarag[ray]' ({exc})") from exc
    if embedder_factory is None:
        raise EngineError("the Ray engine needs an embedder factory (each worker loads its own embedder)")
    run_ray(options, jobs, writer, embedder_factory, batch_size, progress, documents)
