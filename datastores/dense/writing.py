"""Writing one shard's dense files: its FAISS index and its rescoring layer."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from datastores.dense.files import EMBEDDINGS_F16_FILE, INDEX_FILE
from datastores.dense.spec import DenseSpec, DenseTraining


def build_dense_index(embeddings: np.ndarray, spec: "DenseSpec | str" = "float-flat",
                      training: DenseTraining | None = None) -> faiss.Index | faiss.IndexBinary:
    """The searchable index of one shard over float32 ``embeddings`` [n, dim]."""
    spec = DenseSpec.coerce(spec)
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    index = spec.family.new_index(spec, vectors.shape[1], training.trained_index if training else None)
    if len(vectors):
        spec.family.add(index, vectors)
    return index


def write_dense_files(folder: Path, embeddings: np.ndarray, spec: "DenseSpec | str" = "float-flat",
                      training: DenseTraining | None = None) -> None:
    """Save one shard's index and rescoring layer (``datastores.dense.files`` names)."""
    spec = DenseSpec.coerce(spec)
    vectors = np.asarray(embeddings, dtype=np.float32)
    spec.family.write(build_dense_index(vectors, spec, training), folder / INDEX_FILE)
    if spec.family.exact_codes:  # scores come from the index; the float16 copy serves MMR and rewrites
        np.save(folder / EMBEDDINGS_F16_FILE, vectors.astype(np.float16))
    spec.layer.write(folder, vectors, training)
