"""How a datastore's dense layer is built and searched (``DenseSpec``), and what is trained once
per datastore and shared by every shard (``DenseTraining``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datastores.dense.families import DENSE_INDEX_TYPES, INDEX_ALIASES, DenseConfigError, Family, family
from datastores.dense.layers import RESCORE_LAYERS, RESCORE_TYPES, Layer, MultiBitLayer
from datastores.errors import DatastoreError
from datastores.quantize import Int8Calibration

MAX_BITS = 8
#: candidates per hit a binary / approximate shard fetches for rescoring, unless a build sets it: the
#: smallest depth keeping binary + int8 at recall@10 >= 0.97 on every real set measured
#: (docs/benchmarks.md, "Default rescoring depth"); a datastore records its own in its manifest
DEFAULT_RESCORE_MULTIPLIER = 10
_POSITIVE = ("bits", "rescore_multiplier", "train_sample", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search",
             "ivf_nlist", "ivf_nprobe", "ivf_pq_bits")
_MANIFEST_NAMES = {"m": "hnsw_m", "ef_construction": "hnsw_ef_construction", "ef_search": "hnsw_ef_search",
                   "nlist": "ivf_nlist", "nprobe": "ivf_nprobe", "pq_bits": "ivf_pq_bits"}


@dataclass(frozen=True)
class DenseSpec:
    """How a datastore's dense layer is built and searched; ``type`` names an index family
    (``datastores.dense.families``), ``rescore`` a rescoring layer."""

    # ``metadata``: the ``rag index`` option each field declares (ragcli.config_options): its help,
    # choices and, where it is not the field's name, its flag
    type: str = field(default="float-flat", metadata={
        "flag": "dense-index", "choices": (*DENSE_INDEX_TYPES, *INDEX_ALIASES),
        "help": f"Dense index: {', '.join(DENSE_INDEX_TYPES)} (float-flat: exact, the default)."})
    rescore: str = field(default="auto", metadata={  # auto: the family's default
        "choices": ("auto", *RESCORE_TYPES),
        "help": "Rescoring layer of approximate/binary indexes (memory-mapped): int8 (default), float16, none."})
    bits: int = field(default=1, metadata={
        "help": "Bits per dimension of binary codes (>1: multi-bit residual codes)."})
    rescore_multiplier: int = field(default=DEFAULT_RESCORE_MULTIPLIER, metadata={
        "help": "Candidates per hit that approximate indexes return for rescoring "
                f"(default {DEFAULT_RESCORE_MULTIPLIER}; recorded in the manifest, the datastore's search default)."})
    train_sample: int = field(default=20_000, metadata={
        "help": "Chunks sampled across the input for the int8 range / IVF."})
    hnsw_m: int = field(default=32, metadata={"help": "HNSW neighbours per node (float-hnsw, binary-hnsw)."})
    hnsw_ef_construction: int = field(default=40, metadata={"help": "HNSW build beam width."})
    hnsw_ef_search: int = field(default=64, metadata={"help": "HNSW search beam width (default for searches)."})
    ivf_nlist: int | None = field(default=None, metadata={  # None: chosen from the training sample
        "help": "IVF lists (float-ivf, float-ivfpq, binary-ivf; default: about 4*sqrt(training sample), "
                ">= 39 vectors per list)."})
    ivf_nprobe: int = field(default=16, metadata={"help": "IVF lists probed per search."})
    ivf_pq_bits: int | None = field(default=None, metadata={  # None: 8, fewer for a sample under 256
        "help": "float-ivfpq bits per code (default: 8, fewer for a training sample under 256)."})

    def __post_init__(self) -> None:
        kind = family(self.type)
        object.__setattr__(self, "type", kind.name)
        if self.rescore == "auto":
            object.__setattr__(self, "rescore", kind.default_rescore(self.bits))
        if self.rescore not in RESCORE_LAYERS:
            raise DenseConfigError(f"rescore must be one of {', '.join(RESCORE_TYPES)} (got {self.rescore!r})")
        for name in _POSITIVE:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DenseConfigError(f"{name} must be at least 1 (got {value})")
        if self.bits > MAX_BITS:
            raise DenseConfigError(f"bits must be at most {MAX_BITS} (got {self.bits})")
        kind.check(self)
        if self.bits > 1 and self.rescore != "none":
            raise DenseConfigError("with bits > 1 candidates are rescored with the multi-bit codes; "
                                   "set rescore to none")

    @classmethod
    def coerce(cls, value: "str | DenseSpec | dict[str, Any]") -> "DenseSpec":
        """A spec from an index type name, a spec, or a manifest's ``dense_index`` dict."""
        if isinstance(value, DenseSpec):
            return value
        if isinstance(value, str):
            return cls(type=value)
        flat = {**value, **value.get("hnsw", {}), **value.get("ivf", {})}
        flat = {_MANIFEST_NAMES.get(k, k): v for k, v in flat.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in flat.items() if k in known and v != "auto"})

    @property
    def family(self) -> Family:
        return family(self.type)

    @property
    def layer(self) -> Layer:
        """The rescoring layer candidates are rescored against (``none``: the index's scores)."""
        return MultiBitLayer(self.bits) if self.bits > 1 else RESCORE_LAYERS[self.rescore]

    @property
    def binary(self) -> bool:
        return self.family.binary

    @property
    def ivf(self) -> bool:
        """Trained once per datastore (IVF centroids)."""
        return self.family.trained

    @property
    def exact(self) -> bool:
        """Exhaustive search with exact scores (float-flat)."""
        return self.family.exact_codes and self.family.structure == "flat"

    @property
    def needs_training(self) -> bool:
        """True when a sample must be embedded before the first shard (IVF centroids, int8 range)."""
        return self.family.trained or self.layer.calibrated

    def settings(self) -> dict[str, Any]:
        """The settings that shape the files, for fingerprints and the manifest (no defaults noise)."""
        return self.family.settings(self)

    def resolved(self, training: "DenseTraining | None") -> "DenseSpec":
        """This spec with what the training chose filled in (IVF ``nlist``, PQ bits; ``nprobe`` at
        most ``nlist``)."""
        if not self.family.trained or training is None or training.trained_index is None:
            return self
        shape = self.family.shape(training.trained_index)
        return dataclasses.replace(self, **shape, ivf_nprobe=min(self.ivf_nprobe, shape["ivf_nlist"]))


