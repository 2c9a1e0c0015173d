"""Rerankers: score (query, passage) pairs and reorder candidates.

Specs (``--rerank``): ``cross-encoder:PATH_OR_NAME`` (a sentence-transformers ``CrossEncoder``) and
``bi-encoder:PATH_OR_NAME`` (cosine between a sentence-transformers embedding of the query and of
each candidate, encoded at query time). Names load from local files only (a folder, or a model in
the Hugging Face cache) unless ``allow_download`` is set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from datastores.errors import UserError
from datastores.retrieval import Reranker
from indexers.embedding import AUTO_PREFIX, load_embedder, pick_device

RERANK_KINDS = ("cross-encoder", "bi-encoder")

logger = logging.getLogger("terarag.rerank")


class RerankerError(UserError):
    """The rerank spec is malformed or its model cannot be loaded."""


def parse_spec(spec: str) -> tuple[str, str]:
    """``"cross-encoder:PATH"`` -> ("cross-encoder", "PATH")."""
    kind, sep, model = spec.partition(":")
    if not sep or kind not in RERANK_KINDS or not model.strip():
        raise RerankerError(f"rerank spec {spec!r} must look like KIND:PATH_OR_NAME with KIND one of "
                            f"{', '.join(RERANK_KINDS)} (e.g. cross-encoder:cross-encoder/ms-marco-MiniLM-L6-v2)")
    return kind, model.strip()


def warn_if_causal_lm(name: str, config: Any) -> bool:
    """Log a warning (and return True) when a cross-encoder's config names a causal language model:
    its relevance head is then untrained, so the rerank scores are meaningless."""
    from rag.lm import is_causal_lm_config

    if config is None or not is_causal_lm_config(config):
        return False
    logger.warning("cross-encoder %s is a causal language model (%s), not a cross-encoder: its relevance head is "
                   "newly initialised and the rerank scores are random; use a trained cross-encoder",
                   name, ", ".join(getattr(config, "architectures", None) or ["decoder"]))
    return True


@dataclass
class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder``: one relevance logit per (query, passage) pair."""

    model_name: str
    device: str = "auto"
    batch_size: int = 32
    allow_download: bool = False
    model: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from sentence_transformers import CrossEncoder

        try:
            self.model = CrossEncoder(self.model_name, device=pick_device(self.device),
                                      local_files_only=not self.allow_download)
        except (OSError, ValueError) as exc:
            raise RerankerError(f"cannot load cross-encoder {self.model_name!r} from local files ({exc}); "
                                "give a local folder or a model in the Hugging Face cache") from exc
        warn_if_causal_lm(self.model_name, getattr(self.model, "config", None))

    @property
    def spec(self) -> str:
        return f"cross-encoder:{self.model_name}"

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """One score per passage (the model's, after sentence-transformers' default activation)."""
        if not passages:
            return np.zeros(0, dtype=np.float64)
        scores = self.model.predict([(query, p) for p in passages], batch_size=self.batch_size,
                                    show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float64).reshape(len(passages), -1)[:, 0]


@dataclass
class BiEncoderReranker:
    """Cosine similarity of query and passage embeddings computed at query time (any embedder)."""

    model_name: str
    device: str = "auto"
    batch_size: int = 32
    query_prefix: str = ""
    passage_prefix: str = ""
    embedder: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.embedder = load_embedder(self.model_name, device=self.device, batch_size=self.batch_size,
                                      query_prefix=self.query_prefix, passage_prefix=self.passage_prefix)

    @property
    def spec(self) -> str:
        return f"bi-encoder:{self.model_name}"

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float64)
        q = self.embedder.encode_queries([query])[0]
        p = self.embedder.encode_passages(passages)
        return (p @ q).astype(np.float64)


def load_reranker(spec: str, device: str = "auto", batch_size: int = 32, allow_download: bool = False) -> Reranker:
    """A reranker from a spec string (see the module docstring)."""
    kind, model = parse_spec(spec)
    if kind == "cross-encoder":
        return CrossEncoderReranker(model, device, batch_size, allow_download)
    return BiEncoderReranker(model, device, batch_size, AUTO_PREFIX, AUTO_PREFIX)  # the model's prompts

