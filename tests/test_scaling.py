"""The MassiveDS scaling study: subsample properties, p = 1 equals a direct search, dedup and
decontamination remove what they should, and the CLI writes a table, JSON and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluators.scaling import (
    ScalingSettings,
    ScalingStudy,
    keep_draws,
    load_judge,
    parse_fractions,
    run_scaling,
    subsample_mask,
)


def test_subsample_is_seeded_nested_and_has_the_right_size():
    ids = np.arange(200_000)
    small, large = subsample_mask(ids, 0.1, seed=3), subsample_mask(ids, 0.3, seed=3)
    assert np.all(large[small])                                  # nested: kept at 0.1 => kept at 0.3
    assert abs(small.mean() - 0.1) < 0.005 and abs(large.mean() - 0.3) < 0.005
    assert np.array_equal(small, subsample_mask(ids, 0.1, seed=3))  # same seed, same subset
    assert not np.array_equal(small, subsample_mask(ids, 0.1, seed=4))
    # a chunk's decision does not depend on which other chunks are asked about (same across queries)
    some = np.array([17, 99_999, 5, 123_456])
    assert np.array_equal(subsample_mask(some, 0.1, seed=3), small[some])
    assert subsample_mask(ids[:10], 1.0, seed=0).all()
    draws = keep_draws(ids, 0)
    assert draws.min() >= 0.0 and draws.max() < 1.0


def test_parse_fractions_validates():
    assert parse_fractions("1,0.01,0.1") == (0.01, 0.1, 1.0)
    for bad in ("0,1", "1.5", "a,b", ""):
        with pytest.raises(ValueError):
            parse_fractions(bad)


@pytest.fixture(scope="module")
def store(small_datastore):
    from rag import Datastore

    return Datastore.open(small_datastore)


@pytest.fixture(scope="module")
def questions_file(tmp_path_factory, store) -> Path:
    """Questions whose reference is a sentence of one chunk; the last one copies a whole chunk."""
    rows = store.sql().execute('SELECT chunk_id, doc_id, start, "end", text FROM chunks ORDER BY chunk_id').fetchall()
    out = []
    for chunk_id, doc_id, start, end, text in rows[3::9][:8]:
        words = text.split()
        out.append({"id": f"c{chunk_id}", "question": " ".join(words[5:25]),
                    "references": [{"doc_id": doc_id, "start": start, "end": end}]})
    chunk_id, doc_id, start, end, text = max(rows, key=lambda r: (len(r[4].split()), -r[0]))  # the longest chunk
    out.append({"id": "copy", "question": text, "references": [{"doc_id": doc_id, "start": start, "end": end}]})
    path = tmp_path_factory.mktemp("scaling") / "questions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in out) + "\n", encoding="utf-8")
    return path


def test_full_fraction_without_filters_equals_a_direct_search(store, questions_file):
    judge = load_judge(questions_file, store)
    study = ScalingStudy(store, judge.questions, top_k=30)
    direct = store.search_many(judge.questions, k=5)
    at_one = study.ranked(1.0, seed=0)
    assert [[h.chunk_id for h in hits[:5]] for hits in at_one] == [[h.chunk_id for h in hits] for hits in direct]
    # smaller fractions keep subsets, in the same order, and the same chunks for every query
    tenth, third = study.ranked(0.1, seed=0), study.ranked(0.3, seed=0)
    kept_anywhere = set()
    for full, a, b in zip(at_one, tenth, third):
        ids_a, ids_b, ids_full = [h.chunk_id for h in a], [h.chunk_id for h in b], [h.chunk_id for h in full]
        assert set(ids_a) <= set(ids_b) <= set(ids_full)
        assert ids_b == [i for i in ids_full if i in set(ids_b)]
        kept_anywhere |= set(ids_a)
    for full, a in zip(at_one, tenth):   # a chunk kept for one query is kept for every query that retrieved it
        assert {h.chunk_id for h in full} & kept_anywhere == {h.chunk_id for h in a}
    assert study.ranked(0.3, seed=0) == third and study.ranked(0.3, seed=1) != third


def test_run_scaling_rows_and_span_metrics(store, questions_file):
    judge = load_judge(questions_file, store)
    settings = ScalingSettings(top_k=40, k=5, fractions=(0.1, 0.5, 1.0), seed=0, dedup=False, decontaminate=False)
    result = run_scaling(store, judge, settings)
    assert [r["fraction"] for r in result.rows] == [0.1, 0.5, 1.0]
    assert set(result.metrics) == {"recall", "precision", "iou"}
    full = result.rows[-1]
    # the questions are sentences of their reference chunk: the full datastore finds most of them
    assert full["recall"] > 50
    assert result.rows[0]["candidates"] < result.rows[1]["candidates"] < full["candidates"] == 40


def test_decontamination_removes_a_chunk_that_copies_a_question(store, questions_file):
    judge = load_judge(questions_file, store)
    copied = next(q for q in judge.questions if len(q.split()) > 40)
    settings = ScalingSettings(top_k=20, k=5, fractions=(1.0,), dedup=False, decontaminate=True)
    study = ScalingStudy(store, judge.questions, top_k=20)
    from evaluators.scaling import eval_texts_of

    dirty = study.contaminated(eval_texts_of(judge))
    texts = {h.chunk_id: h.text for hits in study.hits for h in hits}
    assert len(dirty) >= 1 and all(texts[i] == copied for i in dirty.tolist())
    result = run_scaling(store, judge, settings)
    assert result.removed["contaminated"] == len(dirty)


def test_near_duplicates_among_retrieved_are_removed(tmp_path, small_corpus, small_config, embedder):
    from indexers.build import build_datastore
    from rag import Datastore

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    original = (small_corpus / "sotu" / "1790-washington.txt").read_text(encoding="utf-8")
    (corpus / "1790-washington.txt").write_text(original, encoding="utf-8")
    (corpus / "1790-washington-copy.txt").write_text(original.replace("Fellow", "Dear fellow"), encoding="utf-8")
    build_datastore([corpus], tmp_path / "ds", small_config, embedder=embedder, progress=False)
    store = Datastore.open(tmp_path / "ds")
    study = ScalingStudy(store, ["the militia and the public credit", "treaty with the Indian tribes"], top_k=30)
    dups = study.near_duplicates()
    assert len(dups) >= 1
    texts = {h.chunk_id: h.text for hits in study.hits for h in hits}
    assert {texts[i] for i in dups.tolist()} & {texts[i] for i in set(texts) - set(dups.tolist())}  # copies kept once
    for hits in study.ranked(1.0, removed=dups):
        assert not {h.chunk_id for h in hits} & set(dups.tolist())


def test_scaling_cli_writes_table_json_and_plot(small_datastore, questions_file, tmp_path):
    from click.testing import CliRunner

    from ragcli import main

    out, plot = tmp_path / "scaling.json", tmp_path / "scaling.png"
    result = CliRunner().invoke(main, ["eval", "scaling", str(small_datastore), "--dataset", str(questions_file),
                                       "--top-k", "30", "-k", "5", "--fractions", "0.1,1", "--seed", "0",
                                       "--out", str(out), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "Recall" in result.output and "candidates" in result.output
    data = json.loads(out.read_text())
    assert [r["fraction"] for r in data["rows"]] == [0.1, 1.0]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(main, ["eval", "scaling", str(small_datastore), "--dataset", str(questions_file),
                                    "--top-k", "3", "-k", "5"])
    assert bad.exit_code != 0 and "cannot exceed" in bad.output
