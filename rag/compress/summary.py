"""Abstractive compression: a language model summarises each passage towards the question.

``model`` is any ``rag.lm`` spec: a seq2seq model (T5, BART, ...) reads ``template``; a causal LM
(``smollm2``, any decoder-only model) is asked, through its chat template when it has one, to keep
what answers the question; either way the summary is then cut exactly to the passage's share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from indexers.tokenizers import DEFAULT_TOKENIZER, Tokenizer
from rag.compress.base import Compressor

if TYPE_CHECKING:
    from rag.lm import LanguageModel

DEFAULT_TEMPLATE = "summarize: question: {query} context: {text}"
CAUSAL_TEMPLATE = ("Summarize the passage in at most {words} words, keeping every fact that helps answer "
                   "the question.\n\nQuestion: {query}\n\nPassage: {text}")


class SummaryCompressor(Compressor):
    """Summaries from a seq2seq model or a causal LM, cut exactly to each passage's share."""

    name = "summary"

    def __init__(self, model: "str | LanguageModel", tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
                 allow_download: bool = False, device: str = "auto", template: str | None = None,
                 num_beams: int = 1, **options: Any):
        from rag.lm import LanguageModel, load_language_model

        super().__init__(tokenizer, **options)
        self.lm = model if isinstance(model, LanguageModel) else \
            load_language_model(model, None, device, allow_download, "summary model")
        self.model_name = self.lm.name
        self.model, self.seq_tokenizer, self.device = self.lm.model, self.lm.tokenizer, self.lm.device
        self.max_input = min(1024 if self.lm.is_seq2seq else 4096, self.lm.max_positions)
        self.template = template or (DEFAULT_TEMPLATE if self.lm.is_seq2seq else CAUSAL_TEMPLATE)
        self.num_beams = num_beams

    def _causal_prompt(self, query: str, text: str, budget: int) -> str:
        content = self.template.format(query=query, text=text, words=max(1, budget * 3 // 4))
        if not self.lm.has_chat_template:
            return content + "\n\nSummary:"
        return self.seq_tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                      add_generation_prompt=True)

    def compress_one(self, query: str, text: str, budget: int, state: Any) -> str:
        import torch

        causal = not self.lm.is_seq2seq
        prompt = self._causal_prompt(query, text, budget) if causal else \
            self.template.format(query=query, text=text)
        encoded = self.seq_tokenizer(prompt, return_tensors="pt", truncation=True, max_length=self.max_input,
                                     add_special_tokens=not (causal and self.lm.has_chat_template))
        pad = self.seq_tokenizer.pad_token_id
        with torch.no_grad():
            output = self.model.generate(**{k: v.to(self.device) for k, v in encoded.items()},
                                         max_new_tokens=max(1, budget), num_beams=self.num_beams,
                                         do_sample=False, pad_token_id=pad if pad is not None
                                         else self.seq_tokenizer.eos_token_id)
        generated = output[0, encoded["input_ids"].shape[1]:] if causal else output[0]
        return self.seq_tokenizer.decode(generated, skip_special_tokens=True).strip()