@dataclass
class DenseTraining:
    """What is computed once per datastore from the training sample and shared by every shard."""

    int8: Int8Calibration | None = None
    trained_index: np.ndarray | None = field(default=None, repr=False)  # serialized empty IVF index

    def manifest_part(self) -> dict[str, Any]:
        return {"int8": self.int8.to_dict()} if self.int8 is not None else {}


def manifest_dense_index(spec: DenseSpec, training: DenseTraining | None) -> dict[str, Any]:
    """The manifest's ``dense_index`` dict: settings (with the values training chose), metric and the
    frozen int8 calibration."""
    settings = spec.resolved(training).settings()
    return {**settings, "metric": "inner_product", **(training.manifest_part() if training else {})}


def training_from_manifest(dense_index: dict[str, Any]) -> DenseTraining:
    """The int8 calibration recorded in a manifest's (or build state's) ``dense_index`` dict."""
    int8 = dense_index.get("int8")
    return DenseTraining(Int8Calibration.from_dict(int8) if int8 else None)


def train_dense(spec: DenseSpec, sample: np.ndarray) -> DenseTraining:
    """Fit the int8 range and/or the IVF index (centroids, PQ codebooks) on ``sample`` [n, dim]."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.ndim != 2 or len(sample) == 0:
        raise DatastoreError("training the dense index needs a non-empty sample of embeddings")
    training = DenseTraining()
    if spec.layer.calibrated:
        training.int8 = Int8Calibration.fit(sample)
    if spec.family.trained:
        training.trained_index = spec.family.train(spec, sample)
    return training
