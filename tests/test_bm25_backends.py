"""BM25 top-k backends (numpy, compiled numba): exact against a brute-force BM25Okapi, and the two
backends return the same rows with bit-identical scores (ties, masks, k beyond the matches,
negative idf, unknown terms, empty queries)."""

from __future__ import annotations

import importlib.util
from collections import Counter

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from datastores import Bm25Params, Datastore
from datastores.bm25 import BACKEND_ENV, Bm25GlobalStats, Bm25Scorer, TermMatrix, bm25_backend
from datastores.errors import UserError

HAS_NUMBA = importlib.util.find_spec("numba") is not None
BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed"))]
PARAMS = Bm25Params.rank_bm25()


def random_corpus(rng: np.random.Generator, docs: int, vocab: int) -> list[list[str]]:
    """Zipf-like token lists (common terms in most documents) with exact duplicates (ties)."""
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    corpus = [[f"t{i}" for i in rng.choice(vocab, size=int(rng.integers(1, 30)), p=p)] for _ in range(docs)]
    for _ in range(docs // 10):
        corpus[int(rng.integers(docs))] = list(corpus[int(rng.integers(docs))])
    return corpus


def scorer_for(corpus: list[list[str]], backend: str) -> tuple[Bm25Scorer, BM25Okapi]:
    reference = BM25Okapi(corpus)
    stats = Bm25GlobalStats(len(corpus), sum(map(len, corpus)), len(reference.idf), 0.0)
    return Bm25Scorer(TermMatrix.from_token_lists(corpus), PARAMS, stats, backend=backend), reference


def brute_force_top_k(reference: BM25Okapi, corpus, query: list[str], k: int, allowed) -> tuple[list, np.ndarray]:
    """rank_bm25's full scores, top-k among allowed rows holding a query term, ties by lower row."""
    scores = reference.get_scores(query)
    terms = set(query)
    matched = np.array([bool(terms.intersection(doc)) for doc in corpus])
    if allowed is not None:
        matched &= allowed
    rows = np.flatnonzero(matched)
    top = rows[np.lexsort((rows, -scores[rows]))][:k]
    return top.tolist(), scores[top]


def random_query(rng: np.random.Generator, vocab: int) -> list[str]:
    """Common and rare terms, repeats, and now and then a term no document has."""
    query = [f"t{int(i)}" for i in rng.integers(0, vocab + vocab // 4, size=int(rng.integers(1, 12)))]
    return query + query[:1] if rng.random() < 0.3 else query


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(6))
def test_top_k_equals_brute_force_bm25okapi(backend, seed):
    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(5, 300))
    corpus = random_corpus(rng, int(rng.integers(20, 600)), vocab)
    scorer, reference = scorer_for(corpus, backend)
    for _ in range(25):
        query = random_query(rng, vocab)
        k = int(rng.choice([1, 3, 10, 50, 10_000]))  # 10_000: more than any shard here matches
        allowed = rng.random(len(corpus)) < 0.7 if rng.random() < 0.5 else None
        counts = Counter(t for t in query if t in reference.idf)
        scores, rows = scorer.top_k(reference.idf, counts, k, allowed)
        want_rows, want_scores = brute_force_top_k(reference, corpus, [t for t in query if t in reference.idf],
                                                   k, allowed)
        assert rows.tolist() == want_rows
        np.testing.assert_allclose(scores, want_scores, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba not installed")
@pytest.mark.parametrize("seed", range(4))
def test_compiled_backend_is_bit_identical_to_numpy(seed):
    """Larger shards, where MaxScore prunes most postings: the same rows and the same float64 bits."""
    rng = np.random.default_rng(100 + seed)
    vocab = 2_000
    corpus = random_corpus(rng, 4_000, vocab)
    numpy_scorer, reference = scorer_for(corpus, "numpy")
    numba_scorer, _ = scorer_for(corpus, "numba")
    idf = dict(reference.idf)
    if seed % 2:  # negative weights: the compiled path scores every posting, like numpy's
        idf[max(idf, key=lambda t: -idf[t])] = -0.5
    for _ in range(40):
        counts = Counter(t for t in random_query(rng, vocab) if t in idf)
        k = int(rng.choice([1, 10, 100]))
        allowed = rng.random(len(corpus)) < 0.5 if rng.random() < 0.3 else None
        want = numpy_scorer.top_k(idf, counts, k, allowed)
        got = numba_scorer.top_k(idf, counts, k, allowed)
        assert got[1].tolist() == want[1].tolist()
        assert got[0].tobytes() == want[0].tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_floor_only_leaves_out_rows_below_it(backend):
    """With a floor (the k-th best of shards searched before) every row scoring at least the floor
    is still returned, with the same score; rows below it may be left out."""
    rng = np.random.default_rng(3)
    corpus = random_corpus(rng, 3_000, 1_500)
    scorer, reference = scorer_for(corpus, backend)
    plain, _ = scorer_for(corpus, "numpy")
    pruned_some = False
    for _ in range(30):
        counts = Counter(t for t in random_query(rng, 1_500) if t in reference.idf)
        want_scores, want_rows = plain.top_k(reference.idf, counts, 10)
        if len(want_scores) < 10:
            continue
        floor = float(want_scores[int(rng.integers(10))])
        scores, rows = scorer.top_k(reference.idf, counts, 10, None, floor)
        keep = want_scores >= floor
        assert rows[:keep.sum()].tolist() == want_rows[keep].tolist()
        assert scores[:keep.sum()].tobytes() == want_scores[keep].tobytes()
        assert (scores[keep.sum():] < floor).all()
        pruned_some |= len(rows) < 10
    assert pruned_some == (backend == "numba")


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_ties_go_to_the_lower_row(backend):
    corpus = [["a", "b"], ["c"], ["a", "b"], ["a", "b"], ["d"], ["a", "b"]] * 3
    scorer, reference = scorer_for(corpus, backend)
    scores, rows = scorer.top_k(reference.idf, Counter(["a"]), 4)
    assert rows.tolist() == [0, 2, 3, 5]
    assert len(set(scores.tolist())) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_unknown_queries_return_nothing(backend):
    scorer, reference = scorer_for([["a", "b"], ["b", "c"]], backend)
    for counts in (Counter(), Counter({"zzz": 2})):
        scores, rows = scorer.top_k({**reference.idf, "zzz": 1.0}, counts, 5)
        assert rows.size == 0 and scores.size == 0
    assert scorer.top_k(reference.idf, Counter(["a"]), 0)[1].size == 0


def test_backend_choice(monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "numpy")
    assert bm25_backend() == "numpy"
    assert bm25_backend("auto") == ("numba" if HAS_NUMBA else "numpy")
    monkeypatch.setenv(BACKEND_ENV, "fortran")
    with pytest.raises(UserError, match="unknown BM25 backend 'fortran'"):
        bm25_backend()
    monkeypatch.delenv(BACKEND_ENV)
    assert bm25_backend() == ("numba" if HAS_NUMBA else "numpy")


@pytest.mark.parametrize("backend", BACKENDS)
def test_datastore_search_uses_the_backend_from_the_environment(backend, tmp_path, monkeypatch):
    from test_bm25 import write_datastore

    from datastores.records import Chunk

    rng = np.random.default_rng(7)
    texts = [" ".join(doc) for doc in random_corpus(rng, 300, 60)]
    chunks = [Chunk(f"d{i}", 0, len(text), text, f"d{i}.txt") for i, text in enumerate(texts)]
    monkeypatch.setenv(BACKEND_ENV, backend)
    store = write_datastore(tmp_path / "ds", chunks, 70)
    hits = store.search("t0 t3 t17 t40", k=10, mode="bm25")
    full = store.bm25_scores("t0 t3 t17 t40")
    assert [h.chunk_id for h in hits] == np.lexsort((np.arange(len(full)), -full))[:10].tolist()
    snap = store.snapshot()
    assert {s.bm25(snap.bm25_params, snap.bm25_stats).backend for s in snap.shards} == {backend}
