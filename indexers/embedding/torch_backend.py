"""The sentence-transformers backend on PyTorch (float16 on CUDA)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from indexers.embedding.backend import (CPU_CALL_TOKENS, Backend, _length_tokenizer, check_fast_tokenizer,
                                        default_batch_size, fill_rows, pick_device, rows_per_call, tokenize,
                                        width_groups)
from indexers.embedding.models import (DEFAULT_EMBEDDER, EmbedderError, ModelLocation, TokenizerMismatch,
                                       locate_model, one_line, verify_weights)

logger = logging.getLogger("terarag.embedders")


class TorchBackend(Backend):
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
        self.call_tokens = 0 if self.half else CPU_CALL_TOKENS
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
            return self._feed(idx, ids)
        vectors = self.model.encode([texts[i] for i in idx], batch_size=len(idx), convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        if self.half:
            vectors = vectors.astype(np.float32)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def _feed(self, idx: np.ndarray, ids: list[np.ndarray]) -> Any:
        """The batch's vectors on the device, in ``idx`` order, run in pieces of one padded width."""
        import torch

        lengths = np.fromiter((len(ids[i]) for i in idx), dtype=np.int64, count=len(idx))
        groups = width_groups(idx, self.widths(lengths), self.call_tokens)
        parts = [self.feeder.run(fill_rows([ids[i] for i in rows], rows_per_call(width, self.call_tokens)),
                                 width)[:len(rows)] for rows, width in groups]
        if len(parts) == 1:
            return parts[0]
        position = {int(row): j for j, row in enumerate(idx)}
        order = np.array([position[int(r)] for rows, _ in groups for r in rows])
        inverse = torch.as_tensor(np.argsort(order), device=parts[0].device)
        return torch.cat(parts)[inverse]

    def _gather(self, out: np.ndarray, pending: list[tuple[np.ndarray, Any]]) -> None:
        self.feeder.gather(out, pending)  # only the feeder returns device tensors


def _load_error(location: ModelLocation, exc: BaseException) -> EmbedderError:
    """The one-line error for a model that sentence-transformers could not load."""
    if location.local_folder is not None:
        return EmbedderError(f"cannot load the embedder at {location.path_or_name}: {one_line(exc)}")
    return EmbedderError(f"cannot load embedding model {location.name!r} from local files ({one_line(exc)}). "
                         "Give a local path, a model already in the Hugging Face cache, or pass allow_download")

