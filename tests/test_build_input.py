"""One build path: evaluation datastores are built by ``build_datastore`` exactly as ``rag index`` builds them."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import EXAMPLES
from datastores import Datastore
from datastores.dense import DenseSpec, read_embeddings
from datastores.layout import EMBEDDINGS_FILE
from datastores.records import Chunk, Document
from evaluators.chunking import ChunkIndex
from evaluators.datasets import load_dataset
from indexers import BuildConfig, BuildInput, build_datastore
from indexers.chunkers import make_chunker
from indexers.embedding import Embedder

PREFIXES = ("query: ", "passage: ")
CORPORA = {"washington": "sotu/1790-washington.txt", "adams": "markdown/1799-adams.md"}


def chunk_rows(root):
    """(text, start, end) of every chunk in chunk id order, and the stored vectors of all shards."""
    ds = Datastore.open(root)
    rows = ds.sql().execute('SELECT text, start, "end" FROM chunks ORDER BY chunk_id').fetchall()
    vectors = np.concatenate([read_embeddings(ds.root / "shards" / s.name / EMBEDDINGS_FILE) for s in ds.manifest.shards])
    return rows, vectors, ds.manifest


@pytest.fixture(scope="module")
def chroma_style(tmp_path_factory):
    """A Chroma-format data set of two real documents, and a folder of the same files for rag index."""
    root = tmp_path_factory.mktemp("chroma_style")
    (root / "corpora").mkdir()
    for name, rel in CORPORA.items():
        shutil.copy(EXAMPLES / rel, root / "corpora" / f"{name}.md")
    text = (root / "corpora" / "washington.md").read_text(encoding="utf-8")
    with open(root / "questions_df.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "references", "corpus_id"])
        refs = [{"content": text[:120], "start_index": 0, "end_index": 120}]
        writer.writerow(["What did the president tell Congress?", json.dumps(refs), "washington"])
    return root


@pytest.fixture(scope="module")
def eval_and_index(chroma_style, embedder, tmp_path_factory):
    """A chunking-evaluation datastore and a ``rag index`` datastore of the same corpus, chunker and model."""
    from ragcli import main

    work = tmp_path_factory.mktemp("one_path")
    index = ChunkIndex(load_dataset(chroma_style), make_chunker("recursive", 100, 0), embedder,
                       workdir=work / "eval", query_prefix=PREFIXES[0], passage_prefix=PREFIXES[1])
    result = CliRunner().invoke(main, ["index", str(chroma_style / "corpora"), "-o", str(work / "index"), "-q",
                                       "--device", "cpu", "--chunk-size", "100", "--overlap", "0",
                                       "--query-prefix", PREFIXES[0], "--passage-prefix", PREFIXES[1]])
    assert result.exit_code == 0, result.output
    yield index, work / "eval", work / "index"
    index.close()


def test_chunking_eval_datastore_is_the_rag_index_datastore(eval_and_index):
    index, evaluated, indexed = eval_and_index
    eval_rows, eval_vectors, eval_manifest = chunk_rows(evaluated)
    index_rows, index_vectors, index_manifest = chunk_rows(indexed)
    assert len(eval_rows) == index.num_chunks > 20
    assert eval_rows == index_rows                                   # chunk texts and exact spans
    assert eval_vectors.tobytes() == index_vectors.tobytes()          # bit-identical vectors
    for key in ("query_prefix", "passage_prefix", "name", "dim"):
        assert eval_manifest.embedder[key] == index_manifest.embedder[key], key
    assert (eval_manifest.embedder["query_prefix"], eval_manifest.embedder["passage_prefix"]) == PREFIXES
    assert eval_manifest.chunker == index_manifest.chunker


def test_chunking_eval_encodes_passages_and_questions_with_their_prefixes(eval_and_index, embedder):
    index, evaluated, _ = eval_and_index
    _, vectors, _ = chunk_rows(evaluated)
    texts = [c.text for c in index.chunks]
    with_prefix = embedder.encode_passages([PREFIXES[1] + t for t in texts])
    without = embedder.encode_passages(texts)
    assert np.abs(vectors - with_prefix).max() < 2e-3 < np.abs(vectors - without).max()
    question = index.dataset.questions[0].text
    assert np.array_equal(index.datastore.query_encoder([question]), embedder.encode_passages([PREFIXES[0] + question]))
    evaluation = index.evaluate(k=3, mode="dense")
    assert (evaluation.settings["query_prefix"], evaluation.settings["passage_prefix"]) == PREFIXES


BEIR_DOCS = {"d1": ("Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower in Paris, France."),
             "d2": ("", "Penicillin was discovered by Alexander Fleming in 1928."),
             "d3": ("Everest", "Mount Everest is Earth's highest mountain above sea level.")}


def test_beir_datastore_equals_a_build_of_the_same_documents(tmp_path, embedder):
    from evaluators.retrieval import evaluate_beir

    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    with open(beir / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for doc_id, (title, text) in BEIR_DOCS.items():
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "Who found penicillin?"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    evaluate_beir(beir, "bm25", embedder=embedder, index_dir=tmp_path / "beir_ds", passage_prefix="p: ")
    documents = [Document(d, f"{t}\n\n{x}" if t else x, d, {}) for d, (t, x) in BEIR_DOCS.items()]
    config = BuildConfig(chunk_size=512, shard_size=50_000, query_prefix="", passage_prefix="p: ")
    build_datastore(BuildInput(documents=documents), tmp_path / "built", config, embedder=embedder, progress=False)
    beir_ds, built = Datastore.open(tmp_path / "beir_ds"), Datastore.open(tmp_path / "built")
    query = 'SELECT chunk_id, doc_id, text, start, "end", metadata FROM all_chunks ORDER BY chunk_id'
    assert beir_ds.sql().execute(query).fetchall() == built.sql().execute(query).fetchall()
    _, beir_vectors, beir_manifest = chunk_rows(tmp_path / "beir_ds")
    _, built_vectors, built_manifest = chunk_rows(tmp_path / "built")
    assert beir_vectors.tobytes() == built_vectors.tobytes()
    assert beir_manifest.embedder == built_manifest.embedder and beir_manifest.embedder["passage_prefix"] == "p: "
    assert beir_manifest.chunker == built_manifest.chunker and beir_manifest.bm25 == built_manifest.bm25
    assert beir_manifest.build["params"]["inputs"] == [f"beir:{beir}"]


class LetterEmbedder:
    """Normalised letter counts (26 of 32 dims, for binary codes): a tiny deterministic embedder."""

    name = "letters"
    spec = {"name": "letters", "normalized": True}
    dim = 32

    def encode(self, texts, batch_size=None, progress=None):
        out = np.zeros((len(texts), 32), np.float32)
        for i, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    out[i, ord(ch) - 97] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_given_chunks_keep_their_spans_ids_and_metadata(tmp_path):
    chunker = make_chunker("recursive", 12, 0)
    chunks = [Chunk("a", 0, 10, "alpha beta", "a", {"k": 1}), Chunk("a", 12, 17, "gamma", "a", {"k": 2}),
              Chunk("b", 3, 8, "delta", "b", {"k": 3})]
    report = build_datastore(BuildInput(chunks=chunks, chunker=chunker, name="mine"), tmp_path / "ds",
                             BuildConfig(embedder="letters", shard_size=2), embedder=Embedder(backend=LetterEmbedder()), progress=False)
    assert report.manifest.stats["documents"] == 2 and report.manifest.stats["characters"] == 17 + 8
    assert len(report.manifest.shards) == 2 and report.manifest.chunker == chunker.spec
    params = report.manifest.build["params"]
    assert params["inputs"] == ["mine"] and "chunk_size" not in params
    rows = Datastore.open(tmp_path / "ds").sql().execute(
        'SELECT chunk_id, doc_id, text, start, "end", metadata FROM all_chunks ORDER BY chunk_id').fetchall()
    assert [(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows] == [
        (i, c.doc_id, c.text, c.start, c.end, c.metadata) for i, c in enumerate(chunks)]


def test_build_input_refuses_bad_combinations():
    chunker = make_chunker("recursive", 12, 0)
    with pytest.raises(ValueError, match="exactly one of paths, documents or chunks"):
        BuildInput()
    with pytest.raises(ValueError, match="exactly one of paths, documents or chunks"):
        BuildInput(paths=("x",), documents=[])
    with pytest.raises(ValueError, match="chunker that made the chunks"):
        BuildInput(chunks=[])
    with pytest.raises(ValueError, match="chunker that made the chunks"):
        BuildInput(documents=[], chunker=chunker)
    assert BuildInput.of(["a", "b"]).recorded == ["a", "b"]


def test_a_training_index_needs_rereadable_documents(tmp_path):
    documents = (Document(f"d{i}", f"text number {i} about rivers and hills", f"d{i}", {}) for i in range(5))
    config = BuildConfig(embedder="letters", dense=DenseSpec("binary-flat"))
    with pytest.raises(ValueError, match="give the documents as a list"):
        build_datastore(BuildInput(documents=documents), tmp_path / "ds", config, embedder=Embedder(backend=LetterEmbedder()),
                        progress=False)
    listed = [Document(f"d{i}", f"text number {i} about rivers and hills", f"d{i}", {}) for i in range(5)]
    report = build_datastore(BuildInput(documents=listed), tmp_path / "ok", config, embedder=Embedder(backend=LetterEmbedder()),
                             progress=False)
    assert report.manifest.num_chunks == 5 and report.manifest.stats["documents"] == 5
