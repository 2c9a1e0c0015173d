"""Token-level compression by self-information (Selective Context / LLMLingua style).

A causal LM scores every LM token by its surprisal ``-log p(token | query, preceding text)``; a word's
information is the sum over its LM tokens. The least informative words are dropped until the text
fits its budget, counted exactly in the compressor's (not the LM's) tokenizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from datastores.errors import UserError
from indexers.tokenizers import DEFAULT_TOKENIZER, Tokenizer
from rag.compress.base import Compressor
from rag.compress.budget import keep_best_words, word_spans

if TYPE_CHECKING:
    from rag.lm import LanguageModel


class TokenCompressor(Compressor):
    """Self-information compression with a causal LM (``model``: a ``rag.lm`` spec such as ``smollm2``,
    or a loaded ``rag.lm.LanguageModel`` shared with other stages)."""

    name = "token"

    def __init__(self, model: "str | LanguageModel", tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
                 allow_download: bool = False, device: str = "auto", condition_on_query: bool = True,
                 window: int = 512, **options: Any):
        from rag.lm import as_causal_lm

        super().__init__(tokenizer, **options)
        loaded = as_causal_lm(model, device, allow_download)
        self.model_name = loaded.name
        self.lm, self.lm_tokenizer, self.device = loaded.model, loaded.tokenizer, loaded.device
        if not getattr(self.lm_tokenizer, "is_fast", False):
            raise UserError(f"the tokenizer of {loaded.name!r} has no fast version; word offsets need one")
        self.window = min(window, loaded.max_positions)
        self.condition_on_query = condition_on_query

    def token_information(self, query: str, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(character starts, surprisal in nats) of the LM tokens of ``text``, in windows of the LM."""
        import torch

        encoded = self.lm_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(encoded["input_ids"], dtype=np.int64)
        starts = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)[:, 0]
        prefix = self.lm_tokenizer(query + "\n", add_special_tokens=False)["input_ids"] \
            if self.condition_on_query else []
        bos = self.lm_tokenizer.bos_token_id
        if not prefix and bos is not None:
            prefix = [bos]
        prefix = prefix[-(self.window // 4):]
        info = np.zeros(len(ids), dtype=np.float64)
        step = max(1, self.window - len(prefix))
        for lo in range(0, len(ids), step):
            piece = np.concatenate([np.asarray(prefix, dtype=np.int64), ids[lo:lo + step]])
            with torch.no_grad():
                logits = self.lm(input_ids=torch.as_tensor(piece[None], device=self.device)).logits[0]
            logp = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
            targets = piece[1:]
            token_logp = logp[np.arange(len(targets)), targets]
            if prefix:
                surprisal = -token_logp[len(prefix) - 1:]
            else:  # the first token has no context: uniform over the vocabulary
                surprisal = np.concatenate(([np.log(logp.shape[1])], -token_logp))
            info[lo:lo + step] = surprisal[:len(ids[lo:lo + step])]
        return starts, info

    def word_information(self, query: str, text: str) -> tuple[list[tuple[int, int]], np.ndarray]:
        """Word spans of ``text`` and each word's self-information (sum over its LM tokens)."""
        spans = word_spans(text)
        starts, info = self.token_information(query, text)
        if not spans:
            return spans, np.zeros(0)
        word_starts = np.asarray([s for s, _ in spans], dtype=np.int64)
        owner = np.clip(np.searchsorted(word_starts, starts, side="right") - 1, 0, len(spans) - 1)
        scores = np.zeros(len(spans), dtype=np.float64)
        np.add.at(scores, owner, info)
        return spans, scores

    def compress_one(self, query: str, text: str, budget: int, state: Any) -> str:
        spans, scores = self.word_information(query, text)
        return keep_best_words(text, spans, scores, budget, self.tokenizer)
