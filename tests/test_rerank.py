"""Reranking with a tiny randomly initialised BERT cross-encoder that the tests build and save (conftest)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rag.retrieve import RerankerError, build_retriever, load_reranker

QUERY = "taxes and the public revenue"


@pytest.fixture(scope="module")
def ds(small_datastore):
    from rag import Datastore

    return Datastore.open(small_datastore, device="cpu")


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_rerank_order_equals_cross_encoder_scores(ds, cross_encoder_dir, mode):
    from sentence_transformers import CrossEncoder

    first_stage = build_retriever(ds, mode, depth=30).retrieve(QUERY, 12)
    reranked = build_retriever(ds, mode, depth=30, rerank=f"cross-encoder:{cross_encoder_dir}", rerank_depth=12,
                               device="cpu").retrieve(QUERY, 12)
    assert {h.chunk_id for h in reranked} == {h.chunk_id for h in first_stage}
    model = CrossEncoder(str(cross_encoder_dir), device="cpu")
    scores = model.predict([(QUERY, h.text) for h in first_stage])
    order = np.lexsort((np.arange(len(scores)), -scores))
    assert [h.chunk_id for h in reranked] == [first_stage[i].chunk_id for i in order]
    assert [h.score for h in reranked] == pytest.approx(sorted(scores.tolist(), reverse=True), abs=1e-5)
    assert [h.chunk_id for h in reranked] != [h.chunk_id for h in first_stage]  # the random model does reorder


def test_rerank_depth_limits_rescoring_and_keeps_the_tail(ds, cross_encoder_dir):
    first_stage = build_retriever(ds, "bm25").retrieve(QUERY, 10)
    reranked = build_retriever(ds, "bm25", rerank=f"cross-encoder:{cross_encoder_dir}", rerank_depth=4,
                               device="cpu").retrieve(QUERY, 10)
    assert {h.chunk_id for h in reranked[:4]} == {h.chunk_id for h in first_stage[:4]}
    assert reranked[4:] == first_stage[4:]


def test_search_cli_rerank(small_datastore, cross_encoder_dir):
    from ragcli import main

    args = ["search", str(small_datastore), QUERY, "-k", "5", "--mode", "hybrid", "--rerank",
            f"cross-encoder:{cross_encoder_dir}", "--rerank-depth", "20", "--device", "cpu", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    candidates = build_retriever(__import__("rag").Datastore.open(small_datastore, device="cpu"), "hybrid").retrieve(
        QUERY, 20)
    reranker = load_reranker(f"cross-encoder:{cross_encoder_dir}", device="cpu")
    scores = reranker.score(QUERY, [h.text for h in candidates])
    best = [candidates[i].chunk_id for i in np.lexsort((np.arange(20), -scores))[:5]]
    assert [h["chunk_id"] for h in hits] == best


@pytest.mark.parametrize("spec", ["cross-encoder", "colbert:x", "cross-encoder:", "nonsense"])
def test_bad_rerank_specs_are_rejected(ds, spec):
    with pytest.raises(RerankerError):
        build_retriever(ds, "dense", rerank=spec)


def test_missing_cross_encoder_is_a_clear_error(tmp_path, small_datastore):
    from ragcli import main

    with pytest.raises(RerankerError, match="cannot load cross-encoder"):
        load_reranker(f"cross-encoder:{tmp_path / 'nope'}")
    result = CliRunner().invoke(main, ["search", str(small_datastore), QUERY, "--rerank",
                                       f"cross-encoder:{tmp_path / 'nope'}"])
    assert result.exit_code != 0 and "cannot load cross-encoder" in result.output
