"""HTML pruning to a token budget: the page's block tree, pruned at finer and finer granularity.

Step 1 (``EmbeddingScorer``) ranks blocks (elements of at most ``max_words`` words) by the cosine
similarity of their text to the query. Pieces are taken best first while they fit the budget; a
piece that does not fit is split into its children, down to sentences
(``indexers.html.split_block``), and each child is ranked by a mix of its own similarity and its
parent's (``parent_weight``), as HtmlRAG prunes its tree level by level. So a block larger than
the whole budget gives up its best sentences instead of being removed, and the budget is filled
with the best text. API pages put names in definition terms (``<dt>`` signatures): the piece
holding the definition of a code name the question mentions (``textwrap.wrap``) goes first, and a
kept piece that mentions a name the page defines (``a JSONDecodeError will be raised``) lifts that
definition to its own rank; a text kept once is not kept again (Sphinx repeats parameter texts). A page with text never comes back empty: when not even the best sentence
fits, its beginning is kept, cut to the budget.
Step 2 (``rag.html.generative.PathScorer``, optional, needs a causal LM) re-blocks what step 1
kept at a finer grain and ranks the blocks by the probability the model gives to their paths.

Budgets are measured on the output in the caller's tokenizer (the generator's) and hold exactly:
the selection adds up the tokens of each piece, then the re-cleaned page is counted, the
lowest-ranked kept pieces are removed while it is over, and the best removed pieces that still
fit are put back. Unlike the HtmlRAG toolkit, nothing is truncated at the page end, and a removed
table cell is emptied, not deleted, so columns stay put. The output is valid HTML: only balanced
spans are cut and the page is re-parsed and re-cleaned.
"""

from __future__ import annotations

import heapq
import html as html_lib
import itertools
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, Union

import numpy as np

from datastores.errors import UserError
from indexers.html import (DEFAULT_MAX_WORDS, SENTENCE, Block, CleanPage, block_text, build_blocks, clean_html, split_block,
                           visible_text, word_counts)
from indexers.tokenizers import Tokenizer, load_tokenizer
from rag.compress.budget import allocate_budget, truncate_to_tokens
from rag.html.lexical import PageTerms, code_names, definitions
from rag.stages import check_budget, with_text

DEFAULT_FINE_MAX_WORDS = 32
DEFAULT_PARENT_WEIGHT = 0.5
DEFAULT_MAX_SPLITS = 12
LEXICAL_WEIGHT = 0.3
EMBED_WORDS = 96  # a block's first words are embedded (~128 MiniLM tokens, half its window)
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
_LOOKS_LIKE_HTML = re.compile(r"<\s*(html|body|head|div|p|table|tr|td|ul|ol|li|section|article|main|span|a|h[1-6]|"
                              r"pre|dl|dt|dd|br|blockquote|header|footer|nav)\b[^>]*>", re.I)
_NO_HEAD = re.compile(r"<head>.*?</head>", re.S)
_MIN_ROOM = 4  # tokens: below this, nothing more is tried
_MIN_SPLIT_ROOM = 16  # tokens: below this, no piece is split (a sentence would rarely fit)
_LABEL_WORDS = 80  # a label longer than this is not lifted with the text it introduces
_REPEAT_WORDS = 5  # a piece of at least this many words is not kept twice (Sphinx repeats parameter texts)


class BlockScorer(Protocol):
    """Scores the blocks of a page for a query: higher means keep longer."""

    def score(self, query: str, page: CleanPage, blocks: Sequence[Block]) -> np.ndarray: ...


