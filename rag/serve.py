"""Distributed search: Ray actors each hold a group of shards; a query fans out and merges exactly.

Each ``ShardGroup`` actor opens the datastore restricted to its shards (a manifest with only those
shards: the same files, memory-mapped row stores, the global BM25 statistics) and loads their
indexes once. ``RayShardSearcher`` encodes queries on the driver (the manifest's embedder), sends
the vectors (dense) or texts (BM25) to every group, and merges the groups' top-k with
``datastores.search.merge_top_k``, ties by (shard, row), so the hits equal a local search's.

``serve_lines`` and ``serve_http`` put any searcher (local ``rag.Datastore`` or the Ray one) behind
stdin/stdout JSON lines or a small local HTTP endpoint (``rag serve-shards``).
"""

from __future__ import annotations

import dataclasses
import json
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import IO, Any, Protocol, Sequence
from urllib.parse import parse_qs, urlparse

import numpy as np

from datastores import Datastore as StoredDatastore
from datastores.layout import DatastoreLayout
from datastores.manifest import Manifest, read_manifest
from datastores.records import Hit
from datastores.search import ShardResult, merge_top_k


class Searcher(Protocol):
    def search_many(self, queries: Sequence[str], k: int = 5, mode: str = "dense",
                    where: str | None = None) -> list[list[Hit]]: ...


def shard_groups(num_shards: int, groups: int) -> list[list[int]]:
    """Split shard numbers 0..num_shards-1 into ``groups`` contiguous groups of near-equal size."""
    if groups < 1:
        raise ValueError(f"groups must be at least 1 (got {groups})")
    groups = min(groups, num_shards)
    return [part.tolist() for part in np.array_split(np.arange(num_shards), groups)]


def group_manifest(manifest: Manifest, shards: Sequence[int]) -> Manifest:
    """The manifest restricted to ``shards`` (global statistics kept), for one actor's datastore."""
    return dataclasses.replace(manifest, shards=[manifest.shards[i] for i in shards])


class ShardGroup:
    """One actor's shards, opened once; searches return hits with global chunk ids."""

    def __init__(self, root: str, shards: Sequence[int]):
        layout = DatastoreLayout(Path(root))
        manifest = read_manifest(layout)
        self.store = StoredDatastore(layout.root, group_manifest(manifest, shards))
        for reader in self.store.shards:        # load indexes and map row stores now, not on the first query
            reader.dense()
            reader.rows()

    def search_vectors(self, vectors: np.ndarray, k: int, where: str | None) -> list[list[Hit]]:
        return self.store.search_vectors(vectors, k, where)

    def search_texts(self, queries: Sequence[str], k: int, mode: str, where: str | None) -> list[list[Hit]]:
        return self.store.search_many(queries, k, mode, where)


def merge_group_hits(manifest: Manifest, per_group: Sequence[list[Hit]], k: int) -> list[Hit]:
    """The exact global top-``k`` of the groups' hit lists (ties by shard, then row)."""
    index_of = {s.name: i for i, s in enumerate(manifest.shards)}
    hits = [h for group in per_group for h in group]
    if not hits:
        return []
    shard = np.array([index_of[h.shard] for h in hits], dtype=np.int64)
    row = np.array([h.chunk_id - manifest.shards[s].chunk_id_start for h, s in zip(hits, shard)], dtype=np.int64)
    score = np.array([h.score for h in hits], dtype=np.float64)
    by_key = {(int(s), int(r)): h for h, s, r in zip(hits, shard, row)}
    results = [ShardResult(int(s), score[shard == s], row[shard == s]) for s in np.unique(shard)]
    return [by_key[(s, r)] for s, r, _ in merge_top_k(results, k)]


class RayShardSearcher:
    """Searches a datastore through Ray actors that each hold ``groups`` of its shards."""

    def __init__(self, root: str | Path, groups: int = 2, address: str | None = None, device: str = "auto",
                 cpus_per_group: float = 0):
        import ray

        from indexers.ray_engine import connect_ray

        self.root = Path(root)
        self.manifest = StoredDatastore.open(self.root).manifest   # validates files before actors start
        self.groups = shard_groups(len(self.manifest.shards), groups)
        self.device = device
        self._embedder: Any = None
        self._started_ray = connect_ray(address)
        actor = ray.remote(ShardGroup).options(num_cpus=cpus_per_group)
        self.actors = [actor.remote(str(self.root), group) for group in self.groups]
        ray.get([a.__ray_ready__.remote() for a in self.actors])

    def _encode(self, queries: Sequence[str]) -> np.ndarray:
        if self._embedder is None:
            from indexers.embedders import load_embedder

            self._embedder = load_embedder(self.manifest.embedder, device=self.device)
        return np.asarray(self._embedder.encode(list(queries)), dtype=np.float32)

    def search_many(self, queries: Sequence[str], k: int = 5, mode: str = "dense",
                    where: str | None = None) -> list[list[Hit]]:
        """Top-``k`` hits per query, equal to ``rag.Datastore.search_many`` on the same datastore."""
        import ray

        if mode not in ("dense", "bm25"):
            raise ValueError(f"unknown search mode {mode!r}; choose dense or bm25")
        if k < 1:
            raise ValueError(f"k must be at least 1 (got {k})")
        if mode == "dense":
            vectors = ray.put(self._encode(queries))
            refs = [a.search_vectors.remote(vectors, k, where) for a in self.actors]
        else:
            refs = [a.search_texts.remote(list(queries), k, mode, where) for a in self.actors]
        per_group = ray.get(refs)
        return [merge_group_hits(self.manifest, [g[q] for g in per_group], k) for q in range(len(queries))]

    def search(self, query: str, k: int = 5, mode: str = "dense", where: str | None = None) -> list[Hit]:
        return self.search_many([query], k, mode, where)[0]

    def close(self) -> None:
        """Stop the actors (and the Ray cluster if this searcher started it)."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        if self._started_ray:
            ray.shutdown()


def answer(searcher: Searcher, query: str, k: int, mode: str, where: str | None) -> dict[str, Any]:
    """One JSON-ready answer: the query and its hits."""
    return {"query": query, "hits": [h.to_dict() for h in searcher.search_many([query], k, mode, where)[0]]}


def serve_lines(searcher: Searcher, lines: IO[str], out: IO[str], k: int, mode: str, where: str | None) -> int:
    """Answer each non-empty input line as a query with one JSON line; returns the queries served."""
    served = 0
    for line in lines:
        query = line.strip()
        if not query:
            continue
        out.write(json.dumps(answer(searcher, query, k, mode, where), ensure_ascii=False) + "\n")
        out.flush()
        served += 1
    return served


def make_http_server(searcher: Searcher, host: str, port: int, k: int, mode: str) -> HTTPServer:
    """A local HTTP server: ``GET /search?q=TEXT&k=10&mode=dense&where=SQL`` answers JSON;
    ``GET /health`` answers ``{"ok": true}``. Bad parameters get status 400 with the message."""

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlparse(self.path)
            params = {key: values[-1] for key, values in parse_qs(url.query).items()}
            if url.path == "/health":
                self._send(200, {"ok": True})
                return
            if url.path != "/search":
                self._send(404, {"error": f"unknown path {url.path}; use /search?q=... or /health"})
                return
            try:
                if not params.get("q"):
                    raise ValueError("the query parameter q is missing")
                body = answer(searcher, params["q"], int(params.get("k", k)), params.get("mode", mode),
                              params.get("where"))
            except ValueError as exc:
                self._send(400, {"error": str(exc)})
                return
            self._send(200, body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
            return

    return HTTPServer((host, port), Handler)
