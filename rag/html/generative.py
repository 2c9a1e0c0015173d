"""Step 2 of HTML pruning: score block paths with a causal LM's token probabilities.

As in HtmlRAG's generative pruning, the model reads the page and the question and is asked where
the answer is; each block's path (``/html/body/div[2]/p[3]``) is a token sequence, and the
sequences form a prefix tree. A block's score is the log-probability of its path under
constrained decoding: at every step the model's next-token probabilities are renormalised over
the tokens the tree allows there, so the scores of a page's blocks form one distribution.

All paths are scored in batches of (prompt + path) sequences; the prompt's page is cut from the
end when it does not fit the model's context. HtmlRAG fine-tunes its model for this task; any
causal LM works here, and instruction-tuned models do better than base models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from datastores.errors import UserError
from indexers.html import Block, CleanPage

if TYPE_CHECKING:
    from rag.lm import LanguageModel

PROMPT = ("{html}\n\nQuestion: {query}\n"
          "The part of the page above that answers the question is the element at path: ")


class PathScorer:
    """Log-probability of each block's path under a causal LM, given the page and the query."""

    def __init__(self, model: "str | LanguageModel", device: str = "auto", allow_download: bool = False,
                 batch_size: int = 8, max_length: int | None = None):
        from rag.lm import as_causal_lm

        loaded = as_causal_lm(model, device, allow_download)
        self.model, self.tokenizer, self.device = loaded.model, loaded.tokenizer, loaded.device
        self.batch_size = batch_size
        self.max_length = max_length or min(loaded.max_positions, 8192)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt(self, query: str, html: str, room: int) -> list[int]:
        head, tail = PROMPT.split("{html}")
        tail_ids = self._ids(tail.format(query=query))
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        page = self._ids(head + html)[: max(0, room - len(tail_ids) - len(bos))]
        return (bos + page + tail_ids)[-room:] if room > 0 else []

    def score(self, query: str, page: CleanPage, blocks: Sequence[Block]) -> np.ndarray:
        """One log-probability per block (higher: the model points there more)."""
        import torch

        if not blocks:
            return np.zeros(0, dtype=np.float32)
        paths = [self._ids(b.path) or [self.tokenizer.unk_token_id or 0] for b in blocks]
        longest = max(len(p) for p in paths)
        prompt = self._prompt(query, page.html, self.max_length - longest)
        if not prompt:
            raise UserError(f"block paths of {longest} tokens do not fit the model's {self.max_length} positions")
        children: dict[tuple[int, ...], set[int]] = {}
        for path in paths:
            for t in range(len(path)):
                children.setdefault(tuple(path[:t]), set()).add(path[t])
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        scores = np.zeros(len(paths), dtype=np.float64)
        n_prompt = len(prompt)
        for first in range(0, len(paths), self.batch_size):
            batch = paths[first:first + self.batch_size]
            width = n_prompt + max(len(p) for p in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, path in enumerate(batch):
                ids[row, :n_prompt + len(path)] = torch.tensor(prompt + path)
                mask[row, :n_prompt + len(path)] = 1
            with torch.no_grad():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            # position n_prompt - 1 + t predicts path token t
            logprobs = torch.log_softmax(logits[:, n_prompt - 1:, :].float(), dim=-1).cpu()
            for row, path in enumerate(batch):
                total = 0.0
                for t, token in enumerate(path):
                    allowed = sorted(children[tuple(path[:t])])
                    step = logprobs[row, t]
                    total += float(step[token] - torch.logsumexp(step[allowed], dim=0))
                scores[first + row] = total
        return scores.astype(np.float32)
