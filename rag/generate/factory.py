"""The one place that picks a generator class from a spec string."""

from __future__ import annotations

from typing import Any

from datastores.errors import UserError
from rag.generate.base import Generator
from rag.generate.extractive import ExtractiveGenerator
from rag.generate.hf import HFGenerator
from rag.generate.openai import OpenAIGenerator


def load_generator(spec: str = "extractive", **options: Any) -> Generator:
    """A generator from ``extractive`` (default), ``hf:PATH_OR_NAME`` or ``openai:MODEL``.

    Options go to the generator's constructor (``allow_download``, ``device``, ``max_new_tokens`` for hf;
    ``base_url``, ``api_key``, ``timeout``, ``max_retries``, ``temperature``, ``max_tokens`` for openai).
    """
    spec = (spec or "extractive").strip()
    kind, _, target = spec.partition(":")
    kind = kind.lower()
    if kind == "extractive":
        return ExtractiveGenerator(**options)
    if kind in ("hf", "openai") and not target.strip():
        raise UserError(f"generator {spec!r} needs a model after '{kind}:'")
    if kind == "hf":
        return HFGenerator(target.strip(), **options)
    if kind == "openai":
        return OpenAIGenerator(target.strip(), **options)
    raise UserError(f"unknown generator {spec!r}: use 'extractive', 'hf:PATH_OR_NAME' or 'openai:MODEL'")
