"""Lexical evidence for ranking the pieces of a page: which of the query's rare terms, and which of
its exact code names, a piece holds.

Documentation pages name things in code: ``json.JSONDecodeError``, ``textwrap.wrap(text,
width=70)``, ``parse_constant``. A plain word match misses them twice: ``JSONDecodeError`` is one
word that shares nothing with "decoding", and ``textwrap`` and ``wrap`` occur on every line of the
textwrap page. So terms are stemmed (the BM25 index's English Snowball stemmer) and an identifier
also yields its parts (``JSONDecodeError``: json, decode, error; ``parse_constant``: parse,
constant), and a code name of the query (dotted, camelCase or snake_case) counts as one more term
that matches only where it occurs whole, case and all (``textwrap.wrap``, not ``textwrap.wrapper``).
Each term weighs its rarity over the lines of the page (idf), so a name that occurs in one
signature outweighs the page's common words.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from datastores.bm25 import make_tokenizer
from rag.generate.extractive import terms

_WORD = re.compile(r"\w+")
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")  # JSONDecodeError -> JSON Decode Error
_CODE_NAME = re.compile(r"\w+(?:\.\w+)+|\w*[a-z][A-Z]\w*|[A-Za-z]\w*_\w+")  # dotted, camelCase, snake_case


def word_terms(text: str) -> set[str]:
    """Stemmed, lower-cased terms of ``text`` without stop words; a compound identifier gives its
    parts as well as itself."""
    pieces = []
    for word in _WORD.findall(text):
        pieces.append(word)
        parts = _PART.findall(word)
        if len(parts) > 1:
            pieces.extend(parts)
    return set(make_tokenizer("stemmed")(" ".join(terms(" ".join(pieces)))))


def code_names(query: str) -> list[str]:
    """The code names of ``query`` (``textwrap.wrap``, ``JSONDecodeError``, ``max_lines``), in order."""
    return list(dict.fromkeys(m.group().strip(".") for m in _CODE_NAME.finditer(query)))


def _name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w.])" + re.escape(name) + r"(?![\w])")


@dataclass
class PageTerms:
    """The idf of terms over the lines of one page, and the page's lines to count code names in."""

    lines: list[str]
    line_terms: list[set[str]]

    @classmethod
    def of(cls, text: str) -> "PageTerms":
        """``text`` read line by line (the visible text of a page puts each block on its own line)."""
        lines = [line for line in text.split("\n") if line.strip()]
        return cls(lines, [word_terms(line) for line in lines])

    def _idf(self, found: int) -> float:
        return math.log1p(len(self.lines) / (1 + found))

    def weights(self, query: str) -> tuple[dict[str, float], dict[str, float]]:
        """Idf weight of each query term, and of each code name of the query."""
        wanted = word_terms(query)
        counts = dict.fromkeys(wanted, 0)
        for line in self.line_terms:
            for term in wanted & line:
                counts[term] += 1
        names = {n: self._idf(sum(bool(_name_pattern(n).search(line)) for line in self.lines))
                 for n in code_names(query)}
        return {t: self._idf(n) for t, n in counts.items()}, names

    def shares(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """For each text, the share of the query's idf mass (terms and code names) it holds."""
        term_weights, name_weights = self.weights(query)
        total = sum(term_weights.values()) + sum(name_weights.values())
        if not total:
            return np.zeros(len(texts), dtype=np.float32)
        patterns = {n: _name_pattern(n) for n in name_weights}
        out = np.zeros(len(texts), dtype=np.float32)
        for i, text in enumerate(texts):
            held = word_terms(text)
            out[i] = (sum(w for t, w in term_weights.items() if t in held)
                      + sum(w for n, w in name_weights.items() if patterns[n].search(text))) / total
        return out


_DEFINED = re.compile(r"^[A-Za-z_][\w.]*$")


def defined_name(term_text: str) -> str | None:
    """The name a definition term defines: the last word before its parameters or its ``¶``
    (``exception json.JSONDecodeError(msg, doc, pos)¶`` defines ``json.JSONDecodeError``)."""
    head = re.split(r"[(\[¶=:]", term_text, maxsplit=1)[0].split()
    name = head[-1].strip(".") if head else ""
    return name if _DEFINED.match(name) else None


def definitions(root: Any) -> dict[str, list[Any]]:
    """The ``<dt>`` elements under ``root`` by the name they define and by each shorter dotted form
    of it (``json.JSONDecodeError`` is found as ``JSONDecodeError`` too)."""
    out: dict[str, list[Any]] = {}
    for term in root.iter("dt"):
        name = defined_name(" ".join(term.xpath("string()").split()))
        parts = name.split(".") if name else []
        for i in range(len(parts)):
            out.setdefault(".".join(parts[i:]), []).append(term)
    return out
