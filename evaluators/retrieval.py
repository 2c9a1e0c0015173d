"""Document retrieval metrics (nDCG@k, MRR@k, recall@k, MAP) and BEIR evaluation through the datastore.

Metrics come from ``pytrec_eval`` (trec_eval): ``ndcg_cut.k`` (graded gains), ``recip_rank``
on the run cut to its top k (MRR@k), ``recall.k`` and ``map`` over the whole run (the run is
retrieved to depth ``max(k, recall_k)``, so MAP is MAP@depth). trec_eval breaks score ties by
document id; to score exactly the ranking the datastore returned, ranks are passed as scores.
Queries are those with at least one relevant judgement (grade > 0); a query with no retrieved
document scores 0. Means are reported ×100 in the summaries, as fractions per query.

BEIR evaluation (:func:`evaluate_beir`): every corpus document (title and text) is chunked and
embedded and written with ``datastores.DatastoreWriter`` into one datastore (``doc_id`` = BEIR
corpus id), each query is searched with ``Datastore.search_many`` (``dense``: exact cosine,
FAISS flat inner product; ``bm25``), and the chunk hits are turned into a document ranking by
each document's best chunk (first occurrence in rank order).
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from evaluators.datasets import BeirDataset, load_beir

logger = logging.getLogger("terarag.evaluators")

ENGINES = {"dense": "faiss-flat-ip", "bm25": "bm25"}


# -- metrics ---------------------------------------------------------------------------------------


def metric_names(k: int, recall_k: int) -> list[str]:
    """The summary keys: ``ndcg@k``, ``mrr@k``, ``recall@k``, ``recall@recall_k``, ``map``."""
    names = [f"ndcg@{k}", f"mrr@{k}", f"recall@{k}"]
    if recall_k != k:
        names.append(f"recall@{recall_k}")
    return names + ["map"]


def retrieval_metrics(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], k: int = 10,
                      recall_k: int = 100) -> dict[str, dict[str, float]]:
    """Per-query metrics (fractions) for ranked document ids ``run[qid]`` (best first).

    Queries of ``qrels`` without a relevant document are left out; queries missing from ``run``
    score 0.
    """
    import pytrec_eval

    if k < 1 or recall_k < 1:
        raise ValueError(f"cut-offs must be at least 1 (got k={k}, recall_k={recall_k})")
    evaluated = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()
                 if any(g > 0 for g in docs.values())}
    names = metric_names(k, recall_k)
    out = {q: {name: 0.0 for name in names} for q in evaluated}

    def as_scores(docs: Sequence[str], depth: int | None = None) -> dict[str, float]:
        ranked = list(dict.fromkeys(docs))[:depth]
        return {d: float(len(ranked) - i) for i, d in enumerate(ranked)}

    full = {q: as_scores(run.get(q, ())) for q in evaluated}
    full = {q: s for q, s in full.items() if s}
    cut = {q: as_scores(run.get(q, ()), k) for q in full}
    if full:
        measures = {f"ndcg_cut.{k}", f"recall.{k}", f"recall.{recall_k}", "map"}
        whole = pytrec_eval.RelevanceEvaluator({q: evaluated[q] for q in full}, measures).evaluate(full)
        top = pytrec_eval.RelevanceEvaluator({q: evaluated[q] for q in cut}, {"recip_rank"}).evaluate(cut)
        for q, values in whole.items():
            out[q][f"ndcg@{k}"] = values[f"ndcg_cut_{k}"]
            out[q][f"recall@{k}"] = values[f"recall_{k}"]
            out[q][f"recall@{recall_k}"] = values[f"recall_{recall_k}"]
            out[q]["map"] = values["map"]
            out[q][f"mrr@{k}"] = top[q]["recip_rank"]
    return out


def mean_metrics(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over queries, ×100."""
    if not per_query:
        return {}
    names = next(iter(per_query.values())).keys()
    return {name: 100.0 * float(np.mean([v[name] for v in per_query.values()])) for name in names}


# -- BEIR through the datastore ----------------------------------------------------------------------


@dataclass
class RetrievalEvaluation:
    """Means (×100), per-query values, the settings and timings of one retrieval evaluation."""

    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    settings: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        out = {**{k: round(v, 4) for k, v in self.metrics.items()}, **self.settings,
               "timings": {k: round(v, 3) for k, v in self.timings.items()}}
        if per_query:
            out["per_query"] = self.per_query
        return out


def _documents(dataset: BeirDataset) -> Iterator[Any]:
    from datastores.records import Document

    for doc_id in dataset.corpus:
        yield Document(doc_id, dataset.document_text(doc_id), doc_id, {})


