"""Hybrid fusion settings tuned on a user's own judged queries, and scored held out by cross-fitting.

Given, per query, the dense and the BM25 hit lists (what ``rag.retrieve.Retriever`` fuses in
``hybrid`` mode) and the qrels, every setting of a small grid (convex ``alpha`` x normalisation,
RRF ``k``) is applied with ``datastores.fusion.fuse`` and scored per query with
``evaluators.retrieval.retrieval_metrics``, once. Tuning picks the setting with the best mean of
one metric (nDCG@k by default) over the dev queries; ties go to the earlier setting of the grid.

Cross-fitting (:func:`cross_fit_fusion`): the queries are split into ``folds`` disjoint folds
(:func:`assign_folds`: natural order of the query ids, dealt round-robin, so the split depends on
the ids only); each fold is scored with the setting tuned on the other folds, and the held-out
per-query metrics of all folds together are an honest estimate of "tune on my queries, then use
it". The setting tuned on all queries is the one to put in the pipeline config.

The fused list is cut to the longer input list, as the retriever cuts it to the hits it asked
each retriever for, and reduced to documents by best chunk (``document_ranking``), so a setting
scores here exactly what ``rag eval retrieval --mode hybrid`` with that setting scores.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from datastores.errors import UserError
from evaluators.datasets import judged_queries
from evaluators.retrieval import (RetrievalEvaluation, document_ranking, mean_metrics, metric_names,
                                  retrieval_metrics)
from datastores.fusion import NORMALIZATIONS, fuse
from rag.retrieve.retriever import RetrieverConfig

#: Convex weights of a real hybrid (0 and 1 would be BM25 or dense alone).
HYBRID_ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: The same with the single retrievers as candidates.
ALL_ALPHAS = (0.0, *HYBRID_ALPHAS, 1.0)
RRF_KS = (1, 5, 10, 20, 60, 100)
#: RRF list weights (dense ``2 * alpha``, BM25 ``2 * (1 - alpha)``; 0.5 is plain RRF).
RRF_ALPHAS = (0.3, 0.5, 0.7)


@dataclass(frozen=True)
class FusionSetting:
    """One hybrid fusion setting, in the terms of ``rag.retrieve.build_retriever``."""

    fusion: str
    alpha: float = 0.5
    normalization: str = "minmax"
    rrf_k: int = 60

    def __post_init__(self) -> None:
        RetrieverConfig("hybrid", self.fusion, self.alpha, self.rrf_k, normalization=self.normalization)  # checks

    @property
    def label(self) -> str:
        """``convex(alpha=0.4, calibrated)``, ``rrf(k=10)`` or ``rrf(k=10, alpha=0.3)``."""
        if self.fusion == "rrf":
            return f"rrf(k={self.rrf_k})" if self.alpha == 0.5 else f"rrf(k={self.rrf_k}, alpha={self.alpha:g})"
        return f"convex(alpha={self.alpha:g}, {self.normalization})"

    def retriever_options(self, depth: int | None = None) -> dict[str, Any]:
        """The ``retriever:`` mapping of a pipeline config (keywords of ``build_retriever``)."""
        out: dict[str, Any] = {"mode": "hybrid", "fusion": self.fusion}
        if self.fusion == "rrf":
            out["rrf_k"] = self.rrf_k
            if self.alpha != 0.5:
                out["alpha"] = self.alpha
        else:
            out.update(alpha=self.alpha, normalization=self.normalization)
        if depth is not None:
            out["depth"] = depth
        return out

    def search_flags(self, depth: int | None = None) -> str:
        """The same as ``rag search`` flags: ``--mode hybrid --fusion convex --alpha 0.4 ...``."""
        return " ".join(f"--{key.replace('_', '-')} {value:g}" if isinstance(value, float)
                        else f"--{key.replace('_', '-')} {value}"
                        for key, value in self.retriever_options(depth).items())


def fusion_grid(alphas: Iterable[float] = HYBRID_ALPHAS, normalizations: Iterable[str] = NORMALIZATIONS,
                rrf_ks: Iterable[int] = RRF_KS, rrf_alphas: Iterable[float] = RRF_ALPHAS) -> list[FusionSetting]:
    """Convex ``alphas`` x ``normalizations``, then RRF with each of ``rrf_ks`` x ``rrf_alphas``
    (list weights; this order breaks ties)."""
    grid = [FusionSetting("convex", float(a), n) for a in alphas for n in normalizations]
    grid += [FusionSetting("rrf", float(a), rrf_k=int(k)) for k in rrf_ks for a in rrf_alphas]
    if not grid:
        raise UserError("the fusion grid is empty")
    return grid


@dataclass
class FusionTuning:
    """The best setting on some dev queries, its dev score and every setting's dev score."""

    fusion: str
    alpha: float
    normalization: str
    rrf_k: int
    dev_score: float  # mean of ``metric`` over the dev queries, x100
    metric: str
    queries: int
    table: list[tuple[str, float]] = field(default_factory=list)  # (setting label, dev score), grid order

    @property
    def setting(self) -> FusionSetting:
        return FusionSetting(self.fusion, self.alpha, self.normalization, self.rrf_k)

    def to_dict(self, table: bool = False) -> dict[str, Any]:
        out = asdict(self)
        out["label"] = self.setting.label
        if not table:
            out.pop("table")
        return out


