"""Dense vectors of a shard: float16 embeddings on disk and a FAISS index over them."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from datastores.errors import DatastoreError

DENSE_INDEX_TYPES = ("flat-ip",)


def build_dense_index(embeddings: np.ndarray, index_type: str = "flat-ip") -> faiss.Index:
    """An exact inner-product index over float32 ``embeddings`` [n, dim]."""
    if index_type not in DENSE_INDEX_TYPES:
        raise ValueError(f"unknown dense index type {index_type!r}; known: {DENSE_INDEX_TYPES}")
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = faiss.IndexFlatIP(vectors.shape[1])
    if len(vectors):
        index.add(vectors)
    return index


def write_dense_files(folder: Path, embeddings: np.ndarray, index_file: str, embeddings_file: str,
                      index_type: str = "flat-ip") -> None:
    """Save the float16 embeddings and the FAISS index of one shard."""
    np.save(folder / embeddings_file, embeddings.astype(np.float16))
    faiss.write_index(build_dense_index(embeddings, index_type), str(folder / index_file))


def read_dense_index(path: Path, dim: int, rows: int) -> faiss.Index:
    """Load a shard's FAISS index and check it against the manifest."""
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:
        raise DatastoreError(f"{path} is not a readable FAISS index (truncated or corrupt)") from exc
    if index.d != dim or index.ntotal != rows:
        raise DatastoreError(
            f"{path} holds {index.ntotal} vectors of dim {index.d}; the manifest says {rows} of dim {dim}"
        )
    return index


def read_embeddings(path: Path) -> np.ndarray:
    """Memory-map a shard's float16 embeddings."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DatastoreError(f"{path} is not a readable .npy file: {exc}") from exc


def selector_params(allowed: np.ndarray) -> faiss.SearchParameters:
    """FAISS search parameters that restrict a search to the rows where ``allowed`` is true."""
    bitmap = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
    params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap)))
    params.bitmap = bitmap  # keep the buffer alive as long as the selector that points into it
    return params


def search_dense(index: faiss.Index, queries: np.ndarray, k: int,
                 allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, rows) per query, over the rows where ``allowed`` is true (all rows when
    None); rows are -1 where fewer than ``k`` rows are allowed."""
    n_allowed = index.ntotal if allowed is None else int(np.count_nonzero(allowed))
    k = min(k, n_allowed)
    if k <= 0:
        n = len(queries)
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if allowed is None or n_allowed == index.ntotal:
        return index.search(queries, k)
    return index.search(queries, k, params=selector_params(allowed))
