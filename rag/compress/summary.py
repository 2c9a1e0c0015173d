"""Abstractive compression: a seq2seq model summarises each passage towards the question."""

from __future__ import annotations

from typing import Any

from indexers.tokenizers import DEFAULT_TOKENIZER, Tokenizer
from rag.compress.base import Compressor

DEFAULT_TEMPLATE = "summarize: question: {query} context: {text}"


class SummaryCompressor(Compressor):
    """Summaries from a transformers seq2seq model (T5, BART, ...), cut exactly to each passage's share."""

    name = "summary"

    def __init__(self, model: str, tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
                 allow_download: bool = False, device: str = "auto", template: str = DEFAULT_TEMPLATE,
                 num_beams: int = 1, **options: Any):
        from transformers import AutoModelForSeq2SeqLM

        from rag.generate.hf import load_model, max_positions

        super().__init__(tokenizer, **options)
        self.model_name = model
        self.model, self.seq_tokenizer, self.device = load_model(AutoModelForSeq2SeqLM, model, allow_download,
                                                                 device, "seq2seq model")
        self.max_input = min(1024, max_positions(self.model, 512))
        self.template, self.num_beams = template, num_beams

    def compress_one(self, query: str, text: str, budget: int, state: Any) -> str:
        import torch

        prompt = self.template.format(query=query, text=text)
        encoded = self.seq_tokenizer(prompt, return_tensors="pt", truncation=True, max_length=self.max_input)
        with torch.no_grad():
            output = self.model.generate(**{k: v.to(self.device) for k, v in encoded.items()},
                                         max_new_tokens=max(1, budget), num_beams=self.num_beams,
                                         do_sample=False)
        return self.seq_tokenizer.decode(output[0], skip_special_tokens=True).strip()
