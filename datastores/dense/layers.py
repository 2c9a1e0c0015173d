"""Rescoring layers: the per-row arrays candidates are rescored against with the float query.

One class per layer (``rescore: int8 | float16 | none``, and multi-bit codes for ``bits > 1``),
each knowing its files, how to write them, and how to score or decode the rows asked for. Scores
are ``canonical_dot`` products: a row scores the same whichever candidates come with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from datastores.dense.files import CODES_FILE, EMBEDDINGS_F16_FILE, RESCORE_INT8_FILE, SCALES_FILE, read_embeddings
from datastores.errors import DatastoreError
from datastores.quantize import Int8Calibration, canonical_dot, multibit_decode, multibit_encode, multibit_scores

Load = Callable[[str], np.ndarray]  # file name -> the shard's (memory-mapped) array


class Layer:
    """No rescoring: a shard's scores are its index's own."""

    name: ClassVar[str] = "none"
    files: ClassVar[tuple[str, ...]] = ()
    #: needs the datastore's int8 calibration (trained from the sample before the first shard)
    calibrated: ClassVar[bool] = False

    @property
    def rescores(self) -> bool:
        return bool(self.files)

    def write(self, folder: Path, vectors: np.ndarray, training: Any) -> None:
        """Save this layer's arrays for float32 ``vectors`` [rows, dim]."""

    def decode(self, load: Load, rows: Any, training: Any, dim: int) -> np.ndarray:
        """float32 approximations [len(rows), dim] of the stored ``rows`` (an index or a slice)."""
        raise DatastoreError("the shard keeps no float vectors (rescore none); rebuild it from the source")

    def scores(self, query: np.ndarray, load: Load, rows: np.ndarray, training: Any) -> np.ndarray:
        """Scores of the float ``query`` [dim] against stored ``rows`` (sorted)."""
        return canonical_dot(self.decode(load, rows, training, len(query)), query)


class Float16Layer(Layer):
    """``embeddings.f16.npy``: the embeddings as float16."""

    name = "float16"
    files = (EMBEDDINGS_F16_FILE,)

    def write(self, folder: Path, vectors: np.ndarray, training: Any) -> None:
        np.save(folder / EMBEDDINGS_F16_FILE, np.asarray(vectors).astype(np.float16))

    def decode(self, load: Load, rows: Any, training: Any, dim: int) -> np.ndarray:
        return np.asarray(load(EMBEDDINGS_F16_FILE)[rows], dtype=np.float32)


class Int8Layer(Layer):
    """``rescore.i8.npy``: int8 codes of the datastore-wide per-dimension calibration."""

    name = "int8"
    files = (RESCORE_INT8_FILE,)
    calibrated = True

    @staticmethod
    def _calibration(training: Any) -> Int8Calibration:
        if training is None or training.int8 is None:
            raise DatastoreError("int8 rescoring needs the datastore's calibration; train_dense was not run")
        return training.int8

    def write(self, folder: Path, vectors: np.ndarray, training: Any) -> None:
        np.save(folder / RESCORE_INT8_FILE, self._calibration(training).encode(vectors))

    def decode(self, load: Load, rows: Any, training: Any, dim: int) -> np.ndarray:
        return self._calibration(training).decode(load(RESCORE_INT8_FILE)[rows])


class MultiBitLayer(Layer):
    """``codes.u8.npy`` + ``scales.f16.npy``: residual sign planes, scored asymmetrically."""

    name = "multibit"
    files = (CODES_FILE, SCALES_FILE)

    def __init__(self, bits: int):
        self.bits = bits

    def write(self, folder: Path, vectors: np.ndarray, training: Any) -> None:
        planes, scales = multibit_encode(vectors, self.bits)
        np.save(folder / CODES_FILE, planes)
        np.save(folder / SCALES_FILE, scales)

    def decode(self, load: Load, rows: Any, training: Any, dim: int) -> np.ndarray:
        return multibit_decode(load(CODES_FILE)[rows], load(SCALES_FILE)[rows], dim)

    def scores(self, query: np.ndarray, load: Load, rows: np.ndarray, training: Any) -> np.ndarray:
        return multibit_scores(query, load(CODES_FILE)[rows], load(SCALES_FILE)[rows])


RESCORE_LAYERS: dict[str, Layer] = {layer.name: layer for layer in (Int8Layer(), Float16Layer(), Layer())}
RESCORE_TYPES = tuple(RESCORE_LAYERS)
STORED_LAYERS = (Float16Layer(), Int8Layer(), MultiBitLayer(0))  # best float approximation first


def stored_vectors(folder: Path, spec: Any, training: Any, dim: int, rows: np.ndarray | None = None,
                   load: Callable[[Path], np.ndarray] = read_embeddings) -> np.ndarray:
    """The best float32 approximation of a shard's vectors that its files hold (for rewriting shards,
    MMR): float16 embeddings, dequantized int8 or multi-bit reconstructions; only ``rows`` (sorted
    row numbers; all rows when None) are read from the memory-mapped files (opened by ``load``)."""
    folder = Path(folder)
    pick = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
    for layer in STORED_LAYERS:
        usable = not layer.calibrated or training.int8 is not None
        if usable and all((folder / name).is_file() for name in layer.files):
            return layer.decode(lambda name: load(folder / name), pick, training, dim)
    raise DatastoreError(f"{folder} keeps no float vectors (rescore none); rebuild it from the source")