class EmbeddingScorer:
    """Cosine similarity between the query and the first ``embed_words`` words of each block's
    visible text (step 1), plus ``lexical_weight`` × the share of the query's rare terms and code
    names the block holds (``rag.html.lexical.PageTerms``), which keeps exact names such as
    ``glob.escape`` in view."""

    def __init__(self, embedder: Any = None, device: str = "auto", lexical_weight: float = LEXICAL_WEIGHT,
                 embed_words: int | None = EMBED_WORDS):
        from indexers.embedding import caching_embedder

        self.embedder = caching_embedder(embedder, device)
        self._query: tuple[str, np.ndarray] | None = None
        self._page_terms: tuple[CleanPage, PageTerms] | None = None
        self.lexical_weight = lexical_weight
        self.embed_words = embed_words

    def query_vector(self, query: str) -> np.ndarray:
        """The query's vector (the embedder's query encoding), remembered for the last query."""
        if self._query is None or self._query[0] != query:
            vector = self.embedder.encode_queries([query])
            self._query = (query, np.asarray(vector, dtype=np.float32)[0])
        return self._query[1]

    def model_texts(self, texts: Sequence[str]) -> list[str]:
        """What the model embeds of each text: its first ``embed_words`` words (all when ``None``)."""
        if self.embed_words is None:
            return list(texts)
        return [" ".join(t.split()[:self.embed_words]) for t in texts]

    def page_terms(self, page: CleanPage) -> PageTerms:
        """The lexical statistics of ``page`` (the last page's, remembered)."""
        if self._page_terms is None or self._page_terms[0] is not page:
            self._page_terms = (page, PageTerms.of(visible_text(page)[0]))
        return self._page_terms[1]

    def score(self, query: str, page: CleanPage, blocks: Sequence[Block]) -> np.ndarray:
        if not blocks:
            return np.zeros(0, dtype=np.float32)
        texts = [block_text(b) for b in blocks]
        vectors = np.asarray(self.embedder.encode_passages(self.model_texts(texts)), dtype=np.float32)
        scores = vectors @ self.query_vector(query)
        if self.lexical_weight:
            scores = scores + self.lexical_weight * self.page_terms(page).shares(query, texts)
        return scores.astype(np.float32)


@dataclass
class PruneResult:
    """One pruned page: its HTML (or text), tokens before (cleaned) and after, and which pieces went.

    ``blocks`` counts the pieces at the grain the pruner ended at (blocks, their children,
    sentences); ``removed`` holds the paths of those removed (a sentence piece is ``PATH#sN``)."""

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


def text_page(text: str) -> CleanPage:
    """A page of plain text whose lines are paragraphs (the visible text of an HTML page puts
    each block on its own line), so text can be pruned block by block and sentence by sentence."""
    lines = [line for line in text.split("\n") if line.strip()]
    return clean_html("<html><body>" + "".join(f"<p>{html_lib.escape(line, quote=False)}</p>" for line in lines)
                      + "</body></html>")


@dataclass
class _Page:
    """One page under selection: the pieces kept and removed (disjoint, together covering its text)."""

    page: CleanPage
    as_text: bool = False  # output (and budget) is the visible text, not the HTML
    kept: dict[Block, float] = field(default_factory=dict)
    dropped: dict[Block, float] = field(default_factory=dict)
    html: str = ""
    tokens: int = 0
    title: bool = True
    counts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = word_counts(self.page.root)

    def frame(self) -> str:
        """The output with nothing kept: the page's head and an empty body ("" for text)."""
        if self.as_text:
            return ""
        head = _NO_HEAD.search(self.page.html) if self.title else None
        return f"<html>{head.group() if head else ''}<body></body></html>"

    def cost(self, block: Block, tokenizer: Tokenizer) -> int:
        """Estimated tokens ``block`` adds to the output."""
        if self.as_text:
            return tokenizer.count(block_text(block)) + 1
        return tokenizer.count(self.page.html[block.cut_start:block.cut_end])

    def render(self, tokenizer: Tokenizer) -> None:
        """Cut the removed pieces out of the page, re-clean it and count its tokens."""
        if not self.kept:
            self.html, self.tokens = "", 0
            return
        clean = clean_html(cut_blocks(self.page.html, list(self.dropped)))
        out = visible_text(clean)[0] if self.as_text else clean.html
        if not self.title:
            out = _NO_HEAD.sub("", out, count=1)
        self.html, self.tokens = out, tokenizer.count(out)


@dataclass
class _Selection:
    """How pieces are chosen: the scorer, the grain of the first blocks, whether to refine."""

    scorer: BlockScorer
    max_words: int
    refine: bool = True
    parent_weight: float = DEFAULT_PARENT_WEIGHT
    max_splits: int = DEFAULT_MAX_SPLITS


_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})


