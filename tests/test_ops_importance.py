"""Data importance (multilinear extension of the additive top-K utility) and prune-importance."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from datastores import Datastore
from datastores.ops.importance import (
    chunk_importance,
    datastore_importance,
    load_validation,
    multilinear_gradient,
    sampled_gradient,
)
from evaluators.answers import answer_in_context
from indexers.build import build_datastore
from ragcli import main

FACTS = [  # (subject, question, true answer, wrong answer)
    ("the Grelling lighthouse", "In what year was the Grelling lighthouse first lit?", "1874", "1902"),
    ("the Varnholt canal", "Who designed the Varnholt canal?", "Edda Quiller", "Tomas Brack"),
    ("the Osperine festival", "In which month is the Osperine festival held?", "October", "March"),
    ("the Thallow bridge", "How long is the Thallow bridge in metres?", "412", "87"),
    ("the Murrow observatory", "Which lake is the Murrow observatory built beside?", "Lake Penrith", "Lake Dovra"),
    ("the Kessing library", "How many volumes does the Kessing library hold?", "nineteen thousand", "forty"),
]


def _brute_force(u: np.ndarray, w: np.ndarray, k: int) -> float:
    total = 0.0
    for kept in itertools.product([False, True], repeat=len(u)):
        p = np.prod(np.where(kept, w, 1 - w))
        total += p * u[list(kept)][:k].sum() / k
    return total


def test_exact_algorithm_matches_the_definition_and_its_derivative():
    rng = np.random.default_rng(0)
    u, w = rng.random((3, 8)), rng.random((3, 8))
    for k in (1, 3):
        value, grad = multilinear_gradient(u, w, k)
        for q in range(3):
            assert value[q] == pytest.approx(_brute_force(u[q], w[q], k), abs=1e-12)
            for i in range(8):
                up, down = w[q].copy(), w[q].copy()
                up[i], down[i] = 1.0, 0.0  # Ũ is linear in each w_i
                assert grad[q, i] == pytest.approx(_brute_force(u[q], up, k) - _brute_force(u[q], down, k), abs=1e-12)


def test_sampled_approximation_converges_to_the_exact_gradient():
    rng = np.random.default_rng(1)
    u, w = rng.random((4, 12)), np.full((4, 12), 0.5)
    _, exact = multilinear_gradient(u, w, 3)
    approx = sampled_gradient(u, w, 3, samples=4000, seed=0)
    assert np.abs(approx - exact).max() < 0.02
    assert np.abs(sampled_gradient(u, w, 3, samples=4000, seed=0) - approx).max() == 0  # seeded


def test_a_chunk_that_displaces_the_answer_has_negative_importance():
    # one question, ranking: wrong (u=0), right (u=1), neutral (u=0); k=1
    result = chunk_importance([[7, 3, 9]], [[0.0, 1.0, 0.0]], k=1)
    importance = dict(zip(result.chunk_ids.tolist(), result.importance.tolist()))
    # ∂Ũ/∂w_wrong = -u_right·w_right = -0.5; ∂Ũ/∂w_right = P(wrong not kept) = 0.5
    assert importance[7] == pytest.approx(-0.5) and importance[3] == pytest.approx(0.5)
    assert importance[9] == 0.0 and result.chunk_ids[result.order()[0]] == 7
    with pytest.raises(ValueError, match="method"):
        chunk_importance([[1]], [[1.0]], k=1, method="shapley")


@pytest.fixture(scope="module")
def planted(tmp_path_factory, small_corpus, small_config, embedder):
    """Real documents plus, per fact, a correct chunk and a wrong one that mimics the question."""
    root = tmp_path_factory.mktemp("planted")
    corpus = root / "corpus"
    shutil.copytree(small_corpus / "sotu", corpus / "sotu")
    for i, (subject, question, right, wrong) in enumerate(FACTS):
        (corpus / f"fact{i}-right.txt").write_text(f"According to local records, the answer about {subject} "
                                                  f"is {right}.")
        (corpus / f"fact{i}-wrong.txt").write_text(f"{question} {question} It is {wrong}.")
    build_datastore([corpus], root / "ds", small_config, embedder=embedder, progress=False)
    val = root / "val.jsonl"
    val.write_text("".join(json.dumps({"question": q, "answers": [r], "references": []}) + "\n"
                           for _, q, r, _ in FACTS))
    return root / "ds", val


def _wrong_ids(ds: Datastore) -> set[int]:
    rows = ds.get_chunks(range(ds.manifest.num_chunks), include_deleted=True)
    return {i for i, r in rows.items() if "-wrong" in r["doc_id"]}


@pytest.mark.parametrize("mode", ["dense", "bm25"])
def test_planted_wrong_chunks_rank_lowest(planted, embedder, mode):
    root, val = planted
    ds = Datastore.open(root, query_encoder=embedder.encode_queries)
    questions, answers = load_validation(val)
    wrong = _wrong_ids(ds)
    assert len(wrong) == len(FACTS)
    result = datastore_importance(ds, questions, answers, answer_in_context, k=1, candidates=20, mode=mode)
    lowest = set(result.chunk_ids[result.order()[:len(FACTS)]].tolist())
    assert result.importance[np.isin(result.chunk_ids, list(wrong))].max() < 0
    assert lowest == wrong
    sampled = datastore_importance(ds, questions, answers, answer_in_context, k=1, candidates=20, mode=mode,
                                   method="sampled",
                                   samples=3000)
    assert set(sampled.chunk_ids[sampled.order()[:len(FACTS)]].tolist()) == wrong


def test_learned_weights_drop_the_wrong_chunks_and_raise_the_utility(planted):
    root, val = planted
    ds = Datastore.open(root)
    questions, answers = load_validation(val)
    start = datastore_importance(ds, questions, answers, answer_in_context, k=1, candidates=20, mode="bm25")
    learned = datastore_importance(ds, questions, answers, answer_in_context, k=1, candidates=20, mode="bm25",
                                   learn_steps=20)
    weights = dict(zip(learned.chunk_ids.tolist(), learned.importance.tolist()))
    assert all(weights[i] == 0.0 for i in _wrong_ids(ds))
    assert learned.utility > start.utility and 0.0 <= min(weights.values()) <= max(weights.values()) <= 1.0
    right = {i for i, r in ds.get_chunks(range(len(ds))).items() if "-right" in r["doc_id"]}
    assert len(right) == len(FACTS) and right <= set(weights)
    assert all(weights[i] > 0.5 for i in right)


def test_prune_importance_cli_tombstones_the_harmful_chunks(planted, tmp_path):
    root, val = planted
    copy = tmp_path / "ds"
    shutil.copytree(root, copy)
    ds = Datastore.open(copy)
    questions, answers = load_validation(val)
    top1 = lambda d: [answer_in_context([h[0].text], a) for h, a in zip(d.search_many(questions, k=1, mode="bm25"), answers)]
    assert sum(top1(ds)) < len(FACTS)  # the wrong chunks win some questions
    result = CliRunner().invoke(main, ["datastore", "prune-importance", str(copy), "--dataset", str(val),
                                       "--heldout", str(val), "--drop-below", "-0.01", "-k", "1", "--mode", "bm25",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    pruned = Datastore.open(copy)
    assert report["removed"] == len(FACTS) == pruned.manifest.num_deleted
    assert {c["chunk_id"] for c in report["least_important"][:len(FACTS)]} == _wrong_ids(ds)
    assert sum(top1(pruned)) == len(FACTS)  # after pruning every top-1 chunk holds the answer
    assert pruned.manifest.lineage[-1]["operation"] == "prune-importance"


def test_validation_set_needs_answers(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text(json.dumps({"question": "q?", "references": []}) + "\n")
    with pytest.raises(ValueError, match="no answers"):
        load_validation(path)
