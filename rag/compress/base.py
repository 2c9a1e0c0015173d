"""The shape every compressor shares: a per-passage method under a budget split by rank."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from datastores.errors import UserError
from indexers.tokenizers import DEFAULT_TOKENIZER, Tokenizer, load_tokenizer
from rag.compress.budget import SPLITS, allocate_budget, truncate_to_tokens
from rag.records import Passage
from rag.stages import check_budget, count_tokens, with_text


@dataclass(frozen=True)
class CompressionResult:
    """A compressed text and its size before and after, in the compressor's tokenizer."""

    text: str
    tokens_before: int
    tokens_after: int

    @property
    def ratio(self) -> float:
        return self.tokens_after / self.tokens_before if self.tokens_before else 1.0


def check_rate(rate: float | None) -> float | None:
    if rate is not None and not 0.0 < rate <= 1.0:
        raise UserError(f"rate must be in (0, 1] (the fraction of tokens to keep), got {rate!r}")
    return rate


class Compressor(ABC):
    """A context stage that shortens passages to a token budget (or to ``rate`` of their tokens).

    Subclasses implement ``compress_one`` for one passage and its share of the budget; ``apply``
    splits the budget across passages by rank (``split``: greedy, rank, equal) and guarantees the
    total: every output text holds at most its share, counted exactly in ``tokenizer``.
    """

    name = "compressor"
    splits: tuple[str, ...] = SPLITS

    def __init__(self, tokenizer: str | Tokenizer = DEFAULT_TOKENIZER, rate: float | None = None,
                 split: str = "rank", decay: float = 1.0, min_tokens: int = 8):
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.rate = check_rate(rate)
        self.split, self.decay, self.min_tokens = split, decay, min_tokens
        if split not in self.splits:
            raise UserError(f"unknown budget split {split!r} for {self.name}; choose one of {', '.join(self.splits)}")

    def target(self, total: int, budget: int | None) -> int | None:
        """The token target for ``total`` tokens: the budget, ``rate`` of the total, or the smaller."""
        check_budget(budget)
        targets = [t for t in (budget, math.floor(self.rate * total) if self.rate else None) if t is not None]
        return max(0, min(targets)) if targets else None

    @abstractmethod
    def compress_one(self, query: str, text: str, budget: int, state: Any) -> str:
        """``text`` shortened to about ``budget`` tokens (the caller enforces the exact limit);
        ``state`` is what ``prepare`` returned for this call."""

    def prepare(self, query: str, texts: list[str]) -> Any:
        """Work shared by all passages that need compressing in one call (e.g. one batched model pass)."""
        return None

    def apply(self, query: str, passages: list[Passage], budget: int | None) -> list[Passage]:
        lengths = [self.tokenizer.count(p.text) for p in passages]
        target = self.target(sum(lengths), budget)
        if target is None or sum(lengths) <= target:
            return list(passages)
        shares = allocate_budget(lengths, target, self.split, self.decay, self.min_tokens)
        pending = [p.text for p, n, share in zip(passages, lengths, shares) if 0 < share < n]
        state = self.prepare(query, pending)
        prepared = set(pending)
        out, carry = [], 0
        for passage, length, share in zip(passages, lengths, shares):
            # What a better-ranked passage left unused goes to the next one, in rank order.
            allowed = share + carry
            if allowed < min(self.min_tokens, length):
                carry = allowed
                continue
            if length <= allowed:
                text = passage.text
            else:
                here = state if passage.text in prepared else self.prepare(query, [passage.text])
                text = truncate_to_tokens(self.compress_one(query, passage.text, allowed, here), allowed,
                                          self.tokenizer)
            used = (length if text is passage.text else self.tokenizer.count(text)) if text.strip() else 0
            carry = allowed - used
            if used:
                out.append(with_text(passage, text))
        return out

    def cut(self, text: str, budget: int) -> str:
        """``text`` cut to at most ``budget`` tokens of this compressor's tokenizer."""
        return truncate_to_tokens(text, budget, self.tokenizer)

    def compress_text(self, query: str, text: str, budget: int | None = None) -> CompressionResult:
        """Compress one free text (``rag compress``) as a single passage."""
        passage = Passage(1, text, -1, "", 0, len(text))
        before = self.tokenizer.count(text)
        kept = self.apply(query, [passage], budget)
        after_text = kept[0].text if kept else ""
        return CompressionResult(after_text, before, count_tokens(kept, self.tokenizer))


class TruncateCompressor(Compressor):
    """The baseline: each passage keeps the first tokens of its share."""

    name = "truncate"

    def compress_one(self, query: str, text: str, budget: int, state: Any) -> str:
        return text