def labels(element: Any) -> list[Any]:
    """The elements that say what ``element`` is about: the terms (``<dt>``) of the definition
    it sits in and the heading of its section (the nearest before it or an ancestor)."""
    out, want_term, want_heading = [], True, True
    node = element
    while node is not None and node.tag not in ("body", "html") and (want_term or want_heading):
        if want_term and node.tag == "dd":
            term = node.getprevious()
            while term is not None and term.tag == "dt":
                out.append(term)
                term = term.getprevious()
            want_term = False
        if want_heading:
            sibling = node.getprevious()
            while sibling is not None and sibling.tag not in _HEADINGS:
                sibling = sibling.getprevious()
            if sibling is not None:
                out.append(sibling)
                want_heading = False
        node = node.getparent()
    return out


class _Queue:
    """Pieces by rank; a piece pushed again with a higher rank is taken at the higher one, once."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, int, Block]] = []
        self.decided: set[Block] = set()
        self.pieces: dict[tuple[int, Any], Block] = {}  # (page, element) -> its element piece
        self.order = itertools.count()  # ties go to the piece pushed first
        self.wanted: list[tuple[float, int, Any, int | None]] = []  # definitions lifted: score, page, <dt>, cap

    def push(self, score: float, page: int, block: Block) -> None:
        heapq.heappush(self.heap, (-score, next(self.order), page, block))
        if block.tag != SENTENCE:
            self.pieces.setdefault((page, block.element), block)

    def lift_labels(self, score: float, page: int, block: Block) -> None:
        """Push the labels of ``block`` that are pieces of their own again, at ``score``."""
        for label in labels(block.element):
            piece = self.pieces.get((page, label))
            if piece is not None and piece is not block and piece not in self.decided and piece.words <= _LABEL_WORDS:
                self.push(score, page, piece)

    def holder(self, page: int, element: Any) -> Block | None:
        """The finest piece holding ``element``, when it is still to be decided."""
        node = element
        while node is not None:
            piece = self.pieces.get((page, node))
            if piece is not None:
                return None if piece in self.decided else piece
            node = node.getparent()
        return None

    def lift_definitions(self, score: float, page: int, names: Sequence[str], defined: dict[str, list[Any]],
                         max_words: int | None = None) -> None:
        """Push the pieces holding the definitions (``<dt>``) of ``names`` again, at ``score``; when
        such a piece is split, its part holding the definition is pushed at ``score`` too."""
        for name in names:
            for term in defined.get(name, ()):
                self.wanted.append((score, page, term, max_words))
                self._push_holder(score, page, term, max_words)

    def lift_wanted(self, page: int) -> None:
        """Push again the pieces of ``page`` that now hold a lifted definition (after a split)."""
        for score, wanted_page, term, max_words in self.wanted:
            if wanted_page == page:
                self._push_holder(score, page, term, max_words)

    def _push_holder(self, score: float, page: int, term: Any, max_words: int | None) -> None:
        piece = self.holder(page, term)
        if piece is not None and (max_words is None or piece.words <= max_words):
            self.push(score, page, piece)

    def pop(self) -> tuple[float, int, Block] | None:
        while self.heap:
            negative, _, page, block = heapq.heappop(self.heap)
            if block not in self.decided:
                self.decided.add(block)
                return -negative, page, block
        return None


def _seed(queue: _Queue, states: list[_Page], query: str, how: _Selection) -> list[dict[str, list[Any]]]:
    """Queue the first blocks of every page by score; the pieces holding the definitions of code
    names the question mentions go first. Returns each page's definitions by name."""
    defined = [definitions(state.page.root) for state in states]
    for i, state in enumerate(states):
        blocks = build_blocks(state.page, how.max_words)
        scores = how.scorer.score(query, state.page, blocks)
        for block, score in zip(blocks, scores):
            queue.push(float(score), i, block)
        if len(scores):
            queue.lift_definitions(float(np.max(scores)) + 1.0, i, code_names(query), defined[i])
    return defined


