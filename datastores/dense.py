"""Dense vectors of a shard: the searchable index (float or binary FAISS) and the rescoring layer.

Index types (``DenseSpec.type``):

* ``float-flat`` (alias ``flat-ip``): exact inner product over float32; float16 embeddings kept.
* ``float-ivfpq``: IVF + product quantisation, trained once per datastore.
* ``binary-flat`` / ``binary-hnsw`` / ``binary-ivf``: Hamming search over ``ubinary`` sign codes
  (``np.packbits(x > 0)``), 1 bit per dimension; IVF trained once per datastore.

Approximate indexes return ``k × rescore_multiplier`` candidates which are rescored with the
float query against memory-mapped int8 (datastore-wide calibration) or float16 vectors, or, with
``bits > 1``, against the multi-bit residual sign codes (asymmetric distance).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import faiss
import numpy as np

from datastores.errors import DatastoreError
from datastores.quantize import (
    Int8Calibration,
    binary_codes,
    hamming_to_score,
    multibit_decode,
    multibit_encode,
    multibit_scores,
)

DENSE_INDEX_TYPES = ("float-flat", "float-ivfpq", "binary-flat", "binary-hnsw", "binary-ivf")
INDEX_ALIASES = {"flat-ip": "float-flat"}
RESCORE_TYPES = ("int8", "float16", "none")
MAX_BITS = 8

INDEX_FILE = "dense.faiss"
EMBEDDINGS_F16_FILE = "embeddings.f16.npy"
RESCORE_INT8_FILE = "rescore.i8.npy"
CODES_FILE = "codes.u8.npy"          # multi-bit planes [rows, bits, dim/8]
SCALES_FILE = "scales.f16.npy"       # multi-bit scales [rows, bits]
TRAINED_FILE = "dense_trained.faiss"  # datastore root: the trained, empty IVF index shared by shards
RESCORING_FILES = (RESCORE_INT8_FILE, CODES_FILE, SCALES_FILE)  # per-row arrays besides the float16 embeddings
DENSE_FILES = (INDEX_FILE, EMBEDDINGS_F16_FILE, *RESCORING_FILES)  # every per-shard file of the dense layer


class DenseConfigError(ValueError):
    """A dense index setting is invalid; the message names it."""


@dataclass(frozen=True)
class DenseSpec:
    """How a datastore's dense layer is built and searched."""

    type: str = "float-flat"
    rescore: str = "auto"             # int8 | float16 | none; auto: int8 for approximate indexes
    bits: int = 1
    rescore_multiplier: int = 4
    train_sample: int = 20_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 64
    ivf_nlist: int = 256
    ivf_nprobe: int = 16

    def __post_init__(self) -> None:
        kind = INDEX_ALIASES.get(self.type, self.type)
        if kind not in DENSE_INDEX_TYPES:
            raise DenseConfigError(f"dense_index must be one of {', '.join(DENSE_INDEX_TYPES)} (got {self.type!r})")
        object.__setattr__(self, "type", kind)
        if self.rescore == "auto":
            object.__setattr__(self, "rescore", "none" if kind == "float-flat" or self.bits > 1 else "int8")
        if self.rescore not in RESCORE_TYPES:
            raise DenseConfigError(f"rescore must be one of {', '.join(RESCORE_TYPES)} (got {self.rescore!r})")
        for name in ("bits", "rescore_multiplier", "train_sample", "hnsw_m", "hnsw_ef_construction",
                     "hnsw_ef_search", "ivf_nlist", "ivf_nprobe"):
            if getattr(self, name) < 1:
                raise DenseConfigError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if kind == "float-flat" and self.rescore != "none":
            raise DenseConfigError("float-flat scores exactly; rescore must be none (or auto)")
        if self.bits > MAX_BITS:
            raise DenseConfigError(f"bits must be at most {MAX_BITS} (got {self.bits})")
        if self.bits > 1 and not self.binary:
            raise DenseConfigError(f"bits > 1 needs a binary index (binary-flat, binary-hnsw, binary-ivf), not {kind}")
        if self.bits > 1 and self.rescore != "none":
            raise DenseConfigError("with bits > 1 candidates are rescored with the multi-bit codes; set rescore to none")
        if self.ivf_nprobe > self.ivf_nlist and self.ivf:
            raise DenseConfigError(f"ivf_nprobe ({self.ivf_nprobe}) cannot exceed ivf_nlist ({self.ivf_nlist})")

    @classmethod
    def coerce(cls, value: "str | DenseSpec | dict[str, Any]") -> "DenseSpec":
        """A spec from an index type name, a spec, or a manifest's ``dense_index`` dict."""
        if isinstance(value, DenseSpec):
            return value
        if isinstance(value, str):
            return cls(type=value)
        known = {f for f in cls.__dataclass_fields__}
        flat = {**value, **value.get("hnsw", {}), **value.get("ivf", {})}
        renames = {"m": "hnsw_m", "ef_construction": "hnsw_ef_construction", "ef_search": "hnsw_ef_search",
                   "nlist": "ivf_nlist", "nprobe": "ivf_nprobe"}
        flat = {renames.get(k, k): v for k, v in flat.items()}
        return cls(**{k: v for k, v in flat.items() if k in known})

    @property
    def binary(self) -> bool:
        return self.type.startswith("binary-")

    @property
    def ivf(self) -> bool:
        return self.type in ("binary-ivf", "float-ivfpq")

    @property
    def exact(self) -> bool:
        return self.type == "float-flat"

    @property
    def needs_training(self) -> bool:
        """True when a sample must be embedded before the first shard (IVF centroids, int8 range)."""
        return self.ivf or self.rescore == "int8"

    def settings(self) -> dict[str, Any]:
        """The settings that shape the files, for fingerprints and the manifest (no defaults noise)."""
        if self.exact:
            return {"type": self.type}
        out: dict[str, Any] = {"type": self.type, "rescore": self.rescore, "bits": self.bits,
                               "rescore_multiplier": self.rescore_multiplier}
        if self.type == "binary-hnsw":
            out["hnsw"] = {"m": self.hnsw_m, "ef_construction": self.hnsw_ef_construction,
                           "ef_search": self.hnsw_ef_search}
        if self.ivf:
            out["ivf"] = {"nlist": self.ivf_nlist, "nprobe": self.ivf_nprobe}
        if self.needs_training:
            out["train_sample"] = self.train_sample
        return out


