"""Generators that answer from numbered passages: ``extractive`` (default), ``hf:``, ``openai:``."""

from rag.generate.base import (
    Generation,
    Generator,
    Passage,
    build_messages,
    build_prompt,
    load_generator,
    parse_citations,
)

__all__ = ["Generation", "Generator", "Passage", "build_messages", "build_prompt", "load_generator",
           "parse_citations"]
