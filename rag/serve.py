"""Serving a datastore: one query engine for every front end, over local or Ray-held shards.

``QueryEngine`` is the one search entry of ``rag serve`` (HTTP, ``rag.service``) and of its
``--stdin`` JSON-lines mode: each request is a ``rag.retrieve.RetrieverConfig`` (dense, BM25 or
hybrid, rerank with the server's loaded reranker, MMR) run by a *searcher* and, for ``/ask``, the
server's ``rag.Pipeline`` on the hits. The searcher is a local ``rag.Datastore`` or a
``RayShardSearcher``; both are ``datastores.retrieval.Searcher``s (the same ``search``,
``search_many`` and ``run``, composed once over their ``view`` and ``vectors``), so nothing above
them knows which engine answers.

``RayShardSearcher``: each ``ShardGroup`` actor opens the datastore restricted to its shards (the
same files, memory-mapped row stores, the global BM25 statistics) and loads their indexes once.
Queries are encoded on the driver exactly as ``rag.Datastore`` encodes them (its query prefix),
vectors (dense) or texts (BM25) go to every group, the groups' ranked chunk ids merge with
``datastores.search.merge_ranked``, ties by chunk id, so the hits equal a local search's; the
driver's ``rag.Datastore`` reads the rows of the ids returned (only those: fused candidates that
are dropped are never read) and the stored vectors for MMR. Before each search the driver compares
the manifest's stamp (inode, mtime, size of manifest.json) and, after a commit, reopens the
datastore and re-creates the actors; between commits driver and actors stay on one manifest, so
shard names and row ranges always agree.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import numpy as np

from datastores import Datastore as StoredDatastore
from datastores.datastore import manifest_stamp
from datastores.errors import UserError
from datastores.layout import DatastoreLayout
from datastores.manifest import Manifest
from datastores.records import Hit
from datastores.retrieval import Reranker, Searcher
from datastores.search import Ranked, merge_ranked
from rag.datastore import Datastore
from rag.pipeline import Answer, Pipeline, PipelineConfig, passages_from_hits
from rag.retrieve import RetrieverConfig

ENGINES = ("local", "ray")


def shard_groups(num_shards: int, groups: int) -> list[list[int]]:
    """Split shard numbers 0..num_shards-1 into ``groups`` contiguous groups of near-equal size."""
    if groups < 1:
        raise UserError(f"groups must be at least 1 (got {groups})")
    groups = max(1, min(groups, num_shards))
    return [part.tolist() for part in np.array_split(np.arange(num_shards), groups)]


class ShardGroup:
    """One actor's shards, opened once; searches return hits with global chunk ids.

    The group is pinned to the ``manifest`` the driver read (it does not follow commits by itself),
    so driver and actors always agree on shard names and row ranges; the driver re-creates the
    actors when the manifest changes."""

    def __init__(self, root: str, shards: Sequence[int], manifest: Manifest):
        self.store = StoredDatastore(Path(root), manifest, shards=shards)
        for reader in self.store.shards:        # load indexes and map row stores now, not on the first query
            reader.dense()
            reader.rows()

    def ranked_vectors(self, vectors: np.ndarray, k: int, where: str | None) -> list[Ranked]:
        return self.store.view().ranked_vectors(vectors, k, where)

    def ranked_bm25(self, queries: Sequence[str], k: int, where: str | None) -> list[Ranked]:
        return self.store.view().ranked_bm25(queries, k, where)


class RayShardSearcher(Searcher):
    """Searches a datastore through Ray actors that each hold one of ``groups`` groups of its shards.

    A local ``rag.Datastore`` on the same folder encodes queries (with the manifest's query prefix)
    and reads stored vectors for MMR; the actors do the searching.
    """

    def __init__(self, root: str | Path, groups: int = 2, address: str | None = None, device: str = "auto",
                 cpus_per_group: float = 0):
        from indexers.ray_engine import connect_ray

        self.root = Path(root)
        self.requested_groups = groups
        self.cpus_per_group = cpus_per_group
        self.device = device
        self._pin()                                              # validates files before actors start
        self.actors: list[Any] = []
        self._started_ray = connect_ray(address)
        self._start_actors()

    def _start_actors(self) -> None:
        import ray

        self.groups = shard_groups(len(self.local.manifest.shards), self.requested_groups)
        actor = ray.remote(ShardGroup).options(num_cpus=self.cpus_per_group)
        manifest = self.local.manifest
        self.actors = [actor.remote(str(self.root), group, manifest) for group in self.groups]
        ray.get([a.__ray_ready__.remote() for a in self.actors])

    def _stop_actors(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []

    def _pin(self) -> None:
        """Open the current generation; ``local`` stays on it (as the actors do) until ``sync``."""
        self.generation = manifest_stamp(DatastoreLayout(self.root))   # before reading: a later commit shows
        opened = Datastore.open(self.root, device=self.device)          # checks every file
        self.local = Datastore(opened.root, opened.manifest, device=self.device)

    def sync(self) -> bool:
        """Reopen the datastore and re-create the actors if a commit changed the manifest."""
        if manifest_stamp(DatastoreLayout(self.root)) == self.generation:
            return False
        self._pin()
        self._stop_actors()
        self._start_actors()
        return True

    @property
    def manifest(self) -> Manifest:
        return self.local.manifest

    @property
    def shards(self) -> list[Any]:
        return self.local.shards

    @property
    def embedder(self) -> Any:
        return self.local.embedder

    @property
    def query_encoder(self) -> Callable[[Sequence[str]], np.ndarray]:
        """Encodes queries exactly as ``rag.Datastore`` does (the manifest's embedder and query prefix)."""
        return self.local.query_encoder

    def view(self) -> "RayShardSearcher":
        """This searcher after ``sync``: the actors and the driver's datastore on one manifest."""
        self.sync()
        return self

    def ranked_vectors(self, vectors: np.ndarray, k: int, where: str | None) -> list[Ranked]:
        """Top-``k`` chunk ids per query vector from every group, merged exactly."""
        import ray

        vectors = ray.put(np.atleast_2d(np.asarray(vectors, dtype=np.float32)))
        return self._merged(ray.get([a.ranked_vectors.remote(vectors, k, where) for a in self.actors]), k)

    def ranked_bm25(self, queries: Sequence[str], k: int, where: str | None) -> list[Ranked]:
        """Top-``k`` BM25 chunk ids per query from every group (global statistics), merged exactly."""
        import ray

        return self._merged(ray.get([a.ranked_bm25.remote(list(queries), k, where) for a in self.actors]), k)

    def fetch(self, ranked: Sequence[Ranked]) -> list[list[Hit]]:
        """The rows of ranked ids, read by the driver's datastore (the same files the actors hold)."""
        return self.local.view().fetch(ranked)

    def vectors(self, chunk_ids: Sequence[int]) -> np.ndarray:
        """Stored vectors by chunk id, read by the driver's datastore (the same files the actors hold)."""
        return self.local.vectors(chunk_ids)

    @staticmethod
    def _merged(per_group: list[list[Ranked]], k: int) -> list[Ranked]:
        queries = len(per_group[0]) if per_group else 0
        return [merge_ranked([g[q] for g in per_group], k) for q in range(queries)]

    def close(self) -> None:
        """Stop the actors (and the Ray cluster if this searcher started it)."""
        import ray

        self._stop_actors()
        if self._started_ray:
            ray.shutdown()


def open_searcher(path: str | Path, engine: str = "local", *, groups: int = 2, address: str | None = None,
                  device: str = "auto") -> Any:
    """A local ``rag.Datastore`` or a ``RayShardSearcher`` over the datastore at ``path``."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "ray":
        return RayShardSearcher(path, groups, address, device)
    if address is not None:
        raise UserError("--address needs --engine ray")
    return Datastore.open(path, device=device)


def build_engine(searcher: Any, engine: str = "local", *, rerank: str | None = None,
                 pipeline_config: PipelineConfig | None = None, device: str = "auto") -> QueryEngine:
    """A ``QueryEngine`` over ``searcher`` with the reranker ``rerank`` names (loaded once, used by
    requests that ask for reranking) and the answer pipeline of ``pipeline_config`` (default: extractive)."""
    from rag.retrieve import load_reranker

    reranker = load_reranker(rerank, device) if rerank else None
    pipeline = Pipeline.from_config(pipeline_config or PipelineConfig(device=device), datastore=searcher)
    return QueryEngine(searcher, engine, reranker, pipeline)


@dataclass
class SearchResult:
    """Hits of one query and the seconds each retrieval stage took."""

    hits: list[Hit]
    timings: dict[str, float]


@dataclass
class QueryEngine:
    """One search entry over a searcher, shared by every request.

    Searchers, embedders and DuckDB connections are not thread-safe, so each search or answer holds
    ``lock``; callers run the methods in worker threads, never on an event loop.
    """

    searcher: Any
    engine: str = "local"
    reranker: Reranker | None = None
    pipeline: Pipeline | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def rerank_spec(self) -> str | None:
        """The loaded reranker's spec (what a request's ``rerank`` uses), or None."""
        return getattr(self.reranker, "spec", None) if self.reranker is not None else None

    def search(self, query: str, k: int, where: str | None = None,
               config: RetrieverConfig = RetrieverConfig()) -> SearchResult:
        """The top ``k`` hits for ``query`` through a retriever with ``config``."""
        if config.rerank is not None and config.rerank != self.rerank_spec:
            raise UserError("this server has no reranker loaded; start it with --rerank KIND:MODEL")
        timings: dict[str, float] = {}
        with self.lock:
            hits = self.searcher.run([query], config.request(k, where), self.reranker if config.rerank else None,
                                     timings)[0]
        return SearchResult(hits, timings)

    def answer(self, question: str, hits: Sequence[Hit], on_token: Callable[[str], None] | None = None) -> Answer:
        """The server pipeline's answer from ``hits`` (context stages, then the generator)."""
        if self.pipeline is None:
            raise UserError("this server has no answer pipeline")
        with self.lock:
            return self.pipeline.ask(question, passages=passages_from_hits(hits), on_token=on_token)

    def warm_up(self) -> None:
        """Load the query model and map every shard now rather than on the first request."""
        self.search("warm up", 1, config=RetrieverConfig(mode="hybrid", depth=1))

    def describe(self) -> dict[str, Any]:
        """What the service serves (no secrets): datastore size, embedder, engine, reranker, generator."""
        manifest = self.searcher.manifest
        embedder = manifest.embedder
        return {
            "engine": self.engine,
            "chunks": manifest.num_chunks,
            "live_chunks": manifest.num_live,
            "shards": len(manifest.shards),
            "embedder": {"name": embedder.get("name"), "dim": embedder.get("dim"),
                         "query_prefix": embedder.get("query_prefix", "")},
            "dense_index": manifest.dense_index.get("type"),
            "rerank": self.rerank_spec,
            "generator": getattr(self.pipeline.generator, "name", None) if self.pipeline else None,
        }

    def close(self) -> None:
        close = getattr(self.searcher, "close", None)
        if callable(close):
            close()


def serve_lines(engine: QueryEngine, lines: IO[str], out: IO[str], k: int, where: str | None,
                config: RetrieverConfig = RetrieverConfig()) -> int:
    """Answer each non-empty input line as a query with one JSON line ``{"query", "hits"}``;
    returns the queries served."""
    served = 0
    for line in lines:
        query = line.strip()
        if not query:
            continue
        hits = engine.search(query, k, where, config).hits
        out.write(json.dumps({"query": query, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False) + "\n")
        out.flush()
        served += 1
    return served
