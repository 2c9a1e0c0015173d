"""``hf:PATH_OR_NAME``: a local transformers causal LM answering from numbered passages.

The prompt goes through the tokenizer's chat template when it has one, and is a plain numbered
prompt otherwise. Models load from local files only unless ``allow_download=True``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from rag.generate.base import Generation, Passage, build_messages, build_prompt, parse_citations

logger = logging.getLogger("terarag.generate")


def load_pretrained(auto_class: Any, name: str, allow_download: bool, what: str) -> Any:
    """``auto_class.from_pretrained`` from local files (unless allowed), with a clear error."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return auto_class.from_pretrained(name, local_files_only=not allow_download)
    except (OSError, ValueError) as exc:
        hint = "" if allow_download else " (only local files are used; pass allow_download / --allow-download)"
        raise ValueError(f"cannot load {what} {name!r}{hint}: {exc}") from exc


def load_model(auto_class: Any, name: str, allow_download: bool, device: str, what: str) -> tuple[Any, Any, str]:
    """(model in eval mode on its device, tokenizer, device) for a name or path, ``auto_class`` the model kind."""
    from transformers import AutoTokenizer

    from indexers.embedders import pick_device

    tokenizer = load_pretrained(AutoTokenizer, name, allow_download, "tokenizer")
    model = load_pretrained(auto_class, name, allow_download, what)
    resolved = pick_device(device)
    return model.to(resolved).eval(), tokenizer, resolved


def load_causal_lm(name: str, allow_download: bool = False, device: str = "auto") -> tuple[Any, Any, str]:
    """(model in eval mode on its device, tokenizer, device) for a causal LM name or path."""
    from transformers import AutoModelForCausalLM

    return load_model(AutoModelForCausalLM, name, allow_download, device, "causal language model")


def max_positions(model: Any, default: int = 2048) -> int:
    """The longest input the model accepts, from its config."""
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


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

    def __init__(self, model: str, allow_download: bool = False, device: str = "auto",
                 max_new_tokens: int = 256, temperature: float = 0.0, system: str | None = None):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.name = f"hf:{model}"
        self.model_name = model
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.system = system
        self.model, self.tokenizer, self.device = load_causal_lm(model, allow_download, device)

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

    def generate(self, question: str, passages: Sequence[Passage],
                 on_token: Callable[[str], None] | None = None) -> Generation:
        import torch

        text = self.prompt(question, passages)
        encoded = self.tokenizer(text, return_tensors="pt", add_special_tokens=not self.has_chat_template)
        input_ids = encoded["input_ids"]
        limit = max_positions(self.model)
        new_tokens = min(self.max_new_tokens, max(1, limit - input_ids.shape[1]))
        if input_ids.shape[1] + new_tokens > limit:
            logger.warning("prompt of %d tokens exceeds %s's %d positions; keeping its last tokens",
                           input_ids.shape[1], self.model_name, limit)
            input_ids = input_ids[:, -(limit - new_tokens):]
        attention = torch.ones_like(input_ids)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        options: dict[str, Any] = {"max_new_tokens": new_tokens, "pad_token_id": pad_id}
        if self.temperature > 0:
            options.update(do_sample=True, temperature=self.temperature)
        else:
            options.update(do_sample=False)
        if on_token is not None:
            options["streamer"] = callback_streamer(self.tokenizer, on_token)
        started = time.perf_counter()
        with torch.no_grad():
            output = self.model.generate(input_ids=input_ids.to(self.device),
                                         attention_mask=attention.to(self.device), **options)
        completion = output[0, input_ids.shape[1]:]
        answer = self.tokenizer.decode(completion, skip_special_tokens=True).strip()
        return Generation(answer, parse_citations(answer, len(passages)), int(input_ids.shape[1]),
                          int(completion.shape[0]), {"seconds": time.perf_counter() - started})
