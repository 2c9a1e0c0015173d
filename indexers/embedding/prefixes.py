"""Query and passage prefixes: the prompts a sentence-transformers model saves with itself
(``config_sentence_transformers.json``, e.g. ``{"prompts": {"query": "query: ", "passage": ...}}``),
else the known prefixes of its family guessed from its name, unless given explicitly."""

from __future__ import annotations

from typing import Mapping

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


#: Prompt names that sentence-transformers models use for queries and for passages, in preference order.
QUERY_PROMPTS = ("query", "search_query", "retrieval.query")
PASSAGE_PROMPTS = ("passage", "document", "search_document", "doc", "corpus", "retrieval.passage")


def prompt_prefixes(prompts: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(query prefix, passage prefix) from a model's saved prompts; None where it has none.
    A model with a query prompt and no passage prompt embeds passages as they are ("")."""
    query = next((prompts[k] for k in QUERY_PROMPTS if k in prompts), None)
    passage = next((prompts[k] for k in PASSAGE_PROMPTS if k in prompts), None)
    if query is not None and passage is None:
        passage = ""
    return query, passage


def resolve_prefixes(model: str, query_prefix: str = AUTO_PREFIX, passage_prefix: str = AUTO_PREFIX,
                     prompts: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Explicit prefixes as given; ``"auto"`` takes the model's saved prompt (``prompts``) when it
    has one, else its family's default guessed from the name."""
    saved_query, saved_passage = prompt_prefixes(prompts or {})
    query_default, passage_default = default_prefixes(model)
    query_default = query_default if saved_query is None else saved_query
    passage_default = passage_default if saved_passage is None else saved_passage
    return (query_default if query_prefix == AUTO_PREFIX else query_prefix,
            passage_default if passage_prefix == AUTO_PREFIX else passage_prefix)
