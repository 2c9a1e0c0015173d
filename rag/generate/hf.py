"""``hf:SPEC``: a transformers causal LM answering from numbered passages.

``SPEC`` is anything ``rag.lm.load_causal_lm`` takes: ``smollm2``, a local folder or ``.gguf`` file,
or a Hugging Face name (local files only unless ``allow_download=True``); an already loaded
``rag.lm.LanguageModel`` can be passed instead so that several stages share one model. The prompt
goes through the tokenizer's chat template when it has one, and is a plain numbered prompt otherwise.
``generate_batch`` answers several questions in one left-padded batch (greedy decoding).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from datastores.errors import UserError
from rag.generate.base import Generation, build_messages, build_prompt, parse_citations
from rag.lm import LanguageModel, as_causal_lm
from rag.records import Passage

logger = logging.getLogger("terarag.generate")


def callback_streamer(tokenizer: Any, on_token: Callable[[str], None]) -> Any:
    """A transformers streamer that hands each finished piece of generated text to ``on_token``."""
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_token(text)

    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


class HFGenerator:
    """A transformers causal LM; greedy decoding unless ``temperature`` > 0."""

    def __init__(self, model: str | LanguageModel, allow_download: bool = False, device: str = "auto",
                 max_new_tokens: int = 256, temperature: float = 0.0, system: str | None = None):
        if max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.lm = as_causal_lm(model, device, allow_download)
        self.name = f"hf:{self.lm.name}"
        self.model_name = self.lm.name
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.system = system
        self.model, self.tokenizer, self.device = self.lm.model, self.lm.tokenizer, self.lm.device

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def prompt(self, question: str, passages: Sequence[Passage]) -> str:
        """The prompt text: the chat template applied to the messages, or the plain numbered prompt."""
        if not self.has_chat_template:
            return build_prompt(question, passages, self.system)
        messages = build_messages(question, passages, self.system)
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - some templates reject a system turn: fold it into the user turn
            merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
            return self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)

    def prompt_ids(self, question: str, passages: Sequence[Passage]) -> tuple[list[int], int]:
        """(prompt token ids, new tokens allowed): a prompt too long for the model keeps its last tokens."""
        ids = list(self.tokenizer(self.prompt(question, passages),
                                  add_special_tokens=not self.has_chat_template)["input_ids"])
        limit = self.lm.max_positions
        new_tokens = min(self.max_new_tokens, max(1, limit - len(ids)))
        if len(ids) + new_tokens > limit:
            logger.warning("prompt of %d tokens exceeds %s's %d positions; keeping its last tokens",
                           len(ids), self.model_name, limit)
            ids = ids[-(limit - new_tokens):]
        return ids, new_tokens

    def _decode_options(self, new_tokens: int) -> dict[str, Any]:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        options: dict[str, Any] = {"max_new_tokens": new_tokens, "pad_token_id": pad_id}
        if self.temperature > 0:
            return {**options, "do_sample": True, "temperature": self.temperature}
        return {**options, "do_sample": False}

    def generate(self, question: str, passages: Sequence[Passage],
                 on_token: Callable[[str], None] | None = None) -> Generation:
        if on_token is None:
            return self.generate_batch([(question, passages)])[0]
        import torch

        ids, new_tokens = self.prompt_ids(question, passages)
        options = self._decode_options(new_tokens)
        options["streamer"] = callback_streamer(self.tokenizer, on_token)
        started = time.perf_counter()
        input_ids = torch.tensor([ids], device=self.device)
        with torch.no_grad():
            output = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **options)
        return self._generation(output[0, len(ids):], len(ids), len(passages), time.perf_counter() - started)

    def generate_batch(self, items: Sequence[tuple[str, Sequence[Passage]]]) -> list[Generation]:
        """Answers to several (question, passages) pairs from one left-padded batch."""
        import torch

        if not items:
            return []
        encoded = [self.prompt_ids(question, passages) for question, passages in items]
        width = max(len(ids) for ids, _ in encoded)
        options = self._decode_options(min(new for _, new in encoded))
        input_ids = torch.full((len(items), width), options["pad_token_id"], dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        for row, (ids, _) in enumerate(encoded):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            attention[row, width - len(ids):] = 1
        started = time.perf_counter()
        with torch.no_grad():
            output = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                         **options)
        seconds = (time.perf_counter() - started) / len(items)
        return [self._generation(output[row, width:], len(ids), len(passages), seconds)
                for row, ((ids, _), (_, passages)) in enumerate(zip(encoded, items))]

    def _generation(self, completion: Any, prompt_tokens: int, n_passages: int, seconds: float) -> Generation:
        """A Generation from generated ids (cut at the first end-of-sequence or padding token)."""
        ids = completion.tolist()
        stops = {t for t in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if t is not None}
        length = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        answer = self.tokenizer.decode(ids[:length], skip_special_tokens=True).strip()
        return Generation(answer, parse_citations(answer, n_passages), prompt_tokens, length, {"seconds": seconds})