@dataclass
class GridScores:
    """Per-query metrics (fractions) of every grid setting: ``values[setting, query, metric]``."""

    grid: list[FusionSetting]
    query_ids: list[str]
    metrics: list[str]
    values: np.ndarray

    def best(self, metric: str, queries: Sequence[int] | np.ndarray | None = None) -> FusionTuning:
        """The setting with the highest mean ``metric`` over the query rows ``queries`` (default: all)."""
        if metric not in self.metrics:
            raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(self.metrics)}")
        rows = np.arange(len(self.query_ids)) if queries is None else np.asarray(queries, dtype=np.int64)
        if len(rows) == 0:
            raise UserError("no dev queries to tune the fusion on")
        means = 100.0 * self.values[:, rows, self.metrics.index(metric)].mean(axis=1)
        best = int(np.argmax(np.round(means, 10)))  # first of equal means: grid order breaks ties
        s = self.grid[best]
        return FusionTuning(s.fusion, s.alpha, s.normalization, s.rrf_k, float(means[best]), metric, len(rows),
                            [(g.label, float(m)) for g, m in zip(self.grid, means)])

    def subset(self, settings: Iterable[FusionSetting]) -> "GridScores":
        """The scores of some of the grid's settings (in the order given), without fusing again."""
        rows = [self.grid.index(s) for s in settings]
        return GridScores([self.grid[r] for r in rows], self.query_ids, self.metrics, self.values[rows])

    def per_query(self, setting: int, rows: Iterable[int]) -> dict[str, dict[str, float]]:
        """Metrics of grid setting ``setting`` for the query rows ``rows``."""
        return {self.query_ids[r]: dict(zip(self.metrics, self.values[setting, r].tolist())) for r in rows}


def _pairs(hits: Sequence[Any]) -> list[tuple[int, float]]:
    return [(h.chunk_id, h.score) for h in hits]


