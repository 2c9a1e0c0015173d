"""Document retrieval metrics (nDCG@k, MRR@k, recall@k, MAP) and BEIR evaluation through the datastore.

Metrics come from ``pytrec_eval`` (trec_eval): ``ndcg_cut.k`` (graded gains), ``recip_rank``
on the run cut to its top k (MRR@k), ``recall.k`` and ``map`` over the whole run (the run is
retrieved to depth ``max(k, recall_k)``, so MAP is MAP@depth). trec_eval breaks score ties by
document id; to score exactly the ranking the datastore returned, ranks are passed as scores.
Queries are those with at least one relevant judgement (grade > 0); a query with no retrieved
document scores 0. Means are reported ×100 in the summaries, as fractions per query.

BEIR evaluation (:func:`evaluate_beir`, :func:`evaluate_beir_modes`): every corpus document (title
and text) is chunked, embedded and written by ``indexers.build_datastore`` into one datastore
(``doc_id`` = BEIR corpus id), exactly as ``rag index`` builds one, each query is searched with a ``rag.retrieve`` retriever
per mode (``dense``: exact cosine, FAISS flat inner product; ``bm25``; ``hybrid``: both fused;
optionally reranked), and the chunk hits are turned into a document ranking by
``rag.retrieve.rank_documents`` (``max`` by default: each document at its best chunk, i.e. its
first occurrence in rank order), as ``Retriever.retrieve_documents`` ranks them. BM25 is built
with ``Bm25Params()`` (the datastore default) unless other options are given.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from datastores.errors import UserError
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
        raise UserError(f"cut-offs must be at least 1 (got k={k}, recall_k={recall_k})")
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
    #: query id -> the chunk hits scored (only with ``keep_hits``; never serialised)
    hits: dict[str, list[Any]] | None = None

    def to_dict(self, per_query: bool = False) -> dict[str, Any]:
        out = {**{k: round(v, 4) for k, v in self.metrics.items()}, **self.settings,
               "timings": {k: round(v, 3) for k, v in self.timings.items()}}
        if per_query:
            out["per_query"] = self.per_query
        return out


def beir_input(dataset: BeirDataset) -> Any:
    """The corpus of ``dataset`` as a build input: one document per corpus id (title and text)."""
    from datastores.records import Document
    from indexers.build_input import BuildInput

    documents = [Document(doc_id, dataset.document_text(doc_id), doc_id, {}) for doc_id in dataset.corpus]
    return BuildInput(documents=documents, name=f"beir:{dataset.path}" if dataset.path else "beir")


def beir_build_config(embedder: Any, chunker: str = "recursive", chunk_size: int = 512, overlap: int = 0,
                      tokenizer: str | None = None, bm25: Any = None, **settings: Any) -> Any:
    """The ``BuildConfig`` of a BEIR datastore: the chunker settings, ``embedder``'s model name
    and prefixes (an ``Embedder``), the BM25 options of ``bm25`` (a ``Bm25Params``; the
    default ones when None) and any other build ``settings``."""
    from indexers.config import BuildConfig
    from indexers.tokenizers import DEFAULT_TOKENIZER

    if bm25 is not None:
        settings["bm25"] = bm25
    return BuildConfig(chunker=chunker, chunk_size=chunk_size, overlap=overlap,
                       tokenizer=tokenizer or DEFAULT_TOKENIZER, embedder=embedder.name,
                       query_prefix=embedder.query_prefix, passage_prefix=embedder.passage_prefix, **settings)


def document_ranking(hits: Iterable[Any], depth: int, aggregation: str = "max") -> list[str]:
    """At most ``depth`` document ids ranked by ``aggregation`` of their chunks (``rank_documents``;
    ``max``: in order of their best chunk)."""
    from rag.retrieve import rank_documents

    return [d.doc_id for d in rank_documents(list(hits), aggregation)[:depth]]


def parse_modes(modes: str | Sequence[str]) -> list[str]:
    """``"dense,bm25,hybrid"`` -> a checked list of mode names (see ``MODE_SETTINGS``)."""
    names = [m.strip() for m in modes.split(",")] if isinstance(modes, str) else list(modes)
    names = [m for m in names if m]
    unknown = [m for m in names if m not in MODE_SETTINGS]
    if unknown or not names:
        raise UserError(f"unknown retrieval mode(s) {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(MODE_SETTINGS)}")
    return list(dict.fromkeys(names))


def evaluate_beir(dataset: str | Path | BeirDataset, mode: str = "dense", k: int = 10, recall_k: int = 100,
                  **kwargs: Any) -> RetrievalEvaluation:
    """Index a BEIR corpus in one datastore and score ``mode`` retrieval of its queries (see
    :func:`evaluate_beir_modes`, which takes the same keyword arguments)."""
    return evaluate_beir_modes(dataset, [mode], k, recall_k, **kwargs)[0]


def evaluate_beir_modes(dataset: str | Path | BeirDataset, modes: str | Sequence[str] = ("dense",), k: int = 10,
                        recall_k: int = 100, *, embedder: Any = None, chunker: str = "recursive",
                        chunk_size: int = 512, overlap: int = 0, tokenizer: str | None = None,
                        split: str | None = None, index_dir: str | Path | None = None, device: str = "auto",
                        batch_size: int | None = None, shard_size: int = 50_000, chunk_factor: int = 3,
                        progress: bool = False, retriever_options: Mapping[str, Any] | None = None,
                        rerank: str | None = None, reranker: Any = None, query_prefix: str = "auto",
                        passage_prefix: str = "auto", keep_hits: bool = False, aggregation: str = "max",
                        bm25: Any = None) -> list[RetrievalEvaluation]:
    """Index a BEIR corpus once and score every retrieval mode on it, one evaluation per mode.

    Modes: ``dense``, ``bm25``, ``hybrid`` (the ``build_retriever`` defaults, changed by
    ``retriever_options``), ``hybrid-rrf`` (plain RRF), ``hybrid-convex``. With ``rerank`` (a spec such as
    ``cross-encoder:PATH``) or a loaded ``reranker``, each mode is also scored reranked
    (``<mode>+rerank``). ``retriever_options`` go to ``rag.retrieve.build_retriever`` (alpha,
    rrf_k, depth, rerank_depth, normalization, mmr, ...).

    Each query retrieves ``chunk_factor × depth`` chunks (``depth = max(k, recall_k)``; ``depth``
    when no document was split, one chunk per document), which
    are reduced to at most ``depth`` documents by ``aggregation`` (``max``: best chunk; or
    ``decay``, see ``rag.retrieve.rank_documents``). ``bm25`` (a ``Bm25Params``) replaces the
    default BM25 options. ``index_dir`` keeps the datastore
    (it must not exist yet); by default it is written to a temporary folder and removed. The
    passages and queries get the embedder family's prefixes (``"auto"``) unless given. With
    ``keep_hits`` each evaluation keeps its chunk hits per query (``hits``), e.g. for
    ``evaluators.fusion_tuning``.
    """
    from datastores import Datastore
    from indexers.build import build_datastore
    from rag.retrieve import build_retriever, load_reranker

    names = parse_modes(modes)
    if k < 1 or recall_k < 1:
        raise UserError(f"k and recall_k must be at least 1 (got {k}, {recall_k})")
    data = dataset if isinstance(dataset, BeirDataset) else load_beir(dataset, split)
    if embedder is None:
        from indexers.embedding import load_embedder

        embedder = load_embedder(device=device)
    prefixed = embedder.with_prefixes(query_prefix, passage_prefix)
    model_name = prefixed.name
    config = beir_build_config(prefixed, chunker, chunk_size, overlap, tokenizer, bm25, batch_size=batch_size,
                               shard_size=shard_size)
    if rerank is not None and reranker is None:
        reranker = load_reranker(rerank, device=device)
    options = dict(retriever_options or {})
    depth = max(k, recall_k)
    query_ids = data.evaluated_queries
    texts = [data.queries[q] for q in query_ids]
    runs = []
    with tempfile.TemporaryDirectory(prefix="terarag-beir-") as tmp:
        root = Path(index_dir) if index_dir is not None else Path(tmp) / "datastore"
        report = build_datastore(beir_input(data), root, config, embedder=prefixed, progress=progress)
        timings = {"chunk": report.timings["read_chunk"], "embed": report.timings["embed"],
                   "write": report.timings["write"]}
        datastore = Datastore.open(root, query_encoder=prefixed.encode_queries)
        chunks = len(datastore)
        one_chunk_each = datastore.statistics()["documents"] == chunks  # no document was split
        chunk_k = min(chunks, depth * (1 if one_chunk_each else max(1, chunk_factor)))
        variants = [(name, None) for name in names]
        if reranker is not None:
            variants += [(f"{name}+rerank", name) for name in names]
        for label, base in variants:
            mode = base or label
            settings = {**options, **MODE_SETTINGS[mode]}
            settings["depth"] = max(int(settings.get("depth", 100)), chunk_k)
            retriever = build_retriever(datastore, reranker=reranker if base else None,
                                        rerank=getattr(reranker, "spec", None) if base else None,
                                        **{k_: v for k_, v in settings.items() if k_ not in ("rerank",)})
            started = time.perf_counter()
            hits = retriever.retrieve_many(texts, chunk_k)
            seconds = time.perf_counter() - started
            runs.append((label, retriever, hits, seconds))
    out = []
    for label, retriever, hits, seconds in runs:
        started = time.perf_counter()
        run = {q: document_ranking(h, depth, aggregation) for q, h in zip(query_ids, hits)}
        per_query = retrieval_metrics(run, data.qrels, k, recall_k)
        mode_timings = {**timings, "search": seconds, "score": time.perf_counter() - started,
                        **{f"stage_{s}": v for s, v in retriever.timings.items()}}
        c = retriever.config
        settings = {"dataset": str(data.path) if data.path else None, "split": data.split, "mode": label,
                    "engine": _engine(c), "k": k, "recall_k": recall_k, "depth": depth,
                    "queries": len(per_query), "documents": len(data.corpus), "chunks": chunks,
                    "chunker": config.chunker, "chunk_size": config.chunk_size, "overlap": config.overlap,
                    "embedder": model_name, "query_prefix": prefixed.query_prefix,
                    "passage_prefix": prefixed.passage_prefix,
                    "queries_per_s": len(texts) / seconds if seconds > 0 else float("inf"),
                    "aggregation": aggregation, "bm25": datastore.bm25_params.to_dict(),
                    "retriever": c.to_dict()}
        out.append(RetrievalEvaluation(mean_metrics(per_query), per_query, settings, mode_timings,
                                       dict(zip(query_ids, hits)) if keep_hits else None))
    return out


#: Retriever settings behind each evaluation mode name.
MODE_SETTINGS: dict[str, dict[str, Any]] = {
    "dense": {"mode": "dense"},
    "bm25": {"mode": "bm25"},
    "hybrid": {"mode": "hybrid"},
    "hybrid-rrf": {"mode": "hybrid", "fusion": "rrf", "alpha": 0.5},  # plain RRF (the default before issue 18)
    "hybrid-convex": {"mode": "hybrid", "fusion": "convex"},
}


def _engine(config: Any) -> str:
    """A short description of the retriever (``faiss-flat-ip``, ``bm25``, ``rrf(k=60)``, ...), with its
    rerank and MMR stages (``rrf(k=60) → MMR(λ=0.7)``)."""
    if config.mode == "hybrid":
        base = (f"rrf(k={config.rrf_k})" if config.fusion == "rrf"
                else f"convex(alpha={config.alpha}, {config.normalization})")
    else:
        base = ENGINES[config.mode]
    return (base + (f" → {config.rerank}@{config.rerank_depth}" if config.rerank else "")
            + (f" → MMR(λ={config.mmr})" if config.mmr is not None else ""))


__all__ = ["MODE_SETTINGS", "RetrievalEvaluation", "document_ranking", "evaluate_beir", "evaluate_beir_modes",
           "beir_build_config", "beir_input", "mean_metrics", "metric_names", "parse_modes", "retrieval_metrics"]
