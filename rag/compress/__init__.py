"""Context compression to a token budget, every method measured exactly in a named tokenizer.

Methods: ``truncate`` (baseline), ``sentence`` (query-aware sentence extraction), ``semantic``
(TCRA-LLM-style word removal with the embedder), ``token`` (self-information from a causal LM,
``model=``), ``summary`` (a seq2seq model, ``model=``). The budget is split across passages by rank.
"""

from __future__ import annotations

from typing import Any

from datastores.errors import UserError
from rag.compress.base import CompressionResult, Compressor, TruncateCompressor
from rag.compress.budget import SPLITS, allocate_budget, keep_best_words, truncate_to_tokens

METHODS = ("truncate", "sentence", "semantic", "token", "summary")
# Shared resources a caller may offer every method; each method takes only those it uses.
_CONTEXT = {"embedder", "model", "allow_download", "device"}
_USES = {"truncate": set(), "sentence": {"embedder"}, "semantic": {"embedder"},
         "token": {"model", "allow_download", "device"}, "summary": {"model", "allow_download", "device"}}


def _factory(method: str) -> type[Compressor]:
    if method == "truncate":
        return TruncateCompressor
    if method == "sentence":
        from rag.compress.sentence import SentenceCompressor

        return SentenceCompressor
    if method == "semantic":
        from rag.compress.semantic import SemanticWordCompressor

        return SemanticWordCompressor
    if method == "token":
        from rag.compress.token import TokenCompressor

        return TokenCompressor
    from rag.compress.summary import SummaryCompressor

    return SummaryCompressor


def load_compressor(method: str, **options: Any) -> Compressor:
    """A compressor by method name; ``token`` and ``summary`` need ``model`` (a name or local path).

    Options are the method's constructor arguments (``tokenizer``, ``rate``, ``split``, ``decay``,
    ``min_tokens`` for all); ``embedder``, ``model``, ``allow_download`` and ``device`` are passed on
    only to the methods that use them.
    """
    if method not in METHODS:
        raise UserError(f"unknown compression method {method!r}; choose one of {', '.join(METHODS)}")
    if method in ("token", "summary") and not options.get("model"):
        kind = "causal LM" if method == "token" else "seq2seq model"
        raise UserError(f"compression method {method!r} needs a {kind}: give model=NAME_OR_PATH "
                         "(rag compress --model, rag ask --compress-model)")
    kept = {k: v for k, v in options.items() if k not in _CONTEXT or k in _USES[method]}
    try:
        return _factory(method)(**kept)
    except TypeError as exc:
        raise UserError(f"bad options for compression method {method!r}: {exc}") from exc


__all__ = ["METHODS", "SPLITS", "CompressionResult", "Compressor", "TruncateCompressor", "allocate_budget",
           "keep_best_words", "load_compressor", "truncate_to_tokens"]
