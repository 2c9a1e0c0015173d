"""Vector quantizers: binary sign codes, multi-bit residual sign codes, calibrated int8, float16.

All of them are training-free apart from the int8 range, which is computed once per datastore
from a sample and then frozen (recorded in the manifest) so that every shard agrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from datastores.errors import UserError


def binary_codes(vectors: np.ndarray) -> np.ndarray:
    """``ubinary`` codes: one bit per dimension, set where the value is positive, packed [n, ceil(d/8)]."""
    return np.packbits(np.asarray(vectors) > 0, axis=-1)


def canonical_dot(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Inner products of the rows ``vectors[..., d]`` with ``query[..., d]`` as float32, summed in
    float64 (products of float32 values are exact there) in one fixed order per row, so a row's
    score never depends on which other rows it is scored with. BLAS blocking does depend on that,
    and two copies of one vector in different shards would otherwise tie only approximately."""
    products = np.asarray(vectors, dtype=np.float64) * np.asarray(query, dtype=np.float64)
    return products.sum(axis=-1).astype(np.float32)


def hamming_to_score(distances: np.ndarray, dim: int) -> np.ndarray:
    """Inner product of two ±1 sign codes divided by ``dim``: 1 - 2·hamming/dim (same order as -hamming)."""
    return (1.0 - 2.0 * np.asarray(distances, dtype=np.float32) / dim).astype(np.float32)


# -- multi-bit codes ---------------------------------------------------------------------------


def multibit_encode(vectors: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Residual binarisation: ``x ≈ Σ_i α_i·s_i`` with sign vectors ``s_i ∈ {±1}^d``.

    Plane i is the sign of the residual left by planes 0..i-1 and ``α_i`` (per vector) is the
    least-squares scale of a sign vector, ``mean|r|``. Plane 0 equals ``binary_codes(x)``.
    Returns packed planes uint8 [n, bits, ceil(d/8)] and scales float16 [n, bits].
    """
    if bits < 1:
        raise UserError(f"bits must be at least 1 (got {bits})")
    residual = np.array(vectors, dtype=np.float32, copy=True)
    planes, scales = [], []
    for _ in range(bits):
        positive = residual > 0
        alpha = np.abs(residual).mean(axis=1).astype(np.float16).astype(np.float32)
        planes.append(np.packbits(positive, axis=1))
        scales.append(alpha)
        residual -= alpha[:, None] * np.where(positive, 1.0, -1.0).astype(np.float32)
    return np.stack(planes, axis=1), np.stack(scales, axis=1).astype(np.float16)


def multibit_decode(planes: np.ndarray, scales: np.ndarray, dim: int) -> np.ndarray:
    """The float32 reconstruction ``Σ_i α_i·s_i`` [n, dim] of ``multibit_encode``'s output."""
    signs = np.unpackbits(np.asarray(planes), axis=-1, count=dim).astype(np.float32) * 2.0 - 1.0
    return np.einsum("nbd,nb->nd", signs, np.asarray(scales, dtype=np.float32))


def multibit_scores(query: np.ndarray, planes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Asymmetric inner products of a float ``query`` [d] with multi-bit coded rows: ``q·x̂``
    (``canonical_dot`` of the decoded rows: the same score for a row whatever it is scored with)."""
    return canonical_dot(multibit_decode(planes, scales, len(query)), query)


def multibit_bytes_per_vector(dim: int, bits: int) -> int:
    """Bytes of one multi-bit coded vector: the packed planes plus one float16 scale per plane."""
    return bits * ((dim + 7) // 8) + 2 * bits


# -- int8 ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8Calibration:
    """Per-dimension ranges [low, high] mapped onto the 256 int8 levels, shared by all shards."""

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, sample: np.ndarray) -> "Int8Calibration":
        """Ranges from the minimum and maximum of each dimension over ``sample`` [n, d]."""
        sample = np.asarray(sample, dtype=np.float32)
        if sample.ndim != 2 or len(sample) == 0:
            raise UserError("int8 calibration needs a non-empty [n, dim] sample")
        return cls(sample.min(axis=0), sample.max(axis=0))

    @property
    def step(self) -> np.ndarray:
        return np.maximum(self.high - self.low, 1e-12).astype(np.float32) / 255.0

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """int8 codes [n, d]; values outside the calibrated range are clipped to it."""
        levels = np.rint((np.asarray(vectors, dtype=np.float32) - self.low) / self.step)
        return (np.clip(levels, 0, 255) - 128).astype(np.int8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """float32 values at the centre of each code's level."""
        return (np.asarray(codes, dtype=np.float32) + 128.0) * self.step + self.low

    def to_dict(self) -> dict[str, Any]:
        return {"low": [float(v) for v in self.low], "high": [float(v) for v in self.high]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Int8Calibration":
        return cls(np.asarray(data["low"], dtype=np.float32), np.asarray(data["high"], dtype=np.float32))
