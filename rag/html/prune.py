"""HTML pruning to a token budget: rank the blocks of cleaned pages, remove the lowest-ranked.

Step 1 (``EmbeddingScorer``) ranks blocks by the cosine similarity of their text to the query.
Step 2 (``rag.html.generative.PathScorer``, optional, needs a causal LM) re-blocks what step 1
kept at a finer grain and ranks the blocks by the probability the model gives to their paths.

Budgets are measured on the output HTML in the caller's tokenizer (the generator's) and hold
exactly: blocks are removed lowest score first until the estimate fits, then the page is re-cleaned
and recounted, and removal goes on while the true count is over. Unlike the HtmlRAG toolkit,
every block that does not fit is removed (it never leaves low-ranked blocks in place and then
truncates the page end), and a removed table cell is emptied, not deleted, so columns stay put.
The output is valid HTML: whole elements are cut and the page is re-parsed and re-cleaned.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, Union

import numpy as np

from indexers.html import DEFAULT_MAX_WORDS, Block, CleanPage, block_text, build_blocks, clean_html
from indexers.tokenizers import Tokenizer, load_tokenizer
from rag.stages import check_budget, with_text

DEFAULT_FINE_MAX_WORDS = 32
_LOOKS_LIKE_HTML = re.compile(r"<\s*(html|body|head|div|p|table|tr|td|ul|ol|li|section|article|main|span|a|h[1-6]|"
                              r"pre|dl|dt|dd|br|blockquote|header|footer|nav)\b[^>]*>", re.I)


_NO_HEAD = re.compile(r"<head>.*?</head>", re.S)


class BlockScorer(Protocol):
    """Scores the blocks of a page for a query: higher means keep longer."""

    def score(self, query: str, page: CleanPage, blocks: Sequence[Block]) -> np.ndarray: ...


class EmbeddingScorer:
    """Cosine similarity between the query and each block's visible text (step 1)."""

    def __init__(self, embedder: Any = None, device: str = "auto"):
        from rag.stages import LazyEmbedder

        self._lazy = embedder if isinstance(embedder, LazyEmbedder) else LazyEmbedder(embedder, device)

    @property
    def embedder(self) -> Any:
        return self._lazy.embedder

    def score(self, query: str, page: CleanPage, blocks: Sequence[Block]) -> np.ndarray:
        if not blocks:
            return np.zeros(0, dtype=np.float32)
        embedder = self.embedder
        encode_queries = getattr(embedder, "encode_queries", None)
        q = encode_queries([query]) if encode_queries else embedder.encode([query])
        vectors = embedder.encode([block_text(b) for b in blocks])
        return (np.asarray(vectors, dtype=np.float32) @ np.asarray(q, dtype=np.float32)[0]).astype(np.float32)


@dataclass
class PruneResult:
    """One pruned page: its HTML, tokens before (cleaned) and after, and which blocks went."""

    html: str
    tokens_before: int
    tokens_after: int
    blocks: int
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def blocks_kept(self) -> int:
        return self.blocks - len(self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens_before": self.tokens_before, "tokens_after": self.tokens_after, "blocks": self.blocks,
                "blocks_kept": self.blocks_kept, "removed": self.removed, "seconds": self.seconds}


def looks_like_html(text: str) -> bool:
    """Whether ``text`` holds HTML markup (a known tag), rather than plain text."""
    return bool(_LOOKS_LIKE_HTML.search(text))


def cut_blocks(html: str, blocks: Sequence[Block]) -> str:
    """``html`` with the cut spans of ``blocks`` (disjoint) removed."""
    pieces, position = [], 0
    for block in sorted(blocks, key=lambda b: b.cut_start):
        pieces.append(html[position:block.cut_start])
        position = block.cut_end
    pieces.append(html[position:])
    return "".join(pieces)


@dataclass
class _Page:
    page: CleanPage
    blocks: list[Block]
    html: str = ""
    tokens: int = 0
    removed: list[Block] = field(default_factory=list)
    empty: bool = False  # removed entirely (no block left and still over budget)
    clean: CleanPage | None = None  # the cleaned page whose html is ``html`` (None once the head is cut)