def _choose(states: list[_Page], query: str, budget: int, tokenizer: Tokenizer, fixed: int,
            how: _Selection) -> None:
    """Take pieces best first while their estimated cost fits; split those that do not. A kept
    piece lifts its labels (definition term, section heading) and the definitions of the code
    names it mentions to its own rank; a text already kept is not kept twice."""
    queue = _Queue()
    defined = _seed(queue, states, query, how)
    used, opened, splits, seen = fixed, set(), 0, set()
    while (item := queue.pop()) is not None:
        score, i, block = item
        state, text = states[i], block_text(block)
        cost = state.cost(block, tokenizer) + (0 if i in opened else tokenizer.count(state.frame()))
        if block.words >= _REPEAT_WORDS and (i, text) in seen:
            state.dropped[block] = score
        elif budget - used >= _MIN_ROOM and used + cost <= budget:
            state.kept[block] = score
            used += cost
            opened.add(i)
            seen.add((i, text))
            queue.lift_labels(score, i, block)
            queue.lift_definitions(score, i, code_names(text), defined[i], _LABEL_WORDS)
        elif not _refine(queue, state, i, query, score, block, how, splits < how.max_splits
                         and budget - used >= _MIN_SPLIT_ROOM):
            state.dropped[block] = score
        else:
            splits += 1


def _refine(queue: _Queue, state: _Page, i: int, query: str, score: float, block: Block, how: _Selection,
            allowed: bool) -> bool:
    """Queue the children of ``block`` ranked by their own score mixed with the parent's; False
    when it cannot (or may not) be split."""
    children = split_block(state.page, block, state.counts) if how.refine and allowed else []
    if not children:
        return False
    mixed = [how.parent_weight * score + (1 - how.parent_weight) * float(own)
             for own in how.scorer.score(query, state.page, children)]
    for child, rank in zip(children, mixed):
        queue.push(rank, i, child)
    queue.lift_labels(max(mixed), i, children[int(np.argmax(mixed))])
    queue.lift_wanted(i)
    return True


def _fit(states: list[_Page], budget: int, tokenizer: Tokenizer, fixed: int, max_restore: int) -> int:
    """Render the pages and make the exact total fit: remove the lowest-ranked kept pieces while
    over, then put back the best removed pieces that fit. Returns the total."""
    for state in states:
        state.render(tokenizer)
    total = fixed + sum(s.tokens for s in states)
    while total > budget:
        kept = sorted(((score, i, b) for i, s in enumerate(states) for b, score in s.kept.items()),
                      key=lambda c: (c[0], c[1], -c[2].cut_start))
        if not kept:
            break
        excess, touched = total - budget, set()
        for score, i, block in kept:  # remove until the estimated costs cover the excess
            states[i].dropped[block] = states[i].kept.pop(block)
            touched.add(i)
            excess -= states[i].cost(block, tokenizer)
            if excess <= 0:
                break
        for i in touched:
            states[i].render(tokenizer)
        total = fixed + sum(s.tokens for s in states)
    candidates = sorted(((score, i, b) for i, s in enumerate(states) for b, score in s.dropped.items()),
                        key=lambda c: (-c[0], c[1], c[2].cut_start))
    tried = 0
    for score, i, block in candidates:
        if tried >= max_restore or budget - total < _MIN_ROOM:
            break
        state = states[i]
        if state.cost(block, tokenizer) > budget - total:
            continue
        tried += 1
        before = state.tokens
        state.kept[block] = state.dropped.pop(block)
        state.render(tokenizer)
        if total - before + state.tokens <= budget:
            total += state.tokens - before
        else:
            state.dropped[block] = state.kept.pop(block)
            state.render(tokenizer)
    return total


def _keep_start_of_best(states: list[_Page], budget: int, tokenizer: Tokenizer, fixed: int) -> None:
    """Nothing fits whole: keep the beginning of the best piece, cut to the budget (titles go first)."""
    pieces = [(score, i, b) for i, s in enumerate(states) for b, score in s.dropped.items() if block_text(b)]
    if not pieces:
        return
    _, i, block = max(pieces, key=lambda p: p[0])
    state = states[i]
    for title in (True, False):
        state.title = title
        frame = state.frame()
        wrap = (lambda t: t) if state.as_text else \
            (lambda t: frame.replace("<body></body>", f"<body><p>{html_lib.escape(t, quote=False)}</p></body>"))
        room = budget - fixed - tokenizer.count(wrap(""))
        text = truncate_to_tokens(block_text(block), room, tokenizer) if room > 0 else ""
        while text and tokenizer.count(wrap(text)) > budget - fixed:
            text = truncate_to_tokens(text, tokenizer.count(text) - 1, tokenizer)
        if text:
            state.html = wrap(text)
            state.tokens = tokenizer.count(state.html)
            state.kept[block] = state.dropped.pop(block)
            return


