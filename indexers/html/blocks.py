"""Block trees of cleaned pages, and the visible text of a page with each block's span in it.

A *block* is an element of the cleaned page small enough to keep or drop as a whole: starting at
``<body>``, every element with more than ``max_words`` words and at least one block-level child
is split into its children (children without words are skipped). The leaves, in document order,
are the blocks; each knows its path (``/html/body/div[2]/table``) and its character span in the
cleaned HTML. Removing a block keeps table cells in place: a cell is emptied, not deleted.

``split_block`` refines a block for pruning at a finer grain (HtmlRAG's tree pruned level by
level): an element becomes its children with words, and the text and inline elements between
them become sentences (lines inside ``<pre>``). Every piece is a balanced span of the cleaned
HTML, so removing any set of pieces leaves valid markup.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass

import numpy as np

from datastores.errors import UserError
from indexers.html.clean import BLOCK_TAGS, CELL_TAGS, VOID_TAGS, CleanPage, Element, _is_block

DEFAULT_MAX_WORDS = 256
_WORD = re.compile(r"\S+")
_BREAK = "\u2029"  # paragraph separator: marks block ends before whitespace is collapsed
_SENTENCE_CUT = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+|\n+")  # after a sentence, or a line in <pre>
_TAG = re.compile(r"<[^>]*>")
SENTENCE = "#sentence"  # the tag of a sentence piece (its element is the one holding it)


@dataclass(frozen=True)
class Block:
    """One block of a cleaned page: its path, tag, word count and spans in ``CleanPage.html``."""

    path: str
    tag: str
    words: int
    start: int  # the element, open tag to close tag
    end: int
    cut_start: int  # what removing the block deletes (a cell's content only, else the element)
    cut_end: int
    element: Element
    text: str = ""  # visible text, set for sentence pieces (elements compute theirs)


def word_counts(root: Element) -> dict[Element, int]:
    """Words under each element (its text, its children and their tails), counted bottom-up."""
    counts: dict[Element, int] = {}
    for element in reversed(list(root.iter())):
        total = len((element.text or "").split())
        for child in element:
            total += counts[child] + len((child.tail or "").split())
        counts[element] = total
    return counts


def build_blocks(page: CleanPage, max_words: int = DEFAULT_MAX_WORDS) -> list[Block]:
    """The blocks of ``page`` (see the module docstring), in document order."""
    if max_words < 1:
        raise UserError(f"max words per block must be at least 1 (got {max_words})")
    counts = word_counts(page.root)
    pending = [page.body]
    leaves: list[Element] = []
    while pending:
        element = pending.pop()
        splittable = counts[element] > max_words and any(_is_block(c) and c.tag not in VOID_TAGS for c in element)
        if element is page.body or splittable:
            pending.extend(c for c in element if counts[c] > 0)
        elif counts[element] > 0:
            leaves.append(element)
    if not leaves and counts[page.body] > 0:  # text right in <body>, beside no block: the body is the block
        leaves = [page.body]
    return sorted((element_block(page, e, counts[e]) for e in leaves), key=lambda b: b.start)


def _raw_text(top: Element, wanted: set[Element]) -> tuple[str, dict[Element, list[int]]]:
    """Text under ``top`` with a paragraph separator around block elements (a space around cells),
    and the raw ``[start, end)`` of each element of ``wanted``."""
    pieces: list[str] = []
    size = 0
    raw_spans: dict[Element, list[int]] = {}
    stack: list[tuple[Element, bool]] = [(top, False)]
    while stack:
        element, leaving = stack.pop()
        separator = (" " if element.tag in CELL_TAGS else _BREAK) if element.tag in BLOCK_TAGS else ""
        if leaving:
            if element in wanted:
                raw_spans[element].append(size)
            piece = separator + (element.tail or "") if element is not top else separator
            pieces.append(piece)
            size += len(piece)
            continue
        if element in wanted:
            raw_spans[element] = [size]
        piece = ("" if element.tag == "br" else separator) + (element.text or "")
        pieces.append(piece)
        size += len(piece)
        stack.append((element, True))
        stack.extend((child, False) for child in reversed(element))
    return "".join(pieces), raw_spans


def block_text(block: Block) -> str:
    """Visible text of a block, whitespace collapsed (block elements separate words)."""
    if block.text or block.tag == SENTENCE:
        return block.text
    return " ".join(_raw_text(block.element, set())[0].split())


def element_block(page: CleanPage, element: Element, words: int) -> Block:
    """``element`` as a block: a cell's (or the body's) cut is its content, else the element."""
    start, open_end, close_start, end = page.spans[element]
    cut = (open_end, close_start) if element.tag in CELL_TAGS or element is page.body else (start, end)
    return Block(page.path(element), element.tag, words, start, end, *cut, element)


def _sentences(page: CleanPage, element: Element, start: int, end: int, cuts: list[int], first: int) -> list[Block]:
    """Sentence pieces of the run ``[start, end)`` inside ``element``, cut at ``cuts``."""
    out = []
    path = page.path(element)
    for a, b in zip([start, *cuts], [*cuts, end]):
        text = " ".join(html_lib.unescape(_TAG.sub(lambda m: " " if m.group() == "<br>" else "",
                                                   page.html[a:b])).split())
        if text:
            out.append(Block(f"{path}#s{first + len(out)}", SENTENCE, len(text.split()), a, b, a, b, element, text))
    return out


def split_block(page: CleanPage, block: Block, counts: dict[Element, int]) -> list[Block]:
    """Finer pieces that together hold all the text of ``block``, in document order: its child
    elements of block level (with words), and sentences of the text and inline elements between
    them. Empty when ``block`` cannot be split (a single sentence); ``counts`` is ``word_counts``."""
    if block.tag == SENTENCE:
        return []
    element = block.element
    _, open_end, close_start, _ = page.spans[element]
    pieces: list[Block] = []
    run_start, cuts = open_end, []  # the current run of text and inline elements, and its cut points
    position = open_end
    text_regions: list[tuple[int, int]] = []
    children = list(element)
    for child in children + [None]:
        child_start = page.spans[child][0] if child is not None else close_start
        text_regions.append((position, child_start))  # the text before this child (element text or a tail)
        if child is None or _is_block(child) and child.tag not in ("br", "hr"):
            for a, b in text_regions:
                cuts.extend(m.end() for m in _SENTENCE_CUT.finditer(page.html, a, b))
            cuts = sorted(c for c in set(cuts) if run_start < c < child_start)
            pieces.extend(_sentences(page, element, run_start, child_start, cuts, len(pieces)))
            if child is not None and counts.get(child, 0) > 0:
                pieces.append(element_block(page, child, counts[child]))
            run_start, cuts, text_regions = (page.spans[child][3] if child is not None else close_start), [], []
        elif child.tag == "br":
            cuts.append(page.spans[child][3])
        position = page.spans[child][3] if child is not None else close_start
    if len(pieces) == 1 and pieces[0].tag != SENTENCE and pieces[0].element is not element:
        return split_block(page, pieces[0], counts) or pieces  # a lone child: look inside it
    return pieces if len(pieces) > 1 else []


def visible_text(page: CleanPage, blocks: list[Block] | None = None) -> tuple[str, np.ndarray]:
    """The page's visible text (body only; block elements on their own lines, words separated by
    single spaces) and, for each of ``blocks``, its character span ``[start, end)`` in that text."""
    raw, raw_spans = _raw_text(page.body, {b.element for b in blocks or ()})
    out: list[str] = []
    raw_starts, raw_ends, out_starts = [], [], []
    position, previous_end = 0, None
    for match in _WORD.finditer(raw):
        if previous_end is not None:
            gap = "\n" if _BREAK in raw[previous_end:match.start()] else " "
            out.append(gap)
            position += 1
        raw_starts.append(match.start())
        raw_ends.append(match.end())
        out_starts.append(position)
        out.append(match.group())
        position += match.end() - match.start()
        previous_end = match.end()
    text = "".join(out)
    spans = np.zeros((len(blocks or ()), 2), dtype=np.int64)
    if raw_starts:
        rs, re_, os_ = (np.asarray(a, dtype=np.int64) for a in (raw_starts, raw_ends, out_starts))
        for i, block in enumerate(blocks or ()):
            lo, hi = raw_spans[block.element]
            first = int(np.searchsorted(re_, lo, side="right"))  # first word ending after lo
            last = int(np.searchsorted(rs, hi, side="left")) - 1  # last word starting before hi
            if first > last:
                spans[i] = (os_[first],) * 2 if first < len(os_) else (len(text),) * 2
                continue
            start = os_[first] + max(0, lo - rs[first])
            end = os_[last] + min(hi, re_[last]) - rs[last]
            spans[i] = (start, end)
    return text, spans


def common_path(paths: list[str]) -> str:
    """The deepest path that contains all of ``paths`` (``/html/body`` for unrelated blocks)."""
    if not paths:
        return ""
    parts = [p.split("/") for p in paths]
    common = []
    for level in zip(*parts):
        if any(x != level[0] for x in level):
            break
        common.append(level[0])
    return "/".join(common) or "/"
