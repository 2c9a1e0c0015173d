"""Hybrid fusion on hand-made score lists, MMR on hand-made vectors, and hybrid search end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rag.retrieve import build_retriever, convex, fuse, mmr, normalize, rrf

DENSE = [(10, 0.9), (11, 0.8), (12, 0.5)]
SPARSE = [(12, 12.0), (13, 6.0), (10, 3.0)]


def test_rrf_sums_reciprocal_ranks():
    fused = dict(rrf([DENSE, SPARSE], k=60))
    assert fused[10] == pytest.approx(1 / 61 + 1 / 63)
    assert fused[12] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[11] == pytest.approx(1 / 62)
    assert fused[13] == pytest.approx(1 / 62)
    # 10 and 12 tie (as do 11 and 13): the lower chunk id goes first.
    assert [cid for cid, _ in rrf([DENSE, SPARSE], k=60)] == [10, 12, 11, 13]


def test_rrf_k_changes_the_weight_of_top_ranks():
    a = [(1, 1.0), (2, 0.5), (3, 0.1)]
    b = [(3, 1.0), (4, 0.5), (2, 0.1)]
    # k=0: 1 -> 1/1; 3 -> 1/3 + 1/1; 2 -> 1/2 + 1/3.
    assert [cid for cid, _ in rrf([a, b], k=0)] == [3, 1, 2, 4]
    assert dict(rrf([a, b], k=0))[2] == pytest.approx(1 / 2 + 1 / 3)


def test_weighted_rrf_by_hand():
    assert fuse(DENSE, SPARSE, "rrf", rrf_k=60) == rrf([DENSE, SPARSE], k=60)  # alpha 0.5: plain RRF
    fused = dict(fuse(DENSE, SPARSE, "rrf", alpha=0.3, rrf_k=60))
    assert fused[10] == pytest.approx(0.6 / 61 + 1.4 / 63)
    assert fused[12] == pytest.approx(0.6 / 63 + 1.4 / 61)
    assert fused[13] == pytest.approx(1.4 / 62)
    assert [c for c, _ in fuse(DENSE, SPARSE, "rrf", alpha=0.3)] == [12, 10, 13, 11]  # BM25 side wins ties
    assert [c for c, _ in fuse(DENSE, SPARSE, "rrf", alpha=1.0)][:3] == [10, 11, 12]
    with pytest.raises(ValueError, match="alpha"):
        fuse(DENSE, SPARSE, "rrf", alpha=1.5)


def test_minmax_convex_combination_by_hand():
    fused = dict(convex(DENSE, SPARSE, alpha=0.5, normalization="minmax"))
    dense_norm = {10: 1.0, 11: (0.8 - 0.5) / 0.4, 12: 0.0}
    sparse_norm = {12: 1.0, 13: (6 - 3) / 9, 10: 0.0}
    for cid in (10, 11, 12, 13):
        expected = 0.5 * dense_norm.get(cid, 0.0) + 0.5 * sparse_norm.get(cid, 0.0)
        assert fused[cid] == pytest.approx(expected)


def test_alpha_one_and_zero_give_the_single_retrievers():
    assert [c for c, _ in convex(DENSE, SPARSE, alpha=1.0)][:3] == [10, 11, 12]
    assert [c for c, _ in convex(DENSE, SPARSE, alpha=0.0)][:3] == [12, 13, 10]


def test_zscore_and_calibrated_normalisation():
    scores = np.array([12.0, 6.0, 3.0])
    z = normalize(scores, "zscore")
    assert z == pytest.approx((scores - scores.mean()) / scores.std())
    probs = normalize(scores, "calibrated", kind="bm25")
    assert probs == pytest.approx(1 / (1 + np.exp(-z)))
    assert np.all((probs > 0) & (probs < 1)) and list(np.argsort(-probs)) == [0, 1, 2]
    assert normalize(np.array([0.2, -0.6]), "calibrated", kind="dense") == pytest.approx([0.6, 0.2])
    fused = dict(convex(DENSE, SPARSE, alpha=0.25, normalization="zscore"))
    dz = normalize(np.array([0.9, 0.8, 0.5]), "zscore")
    sz = normalize(scores, "zscore")
    # chunk 13 is missing from the dense list: it gets the dense list's lowest z-score.
    assert fused[13] == pytest.approx(0.25 * dz.min() + 0.75 * sz[1])
    assert fused[10] == pytest.approx(0.25 * dz[0] + 0.75 * sz[2])


def test_constant_scores_and_empty_lists():
    assert normalize(np.array([2.0, 2.0]), "minmax") == pytest.approx([1.0, 1.0])
    assert normalize(np.array([2.0, 2.0]), "zscore") == pytest.approx([0.0, 0.0])
    assert fuse([], [], "convex") == [] and fuse([], [], "rrf") == []
    assert [c for c, _ in fuse([], SPARSE, "convex")] == [12, 13, 10]


def test_bad_fusion_settings_are_rejected():
    with pytest.raises(ValueError, match="alpha"):
        convex(DENSE, SPARSE, alpha=1.5)
    with pytest.raises(ValueError, match="normalization"):
        normalize(np.ones(2), "softmax")
    with pytest.raises(ValueError, match="fusion"):
        fuse(DENSE, SPARSE, "max")


def test_mmr_by_hand():
    # Items 0 and 1 are near-duplicates; 2 is different and a little less relevant.
    vectors = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0]])
    relevance = np.array([1.0, 0.95, 0.8])
    assert mmr(relevance, vectors, 3, lam=1.0) == [0, 1, 2]
    assert mmr(relevance, vectors, 2, lam=0.5) == [0, 2]
    with pytest.raises(ValueError):
        mmr(relevance, vectors, 2, lam=2.0)


# -- end to end on the small datastore ---------------------------------------------------------------


@pytest.fixture(scope="module")
def ds(small_datastore):
    from rag import Datastore

    return Datastore.open(small_datastore, device="cpu")


QUERY = "the army and the navy"


def test_hybrid_rrf_equals_fusing_the_single_retrievers(ds):
    retriever = build_retriever(ds, "hybrid", fusion="rrf", alpha=0.5, rrf_k=60, depth=30)  # plain RRF
    hits = retriever.retrieve(QUERY, 10)
    dense = ds.search(QUERY, k=30, mode="dense")
    sparse = ds.search(QUERY, k=30, mode="bm25")
    expected = rrf([[(h.chunk_id, h.score) for h in dense], [(h.chunk_id, h.score) for h in sparse]], 60)[:10]
    assert [(h.chunk_id, round(h.score, 12)) for h in hits] == [(c, round(s, 12)) for c, s in expected]
    texts = {h.chunk_id: h.text for h in dense + sparse}
    assert all(h.text == texts[h.chunk_id] for h in hits)


@pytest.mark.parametrize("normalization", ["minmax", "zscore", "calibrated"])
def test_hybrid_convex_equals_fusing_the_single_retrievers(ds, normalization):
    hits = build_retriever(ds, "hybrid", fusion="convex", alpha=0.3, depth=20,
                           normalization=normalization).retrieve(QUERY, 5)
    dense = [(h.chunk_id, h.score) for h in ds.search(QUERY, k=20, mode="dense")]
    sparse = [(h.chunk_id, h.score) for h in ds.search(QUERY, k=20, mode="bm25")]
    assert [h.chunk_id for h in hits] == [c for c, _ in convex(dense, sparse, 0.3, normalization)[:5]]


def test_mmr_retriever_diversifies_over_stored_embeddings(ds):
    base = build_retriever(ds, "dense", depth=20).retrieve(QUERY, 20)
    same = build_retriever(ds, "dense", depth=20, mmr=1.0).retrieve(QUERY, 5)
    assert [h.chunk_id for h in same] == [h.chunk_id for h in base[:5]]
    diverse = build_retriever(ds, "dense", depth=20, mmr=0.3).retrieve(QUERY, 5)
    vectors = np.stack([ds.embedder.encode_passages([h.text])[0] for h in base])
    expected = mmr(np.array([h.score for h in base]), vectors, 5, 0.3)
    assert [h.chunk_id for h in diverse] == [base[i].chunk_id for i in expected]


def test_search_cli_hybrid_json_and_where(small_datastore):
    from ragcli import main

    result = CliRunner().invoke(main, ["search", str(small_datastore), QUERY, "--mode", "hybrid", "--fusion",
                                       "convex", "--alpha", "0.7", "-k", "4", "--where", "source LIKE '%.html'",
                                       "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert len(hits) == 4 and all(h["source"].endswith(".html") for h in hits)
    assert all(math.isfinite(h["score"]) for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    bad = CliRunner().invoke(main, ["search", str(small_datastore), QUERY, "--where", "1=1; DROP TABLE chunks"])
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    table = CliRunner().invoke(main, ["search", str(small_datastore), QUERY, "--mode", "hybrid", "-v",
                                      "--device", "cpu"])
    assert table.exit_code == 0 and "hybrid (convex)" in table.output  # the default fusion (issue 18)


def test_retriever_config_from_a_pipeline_mapping(ds):
    from rag.retrieve import Retriever, RetrieverConfig

    config = RetrieverConfig.from_dict({"mode": "hybrid", "fusion": "convex", "alpha": 0.8, "depth": 20})
    hits = Retriever(ds, config).retrieve(QUERY, 3)
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in build_retriever(
        ds, "hybrid", fusion="convex", alpha=0.8, depth=20).retrieve(QUERY, 3)]
    with pytest.raises(ValueError, match="unknown retriever setting"):
        RetrieverConfig.from_dict({"mode": "dense", "topk": 3})
    with pytest.raises(ValueError, match="retrieval mode"):
        RetrieverConfig.from_dict({"mode": "sparse"})


def _python_fuse(dense, sparse, method, alpha, rrf_k, normalization):
    """Fusion as dictionaries of Python floats (the implementation before issue 19), the reference."""
    if method == "rrf":
        fused = {}
        for ranked, weight in ((dense, 2.0 * alpha), (sparse, 2.0 * (1.0 - alpha))):
            for rank, (cid, _) in enumerate(ranked, start=1):
                fused[cid] = fused.get(cid, 0.0) + weight / (rrf_k + rank)
    else:
        parts = []
        for ranked, weight, kind in ((dense, alpha, "dense"), (sparse, 1.0 - alpha, "bm25")):
            norm = normalize(np.array([s for _, s in ranked], dtype=np.float64), normalization, kind)
            parts.append((dict(zip([c for c, _ in ranked], norm.tolist())), float(norm.min()) if len(norm) else 0.0,
                          weight))
        every = set().union(*(p[0] for p in parts))
        fused = {cid: sum(w * values.get(cid, floor) for values, floor, w in parts) for cid in every}
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


@pytest.mark.parametrize("method", ["rrf", "convex"])
def test_vectorised_fusion_equals_the_python_reference_bit_for_bit(method):
    rng = np.random.default_rng(7)
    for _ in range(200):
        lists = []
        for _ in range(2):
            ids = rng.choice(120, size=int(rng.integers(0, 40)), replace=False).tolist()
            scores = np.round(rng.random(len(ids)) * rng.choice([1.0, 10.0]), int(rng.choice([1, 8])))
            lists.append(sorted(zip(ids, scores.tolist()), key=lambda p: -p[1]))
        alpha, rrf_k = float(rng.choice([0.0, 0.4, 0.5, 1.0])), int(rng.choice([0, 1, 60]))
        for normalization in ("minmax", "zscore", "calibrated"):
            assert fuse(*lists, method, alpha=alpha, rrf_k=rrf_k, normalization=normalization) == \
                _python_fuse(*lists, method, alpha, rrf_k, normalization)
