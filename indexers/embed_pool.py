"""Embedding blocks of chunks in this process or in worker processes (``rag index --workers N``).

``BlockEmbedder.submit`` takes the texts of one block and returns futures of their vectors, in
order. With one worker the block is embedded at once, in this process, by the build's embedder.
With N > 1, N processes are spawned, each loading its own embedder (from a picklable factory)
with ``cores // N`` threads; a block is cut into N pieces (of at least ``MIN_PIECE`` texts) that
embed in parallel, and at most ``2 N`` pieces are in flight, so memory stays bounded. The caller
gathers futures in submission order, so shards are assembled in input order whatever finishes
first. Pieces sort and batch their own texts, so vectors can differ from a one-process build in
the last bits.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from indexers.embedding import EncodeStats

#: Fewest texts per piece of a block sent to a worker process.
MIN_PIECE = 256
#: This worker process's embedder (set by ``_start_worker``; one per process).
_WORKER: dict[str, Any] = {}


def _start_worker(factory: Callable[[], Any], threads: int) -> None:
    # set before the factory imports anything: ONNX Runtime sessions and torch read it
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _WORKER["embedder"] = factory()


def encode_with_stats(embedder: Any, texts: list[str], batch_size: int | None) -> tuple[np.ndarray, EncodeStats | None]:
    """``embedder.encode_passages(texts)`` and what that call did (None for embedders that keep no statistics)."""
    vectors = embedder.encode_passages(texts, batch_size)
    last = getattr(embedder, "last_stats", None)
    return vectors, last if isinstance(last, EncodeStats) else None


def _encode_in_worker(texts: list[str], batch_size: int | None) -> tuple[np.ndarray, EncodeStats | None]:
    return encode_with_stats(_WORKER["embedder"], texts, batch_size)


class BlockEmbedder:
    """Embeds blocks in this process (``workers`` = 1) or in ``workers`` spawned processes.

    Adds what encoding did to ``encoded`` and calls ``tick(n)`` with each finished block's size.
    ``timings["embed"]`` (when given) gets the wall seconds the caller spent embedding or waiting
    for vectors (``submit`` and ``gather``), so with workers it is the part of the build embedding
    held up."""

    def __init__(self, embedder: Any, batch_size: int | None, encoded: EncodeStats,
                 timings: dict[str, float] | None = None, tick: Callable[[int], None] | None = None, workers: int = 1,
                 factory: Callable[[], Any] | None = None):
        if workers > 1 and factory is None:
            raise ValueError("several embedding workers need an embedder factory")
        self.embedder = embedder
        self.batch_size = batch_size
        self.encoded = encoded
        self.timings = timings if timings is not None else {"embed": 0.0}
        self.tick = tick
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._in_flight: deque[Future] = deque()
        if workers > 1:
            threads = max(1, (os.cpu_count() or workers) // workers)
            self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(factory, threads))

    def _done(self, size: int, vectors: np.ndarray, stats: EncodeStats | None) -> np.ndarray:
        if stats is not None:
            self.encoded.add(stats)
        if self.tick is not None:
            self.tick(size)
        return vectors

    def submit(self, texts: Sequence[str]) -> list[Future]:
        """Futures of the unit vectors of consecutive pieces of ``texts`` (one piece in-process)."""
        texts = list(texts)
        started = time.perf_counter()
        try:
            if self._pool is None:
                return [self._submit(texts)]
            size = max(MIN_PIECE, -(-len(texts) // self.workers))
            return [self._submit(texts[lo:lo + size]) for lo in range(0, len(texts), size)]
        finally:
            self.timings["embed"] += time.perf_counter() - started

    def submit_blocks(self, texts: Sequence[str], block_size: int) -> list[Future]:
        """``submit`` for each consecutive block of ``block_size`` texts."""
        return [part for lo in range(0, len(texts), block_size) for part in self.submit(texts[lo:lo + block_size])]

    def gather(self, parts: Sequence[Future]) -> np.ndarray:
        """The vectors of ``parts``, concatenated in order (waiting for them)."""
        started = time.perf_counter()
        try:
            return np.concatenate([part.result() for part in parts])
        finally:
            self.timings["embed"] += time.perf_counter() - started

    def _submit(self, texts: list[str]) -> Future:
        if self._pool is None:
            future: Future = Future()
            future.set_result(self._done(len(texts), *encode_with_stats(self.embedder, texts, self.batch_size)))
            return future
        while len(self._in_flight) >= 2 * self.workers:
            self._in_flight.popleft().result()
        raw = self._pool.submit(_encode_in_worker, texts, self.batch_size)
        future = Future()

        def finish(done: Future) -> None:
            try:
                future.set_result(self._done(len(texts), *done.result()))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the block
                future.set_exception(exc)

        raw.add_done_callback(finish)
        self._in_flight.append(future)
        return future

    def close(self) -> None:
        """Stop the worker processes (after their current blocks)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "BlockEmbedder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