def prune_pages(states: list[_Page], query: str, budget: int, tokenizer: Tokenizer, how: _Selection,
                fixed_tokens: int = 0, max_restore: int = 32) -> list[_Page]:
    """Prune pages (``_Page``) to share ``budget`` tokens (plus ``fixed_tokens`` used elsewhere):
    choose pieces best first, refining those that do not fit, then fit the exact count. A page
    with nothing kept comes back with ``html == ""``; if nothing at all fits, the beginning of the
    best piece is kept."""
    for state in states:  # a title that alone breaks the budget goes
        if fixed_tokens + tokenizer.count(state.frame()) > budget:
            state.title = False
    _choose(states, query, budget, tokenizer, fixed_tokens, how)
    _fit(states, budget, tokenizer, fixed_tokens, max_restore)
    if not any(s.kept for s in states):
        _keep_start_of_best(states, budget, tokenizer, fixed_tokens)
    return states


class HtmlPruner:
    """Prunes HTML pages, and passages from HTML sources, to a token budget.

    ``tokenizer``: the generator's tokenizer (a name for ``indexers.tokenizers.load_tokenizer`` or an
    instance). ``embedder``: the step-1 embedder (default: the bundled MiniLM). ``max_words``: the
    grain of the first blocks; ``parent_weight``: how much a split piece's rank follows its parent
    (0: only its own similarity); ``max_splits``: most blocks split per call. ``lm``: a causal LM
    name or path for step 2 (generative fine-grained pruning); step 1 then prunes to
    ``coarse_factor`` × budget and step 2 to the budget.
    """

    name = "html"

    def __init__(self, tokenizer: Union[str, Tokenizer] = "cl100k_base", embedder: Any = None,
                 max_words: int = DEFAULT_MAX_WORDS, lm: str | None = None, fine_max_words: int = DEFAULT_FINE_MAX_WORDS,
                 coarse_factor: float = 2.0, device: str = "auto", allow_download: bool = False,
                 parent_weight: float = DEFAULT_PARENT_WEIGHT, max_splits: int = DEFAULT_MAX_SPLITS):
        if max_words < 1 or fine_max_words < 1:
            raise UserError("max words per block must be at least 1")
        if coarse_factor < 1:
            raise UserError(f"coarse_factor must be at least 1 (got {coarse_factor})")
        if not 0.0 <= parent_weight <= 1.0:
            raise UserError(f"parent_weight must be in [0, 1] (got {parent_weight})")
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.scorer: BlockScorer = EmbeddingScorer(embedder, device)
        self.max_words = max_words
        self.fine_max_words = fine_max_words
        self.coarse_factor = coarse_factor
        self.step1 = _Selection(self.scorer, max_words, True, parent_weight, max_splits)
        self.path_scorer: BlockScorer | None = None
        if lm:
            from rag.html.generative import PathScorer

            self.path_scorer = PathScorer(lm, device=device, allow_download=allow_download)

    # -- pages ---------------------------------------------------------------------------------

    def prune_many(self, pages: Sequence[Union[str, bytes, CleanPage]], query: str, budget: int | None,
                   fixed_tokens: int = 0, as_text: bool = False) -> list[PruneResult]:
        """Prune several pages to one shared budget (minus ``fixed_tokens`` used elsewhere).

        A page none of whose pieces made it comes back with ``html == ""`` (when no page keeps
        anything, the beginning of the best piece is kept). ``as_text``: budget and output are
        the visible text of the pruned pages instead of their HTML.
        """
        started = time.perf_counter()
        check_budget(budget)
        cleaned = [p if isinstance(p, CleanPage) else clean_html(p) for p in pages]
        states = [_Page(c, as_text) for c in cleaned]
        before = [self.tokenizer.count(visible_text(c)[0] if as_text else c.html) for c in cleaned]
        if budget is None:
            out = [visible_text(c)[0] if as_text else c.html for c in cleaned]
            return [PruneResult(o, n, n, 0, seconds=time.perf_counter() - started) for o, n in zip(out, before)]
        steps = [(self.step1, budget)]
        if self.path_scorer is not None and not as_text:
            coarse = max(budget, int(math.ceil(budget * self.coarse_factor)))
            steps = [(self.step1, coarse), (_Selection(self.path_scorer, self.fine_max_words, refine=False), budget)]
        removed: list[list[str]] = [[] for _ in cleaned]
        alive = list(range(len(cleaned)))
        for n, (how, step_budget) in enumerate(steps):
            if n:  # the next step starts from what the last one kept, re-cleaned
                alive = [i for i, s in zip(alive, states) if s.html]
                states = [_Page(clean_html(s.html)) for s in states if s.html]
            prune_pages(states, query, step_budget, self.tokenizer, how, fixed_tokens)
            for i, state in zip(alive, states):
                removed[i].extend(b.path for b in state.dropped)
        final = dict(zip(alive, states))
        seconds = time.perf_counter() - started
        results = []
        for i in range(len(cleaned)):
            state = final.get(i)
            html, tokens, kept = (state.html, state.tokens, len(state.kept)) if state is not None else ("", 0, 0)
            results.append(PruneResult(html, before[i], tokens, kept + len(removed[i]), removed[i], seconds))
        return results

    def prune(self, html: Union[str, bytes], query: str, budget: int | None) -> PruneResult:
        """Prune one page to ``budget`` tokens (``None``: clean only)."""
        (result,) = self.prune_many([html], query, budget)
        if budget is None or result.html:
            return result
        page = clean_html(html)  # no piece kept: a page without text comes back as it is, if it fits
        empty = self.tokenizer.count(page.html)
        if page.body.xpath("string()").strip() or empty > budget:
            raise UserError(f"budget {budget} is smaller than an empty page ({empty} tokens)")
        return PruneResult(page.html, result.tokens_before, empty, 0, seconds=result.seconds)

    # -- pipeline stage ------------------------------------------------------------------------

    def kind(self, passage: Any) -> str:
        """``markup`` (its text is HTML), ``html-source`` (text of an HTML page) or ``plain``."""
        if looks_like_html(passage.text):
            return "markup"
        source = str(getattr(passage, "source", "") or getattr(passage, "doc_id", "")).lower()
        return "html-source" if source.endswith(HTML_SUFFIXES) else "plain"

    def apply(self, query: str, passages: list[Any], budget: int | None) -> list[Any]:
        """Prune the passages that come from HTML; plain-text passages pass untouched.

        The budget is split across all passages by rank (``rag.compress.allocate_budget``); each
        HTML passage is pruned to its share plus what better-ranked passages left unused. A page
        passage (HTML text) comes out as pruned HTML; a chunk of an HTML page (visible text, one
        block per line) is pruned block by block and sentence by sentence and stays text, so
        its citations still point into the chunk. Plain-text passages keep their full text for
        the next stage (a compressor, or the pipeline's final fit) to cut.
        """
        kinds = [self.kind(p) for p in passages]
        if budget is None:
            return [with_text(p, clean_html(p.text).html) if k == "markup" else p for p, k in zip(passages, kinds)]
        check_budget(budget)
        lengths = [self.tokenizer.count(p.text) for p in passages]
        shares = allocate_budget(lengths, budget, "rank")
        kept, carry = [], 0
        for passage, kind, length, share in zip(passages, kinds, lengths, shares):
            if kind == "plain":
                kept.append(passage)
                continue
            allowed = share + carry
            page = text_page(passage.text) if kind == "html-source" else passage.text
            result = self.prune_many([page], query, allowed, as_text=kind == "html-source")[0] \
                if allowed >= _MIN_ROOM else None
            used = result.tokens_after if result is not None and result.html.strip() else 0
            carry = allowed - used
            if used:
                kept.append(with_text(passage, result.html))
        return kept