def evaluated_query_ids(qrels: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Query ids with at least one relevant judgement, in natural order (``q2`` before ``q10``)."""
    return sorted(judged_queries(qrels), key=_natural_key)


def _natural_key(text: str) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part]


def score_grid(dense: Mapping[str, Sequence[Any]], sparse: Mapping[str, Sequence[Any]],
               qrels: Mapping[str, Mapping[str, int]], grid: Sequence[FusionSetting] | None = None, *,
               k: int = 10, recall_k: int = 100, progress: bool = False) -> GridScores:
    """Fuse every query's ``dense`` and ``sparse`` hits (``Hit``-like: chunk_id, doc_id, score; best
    first) with every setting of ``grid`` and score the document rankings against ``qrels``.

    A judged query missing from a mapping has no hits there (and scores 0 if missing from both).
    """
    from tqdm.auto import tqdm

    grid = list(grid) if grid is not None else fusion_grid()
    query_ids = evaluated_query_ids(qrels)
    if not query_ids:
        raise UserError("no query has a relevant judgement (grade > 0): nothing to tune on")
    depth = max(k, recall_k)
    lists = []
    for q in query_ids:
        d, s = list(dense.get(q, ())), list(sparse.get(q, ()))
        by_id = {h.chunk_id: h for h in s} | {h.chunk_id: h for h in d}
        lists.append((_pairs(d), _pairs(s), by_id, max(len(d), len(s))))
    names = metric_names(k, recall_k)
    values = np.zeros((len(grid), len(query_ids), len(names)))
    for i, setting in enumerate(tqdm(grid, desc="fusion grid", unit="setting", disable=not progress or None)):
        run = {}
        for q, (d, s, by_id, cut) in zip(query_ids, lists):
            fused = fuse(d, s, setting.fusion, alpha=setting.alpha, rrf_k=setting.rrf_k,
                         normalization=setting.normalization)[:cut]
            run[q] = document_ranking((by_id[chunk_id] for chunk_id, _ in fused), depth)
        per_query = retrieval_metrics(run, {q: qrels[q] for q in query_ids}, k, recall_k)
        values[i] = [[per_query[q][n] for n in names] for q in query_ids]
    return GridScores(grid, query_ids, names, values)


def tune_fusion(dense: Mapping[str, Sequence[Any]], sparse: Mapping[str, Sequence[Any]],
                qrels: Mapping[str, Mapping[str, int]], grid: Sequence[FusionSetting] | None = None, *,
                metric: str | None = None, k: int = 10, recall_k: int = 100) -> FusionTuning:
    """The grid setting with the best mean ``metric`` (default ``ndcg@k``) over all judged queries."""
    scores = score_grid(dense, sparse, qrels, grid, k=k, recall_k=recall_k)
    return scores.best(metric or f"ndcg@{k}")


def assign_folds(query_ids: Iterable[str], folds: int) -> dict[str, int]:
    """Query id -> fold in ``0 .. folds-1``: ids in natural order dealt round-robin (deterministic,
    disjoint, sizes differ by at most one)."""
    ids = sorted(dict.fromkeys(query_ids), key=_natural_key)
    if folds < 2:
        raise UserError(f"cross-fitting needs at least 2 folds (got {folds})")
    if folds > len(ids):
        raise UserError(f"{folds} folds for {len(ids)} judged queries: use at most {len(ids)} folds")
    return {q: i % folds for i, q in enumerate(ids)}


@dataclass
class FoldChoice:
    """One fold: the setting tuned on the other folds and its score on this fold's queries."""

    fold: int
    tuning: FusionTuning  # tuned on the other folds (``tuning.queries`` dev queries)
    test_queries: list[str]
    test_score: float  # the same metric on this fold's queries, x100


@dataclass
class CrossFitResult:
    """Held-out metrics of fusion tuned on the other folds, per fold choices, and the all-query choice."""

    per_query: dict[str, dict[str, float]]  # held out, fractions
    metrics: dict[str, float]  # means x100
    folds: list[FoldChoice]
    overall: FusionTuning  # tuned on every judged query: the setting to use
    grid: list[FusionSetting]
    metric: str

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "metrics": self.metrics, "grid_size": len(self.grid),
                "folds": [{"fold": f.fold, "test_queries": len(f.test_queries), "test_score": f.test_score,
                           **f.tuning.to_dict()} for f in self.folds],
                "overall": self.overall.to_dict()}


