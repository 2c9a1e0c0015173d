"""HTML pruning for the ask pipeline: pages cleaned, split into blocks, pruned to a token budget.

    from rag.html import HtmlPruner
    result = HtmlPruner(tokenizer="cl100k_base").prune(page_bytes, "when was it signed?", budget=1024)
    result.html, result.tokens_before, result.tokens_after
"""

from rag.html.prune import EmbeddingScorer, HtmlPruner, PruneResult, cut_blocks, looks_like_html, prune_pages

__all__ = ["EmbeddingScorer", "HtmlPruner", "PruneResult", "cut_blocks", "looks_like_html", "prune_pages"]
