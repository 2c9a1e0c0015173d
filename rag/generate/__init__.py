"""Generators that answer from numbered passages: ``extractive`` (default), ``hf:``, ``openai:``."""

from rag.generate.base import Generation, Generator, build_messages, build_prompt, parse_citations
from rag.generate.factory import load_generator
from rag.records import Passage

__all__ = ["Generation", "Generator", "Passage", "build_messages", "build_prompt", "load_generator",
           "parse_citations"]