def _rebuild(state: _Page, tokenizer: Tokenizer) -> None:
    """Cut the removed blocks out of the page, re-clean it and count its tokens."""
    state.clean = clean_html(cut_blocks(state.page.html, state.removed)) if state.removed else state.page
    state.html = state.clean.html
    state.tokens = tokenizer.count(state.html)


def prune_pages(pages: Sequence[CleanPage], blocks: Sequence[Sequence[Block]], scores: Sequence[np.ndarray],
                budget: int, tokenizer: Tokenizer, fixed_tokens: int = 0, max_restore: int = 32) -> list[_Page]:
    """Remove the lowest-scored blocks, across all pages, until the pages plus ``fixed_tokens``
    hold at most ``budget`` tokens; pages that still do not fit once empty are dropped.

    Removal is by estimated block cost, then exact counts on the re-cleaned pages; afterwards up
    to ``max_restore`` of the last removed blocks are put back, best first, while they fit."""
    states = [_Page(p, list(b)) for p, b in zip(pages, blocks)]
    for state in states:
        _rebuild(state, tokenizer)
    total = fixed_tokens + sum(s.tokens for s in states)
    if total <= budget:
        return states
    order = sorted(((float(scores[i][j]), -b.start, i, j) for i, s in enumerate(states) for j, b in enumerate(s.blocks)))
    cost = [[tokenizer.count(s.page.html[b.cut_start:b.cut_end]) for b in s.blocks] for s in states]
    position = 0
    while total > budget and position < len(order):
        deficit = total - budget
        touched = set()
        while deficit > 0 and position < len(order):  # estimate: remove until the block costs cover it
            _, _, i, j = order[position]
            position += 1
            states[i].removed.append(states[i].blocks[j])
            deficit -= cost[i][j]
            touched.add(i)
        for i in touched:
            _rebuild(states[i], tokenizer)
        total = fixed_tokens + sum(s.tokens for s in states if not s.empty)
    # The estimate overshoots (an emptied row still costs its tags until all its cells go): put back
    # the last removed blocks, highest score first, while they fit.
    if total <= budget:
        for _, _, i, j in reversed(order[max(0, position - max_restore):position]):
            state, block = states[i], states[i].blocks[j]
            before = state.tokens
            state.removed.remove(block)
            _rebuild(state, tokenizer)
            if total - before + state.tokens <= budget:
                total += state.tokens - before
            else:  # stop at the first that does not fit: what is removed stays the lowest-ranked
                state.removed.append(block)
                _rebuild(state, tokenizer)
                break
    # Still over with every block gone: drop the titles, then whole pages, largest first.
    for state in states:
        if total > budget and state.html.startswith("<html><head>"):
            total -= state.tokens
            state.html = _NO_HEAD.sub("", state.html, count=1)
            state.clean = None
            state.tokens = tokenizer.count(state.html)
            total += state.tokens
    for state in sorted(states, key=lambda s: -s.tokens):
        if total <= budget:
            break
        state.empty = True
        total -= state.tokens
    return states


