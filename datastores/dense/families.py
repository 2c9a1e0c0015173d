"""Dense index families: one class per FAISS index family, behind one registry.

A family is a code type (float32 vectors, or ``ubinary`` sign codes ``np.packbits(x > 0)`` with 1 bit
per dimension) crossed with a structure (flat, HNSW, IVF, IVF-PQ). It knows how its index is
trained (IVF: once per datastore), built and searched. Searches pass FAISS search parameters per
call (``efSearch``, ``nprobe``, a row selector): nothing on a shared index changes during a query,
so concurrent queries are safe. ``family(name)`` is the one place an index type name is parsed.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import faiss
import numpy as np

from datastores.errors import DatastoreError, UserError
from datastores.quantize import binary_codes, hamming_to_score

MIN_POINTS_PER_CENTROID = 39  # FAISS's k-means wants at least this many training points per centroid
PQ_BITS = 8                   # bits per IVF-PQ sub-quantizer code whenever the sample allows 256 centroids


class DenseConfigError(UserError):
    """A dense index setting is invalid; the message names it."""


def auto_nlist(samples: int) -> int:
    """IVF lists for a training sample of ``samples`` vectors: about 4·sqrt(n), at most one list per
    39 training vectors (FAISS's k-means minimum), at least 1."""
    return max(1, min(round(4 * math.sqrt(samples)), samples // MIN_POINTS_PER_CENTROID))


def auto_pq_bits(samples: int) -> int:
    """Bits per IVF-PQ code: 8 when the sample has 256 vectors (as always), else the most bits that
    leave 39 training vectors per centroid (at least 1)."""
    if samples >= 2 ** PQ_BITS:
        return PQ_BITS
    return max(1, int(math.log2(max(samples // MIN_POINTS_PER_CENTROID, 1))))


def search_params(cls: type = faiss.SearchParameters, allowed: np.ndarray | None = None, **settings: Any) -> Any:
    """Per-call FAISS search parameters, restricted to the rows where ``allowed`` is true when given."""
    if allowed is None:
        return cls(**settings)
    bitmap = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
    params = cls(sel=faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap)), **settings)
    params.bitmap = bitmap  # keep the buffer alive as long as the selector that points into it
    return params


def selector_params(allowed: np.ndarray, cls: type = faiss.SearchParameters, **settings: Any) -> Any:
    """FAISS search parameters that restrict a search to the rows where ``allowed`` is true."""
    return search_params(cls, allowed, **settings)


def flat_vectors(index: faiss.IndexFlat) -> np.ndarray:
    """The float32 vectors [ntotal, d] a flat index stores, as a view (no copy; keep ``index`` alive)."""
    return faiss.rev_swig_ptr(index.get_xb(), index.ntotal * index.d).reshape(index.ntotal, index.d)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """HNSW insertion is parallel and then order-dependent; one thread keeps shard files reproducible.

    OpenMP's thread count is a per-thread setting: this changes only the calling thread's parallel
    regions (a writer thread's, say) and restores it on exit; other threads' searches are unaffected."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


Search = tuple[np.ndarray, np.ndarray]  # FAISS distances [n, fetch], rows [n, fetch] (-1 past the end)


class Family:
    """One index family. Subclasses combine a code type (``FloatCodes``, ``BinaryCodes``) with a
    structure (``Flat``, ``Hnsw``, ``Ivf``)."""

    name: ClassVar[str]
    binary: ClassVar[bool] = False
    structure: ClassVar[str] = "flat"
    #: the index stores the float32 vectors: its scores are exact inner products (no rescoring
    #: layer; a float16 copy is kept for MMR and rewrites, as float-flat always did)
    exact_codes: ClassVar[bool] = False
    #: trained once per datastore (IVF centroids) before the first shard
    trained: ClassVar[bool] = False

    # -- code type -----------------------------------------------------------------------------

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """What the index stores and is searched with for float32 ``vectors``."""
        raise NotImplementedError

    def to_scores(self, distances: np.ndarray, dim: int) -> np.ndarray:
        """FAISS's distances as scores (higher is better)."""
        raise NotImplementedError

    def write(self, index: Any, path: Path) -> None:
        raise NotImplementedError

    # -- structure -----------------------------------------------------------------------------

    def check(self, spec: Any) -> None:
        """Raise ``DenseConfigError`` for settings this family cannot take."""
        if self.exact_codes and spec.rescore != "none":
            raise DenseConfigError(f"{self.name} scores exactly; rescore must be none (or auto)")
        if spec.bits > 1 and not self.binary:
            names = ", ".join(n for n, f in FAMILIES.items() if f.binary)
            raise DenseConfigError(f"bits > 1 needs a binary index ({names}), not {self.name}")

    def default_rescore(self, bits: int) -> str:
        """The rescoring layer ``auto`` means: none where scores are exact or multi-bit codes rescore."""
        return "none" if self.exact_codes or bits > 1 else "int8"

    def settings(self, spec: Any) -> dict[str, Any]:
        """The settings that shape the files, for fingerprints and the manifest (no defaults noise)."""
        out: dict[str, Any] = {"type": self.name, "rescore": spec.rescore, "bits": spec.bits,
                               "rescore_multiplier": spec.rescore_multiplier, **self.structure_settings(spec)}
        if spec.needs_training:
            out["train_sample"] = spec.train_sample
        return out

    def structure_settings(self, spec: Any) -> dict[str, Any]:
        """This structure's part of ``settings`` (HNSW or IVF parameters)."""
        return {}

    def new_index(self, spec: Any, dim: int, trained: np.ndarray | None) -> Any:
        """An empty index for one shard (IVF: a copy of the datastore's trained one)."""
        raise NotImplementedError

    def add(self, index: Any, vectors: np.ndarray) -> None:
        index.add(self.encode(vectors))

    def prepare(self, index: Any) -> None:
        """Once, when a shard's index is loaded and before any search (never during one)."""

    def search(self, index: Any, spec: Any, data: np.ndarray, fetch: int,
               allowed: np.ndarray | None, n_allowed: int) -> Search:
        """Top-``fetch`` of encoded queries ``data`` among the rows where ``allowed`` is true."""
        params = None if allowed is None else search_params(allowed=allowed)
        return index.search(data, fetch) if params is None else index.search(data, fetch, params=params)

    def float_rows(self, index: Any) -> Callable[[np.ndarray], np.ndarray]:
        """rows [...] -> the float32 vectors [..., d] the index stores (``exact_codes`` families)."""
        raise DatastoreError(f"{self.name} stores no float vectors")


# -- code types ------------------------------------------------------------------------------------


class FloatCodes(Family):
    """float32 vectors searched by inner product."""

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def to_scores(self, distances: np.ndarray, dim: int) -> np.ndarray:
        return distances

    def write(self, index: Any, path: Path) -> None:
        faiss.write_index(index, str(path))

    def flat(self, dim: int) -> Any:
        return faiss.IndexFlatIP(dim)

    def hnsw(self, dim: int, m: int) -> Any:
        return faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)

    def ivf(self, dim: int, nlist: int) -> Any:
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)

    def serialize(self, index: Any) -> np.ndarray:
        return faiss.serialize_index(index)

    def deserialize(self, data: np.ndarray) -> Any:
        return faiss.deserialize_index(data)

    def storage(self, index: Any) -> Any:
        return faiss.downcast_index(index.storage)


class BinaryCodes(Family):
    """``ubinary`` sign codes searched by Hamming distance (score ``1 − 2·hamming/dim``)."""

    binary = True

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return binary_codes(vectors)

    def to_scores(self, distances: np.ndarray, dim: int) -> np.ndarray:
        return hamming_to_score(distances, dim)

    def write(self, index: Any, path: Path) -> None:
        faiss.write_index_binary(index, str(path))

    def flat(self, dim: int) -> Any:
        return faiss.IndexBinaryFlat(dim)

    def hnsw(self, dim: int, m: int) -> Any:
        return faiss.IndexBinaryHNSW(dim, m)

    def ivf(self, dim: int, nlist: int) -> Any:
        return faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(dim), dim, nlist)

    def serialize(self, index: Any) -> np.ndarray:
        return faiss.serialize_index_binary(index)

    def deserialize(self, data: np.ndarray) -> Any:
        return faiss.deserialize_index_binary(data)

    def storage(self, index: Any) -> Any:
        return faiss.downcast_IndexBinary(index.storage)


# -- structures ------------------------------------------------------------------------------------


class Flat(Family):
    """Exhaustive search; a row selector is exact, so filtered searches never come back short."""

    def new_index(self, spec: Any, dim: int, trained: np.ndarray | None) -> Any:
        return self.flat(dim)

    def float_rows(self, index: Any) -> Callable[[np.ndarray], np.ndarray]:
        if not self.exact_codes:
            return super().float_rows(index)
        vectors = flat_vectors(index)
        return lambda rows: vectors[rows]


class Hnsw(Family):
    """A graph per shard (M, efConstruction), searched with efSearch ≥ the candidates wanted."""

    structure = "hnsw"

    def structure_settings(self, spec: Any) -> dict[str, Any]:
        return {"hnsw": {"m": spec.hnsw_m, "ef_construction": spec.hnsw_ef_construction,
                         "ef_search": spec.hnsw_ef_search}}

    def new_index(self, spec: Any, dim: int, trained: np.ndarray | None) -> Any:
        index = self.hnsw(dim, spec.hnsw_m)
        index.hnsw.efConstruction = spec.hnsw_ef_construction
        return index

    def add(self, index: Any, vectors: np.ndarray) -> None:
        with single_thread():
            super().add(index, vectors)

    def search(self, index: Any, spec: Any, data: np.ndarray, fetch: int,
               allowed: np.ndarray | None, n_allowed: int) -> Search:
        """Graph search; filtered queries that come back short are redone on the flat code storage."""
        params = search_params(faiss.SearchParametersHNSW, allowed, efSearch=max(spec.hnsw_ef_search, fetch))
        distances, rows = index.search(data, fetch, params=params)
        short = np.flatnonzero((rows >= 0).sum(axis=1) < min(fetch, n_allowed))
        if len(short) and allowed is not None:
            flat = self.storage(index)
            distances[short], rows[short] = flat.search(data[short], fetch, params=search_params(allowed=allowed))
        return distances, rows

    def float_rows(self, index: Any) -> Callable[[np.ndarray], np.ndarray]:
        vectors = flat_vectors(self.storage(index))
        return lambda rows: vectors[rows]


class Ivf(Family):
    """Inverted lists over centroids trained once per datastore; ``nprobe`` lists searched."""

    structure = "ivf"
    trained = True

    def check(self, spec: Any) -> None:
        super().check(spec)
        if spec.ivf_nlist is not None and spec.ivf_nprobe > spec.ivf_nlist:
            raise DenseConfigError(f"ivf_nprobe ({spec.ivf_nprobe}) cannot exceed ivf_nlist ({spec.ivf_nlist})")

    def structure_settings(self, spec: Any) -> dict[str, Any]:
        return {"ivf": {"nlist": "auto" if spec.ivf_nlist is None else spec.ivf_nlist, "nprobe": spec.ivf_nprobe}}

    def train(self, spec: Any, sample: np.ndarray) -> np.ndarray:
        """The serialized, trained, empty index (``nlist`` from the sample when not given)."""
        nlist = spec.ivf_nlist or auto_nlist(len(sample))
        if len(sample) < nlist:
            raise DatastoreError(
                f"{self.name} with ivf_nlist={nlist} needs at least {nlist} training vectors but the sample has "
                f"{len(sample)}; lower ivf_nlist or index more data")
        index = self.trainable(spec, sample.shape[1], nlist, len(sample))
        index.train(self.encode(sample))
        return self.serialize(index)

    def trainable(self, spec: Any, dim: int, nlist: int, samples: int) -> Any:
        """The empty index to train on ``samples`` vectors."""
        return self.ivf(dim, nlist)

    def shape(self, trained: np.ndarray) -> dict[str, int]:
        """The spec fields a trained index fixes (``ivf_nlist``), for the manifest."""
        return {"ivf_nlist": int(self.deserialize(trained).nlist)}

    def new_index(self, spec: Any, dim: int, trained: np.ndarray | None) -> Any:
        if trained is None:
            raise DatastoreError(f"{self.name} needs the trained index of the datastore; train_dense was not run")
        return self.deserialize(trained)

    def search(self, index: Any, spec: Any, data: np.ndarray, fetch: int,
               allowed: np.ndarray | None, n_allowed: int) -> Search:
        """``nprobe`` lists; filtered queries that come back short are redone over every list."""
        params = search_params(faiss.SearchParametersIVF, allowed, nprobe=min(spec.ivf_nprobe, index.nlist))
        distances, rows = index.search(data, fetch, params=params)
        short = np.flatnonzero((rows >= 0).sum(axis=1) < min(fetch, n_allowed))
        if len(short) and allowed is not None:
            every = search_params(faiss.SearchParametersIVF, allowed, nprobe=index.nlist)
            distances[short], rows[short] = index.search(data[short], fetch, params=every)
        return distances, rows


# -- the families ----------------------------------------------------------------------------------


class FloatFlat(FloatCodes, Flat):
    """``IndexFlatIP``: exact inner product over float32 (the default)."""

    name = "float-flat"
    exact_codes = True

    def settings(self, spec: Any) -> dict[str, Any]:
        return {"type": self.name}  # exact: nothing else shapes its files


class FloatHnsw(FloatCodes, Hnsw):
    """``IndexHNSWFlat`` (inner product): a graph over the float32 vectors, exact scores."""

    name = "float-hnsw"
    exact_codes = True


class FloatIvf(FloatCodes, Ivf):
    """``IndexIVFFlat`` (inner product): inverted lists of float32 vectors, exact scores."""

    name = "float-ivf"
    exact_codes = True

    def prepare(self, index: Any) -> None:
        index.make_direct_map()  # row -> (list, offset), for float_rows

    def float_rows(self, index: Any) -> Callable[[np.ndarray], np.ndarray]:
        def rows_of(rows: np.ndarray) -> np.ndarray:
            flat = np.ascontiguousarray(rows, dtype=np.int64).ravel()
            return index.reconstruct_batch(flat).reshape(*np.shape(rows), index.d)
        return rows_of


class FloatIvfPq(FloatCodes, Ivf):
    """``IndexIVFPQ`` (inner product, dim/8 sub-quantizers of ``pq_bits`` bits)."""

    name = "float-ivfpq"

    def structure_settings(self, spec: Any) -> dict[str, Any]:
        out = super().structure_settings(spec)
        if spec.ivf_pq_bits is not None:
            out["ivf"]["pq_bits"] = spec.ivf_pq_bits
        return out

    def trainable(self, spec: Any, dim: int, nlist: int, samples: int) -> Any:
        bits = spec.ivf_pq_bits or auto_pq_bits(samples)
        if samples < 2 ** bits:
            raise DatastoreError(f"{self.name} with {bits}-bit codes needs at least {2 ** bits} training vectors "
                                 f"but the sample has {samples}; index more data")
        return faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_subquantizers(dim), bits,
                                faiss.METRIC_INNER_PRODUCT)

    def shape(self, trained: np.ndarray) -> dict[str, int]:
        index = self.deserialize(trained)  # owns what extract_index_ivf points into: keep it referenced
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        return {"ivf_nlist": int(ivf.nlist), "ivf_pq_bits": int(ivf.pq.nbits)}


class BinaryFlat(BinaryCodes, Flat):
    """``IndexBinaryFlat``: exhaustive Hamming search."""

    name = "binary-flat"


class BinaryHnsw(BinaryCodes, Hnsw):
    """``IndexBinaryHNSW`` over the sign codes."""

    name = "binary-hnsw"


class BinaryIvf(BinaryCodes, Ivf):
    """``IndexBinaryIVF``: binary k-means centroids trained once."""

    name = "binary-ivf"

    def search(self, index: Any, spec: Any, data: np.ndarray, fetch: int,
               allowed: np.ndarray | None, n_allowed: int) -> Search:
        if allowed is None:
            return super().search(index, spec, data, fetch, allowed, n_allowed)
        return post_filtered(index, min(spec.ivf_nprobe, index.nlist), data, fetch, allowed, n_allowed)


def post_filtered(index: Any, nprobe: int, data: np.ndarray, fetch: int, allowed: np.ndarray,
                  n_allowed: int) -> Search:
    """Binary IVF takes no IDSelector in this faiss: over-fetch, drop disallowed rows, and widen
    (more candidates, then every list) until ``fetch`` allowed rows come back. ``nprobe`` goes in
    per-call parameters: the shared index is never changed."""
    out_d = np.full((len(data), fetch), np.iinfo(np.int32).max, dtype=np.int32)
    out_r = np.full((len(data), fetch), -1, dtype=np.int64)
    todo = np.arange(len(data))
    over = min(index.ntotal, int(np.ceil(fetch * index.ntotal / max(n_allowed, 1))) * 2)
    while len(todo):
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        distances, rows = index.search(data[todo], over, params=params)
        keep = (rows >= 0) & allowed[np.maximum(rows, 0)]
        order = np.argsort(~keep, axis=1, kind="stable")[:, :fetch]  # allowed rows first, in rank order
        found = np.take_along_axis(keep, order, axis=1)
        out_r[todo] = np.where(found, np.take_along_axis(rows, order, axis=1), -1)
        out_d[todo] = np.where(found, np.take_along_axis(distances, order, axis=1), out_d[todo])
        if over >= index.ntotal and nprobe >= index.nlist:
            break
        todo = todo[found.sum(axis=1) < fetch]
        over, nprobe = min(index.ntotal, over * 4), (index.nlist if over * 4 >= index.ntotal else nprobe)
    return out_d, out_r


def pq_subquantizers(dim: int) -> int:
    """The most sub-quantizers ≤ dim/8 that divide ``dim`` (≈ 1 byte per 8 dimensions, like binary)."""
    return next(m for m in range(max(1, dim // 8), 0, -1) if dim % m == 0)


FAMILIES: dict[str, Family] = {f.name: f() for f in (FloatFlat, FloatHnsw, FloatIvf, FloatIvfPq,
                                                     BinaryFlat, BinaryHnsw, BinaryIvf)}
INDEX_ALIASES = {"flat-ip": "float-flat"}
DENSE_INDEX_TYPES = tuple(FAMILIES)


def family(name: str) -> Family:
    """The family an index type name (or alias) stands for; ``DenseConfigError`` for unknown names."""
    found = FAMILIES.get(INDEX_ALIASES.get(name, name))
    if found is None:
        raise DenseConfigError(f"dense_index must be one of {', '.join(DENSE_INDEX_TYPES)} (got {name!r})")
    return found
