"""The context-stage protocol shared by pruners, compressors and reordering, with token accounting.

A stage takes the query and the passages in rank order and returns the passages it keeps (possibly
shortened, dropped or reordered) so that, when ``budget`` is given, their texts together hold at most
``budget`` tokens of the stage's tokenizer. ``run_stage`` times a stage and counts tokens around it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

from datastores.errors import UserError
from indexers.tokenizers import Tokenizer
from rag.records import Passage


class ContextStage(Protocol):
    """Anything that turns ranked passages into the context handed to the next stage."""

    name: str

    def apply(self, query: str, passages: list[Passage], budget: int | None) -> list[Passage]:
        """The passages to keep; with a budget their texts hold at most ``budget`` tokens in total."""


@dataclass(frozen=True)
class StageReport:
    """Tokens before and after one stage (in one tokenizer), how many passages, and the time it took."""

    name: str
    tokens_before: int
    tokens_after: int
    passages_before: int
    passages_after: int
    seconds: float

    @property
    def ratio(self) -> float:
        """Tokens after / tokens before (1.0 for an empty input)."""
        return self.tokens_after / self.tokens_before if self.tokens_before else 1.0

    def to_dict(self) -> dict[str, float | int | str]:
        return {**dataclasses.asdict(self), "ratio": self.ratio}


def count_tokens(passages: Sequence[Passage], tokenizer: Tokenizer) -> int:
    """Tokens in all passage texts together, counted passage by passage."""
    return sum(tokenizer.count(p.text) for p in passages)


def renumber(passages: Sequence[Passage]) -> list[Passage]:
    """The passages with ``number`` set to their 1-based position."""
    return [p if p.number == i else dataclasses.replace(p, number=i) for i, p in enumerate(passages, start=1)]


def with_text(passage: Passage, text: str) -> Passage:
    """A copy of ``passage`` holding ``text`` (its chunk id and span still name where it came from)."""
    return dataclasses.replace(passage, text=text)


def check_budget(budget: int | None) -> int | None:
    """``budget`` unchanged, or a ValueError when it is not a positive whole number."""
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
        raise UserError(f"budget must be a positive number of tokens, got {budget!r}")
    return budget


def run_stage(stage: ContextStage, query: str, passages: list[Passage], budget: int | None,
              tokenizer: Tokenizer, before: int | None = None) -> tuple[list[Passage], StageReport]:
    """Apply one stage, renumber its output and report tokens (in ``tokenizer``) and seconds;
    ``before``, when the caller already knows it, is the token count of ``passages``."""
    if before is None:
        before = count_tokens(passages, tokenizer)
    started = time.perf_counter()
    kept = renumber(stage.apply(query, list(passages), budget))
    seconds = time.perf_counter() - started
    after = count_tokens(kept, tokenizer)
    return kept, StageReport(getattr(stage, "name", type(stage).__name__), before, after,
                             len(passages), len(kept), seconds)
