"""Embedding: the one ``Embedder`` type (``embedder``), its backends (``torch_backend``,
``onnx_backend``, ``precomputed``; shared batching in ``backend``), model files (``models``),
prefixes (``prefixes``) and the one cache (``cache``)."""

from indexers.embedding.backend import (CPU_BATCH_SIZE, GPU_BATCH_SIZE, PROBE_TEXTS, Backend, EncodeStats,
                                        default_batch_size, pick_device, tokenize, token_lengths)
from indexers.embedding.cache import CachingEmbedder, caching_embedder
from indexers.embedding.embedder import (BACKENDS, SPEC_BACKENDS, Embedder, EmbedderOptions, load_embedder,
                                         make_backend, onnxruntime_available)
from indexers.embedding.models import (DEFAULT_EMBEDDER, MINILM_SHA256, EmbedderError, ModelLocation,
                                       TokenizerMismatch, locate_model, model_prompts, one_line, verify_weights)
from indexers.embedding.prefixes import AUTO_PREFIX, default_prefixes, resolve_prefixes

__all__ = ["AUTO_PREFIX", "BACKENDS", "Backend", "CPU_BATCH_SIZE", "CachingEmbedder", "DEFAULT_EMBEDDER", "Embedder",
           "EmbedderError", "EmbedderOptions", "EncodeStats", "GPU_BATCH_SIZE", "MINILM_SHA256", "ModelLocation",
           "PROBE_TEXTS", "SPEC_BACKENDS", "TokenizerMismatch", "caching_embedder", "default_batch_size",
           "default_prefixes", "load_embedder", "locate_model", "make_backend", "model_prompts", "one_line",
           "onnxruntime_available", "pick_device", "resolve_prefixes", "tokenize", "token_lengths", "verify_weights"]
