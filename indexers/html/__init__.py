"""HTML ingestion that keeps structure: robust cleaning, block trees, HTML documents."""

from indexers.html.blocks import (DEFAULT_MAX_WORDS, SENTENCE, Block, block_text, build_blocks, common_path, split_block,
                                  visible_text, word_counts)
from indexers.html.clean import CleanPage, clean_html, decode_html, parse_html
from indexers.html.document import BlockMap, HtmlDocument, chunk_metadata, read_html_page

__all__ = ["Block", "BlockMap", "CleanPage", "DEFAULT_MAX_WORDS", "HtmlDocument", "SENTENCE", "block_text",
           "build_blocks", "chunk_metadata", "clean_html", "common_path", "decode_html", "parse_html", "read_html_page",
           "split_block", "visible_text", "word_counts"]