def write_beir_datastore(root: Path, dataset: BeirDataset, chunker: Any, embedder: Any, shard_size: int = 50_000,
                         batch_size: int | None = None, progress: bool = False,
                         timings: dict[str, float] | None = None) -> Any:
    """Chunk, embed and write every BEIR document, one shard of ``shard_size`` chunks at a time."""
    from tqdm.auto import tqdm

    from datastores import Bm25Params, Datastore, DatastoreWriter

    timings = timings if timings is not None else {}
    spec = getattr(embedder, "spec", {"name": getattr(embedder, "name", type(embedder).__name__)})
    writer = DatastoreWriter(root, {"purpose": "retrieval-evaluation", "dataset": str(dataset.path)}, spec,
                             chunker.spec, Bm25Params())
    buffer: list[Any] = []
    next_id = 0
    dim = None
    bar = tqdm(total=len(dataset.corpus), desc="indexing", unit="doc", disable=not progress or None)

    def flush() -> None:
        nonlocal next_id, dim, buffer
        started = time.perf_counter()
        texts = [c.text for c in buffer]
        vectors = embedder.encode(texts, batch_size) if batch_size else embedder.encode(texts)
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        dim = int(vectors.shape[1])
        timings["embed"] = timings.get("embed", 0.0) + time.perf_counter() - started
        started = time.perf_counter()
        writer.add_shard(buffer, vectors, next_id)
        timings["write"] = timings.get("write", 0.0) + time.perf_counter() - started
        next_id += len(buffer)
        buffer = []

    started = time.perf_counter()
    for document in _documents(dataset):
        buffer.extend(chunker.chunk(document))
        bar.update(1)
        if len(buffer) >= shard_size:
            timings["chunk"] = timings.get("chunk", 0.0) + time.perf_counter() - started
            flush()
            started = time.perf_counter()
    timings["chunk"] = timings.get("chunk", 0.0) + time.perf_counter() - started
    if buffer:
        flush()
    bar.close()
    if dim is None:
        raise ValueError("the corpus produced no chunks")
    started = time.perf_counter()
    writer.finish({"documents": len(dataset.corpus)}, dim)
    timings["write"] = timings.get("write", 0.0) + time.perf_counter() - started
    return Datastore.open(root, query_encoder=embedder.encode)


def document_ranking(hits: Iterable[Any], depth: int) -> list[str]:
    """Document ids in order of their best chunk, at most ``depth``."""
    ranked: dict[str, None] = {}
    for hit in hits:
        ranked.setdefault(hit.doc_id, None)
        if len(ranked) >= depth:
            break
    return list(ranked)


def evaluate_beir(dataset: str | Path | BeirDataset, mode: str = "dense", k: int = 10, recall_k: int = 100, *,
                  embedder: Any = None, chunker: str = "recursive", chunk_size: int = 512, overlap: int = 0,
                  tokenizer: str | None = None, split: str | None = None, index_dir: str | Path | None = None,
                  device: str = "auto", batch_size: int | None = None, shard_size: int = 50_000,
                  chunk_factor: int = 3, progress: bool = False) -> RetrievalEvaluation:
    """Index a BEIR corpus in one datastore and score ``mode`` retrieval of its queries.

    Each query retrieves ``chunk_factor × depth`` chunks (``depth = max(k, recall_k)``), which
    are reduced to at most ``depth`` documents by best chunk. ``index_dir`` keeps the datastore
    (it must not exist yet); by default it is written to a temporary folder and removed.
    """
    from indexers.chunkers import EMBEDDING_CHUNKERS, make_chunker
    from indexers.tokenizers import DEFAULT_TOKENIZER

    if mode not in ENGINES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(ENGINES)}")
    if k < 1 or recall_k < 1:
        raise ValueError(f"k and recall_k must be at least 1 (got {k}, {recall_k})")
    data = dataset if isinstance(dataset, BeirDataset) else load_beir(dataset, split)
    if embedder is None:
        from indexers.embedders import load_embedder

        embedder = load_embedder(device=device)
    chunker_obj = make_chunker(chunker, chunk_size, overlap, tokenizer or DEFAULT_TOKENIZER,
                               embedder=embedder if chunker in EMBEDDING_CHUNKERS else None)
    timings: dict[str, float] = {}
    depth = max(k, recall_k)
    query_ids = data.evaluated_queries
    with tempfile.TemporaryDirectory(prefix="terarag-beir-") as tmp:
        root = Path(index_dir) if index_dir is not None else Path(tmp) / "datastore"
        datastore = write_beir_datastore(root, data, chunker_obj, embedder, shard_size, batch_size, progress, timings)
        started = time.perf_counter()
        chunk_k = min(len(datastore), depth * max(1, chunk_factor))
        hits = datastore.search_many([data.queries[q] for q in query_ids], k=chunk_k, mode=mode)
        timings["search"] = time.perf_counter() - started
        chunks = len(datastore)
    started = time.perf_counter()
    run = {q: document_ranking(h, depth) for q, h in zip(query_ids, hits)}
    per_query = retrieval_metrics(run, data.qrels, k, recall_k)
    timings["score"] = time.perf_counter() - started
    settings = {"dataset": str(data.path) if data.path else None, "split": data.split, "mode": mode,
                "engine": ENGINES[mode], "k": k, "recall_k": recall_k, "depth": depth,
                "queries": len(per_query), "documents": len(data.corpus), "chunks": chunks,
                "chunker": chunker_obj.name, "chunk_size": chunker_obj.chunk_size, "overlap": chunker_obj.overlap,
                "embedder": getattr(embedder, "name", type(embedder).__name__)}
    return RetrievalEvaluation(mean_metrics(per_query), per_query, settings, timings)


__all__ = ["RetrievalEvaluation", "document_ranking", "evaluate_beir", "mean_metrics", "metric_names",
           "retrieval_metrics", "write_beir_datastore"]