@dataclass
class DenseTraining:
    """What is computed once per datastore from the training sample and shared by every shard."""

    int8: Int8Calibration | None = None
    trained_index: np.ndarray | None = field(default=None, repr=False)  # serialized empty IVF index

    def manifest_part(self) -> dict[str, Any]:
        return {"int8": self.int8.to_dict()} if self.int8 is not None else {}


def manifest_dense_index(spec: DenseSpec, training: DenseTraining | None) -> dict[str, Any]:
    """The manifest's ``dense_index`` dict: settings, metric and the frozen int8 calibration."""
    return {**spec.settings(), "metric": "inner_product", **(training.manifest_part() if training else {})}


def training_from_manifest(dense_index: dict[str, Any]) -> DenseTraining:
    """The int8 calibration recorded in a manifest's (or build state's) ``dense_index`` dict."""
    int8 = dense_index.get("int8")
    return DenseTraining(Int8Calibration.from_dict(int8) if int8 else None)


def _pq_subquantizers(dim: int) -> int:
    """The most sub-quantizers ≤ dim/8 that divide ``dim`` (≈ 1 byte per 8 dimensions, like binary)."""
    return next(m for m in range(max(1, dim // 8), 0, -1) if dim % m == 0)


def train_dense(spec: DenseSpec, sample: np.ndarray) -> DenseTraining:
    """Fit the int8 range and/or the IVF coarse quantizer (and PQ codebooks) on ``sample`` [n, dim]."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.ndim != 2 or len(sample) == 0:
        raise DatastoreError("training the dense index needs a non-empty sample of embeddings")
    training = DenseTraining()
    if spec.rescore == "int8":
        training.int8 = Int8Calibration.fit(sample)
    if spec.ivf:
        dim = sample.shape[1]
        needed = spec.ivf_nlist if spec.type == "binary-ivf" else max(spec.ivf_nlist, 256)
        if len(sample) < needed:
            raise DatastoreError(
                f"{spec.type} with ivf_nlist={spec.ivf_nlist} needs at least {needed} training vectors but the "
                f"sample has {len(sample)}; lower ivf_nlist or index more data")
        if spec.type == "binary-ivf":
            index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(dim), dim, spec.ivf_nlist)
            index.train(binary_codes(sample))
            training.trained_index = faiss.serialize_index_binary(index)
        else:
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFPQ(quantizer, dim, spec.ivf_nlist, _pq_subquantizers(dim), 8,
                                     faiss.METRIC_INNER_PRODUCT)
            index.train(sample)
            training.trained_index = faiss.serialize_index(index)
    return training


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """HNSW insertion is parallel and then order-dependent; one thread keeps shard files reproducible."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def _needs_trained(spec: DenseSpec, training: DenseTraining | None) -> np.ndarray:
    if training is None or training.trained_index is None:
        raise DatastoreError(f"{spec.type} needs the trained index of the datastore; train_dense was not run")
    return training.trained_index


def build_dense_index(embeddings: np.ndarray, spec: "DenseSpec | str" = "float-flat",
                      training: DenseTraining | None = None) -> faiss.Index | faiss.IndexBinary:
    """The searchable index of one shard over float32 ``embeddings`` [n, dim]."""
    spec = DenseSpec.coerce(spec)
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    dim = vectors.shape[1]
    if spec.type == "float-flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.type == "float-ivfpq":
        index = faiss.deserialize_index(_needs_trained(spec, training))
    elif spec.type == "binary-flat":
        index = faiss.IndexBinaryFlat(dim)
    elif spec.type == "binary-hnsw":
        index = faiss.IndexBinaryHNSW(dim, spec.hnsw_m)
        index.hnsw.efConstruction = spec.hnsw_ef_construction
    else:
        index = faiss.deserialize_index_binary(_needs_trained(spec, training))
    if len(vectors):
        data = binary_codes(vectors) if spec.binary else vectors
        with _single_thread() if spec.type == "binary-hnsw" else contextlib.nullcontext():
            index.add(data)
    return index


def write_dense_files(folder: Path, embeddings: np.ndarray, spec: "DenseSpec | str" = "float-flat",
                      training: DenseTraining | None = None) -> None:
    """Save one shard's index and rescoring layer (file names above)."""
    spec = DenseSpec.coerce(spec)
    vectors = np.asarray(embeddings, dtype=np.float32)
    index = build_dense_index(vectors, spec, training)
    if spec.binary:
        faiss.write_index_binary(index, str(folder / INDEX_FILE))
    else:
        faiss.write_index(index, str(folder / INDEX_FILE))
    if spec.exact or spec.rescore == "float16":
        np.save(folder / EMBEDDINGS_F16_FILE, vectors.astype(np.float16))
    elif spec.rescore == "int8":
        if training is None or training.int8 is None:
            raise DatastoreError("int8 rescoring needs the datastore's calibration; train_dense was not run")
        np.save(folder / RESCORE_INT8_FILE, training.int8.encode(vectors))
    if spec.bits > 1:
        planes, scales = multibit_encode(vectors, spec.bits)
        np.save(folder / CODES_FILE, planes)
        np.save(folder / SCALES_FILE, scales)


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


def selector_params(allowed: np.ndarray, cls: type = faiss.SearchParameters, **settings: Any) -> Any:
    """FAISS search parameters that restrict a search to the rows where ``allowed`` is true."""
    bitmap = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
    params = cls(sel=faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap)), **settings)
    params.bitmap = bitmap  # keep the buffer alive as long as the selector that points into it
    return params


def search_dense(index: faiss.Index, queries: np.ndarray, k: int,
                 allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, rows) per query of a float flat index, over the rows where ``allowed``
    is true (all rows when None); rows are -1 where fewer than ``k`` rows are allowed."""
    n_allowed = index.ntotal if allowed is None else int(np.count_nonzero(allowed))
    k = min(k, n_allowed)
    if k <= 0:
        n = len(queries)
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if allowed is None or n_allowed == index.ntotal:
        return index.search(queries, k)
    return index.search(queries, k, params=selector_params(allowed))


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


@dataclass
class DenseShard:
    """One shard's dense layer opened for search: index in RAM, rescoring layer memory-mapped."""

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
    def index(self) -> Any:
        if self._index is None:
            self._checked(INDEX_FILE)
            self._index = read_dense_index(self.folder / INDEX_FILE, self.dim, self.rows)
            if self.spec.type == "binary-hnsw":
                self._index.hnsw.efSearch = self.spec.hnsw_ef_search
            if self.spec.ivf:
                self._index.nprobe = self.spec.ivf_nprobe
            if self.use_gpu and gpu_available() and self.spec.type in ("float-flat", "binary-flat"):
                self._gpu = _to_gpu(self._index)
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
               rescore_multiplier: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, rows) per query among allowed rows; rows are -1 (score -inf) past the end."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if self.spec.exact:
            cpu = self.index
            return search_dense(self._gpu if allowed is None and self._gpu is not None else cpu, queries, k, allowed)
        if allowed is not None and bool(np.all(allowed)):
            allowed = None
        n_allowed = self.rows if allowed is None else int(np.count_nonzero(allowed))
        k = min(k, n_allowed)
        if k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        multiplier = rescore_multiplier or self.spec.rescore_multiplier
        rescoring = self.spec.rescore != "none" or self.spec.bits > 1
        fetch = min(k * multiplier, n_allowed) if rescoring else k
        scores, rows = self._candidates(queries, fetch, allowed, n_allowed)
        if not rescoring:
            return self._pad(scores, rows, k)
        return self._rescore(queries, rows, k)

    # -- candidates ------------------------------------------------------------------------------

    def _candidates(self, queries: np.ndarray, fetch: int, allowed: np.ndarray | None,
                    n_allowed: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.index
        data = binary_codes(queries) if self.spec.binary else queries
        if allowed is None:
            searcher = self._gpu if self._gpu is not None else index
            distances, rows = searcher.search(data, fetch)
        elif self.spec.type == "binary-ivf":
            distances, rows = self._post_filtered(index, data, fetch, allowed, n_allowed)
        else:
            distances, rows = self._selected(index, data, fetch, allowed)
        scores = hamming_to_score(distances, self.dim) if self.spec.binary else distances
        return np.where(rows >= 0, scores, -np.inf).astype(np.float32), rows.astype(np.int64)

    def _selected(self, index: Any, data: np.ndarray, fetch: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search restricted by an IDSelector; graph/IVF searches that come back short are
        redone exhaustively (HNSW: its flat code storage; IVF: every list) so that ``fetch`` rows return."""
        if self.spec.type == "binary-hnsw":
            params = selector_params(allowed, faiss.SearchParametersHNSW, efSearch=max(self.spec.hnsw_ef_search, fetch))
        elif self.spec.type == "float-ivfpq":
            params = selector_params(allowed, faiss.SearchParametersIVF, nprobe=self.spec.ivf_nprobe)
        else:
            params = selector_params(allowed)
        distances, rows = index.search(data, fetch, params=params)
        short = np.flatnonzero((rows >= 0).sum(axis=1) < fetch)
        if len(short) and self.spec.type != "binary-flat":
            if self.spec.type == "binary-hnsw":
                exhaustive, params = faiss.downcast_IndexBinary(index.storage), selector_params(allowed)
            else:
                exhaustive = index
                params = selector_params(allowed, faiss.SearchParametersIVF, nprobe=index.nlist)
            distances[short], rows[short] = exhaustive.search(data[short], fetch, params=params)
        return distances, rows

    def _post_filtered(self, index: Any, data: np.ndarray, fetch: int, allowed: np.ndarray,
                       n_allowed: int) -> tuple[np.ndarray, np.ndarray]:
        """Binary IVF takes no IDSelector in this faiss: over-fetch, drop disallowed rows, and widen
        (more candidates, then every list) until ``fetch`` allowed rows come back."""
        out_d = np.full((len(data), fetch), np.iinfo(np.int32).max, dtype=np.int32)
        out_r = np.full((len(data), fetch), -1, dtype=np.int64)
        todo = np.arange(len(data))
        over = min(index.ntotal, int(np.ceil(fetch * index.ntotal / max(n_allowed, 1))) * 2)
        nprobe = index.nprobe
        while len(todo):
            index.nprobe = nprobe
            try:
                distances, rows = index.search(data[todo], over)
            finally:
                index.nprobe = self.spec.ivf_nprobe
            keep = (rows >= 0) & allowed[np.maximum(rows, 0)]
            still = []
            for j, q in enumerate(todo):
                r, d = rows[j][keep[j]][:fetch], distances[j][keep[j]][:fetch]
                out_r[q, :len(r)], out_d[q, :len(r)] = r, d
                if len(r) < fetch:
                    still.append(q)
            if over >= index.ntotal and nprobe >= index.nlist:
                break
            todo = np.asarray(still, dtype=np.int64)
            over, nprobe = min(index.ntotal, over * 4), (index.nlist if over * 4 >= index.ntotal else nprobe)
        return out_d, out_r

    # -- rescoring -------------------------------------------------------------------------------

    def _rescore(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
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
        if self.spec.bits > 1:
            return multibit_scores(query, self._array(CODES_FILE)[rows], self._array(SCALES_FILE)[rows])
        if self.spec.rescore == "int8":
            return self.training.int8.decode(self._array(RESCORE_INT8_FILE)[rows]) @ query
        return self._array(EMBEDDINGS_F16_FILE)[rows].astype(np.float32) @ query

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """``stored_vectors`` of sorted ``rows``, read through this shard's cached memory maps."""
        return stored_vectors(self.folder, self.spec, self.training, self.dim, rows,
                              load=lambda path: self._array(path.name))

    @staticmethod
    def _pad(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return scores[:, :k], rows[:, :k]


def stored_vectors(folder: Path, spec: DenseSpec, training: DenseTraining, dim: int,
                   rows: np.ndarray | None = None,
                   load: Callable[[Path], np.ndarray] = read_embeddings) -> np.ndarray:
    """The best float32 approximation of a shard's vectors that its files hold (for rewriting shards,
    MMR): float16 embeddings, dequantized int8 or multi-bit reconstructions; only ``rows`` (sorted
    row numbers; all rows when None) are read from the memory-mapped files (opened by ``load``)."""
    folder = Path(folder)
    pick = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
    if (folder / EMBEDDINGS_F16_FILE).is_file():
        return np.asarray(load(folder / EMBEDDINGS_F16_FILE)[pick], dtype=np.float32)
    if (folder / RESCORE_INT8_FILE).is_file() and training.int8 is not None:
        return training.int8.decode(load(folder / RESCORE_INT8_FILE)[pick])
    if (folder / CODES_FILE).is_file():
        return multibit_decode(load(folder / CODES_FILE)[pick], load(folder / SCALES_FILE)[pick], dim)
    raise DatastoreError(f"{folder} keeps no float vectors (rescore none); rebuild it from the source")


__all__ = ["DENSE_FILES", "DENSE_INDEX_TYPES", "RESCORE_TYPES", "RESCORING_FILES", "DenseConfigError", "DenseShard", "DenseSpec", "DenseTraining",
           "build_dense_index", "manifest_dense_index", "open_faiss_index", "read_dense_index", "read_embeddings",
           "search_dense", "selector_params", "stored_vectors", "train_dense", "training_from_manifest",
           "write_dense_files"]
