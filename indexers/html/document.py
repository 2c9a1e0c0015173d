"""HTML documents: plain visible text with exact spans, plus the page's blocks for chunk metadata.

``HtmlDocument`` is a ``Document`` whose text is the visible text of the cleaned page. It carries
a ``BlockMap`` (each block's span in that text, its path and its span in the cleaned HTML), so a
chunk of it can say which block(s) it came from: ``chunk_metadata`` adds ``block_path`` (the
deepest path containing every block the chunk overlaps), ``block_paths`` and ``html_start`` /
``html_end`` (the span of those blocks in ``clean_html(page, main_content=True).html``, the
cleaned main content that ``read_html_page`` reads by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from datastores.records import Document
from indexers.html.blocks import DEFAULT_MAX_WORDS, build_blocks, common_path, visible_text
from indexers.html.clean import clean_html


@dataclass(frozen=True)
class BlockMap:
    """Blocks of one page: spans in the visible text and in the cleaned HTML, and paths."""

    text_spans: np.ndarray  # int64 [n, 2]
    html_spans: np.ndarray  # int64 [n, 2]
    paths: tuple[str, ...]

    def overlapping(self, start: int, end: int) -> np.ndarray:
        """Indices of the blocks whose text overlaps ``[start, end)``."""
        if not self.paths:
            return np.zeros(0, dtype=np.int64)
        s, e = self.text_spans[:, 0], self.text_spans[:, 1]
        return np.flatnonzero((e > s) & (e > start) & (s < end))


@dataclass(frozen=True)
class HtmlDocument(Document):
    """A ``Document`` read from HTML, with its block map (not stored; used to annotate chunks)."""

    blocks: BlockMap | None = field(default=None, compare=False, repr=False)


def read_html_page(data: Union[bytes, str], max_words: int = DEFAULT_MAX_WORDS,
                   main_content: bool = True) -> tuple[str, str, BlockMap]:
    """(title, visible text, block map) of any HTML input: by default of its main content only
    (page furniture such as navigation and tables of contents is not indexed as content; see
    ``indexers.html.clean``); ``main_content=False`` reads the whole page."""
    page = clean_html(data, main_content)
    blocks = build_blocks(page, max_words)
    text, text_spans = visible_text(page, blocks)
    html_spans = np.asarray([(b.start, b.end) for b in blocks], dtype=np.int64).reshape(-1, 2)
    return page.title, text, BlockMap(text_spans, html_spans, tuple(b.path for b in blocks))


def chunk_metadata(document: Document, start: int, end: int) -> dict[str, Any]:
    """Metadata of the chunk ``document.text[start:end]``: the document's, plus block paths and
    the span in the cleaned HTML for HTML documents."""
    blocks = getattr(document, "blocks", None)
    if not isinstance(blocks, BlockMap):
        return document.metadata
    hits = blocks.overlapping(start, end)
    if not len(hits):
        return document.metadata
    paths = [blocks.paths[i] for i in hits]
    return {**document.metadata, "block_path": common_path(paths), "block_paths": paths,
            "html_start": int(blocks.html_spans[hits, 0].min()), "html_end": int(blocks.html_spans[hits, 1].max())}
