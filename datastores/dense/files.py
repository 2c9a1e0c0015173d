"""File names of a shard's dense layer and reading them (FAISS indexes, memory-mapped arrays)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from datastores.errors import DatastoreError

INDEX_FILE = "dense.faiss"
EMBEDDINGS_F16_FILE = "embeddings.f16.npy"
RESCORE_INT8_FILE = "rescore.i8.npy"
CODES_FILE = "codes.u8.npy"          # multi-bit planes [rows, bits, dim/8]
SCALES_FILE = "scales.f16.npy"       # multi-bit scales [rows, bits]
TRAINED_FILE = "dense_trained.faiss"  # datastore root: the trained, empty IVF index shared by shards
RESCORING_FILES = (RESCORE_INT8_FILE, CODES_FILE, SCALES_FILE)  # per-row arrays besides the float16 embeddings
DENSE_FILES = (INDEX_FILE, EMBEDDINGS_F16_FILE, *RESCORING_FILES)  # every per-shard file of the dense layer


def open_faiss_index(path: Path) -> faiss.Index | faiss.IndexBinary:
    """Load a FAISS index file, float or binary (binary files start with ``IB``)."""
    try:
        with open(path, "rb") as handle:
            binary = handle.read(2) == b"IB"
        return faiss.read_index_binary(str(path)) if binary else faiss.read_index(str(path))
    except (OSError, RuntimeError) as exc:
        raise DatastoreError(f"{path} is not a readable FAISS index (truncated or corrupt)") from exc


def read_dense_index(path: Path, dim: int, rows: int) -> faiss.Index | faiss.IndexBinary:
    """Load a shard's FAISS index and check it against the manifest."""
    index = open_faiss_index(path)
    if index.d != dim or index.ntotal != rows:
        raise DatastoreError(
            f"{path} holds {index.ntotal} vectors of dim {index.d}; the manifest says {rows} of dim {dim}"
        )
    return index


def read_embeddings(path: Path) -> np.ndarray:
    """Memory-map a shard's float16 embeddings (or any other per-row .npy array)."""
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DatastoreError(f"{path} is not a readable .npy file: {exc}") from exc
