"""Quality filters: built-in text rules and a SQL expression over chunk columns.

Rules (a chunk fails a rule when its value is outside the bound; unset bounds are not checked):

- ``words``: number of words (``\\w+`` runs): ``min_words`` / ``max_words``;
- ``symbol_ratio``: share of non-space characters that are neither letters, digits nor common
  punctuation (``.,;:!?'"()-``), e.g. markup, ``#``, ``|``, ``{}``: ``max_symbol_ratio``;
- ``repetition``: share of word 3-grams that repeat an earlier 3-gram of the chunk
  (1 - distinct / total; 0 for chunks under 4 words): ``max_repetition``;
- ``non_alpha_ratio``: share of words with no letter (numbers, codes): ``max_non_alpha``;
- ``where``: a DuckDB expression over the ``chunks`` view; chunks that do not satisfy it fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from datastores.errors import UserError
from datastores.filters import where_chunk_ids
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest
from datastores.ops.minhash import normalise_words
from datastores.ops.scan import iter_chunk_batches
from datastores.sql import open_sql

_PLAIN = set(".,;:!?'\"()-")


@dataclass(frozen=True)
class QualityRules:
    """Bounds of the built-in rules; None switches a rule off."""

    min_words: int | None = None
    max_words: int | None = None
    max_symbol_ratio: float | None = None
    max_repetition: float | None = None
    max_non_alpha: float | None = None
    where: str | None = None

    def active(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def text_features(text: str) -> dict[str, float]:
    """Word count, symbol ratio, repetition and non-alphabetic word ratio of one text."""
    words = normalise_words(text)
    visible = [ch for ch in text if not ch.isspace()]
    symbols = sum(1 for ch in visible if not ch.isalnum() and ch not in _PLAIN)
    grams = list(zip(words, words[1:], words[2:]))
    return {
        "words": float(len(words)),
        "symbol_ratio": symbols / len(visible) if visible else 0.0,
        "repetition": 1.0 - len(set(grams)) / len(grams) if len(words) >= 4 else 0.0,
        "non_alpha_ratio": sum(1 for w in words if not any(c.isalpha() for c in w)) / len(words) if words else 0.0,
    }


def failed_rules(features: dict[str, float], rules: QualityRules) -> list[str]:
    """Names of the built-in rules ``features`` fail."""
    failed = []
    if rules.min_words is not None and features["words"] < rules.min_words:
        failed.append("min_words")
    if rules.max_words is not None and features["words"] > rules.max_words:
        failed.append("max_words")
    if rules.max_symbol_ratio is not None and features["symbol_ratio"] > rules.max_symbol_ratio:
        failed.append("max_symbol_ratio")
    if rules.max_repetition is not None and features["repetition"] > rules.max_repetition:
        failed.append("max_repetition")
    if rules.max_non_alpha is not None and features["non_alpha_ratio"] > rules.max_non_alpha:
        failed.append("max_non_alpha")
    return failed


@dataclass(frozen=True)
class FilteredChunk:
    chunk_id: int
    rules: tuple[str, ...]
    text: str


@dataclass
class FilterResult:
    scanned: int = 0
    per_rule: dict[str, int] = field(default_factory=dict)
    removed_ids: list[int] = field(default_factory=list)
    samples: list[FilteredChunk] = field(default_factory=list)


def find_low_quality(root: str | Path, rules: QualityRules, max_samples: int = 5, batch_size: int = 4096,
                     progress: Callable[[int], Any] | None = None) -> FilterResult:
    """Live chunks that fail at least one rule, with counts per rule and a few samples."""
    if not rules.active():
        raise UserError("no filter given: set at least one rule or --where")
    manifest = read_manifest(DatastoreLayout(Path(root)))
    passing = None
    if rules.where is not None:
        con = open_sql(Path(root), manifest)
        try:
            passing = where_chunk_ids(con, rules.where)
        finally:
            con.close()
    result = FilterResult(per_rule={name: 0 for name in rules.active()})
    for batch in iter_chunk_batches(root, manifest, ("text",), batch_size):
        fails_where = (~np.isin(batch.chunk_ids, passing) if passing is not None
                       else np.zeros(len(batch.chunk_ids), bool))
        for chunk_id, text, bad_where in zip(batch.chunk_ids.tolist(), batch.columns["text"], fails_where):
            failed = failed_rules(text_features(text), rules) + (["where"] if bad_where else [])
            if not failed:
                continue
            for name in failed:
                result.per_rule[name] += 1
            result.removed_ids.append(chunk_id)
            if len(result.samples) < max_samples:
                result.samples.append(FilteredChunk(chunk_id, tuple(failed), text))
        result.scanned += len(batch.chunk_ids)
        if progress is not None:
            progress(len(batch.chunk_ids))
    return result
