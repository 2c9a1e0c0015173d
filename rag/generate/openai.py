"""``openai:MODEL``: answers from any OpenAI-compatible chat server (vLLM, llama.cpp server, Ollama,
OpenAI), streamed to ``on_token`` when one is given. See :mod:`rag.generate.openai_client` for
timeouts, retries and how the API key is kept out of logs and errors."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from datastores.errors import UserError
from rag.generate.base import Generation, build_messages, parse_citations
from rag.generate.openai_client import ChatResult, OpenAIClient
from rag.records import Passage


class OpenAIGenerator:
    """A :class:`~rag.generate.base.Generator` backed by ``POST {base_url}/chat/completions``.

    ``base_url`` defaults to ``$OPENAI_BASE_URL`` or https://api.openai.com/v1; ``api_key`` to
    ``$OPENAI_API_KEY`` (no key: no ``Authorization`` header, as local servers expect).
    """

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 60.0, max_retries: int = 3, temperature: float = 0.0, max_tokens: int = 512,
                 system: str | None = None, client: OpenAIClient | None = None):
        if not model or not model.strip():
            raise UserError("the openai generator needs a model name (openai:MODEL)")
        if max_tokens <= 0:
            raise UserError(f"max_tokens must be positive, got {max_tokens}")
        self.model = model.strip()
        self.name = f"openai:{self.model}"
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system = system
        self.client = client or OpenAIClient(base_url, api_key, timeout=timeout, max_retries=max_retries)

    def __repr__(self) -> str:
        return f"OpenAIGenerator(model={self.model!r}, client={self.client!r})"

    def chat(self, messages: Sequence[dict[str, Any]], on_token: Callable[[str], None] | None = None,
             **overrides: Any) -> ChatResult:
        """A raw chat completion with this generator's model and sampling settings (``overrides``
        such as ``temperature``, ``max_tokens`` or ``response_format`` replace or extend them)."""
        settings: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        settings.update(overrides)
        return self.client.chat(messages, self.model, on_token=on_token, **settings)

    def generate(self, question: str, passages: Sequence[Passage],
                 on_token: Callable[[str], None] | None = None) -> Generation:
        """The model's answer to ``question`` over the numbered ``passages``, with its ``[n]`` citations."""
        result = self.chat(build_messages(question, passages, self.system), on_token=on_token)
        text = result.text.strip()
        return Generation(text, parse_citations(text, len(passages)), result.prompt_tokens,
                          result.completion_tokens,
                          {"generator": self.name, "model": result.model or self.model,
                           "finish_reason": result.finish_reason, "attempts": result.attempts,
                           "seconds": result.seconds, "streamed": on_token is not None})


__all__ = ["OpenAIGenerator"]
