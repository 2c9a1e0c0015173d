"""What every generator shares: generations, the generator protocol, prompts and citation parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from rag.records import Passage

DEFAULT_SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages you are given. "
    "Cite every claim with the number of the passage that supports it, in square brackets, "
    "like [1] or [2][3]. If the passages do not contain the answer, say that you do not know."
)


@dataclass
class Generation:
    """A generator's answer and the passage numbers it cites."""

    text: str
    citations: list[int]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Generator(Protocol):
    """Answers a question from numbered passages; ``on_token`` receives streamed text pieces."""

    name: str

    def generate(self, question: str, passages: Sequence[Passage],
                 on_token: Callable[[str], None] | None = None) -> Generation:
        """The answer to ``question`` grounded in ``passages``."""


def format_passages(passages: Sequence[Passage]) -> str:
    """Passages as ``[n] text`` blocks separated by blank lines, numbered 1..n in order."""
    return "\n\n".join(f"[{i}] {p.text.strip()}" for i, p in enumerate(passages, start=1))


def build_messages(question: str, passages: Sequence[Passage],
                   system: str | None = None) -> list[dict[str, str]]:
    """Chat messages: a system instruction to cite as [n], then the numbered passages and the question."""
    context = format_passages(passages) if passages else "(no passages)"
    user = f"Passages:\n\n{context}\n\nQuestion: {question.strip()}\nAnswer (cite passages as [n]):"
    return [{"role": "system", "content": system or DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": user}]


def build_prompt(question: str, passages: Sequence[Passage], system: str | None = None) -> str:
    """The same prompt as plain text, for models without a chat template."""
    messages = build_messages(question, passages, system)
    return "\n\n".join(m["content"] for m in messages) + " "


_CITATION = re.compile(r"\[(\d+(?:\s*[,;-]\s*\d+)*)\]")


def parse_citations(text: str, n_passages: int) -> list[int]:
    """Passage numbers cited as ``[n]``, ``[n, m]`` or ``[n-m]``, in first-seen order, within 1..n_passages."""
    cited: list[int] = []
    for group in _CITATION.finditer(text):
        for part in re.split(r"\s*[,;]\s*", group.group(1)):
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                numbers = range(low, high + 1) if 0 < high - low < 50 else ()
            else:
                numbers = (int(part),)
            for number in numbers:
                if 1 <= number <= n_passages and number not in cited:
                    cited.append(number)
    return cited
