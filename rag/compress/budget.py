"""Budgets in exact tokens: split a budget across ranked passages, cut or thin a text to fit one."""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from datastores.errors import UserError
from indexers.tokenizers import Tokenizer

SPLITS = ("greedy", "rank", "equal")
_WORD = re.compile(r"\S+")


def allocate_budget(lengths: Sequence[int], budget: int, split: str = "rank", decay: float = 1.0,
                    min_tokens: int = 8) -> list[int]:
    """Tokens allowed to each passage (given in rank order) so that they sum to at most ``budget``.

    ``greedy`` fills passages in rank order; ``rank`` weights passage ``i`` by ``1 / (i + 1) ** decay``;
    ``equal`` weights all alike. A passage never gets more than its own length (the surplus is
    redistributed to the others), and a share below ``min_tokens`` is dropped to 0 unless it covers
    the whole passage.
    """
    if split not in SPLITS:
        raise UserError(f"unknown budget split {split!r}; choose one of {', '.join(SPLITS)}")
    lengths = np.asarray(lengths, dtype=np.int64)
    shares = np.zeros(len(lengths), dtype=np.int64)
    if budget <= 0 or len(lengths) == 0:
        return shares.tolist()
    if split == "greedy":
        left = budget
        for i, length in enumerate(lengths):
            take = int(min(length, left))
            shares[i] = take if take >= min(min_tokens, length) else 0
            left -= shares[i]
        return shares.tolist()
    weights = 1.0 / np.arange(1, len(lengths) + 1) ** (decay if split == "rank" else 0.0)
    open_ = lengths > 0
    left = budget
    while open_.any() and left > 0:
        ideal = left * weights * open_ / weights[open_].sum()
        filled = open_ & (lengths - shares <= ideal)
        if filled.any():  # these fit whole: give them their length and share the rest again
            left -= int((lengths[filled] - shares[filled]).sum())
            shares[filled] = lengths[filled]
            open_ &= ~filled
            continue
        grant = np.floor(ideal).astype(np.int64)
        grant[open_ & (grant < min_tokens)] = 0
        if grant.sum() == 0:  # too little for anyone at its weight: the best open passage takes it all
            best = int(np.flatnonzero(open_)[0])
            grant[best] = min(left, int(lengths[best] - shares[best]))
            if shares[best] + grant[best] < min(min_tokens, lengths[best]):
                grant[best] = 0
        shares += grant
        left -= int(grant.sum())
        # Rounding leftovers go to open passages in rank order.
        for i in np.flatnonzero(open_):
            if left <= 0:
                break
            if shares[i] == 0:
                continue
            extra = int(min(left, lengths[i] - shares[i]))
            shares[i] += extra
            left -= extra
        break
    return shares.tolist()


def truncate_to_tokens(text: str, budget: int, tokenizer: Tokenizer) -> str:
    """The longest prefix of ``text`` (cut at a token boundary) whose token count is at most ``budget``."""
    if budget <= 0:
        return ""
    if tokenizer.count(text) <= budget:
        return text
    starts, ends = tokenizer.token_spans(text)
    last = min(budget, len(ends))
    while last > 0:
        piece = text[:int(ends[last - 1])].rstrip()
        if tokenizer.count(piece) <= budget:
            return piece
        last -= 1
    return ""


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the whitespace-separated words of ``text``."""
    return [m.span() for m in _WORD.finditer(text)]


def join_kept(text: str, spans: Sequence[tuple[int, int]], keep: np.ndarray) -> str:
    """The kept words in their original order, separated by single spaces (newlines kept as one)."""
    parts: list[str] = []
    previous_end = None
    for (start, end), kept in zip(spans, keep):
        if kept:
            if parts:
                parts.append("\n" if "\n" in text[previous_end:start] else " ")
            parts.append(text[start:end])
            previous_end = end
    return "".join(parts)


def keep_best_words(text: str, spans: Sequence[tuple[int, int]], scores: np.ndarray, budget: int,
                    tokenizer: Tokenizer) -> str:
    """Drop the lowest-scoring words until the rest (in order) fits ``budget`` tokens exactly.

    Binary search over how many of the best words to keep, each candidate counted exactly.
    """
    if tokenizer.count(text) <= budget:
        return text
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")

    def assemble(m: int) -> str:
        keep = np.zeros(len(spans), dtype=bool)
        keep[order[:m]] = True
        return join_kept(text, spans, keep)

    low, high = 0, len(spans)  # assemble(low) fits; find the largest m that fits
    while low < high:
        mid = (low + high + 1) // 2
        if tokenizer.count(assemble(mid)) <= budget:
            low = mid
        else:
            high = mid - 1
    return truncate_to_tokens(assemble(low), budget, tokenizer)
