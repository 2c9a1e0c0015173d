"""Precomputed vectors: embeddings that come with the documents (``rag index --vectors-field NAME``).

A JSON Lines or Parquet field holds one vector per document (``per="document"``: every chunk of
the document gets it) or one per chunk (``per="chunk"``: a list of vectors, as many as the chunker
cuts the document into). The reader parses the field (``parse_vectors``) and hands it on with the
record's location; ``attach_vectors`` checks it against the chunks (dimension, finite values, unit
length or ``normalize``, count) and raises a ``VectorError`` naming the record (``file:line`` or
``file row N``). The build then writes these vectors instead of embedding the chunks; the manifest's
embedder record says where they came from (``VectorSpec.provenance``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from datastores.errors import UserError
from datastores.records import Chunk, Document

VECTORS_PER = ("document", "chunk")
#: Largest distance of a vector's norm from 1 accepted as unit length (float16/float32 round-trips).
NORM_TOLERANCE = 1e-3
#: ``embedder`` name that declares no query embedder (vectors precomputed, ``dim`` given).
NO_EMBEDDER = "none"


class VectorError(UserError):
    """A precomputed vector is missing or unusable; the message names the record."""


@dataclass(frozen=True)
class VectorSpec:
    """Where precomputed vectors are and how to check them (``dim`` None until the build knows it)."""

    field: str
    per: str = "document"
    dim: int | None = None
    normalize: bool = False

    def with_dim(self, dim: int) -> "VectorSpec":
        return replace(self, dim=int(dim))

    def provenance(self) -> dict[str, Any]:
        """What the manifest records about the vectors' origin."""
        return {"source": "precomputed", "field": self.field, "per": self.per,
                "normalized_by_build": self.normalize}


@dataclass(frozen=True)
class VectorDocument(Document):
    """A document read with its precomputed vectors [m, d] and the location of its record."""

    vectors: np.ndarray | None = field(default=None, compare=False, repr=False)
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class VectorChunk(Chunk):
    """A chunk carrying its precomputed unit vector (not stored with the chunk's columns)."""

    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


def parse_vectors(value: Any, where: str, name: str) -> np.ndarray:
    """A record's vector field as float32 [m, d]: one list of numbers (m = 1) or a list of them."""
    if value is None:
        raise VectorError(f"{where}: no vector in field {name!r}")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise VectorError(f"{where}: field {name!r} is not a list of numbers or of equal-length lists "
                          f"of numbers ({exc})") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] == 0:
        raise VectorError(f"{where}: field {name!r} must hold a vector or a list of vectors "
                          f"(got shape {list(array.shape)})")
    return array


def arrow_vector_rows(column: Any) -> list[np.ndarray | None]:
    """Per row of a Parquet/Arrow column of lists (or lists of lists) of numbers: float32 [m, d]
    without going through Python lists; None for null rows."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    nested = pa.types.is_list(column.type.value_type) or pa.types.is_large_list(column.type.value_type) \
        or pa.types.is_fixed_size_list(column.type.value_type)
    target = pa.list_(pa.list_(pa.float32())) if nested else pa.list_(pa.float32())
    column = column.cast(target)
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    outer = column.offsets.to_numpy()
    values = column.values
    if nested:
        inner = values.offsets.to_numpy()
        flat = values.values.to_numpy(zero_copy_only=False)
        return [None if nulls[i] else _ragged(flat, inner[outer[i]:outer[i + 1] + 1])
                for i in range(len(column))]
    flat = values.to_numpy(zero_copy_only=False)
    return [None if nulls[i] else flat[outer[i]:outer[i + 1]][None, :] for i in range(len(column))]


def _ragged(flat: np.ndarray, bounds: np.ndarray) -> np.ndarray | list:
    """Rows ``flat[bounds[j]:bounds[j+1]]`` as a 2-D array, or as a list when their lengths differ
    (``parse_vectors`` then names the record)."""
    lengths = np.diff(bounds)
    if len(lengths) and (lengths == lengths[0]).all():
        return flat[bounds[0]:bounds[-1]].reshape(len(lengths), int(lengths[0]))
    return [flat[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]


def check_vectors(vectors: np.ndarray, where: str, spec: VectorSpec, chunks: int) -> np.ndarray:
    """``vectors`` [m, d] checked for ``chunks`` chunks: unit-length float32 [m, d], or VectorError."""
    count = len(vectors)
    if spec.per == "document" and count != 1:
        raise VectorError(f"{where}: field {spec.field!r} holds {count} vectors; --vectors-per document "
                          "expects one per document")
    if spec.per == "chunk" and count != chunks:
        raise VectorError(f"{where}: field {spec.field!r} holds {count} vectors but the document was cut "
                          f"into {chunks} chunks (--vectors-per chunk needs one per chunk)")
    if spec.dim is not None and vectors.shape[1] != spec.dim:
        raise VectorError(f"{where}: vector dimension {vectors.shape[1]} does not match {spec.dim} "
                          "(the declared embedder's or --dim)")
    if not np.isfinite(vectors).all():
        raise VectorError(f"{where}: field {spec.field!r} holds a value that is not finite (NaN or inf)")
    norms = np.linalg.norm(vectors, axis=1)
    if spec.normalize:
        if (norms == 0).any():
            raise VectorError(f"{where}: field {spec.field!r} holds a zero vector, which cannot be normalized")
        return (vectors / norms[:, None]).astype(np.float32)
    worst = int(np.argmax(np.abs(norms - 1)))
    if abs(norms[worst] - 1) > NORM_TOLERANCE:
        raise VectorError(f"{where}: vector {worst} has norm {norms[worst]:.4g}, not 1; pass --normalize "
                          "to normalize vectors while indexing")
    return vectors


def attach_vectors(document: Document, chunks: Sequence[Chunk], spec: VectorSpec) -> list[VectorChunk]:
    """``chunks`` of ``document`` with their checked precomputed vectors."""
    if not isinstance(document, VectorDocument) or document.vectors is None:
        raise VectorError(f"{document.id}: no vector field {spec.field!r} (precomputed vectors are read "
                          "from .jsonl and .parquet records only)")
    vectors = check_vectors(document.vectors, document.where or document.id, spec, len(chunks))
    rows = np.zeros(len(chunks), dtype=np.int64) if spec.per == "document" else np.arange(len(chunks))
    return [VectorChunk(c.doc_id, c.start, c.end, c.text, c.source, c.metadata, vector=vectors[r])
            for c, r in zip(chunks, rows)]


def stacked_vectors(chunks: Sequence[Chunk]) -> np.ndarray | None:
    """The precomputed vectors of ``chunks`` as float32 [n, d], or None when they carry none."""
    if not chunks or not isinstance(chunks[0], VectorChunk):
        return None
    return np.stack([c.vector for c in chunks]).astype(np.float32, copy=False)
