"""One shard's dense layer opened for search: candidates from its index family, scored canonically.

Every score a shard returns is computed the same way whatever else the shard holds: exact families
(float flat, HNSW, IVF-Flat) rescore their candidates with ``canonical_dot`` over the float32
vectors the index stores, rescoring layers score with it too, and ties go to the lower row. Exact
families also fetch past the k-th candidate until the candidates' scores fall clearly below it, so
FAISS never cuts a tie at the k boundary. A datastore's hits are thus the same for any sharding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import faiss
import numpy as np

from datastores.dense.families import Family, search_params
from datastores.dense.files import INDEX_FILE, read_dense_index, read_embeddings
from datastores.dense.layers import stored_vectors
from datastores.dense.spec import DenseSpec, DenseTraining
from datastores.errors import DatastoreError
from datastores.quantize import canonical_dot

TIE_SLACK = 8          # candidates past the k-th that exact families fetch to see ties at the boundary
TIE_TOLERANCE = 1e-5   # relative gap between FAISS's float32 scores and canonical ones, kept as candidates
SCORE_BUDGET = 1 << 25  # bytes of float64 products per block of queries scored at once

Ranked = tuple[np.ndarray, np.ndarray]  # scores float32 [n, k] (-inf past the end), rows int64 [n, k] (-1)


def ranked(scores: np.ndarray, rows: np.ndarray, k: int) -> Ranked:
    """The ``k`` best of each query's candidates, by score then lower row; -1 rows go last."""
    valid = rows >= 0
    scores = np.where(valid, scores, -np.inf).astype(np.float32)
    order = np.lexsort((np.where(valid, rows, np.iinfo(np.int64).max), -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(np.where(valid, rows, -1), order, axis=1)


def tie_open(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Per query: whether the last candidate may still tie with the k-th (more must be fetched)."""
    kth, last = scores[:, k - 1], scores[:, -1]
    scale = np.maximum(np.abs(scores[:, 0]), np.abs(kth))
    with np.errstate(invalid="ignore"):
        return (rows[:, -1] >= 0) & (last >= kth - TIE_TOLERANCE * scale)


def gpu_available() -> bool:
    """True when this faiss build has GPU support and sees a GPU (unmeasured here: CI has none)."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _to_gpu(index: Any) -> Any:
    """A GPU copy of a flat index (GpuIndexBinaryFlat or a GPU float index); selectors stay on the CPU copy."""
    resources = faiss.StandardGpuResources()
    if isinstance(index, faiss.IndexBinaryFlat):
        return faiss.GpuIndexBinaryFlat(resources, index)
    gpu = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu.resources = resources
    return gpu


def search_dense(index: faiss.Index, queries: np.ndarray, k: int,
                 allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, rows) per query of a float flat index, over the rows where ``allowed``
    is true (all rows when None); rows are -1 where fewer than ``k`` rows are allowed."""
    n_allowed = index.ntotal if allowed is None else int(np.count_nonzero(allowed))
    k = min(k, n_allowed)
    if k <= 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if allowed is None or n_allowed == index.ntotal:
        return index.search(queries, k)
    return index.search(queries, k, params=search_params(allowed=allowed))


@dataclass
class DenseShard:
    """One shard's dense layer opened for search: index in RAM, rescoring layer memory-mapped.
    Searches change nothing shared (per-call FAISS parameters), so threads may search at once."""

    folder: Path
    spec: DenseSpec
    training: DenseTraining
    dim: int
    rows: int
    use_gpu: bool = True  # used only when gpu_available(); masked searches stay on the CPU index
    #: called with a file name before that file is first read (e.g. its sha256 against the manifest)
    check: Callable[[str], None] | None = field(default=None, repr=False)
    _index: Any = field(default=None, repr=False)
    _gpu: Any = field(default=None, repr=False)
    _layer: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def family(self) -> Family:
        return self.spec.family

    @property
    def index(self) -> Any:
        if self._index is None:
            self._checked(INDEX_FILE)
            index = read_dense_index(self.folder / INDEX_FILE, self.dim, self.rows)
            self.family.prepare(index)
            if self.use_gpu and gpu_available() and self.family.structure == "flat":
                self._gpu = _to_gpu(index)
            self._index = index
        return self._index

    def _checked(self, name: str) -> None:
        if self.check is not None:
            self.check(name)

    def _array(self, name: str) -> np.ndarray:
        if name not in self._layer:
            self._checked(name)  # a rescoring array is checked when first used, not with the index
            array = read_embeddings(self.folder / name)
            if len(array) != self.rows:
                raise DatastoreError(f"{self.folder / name} holds {len(array)} rows; the manifest says {self.rows}")
            self._layer[name] = array
        return self._layer[name]

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               rescore_multiplier: int | None = None) -> Ranked:
        """Top-``k`` (scores, rows) per query among allowed rows; rows are -1 (score -inf) past the end."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if allowed is not None and bool(np.all(allowed)):
            allowed = None
        n_allowed = self.rows if allowed is None else int(np.count_nonzero(allowed))
        k = min(k, n_allowed)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self.spec.layer.rescores:
            fetch = min(k * (rescore_multiplier or self.spec.rescore_multiplier), n_allowed)
            _, rows = self._candidates(queries, fetch, allowed, n_allowed)
            return self._rescore(queries, rows, k)
        if self.family.exact_codes:
            return self._exact(queries, k, allowed, n_allowed)
        return ranked(*self._candidates(queries, k, allowed, n_allowed), k)

    def _candidates(self, queries: np.ndarray, fetch: int, allowed: np.ndarray | None,
                    n_allowed: int) -> Ranked:
        """The index's top-``fetch`` (scores, rows) per query, in the index's own scores."""
        searcher = self._gpu if allowed is None and self._gpu is not None else self.index
        distances, rows = self.family.search(searcher, self.spec, self.family.encode(queries), fetch, allowed,
                                             n_allowed)
        scores = self.family.to_scores(distances, self.dim)
        return np.where(rows >= 0, scores, -np.inf).astype(np.float32), rows.astype(np.int64)

    def _exact(self, queries: np.ndarray, k: int, allowed: np.ndarray | None, n_allowed: int) -> Ranked:
        """Candidates widened (doubling) until none past the last may tie with the k-th, then
        rescored canonically from the stored float32 vectors."""
        out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_r = np.full((len(queries), k), -1, dtype=np.int64)
        todo, fetch = np.arange(len(queries)), min(n_allowed, k + TIE_SLACK)
        while len(todo):
            scores, rows = self._candidates(queries[todo], fetch, allowed, n_allowed)
            done = ~tie_open(scores, rows, k) if fetch < n_allowed else np.ones(len(todo), dtype=bool)
            out_s[todo[done]], out_r[todo[done]] = self._exact_scores(queries[todo[done]], rows[done], k)
            todo, fetch = todo[~done], min(n_allowed, 2 * fetch)
        return out_s, out_r

    def _exact_scores(self, queries: np.ndarray, rows: np.ndarray, k: int) -> Ranked:
        vectors_of = self.family.float_rows(self.index)
        step = max(1, SCORE_BUDGET // max(1, rows.shape[1] * self.dim * 8))
        scores = np.empty(rows.shape, dtype=np.float32)
        for lo in range(0, len(rows), step):
            block = rows[lo:lo + step]
            scores[lo:lo + step] = canonical_dot(vectors_of(np.maximum(block, 0)), queries[lo:lo + step, None, :])
        return ranked(scores, rows, k)

    def _rescore(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> Ranked:
        out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        out_r = np.full((len(queries), k), -1, dtype=np.int64)
        for q, query in enumerate(queries):
            rows = np.unique(candidates[q][candidates[q] >= 0])  # sorted: sequential reads of the mmap
            if not len(rows):
                continue
            scores = self.rescore_rows(query, rows)
            order = np.lexsort((rows, -scores))[:k]
            out_s[q, :len(order)], out_r[q, :len(order)] = scores[order], rows[order]
        return out_s, out_r

    def rescore_rows(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Scores of the float ``query`` against stored ``rows`` (sorted) of the rescoring layer."""
        return self.spec.layer.scores(query, self._array, rows, self.training)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """``stored_vectors`` of sorted ``rows``, read through this shard's cached memory maps."""
        return stored_vectors(self.folder, self.spec, self.training, self.dim, rows,
                              load=lambda path: self._array(path.name))
