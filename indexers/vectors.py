"""Precomputed vectors: embeddings that come with the documents (``rag index --vectors-field NAME``).

A JSON Lines or Parquet field holds one vector per document (``per="document"``: every chunk of
the document gets it) or one per chunk (``per="chunk"``: a list of vectors, as many as the chunker
cuts the document into). The reader parses the field (``parse_vectors``) and hands it on with the
record's location; ``checked_vectors`` checks a batch of documents against their chunk counts
(dimension, finite values, unit length or ``normalize``, count) with one numpy pass and raises a
``VectorError`` naming the first bad record (``file:line`` or ``file row N``); the vectors then
travel as one array per batch, never one per chunk. The build then writes these vectors instead of embedding the chunks; the manifest's
embedder record says where they came from (``VectorSpec.provenance``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from datastores.errors import UserError
from datastores.records import Document

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


def checked_vectors(documents: Sequence[Document], spec: VectorSpec,
                    chunk_counts: Sequence[int] | None = None) -> np.ndarray:
    """The checked unit-length float32 vectors [rows, d] of ``documents``, or a ``VectorError``
    naming the first bad record. With ``chunk_counts`` (chunks per document) the rows are the
    chunks' (a per-document vector repeated for each of its chunks); without, each document's own
    vectors (the training sample: counts are checked when the document is chunked)."""
    arrays = [_shaped(d, spec, None if chunk_counts is None else chunk_counts[i]) for i, d in enumerate(documents)]
    if not arrays:
        return np.zeros((0, spec.dim or 0), dtype=np.float32)
    rows = np.array([len(a) for a in arrays])
    vectors = np.concatenate(arrays).astype(np.float32, copy=False)
    owner = np.repeat(np.arange(len(arrays)), rows)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        raise VectorError(f"{_where(documents[owner[np.argmin(finite)]])}: field {spec.field!r} holds a value "
                          "that is not finite (NaN or inf)")
    norms = np.linalg.norm(vectors, axis=1)
    if spec.normalize:
        if (norms == 0).any():
            raise VectorError(f"{_where(documents[owner[np.argmin(norms)]])}: field {spec.field!r} holds a zero "
                              "vector, which cannot be normalized")
        vectors = (vectors / norms[:, None]).astype(np.float32)
    else:
        _check_unit(documents, norms, owner, rows)
    if chunk_counts is not None and spec.per == "document":
        vectors = np.repeat(vectors, np.asarray(chunk_counts, dtype=np.int64), axis=0)
    return vectors


def _where(document: Document) -> str:
    return getattr(document, "where", "") or document.id


def _shaped(document: Document, spec: VectorSpec, chunks: int | None) -> np.ndarray:
    """``document``'s vectors [m, d] with the count and dimension checked."""
    if not isinstance(document, VectorDocument) or document.vectors is None:
        raise VectorError(f"{document.id}: no vector field {spec.field!r} (precomputed vectors are read "
                          "from .jsonl and .parquet records only)")
    vectors, where = document.vectors, _where(document)
    if spec.per == "document" and len(vectors) != 1:
        raise VectorError(f"{where}: field {spec.field!r} holds {len(vectors)} vectors; --vectors-per document "
                          "expects one per document")
    if spec.per == "chunk" and chunks is not None and len(vectors) != chunks:
        raise VectorError(f"{where}: field {spec.field!r} holds {len(vectors)} vectors but the document was cut "
                          f"into {chunks} chunks (--vectors-per chunk needs one per chunk)")
    if spec.dim is not None and vectors.shape[1] != spec.dim:
        raise VectorError(f"{where}: vector dimension {vectors.shape[1]} does not match {spec.dim} "
                          "(the declared embedder's or --dim)")
    return vectors


def _check_unit(documents: Sequence[Document], norms: np.ndarray, owner: np.ndarray, rows: np.ndarray) -> None:
    """Raise for the first document with a vector whose norm is not 1 (naming its worst vector)."""
    off = np.abs(norms - 1)
    bad = off > NORM_TOLERANCE
    if not bad.any():
        return
    doc = int(owner[np.argmax(bad)])
    first = int(rows[:doc].sum())
    worst = int(np.argmax(off[first:first + rows[doc]]))
    raise VectorError(f"{_where(documents[doc])}: vector {worst} has norm {norms[first + worst]:.4g}, not 1; "
                      "pass --normalize to normalize vectors while indexing")