def cross_fit(scores: GridScores, folds: int = 2, metric: str | None = None,
              fold_of: Mapping[str, int] | None = None) -> CrossFitResult:
    """Cross-fitted evaluation over already scored grid settings (see :func:`cross_fit_fusion`).
    ``fold_of`` (query id -> fold) replaces :func:`assign_folds`, e.g. for random splits."""
    metric = metric or scores.metrics[0]
    fold_of = assign_folds(scores.query_ids, folds) if fold_of is None else fold_of
    if sorted(set(fold_of[q] for q in scores.query_ids)) != list(range(folds)):
        raise UserError(f"fold_of must put the judged queries into folds 0 .. {folds - 1}, each non-empty")
    assignment = np.array([fold_of[q] for q in scores.query_ids])
    per_query: dict[str, dict[str, float]] = {}
    choices = []
    for fold in range(folds):
        test = np.flatnonzero(assignment == fold)
        tuning = scores.best(metric, np.flatnonzero(assignment != fold))
        held_out = scores.per_query(scores.grid.index(tuning.setting), test)
        per_query.update(held_out)
        test_score = 100.0 * float(np.mean([v[metric] for v in held_out.values()]))
        choices.append(FoldChoice(fold, tuning, [scores.query_ids[r] for r in test], test_score))
    per_query = {q: per_query[q] for q in scores.query_ids}
    return CrossFitResult(per_query, mean_metrics(per_query), choices, scores.best(metric), list(scores.grid),
                          metric)


def cross_fit_fusion(dense: Mapping[str, Sequence[Any]], sparse: Mapping[str, Sequence[Any]],
                     qrels: Mapping[str, Mapping[str, int]], folds: int = 2,
                     grid: Sequence[FusionSetting] | None = None, *, metric: str | None = None, k: int = 10,
                     recall_k: int = 100, progress: bool = False) -> CrossFitResult:
    """Score each fold of the judged queries with the fusion tuned (best mean ``metric``, default
    ``ndcg@k``) on the other folds; every query is scored once, held out. Also tunes on all queries
    (``overall``): the setting to use."""
    scores = score_grid(dense, sparse, qrels, grid, k=k, recall_k=recall_k, progress=progress)
    return cross_fit(scores, folds, metric or f"ndcg@{k}")


TUNED_MODE = "hybrid-tuned (cv)"


def tuned_fusion_evaluation(evaluations: Sequence[Any], qrels: Mapping[str, Mapping[str, int]], folds: int = 2,
                            grid: Sequence[FusionSetting] | None = None, *, progress: bool = False) -> RetrievalEvaluation:
    """A ``hybrid-tuned (cv)`` evaluation row from the ``dense`` and ``bm25`` rows of
    ``evaluators.retrieval.evaluate_beir_modes(..., keep_hits=True)``: held-out metrics of
    :func:`cross_fit_fusion`, with the per-fold and all-query choices under ``settings["fusion_tuning"]``
    and the ``rag search`` flags / pipeline ``retriever`` options of the all-query choice."""
    by_mode = {e.settings["mode"]: e for e in evaluations}
    missing = [m for m in ("dense", "bm25") if m not in by_mode or by_mode[m].hits is None]
    if missing:
        raise UserError(f"fusion tuning needs the {' and '.join(missing)} evaluation(s) run with keep_hits=True")
    dense, sparse = by_mode["dense"], by_mode["bm25"]
    k, recall_k = dense.settings["k"], dense.settings["recall_k"]
    started = time.perf_counter()
    result = cross_fit_fusion(dense.hits, sparse.hits, qrels, folds, grid, k=k, recall_k=recall_k,
                              progress=progress)
    depth = dense.settings["retriever"]["depth"]
    best = result.overall.setting
    settings = {**dense.settings, "mode": TUNED_MODE, "engine": f"{folds}-fold cross-fitted fusion tuning",
                "queries": len(result.per_query), "queries_per_s": None,
                "retriever": best.retriever_options(depth), "search_flags": best.search_flags(depth),
                "fusion_tuning": result.to_dict()}
    return RetrievalEvaluation(result.metrics, result.per_query, settings, {"tune": time.perf_counter() - started})


__all__ = ["ALL_ALPHAS", "CrossFitResult", "FoldChoice", "FusionSetting", "FusionTuning", "GridScores",
           "HYBRID_ALPHAS", "RRF_ALPHAS", "RRF_KS", "assign_folds", "cross_fit", "cross_fit_fusion", "evaluated_query_ids",
           "fusion_grid", "score_grid", "tune_fusion", "tuned_fusion_evaluation", "TUNED_MODE"]
