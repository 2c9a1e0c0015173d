"""The Ray build engine: one task per shard embeds it and writes its files; the driver commits.

The driver streams ``ShardJob``s (read + chunk in input order, so shard assignment is the same as
the local engine's), adopts shards a previous run finished, and submits the rest as tasks, at most
``workers`` in flight (each task carries its shard's chunks), so memory stays bounded. Each task
loads the embedder once per worker process, embeds the shard, writes it with
``DatastoreWriter.write_shard`` (temporary folder, rename) and returns its record. Failed tasks are
retried ``max_retries`` times (Ray re-runs them, also when a worker process dies); a shard that
still fails cancels the rest and raises ``ShardBuildError`` with its error. Finished shards stay on
disk, so ``--resume`` continues.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

import ray
from ray.exceptions import RayError

from datastores import DatastoreWriter
from datastores.errors import UserError
from datastores.manifest import ShardInfo
from indexers.embedding import EncodeStats
from indexers.engines import BuildProgress, EngineError, EngineOptions, ShardBuildError, ShardJob, embed_in_blocks


@functools.lru_cache(maxsize=2)
def _worker_embedder(factory: Callable[[], Any]) -> Any:
    """The embedder of this worker process, loaded on its first shard and reused after."""
    return factory()


class EmbedderMismatchError(UserError):
    """A worker loaded an embedder other than the one the build records."""


def build_shard(writer: DatastoreWriter, job: ShardJob, factory: Callable[[], Any], batch_size: int | None,
                hook: Callable[[int], None] | None) -> dict[str, Any]:
    """Embed and write one shard (runs in a Ray worker); returns its record and statistics.

    The worker's embedder must have the spec the build records (``writer.embedder``), else
    nothing is written: a shard embedded by another model would otherwise be adopted on resume."""
    if hook is not None:
        hook(job.index)
    embedder = _worker_embedder(factory)
    if embedder.spec != writer.embedder:
        raise EmbedderMismatchError(
            f"this worker loaded {embedder.spec} but the build records {writer.embedder}; every worker must "
            "load the same embedder (same model files and backend)")
    started = time.perf_counter()
    encoded = EncodeStats()
    vectors = embed_in_blocks(embedder, job.chunks, batch_size, encoded)
    embedded = time.perf_counter()
    info = writer.write_shard(job.index, job.chunks, vectors, job.first_chunk_id)
    return {"info": info, "embed": embedded - started,
            "write": time.perf_counter() - embedded, "encoded": encoded}


def connect_ray(address: str | None) -> bool:
    """Connect to Ray (``address``: ``auto`` or ``host:port``; None starts a local cluster) unless
    this process already is; True when this call connected (the caller then shuts down)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    except ConnectionError as exc:
        raise EngineError(f"cannot connect to a Ray cluster at {address!r}: {exc}") from exc
    return True


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """``connect_ray`` for the length of a build; a connection made here is closed on exit."""
    started = connect_ray(address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _cause(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def run_ray(options: EngineOptions, jobs: Iterable[ShardJob], writer: DatastoreWriter,
            factory: Callable[[], Any], batch_size: int | None, progress: BuildProgress) -> None:
    """Build the shards of ``jobs`` as Ray tasks and record them in ``writer`` in shard order
    (shards ``writer.adopt_shard`` keeps from an interrupted run are not rebuilt)."""
    with ray_session(options.address):
        task = ray.remote(build_shard).options(num_cpus=1, max_retries=options.max_retries,
                                               retry_exceptions=True)
        workers = options.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        writer_ref = ray.put(writer)
        pending: dict[ray.ObjectRef, ShardJob] = {}
        finished: dict[int, tuple[ShardInfo, bool]] = {}

        def cancel() -> None:
            for other in pending:
                ray.cancel(other, force=True)

        def record(ref: ray.ObjectRef) -> None:
            job = pending.pop(ref)
            try:
                out = ray.get(ref)
            except RayError as exc:
                cancel()
                cause = _cause(exc)
                raise ShardBuildError(
                    f"shard {job.index} (chunks {job.first_chunk_id}..{job.first_chunk_id + len(job.chunks) - 1}) "
                    f"failed {options.max_retries + 1} time(s); last error: {type(cause).__name__}: {cause}"
                ) from cause
            progress.timings["embed"] += out["embed"]
            progress.timings["write"] += out["write"]
            if out["encoded"] is not None:
                progress.encoded.add(out["encoded"])
            finished[job.index] = (out["info"], False)
            progress.shard_done(writer, len(job.chunks))

        def record_ready() -> None:
            while len(writer.shards) in finished:
                info, resumed = finished.pop(len(writer.shards))
                writer.record_shard(info, resumed)

        for job in jobs:
            existing = writer.adopt_shard(job.index, job.chunks, job.first_chunk_id)
            if existing is not None:
                finished[job.index] = (existing, True)
            else:
                while len(pending) >= workers:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    record(ready[0])
                pending[task.remote(writer_ref, job, factory, batch_size, options.task_hook)] = job
            record_ready()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            record(ready[0])
            record_ready()
        record_ready()