class HtmlPruner:
    """Prunes HTML pages (or passages whose text is HTML) to a token budget.

    ``tokenizer``: the generator's tokenizer (a name for ``indexers.tokenizers.load_tokenizer`` or an
    instance). ``embedder``: the step-1 embedder (default: the bundled MiniLM). ``lm``: a causal LM
    name or path for step 2 (generative fine-grained pruning); step 1 then prunes to
    ``coarse_factor`` × budget and step 2 to the budget.
    """

    name = "html"

    def __init__(self, tokenizer: Union[str, Tokenizer] = "cl100k_base", embedder: Any = None,
                 max_words: int = DEFAULT_MAX_WORDS, lm: str | None = None, fine_max_words: int = DEFAULT_FINE_MAX_WORDS,
                 coarse_factor: float = 2.0, device: str = "auto", allow_download: bool = False):
        if max_words < 1 or fine_max_words < 1:
            raise ValueError("max words per block must be at least 1")
        if coarse_factor < 1:
            raise ValueError(f"coarse_factor must be at least 1 (got {coarse_factor})")
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.scorer: BlockScorer = EmbeddingScorer(embedder, device)
        self.max_words = max_words
        self.fine_max_words = fine_max_words
        self.coarse_factor = coarse_factor
        self.path_scorer: BlockScorer | None = None
        if lm:
            from rag.html.generative import PathScorer

            self.path_scorer = PathScorer(lm, device=device, allow_download=allow_download)

    # -- pages ---------------------------------------------------------------------------------

    def prune_many(self, pages: Sequence[Union[str, bytes]], query: str, budget: int | None,
                   fixed_tokens: int = 0) -> list[PruneResult]:
        """Prune several pages to one shared budget (minus ``fixed_tokens`` used elsewhere).

        A page that cannot fit even when empty comes back with ``html == ""``.
        """
        started = time.perf_counter()
        check_budget(budget)
        cleaned = [clean_html(p) for p in pages]
        before = [self.tokenizer.count(c.html) for c in cleaned]
        if budget is None:
            return [PruneResult(c.html, n, n, 0, seconds=time.perf_counter() - started) for c, n in zip(cleaned, before)]
        steps: list[tuple[BlockScorer, int, int]] = [(self.scorer, self.max_words, budget)]
        if self.path_scorer is not None:
            coarse = max(budget, int(math.ceil(budget * self.coarse_factor)))
            steps = [(self.scorer, self.max_words, coarse), (self.path_scorer, self.fine_max_words, budget)]
        removed: list[list[str]] = [[] for _ in cleaned]
        current = cleaned
        alive = list(range(len(cleaned)))
        states: list[_Page] = []
        counts: list[int] = []
        for scorer, max_words, step_budget in steps:
            blocks = [build_blocks(c, max_words) for c in current]
            counts = counts or [len(b) for b in blocks]
            scores = [scorer.score(query, c, b) for c, b in zip(current, blocks)]
            states = prune_pages(current, blocks, scores, step_budget, self.tokenizer, fixed_tokens)
            for index, state in zip(alive, states):
                removed[index].extend(b.path for b in (state.blocks if state.empty else state.removed))
            keep = [k for k, s in enumerate(states) if not s.empty]
            alive = [alive[k] for k in keep]
            current = [states[k].clean or clean_html(states[k].html) for k in keep]
            states = [states[k] for k in keep]
        out = {index: state for index, state in zip(alive, states)}
        seconds = time.perf_counter() - started
        results = []
        for index in range(len(cleaned)):
            state = out.get(index)
            html, tokens = (state.html, state.tokens) if state is not None else ("", 0)
            results.append(PruneResult(html, before[index], tokens, counts[index], removed[index], seconds))
        return results

    def prune(self, html: Union[str, bytes], query: str, budget: int | None) -> PruneResult:
        """Prune one page to ``budget`` tokens (``None``: clean only)."""
        (result,) = self.prune_many([html], query, budget)
        if budget is not None and not result.html:
            empty = self.tokenizer.count(clean_html("").html)
            raise ValueError(f"budget {budget} is smaller than an empty page ({empty} tokens)")
        return result

    # -- pipeline stage ------------------------------------------------------------------------

    def apply(self, query: str, passages: list[Any], budget: int | None) -> list[Any]:
        """Prune the passages whose text is HTML so that all passages hold at most ``budget`` tokens.

        Plain-text passages are left as they are and count against the budget; if they alone
        exceed it, the lowest-ranked passages (the last ones) are dropped. Passages whose page
        cannot fit are dropped; the others keep their chunk ids and spans, with pruned HTML text.
        """
        html_at = [i for i, p in enumerate(passages) if looks_like_html(p.text)]
        html_set = set(html_at)
        plain_tokens = {i: self.tokenizer.count(p.text) for i, p in enumerate(passages) if i not in html_set}
        fixed = sum(plain_tokens.values())
        results = self.prune_many([passages[i].text for i in html_at], query, budget, fixed_tokens=fixed)
        by_index = {i: r for i, r in zip(html_at, results)}
        kept, sizes = [], []  # sizes: the tokens of each kept text, already counted
        for i, passage in enumerate(passages):
            if i in by_index:
                if by_index[i].html:
                    kept.append(with_text(passage, by_index[i].html))
                    sizes.append(by_index[i].tokens_after)
            else:
                kept.append(passage)
                sizes.append(plain_tokens[i])
        if budget is not None:
            total = sum(sizes)
            while kept and total > budget:
                kept.pop()
                total -= sizes.pop()
        return kept
