"""Precomputed vectors (``rag index --vectors-field``): JSONL and Parquet, per document or per chunk,
validated with errors naming the record, recorded in the manifest, searched by text or by vector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from datastores.dense import EMBEDDINGS_F16_FILE, read_embeddings
from indexers import BuildConfig, build_datastore, make_chunker
from indexers.config import ConfigError
from indexers.engines import EngineError, EngineOptions
from indexers.readers import ReaderOptions, iter_documents
from indexers.vectors import VectorError
from rag import Datastore
from ragcli import main

SENTENCES = [
    "The treaty of peace was signed at Ghent by the commissioners of both nations.",
    "Congress shall provide for organizing, arming and disciplining the militia.",
    "The public debt was funded and the credit of the nation restored.",
    "A canal from the lakes to the river would open the western country to trade.",
    "The army marched north along the river towards the fortress in winter.",
    "Revenue from the customs exceeded the estimates of the treasury this year.",
    "The judges of the supreme court hold their offices during good behaviour.",
    "Ships of the navy protected commerce in the Mediterranean against pirates.",
]


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _vectors(root: Path) -> np.ndarray:
    shards = sorted((root / "shards").iterdir())
    return np.concatenate([read_embeddings(s / EMBEDDINGS_F16_FILE).astype(np.float32) for s in shards])


def _none_config(**overrides) -> BuildConfig:
    base = dict(chunk_size=200, shard_size=3, device="cpu", vectors_field="emb", embedder="none", dim=16)
    return BuildConfig().replace(**{**base, **overrides})


def test_jsonl_vectors_of_the_declared_embedder_search_like_an_embedded_build(tmp_path, embedder):
    records = [{"id": i, "text": s} for i, s in enumerate(SENTENCES)]
    vectors = embedder.encode_passages(SENTENCES)
    corpus = _write_jsonl(tmp_path / "docs.jsonl", [{**r, "emb": v.tolist()} for r, v in zip(records, vectors)])
    (tmp_path / "plain").mkdir()
    plain = _write_jsonl(tmp_path / "plain" / "docs.jsonl", records)  # same document ids, no vectors
    config = BuildConfig(chunk_size=200, shard_size=3, device="cpu")
    reference = build_datastore([plain], tmp_path / "embedded", config, embedder=embedder, progress=False)
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(corpus), "-o", str(tmp_path / "pre"), "--vectors-field", "emb",
                                  "--embedder", "all-MiniLM-L6-v2", "--chunk-size", "200", "--shard-size", "3",
                                  "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "precomputed" in result.output  # the summary names the vectors' origin
    manifest = json.loads((tmp_path / "pre" / "manifest.json").read_text())
    assert manifest["embedder"]["name"] == "all-MiniLM-L6-v2"
    assert manifest["embedder"]["vectors"] == {"source": "precomputed", "field": "emb", "per": "document",
                                               "normalized_by_build": False}
    assert manifest["embedder"]["weights_sha256"] == reference.manifest.embedder["weights_sha256"]
    assert np.abs(_vectors(tmp_path / "pre") - _vectors(tmp_path / "embedded")).max() < 2e-3
    for query in ("who signed the treaty", "ships against pirates", "the militia"):
        searched = runner.invoke(main, ["search", str(tmp_path / "pre"), query, "-k", "3", "--json"])
        assert searched.exit_code == 0, searched.output
        expected = [h.doc_id.split("#")[1] for h in Datastore.open(tmp_path / "embedded").search(query, k=3)]
        assert [h["doc_id"].split("#")[1] for h in json.loads(searched.stdout)] == expected
    chunk_rows = Datastore.open(tmp_path / "pre").sql().execute("SELECT metadata FROM chunks").fetchall()
    assert all("emb" not in json.loads(m) for (m,) in chunk_rows)  # vectors are not stored as metadata


def _parquet_per_chunk(path: Path, rng: np.random.Generator, dim: int, scale: float = 1.0) -> list[np.ndarray]:
    """Long documents with a list of vectors each, as many as the token chunker cuts them into."""
    texts = [" ".join(SENTENCES[i:] + SENTENCES[:i]) * 2 for i in range(5)]
    chunker = make_chunker("token", 40, 0)
    per_doc = []
    for i, text in enumerate(texts):
        document = next(iter_documents([_write_jsonl(path.parent / f"probe{i}.jsonl", [{"text": text}])]))
        per_doc.append(_unit(rng, len(chunker.chunk(document)), dim) * scale)
    column = pa.array([v.tolist() for v in per_doc], pa.list_(pa.list_(pa.float32())))
    pq.write_table(pa.table({"id": list(range(5)), "text": texts, "emb": column}), path)
    return per_doc


def test_parquet_vectors_per_chunk_normalized_and_searched_by_vector(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "src"
    source.mkdir()
    per_doc = _parquet_per_chunk(source / "docs.parquet", rng, 16, scale=3.0)
    config = _none_config(chunker="token", chunk_size=40, vectors_per="chunk", normalize=True, shard_size=7)
    report = build_datastore([source / "docs.parquet"], tmp_path / "ds", config, progress=False)
    expected = np.concatenate(per_doc) / 3.0
    assert report.chunks == len(expected) and len(report.manifest.shards) >= 3
    assert np.abs(_vectors(tmp_path / "ds") - expected).max() < 1e-3
    assert report.manifest.embedder["vectors"]["normalized_by_build"] is True
    ds = Datastore.open(tmp_path / "ds")
    hits = ds.search_vectors(expected[[0, 5, len(expected) - 1]], k=1)
    assert [h[0].chunk_id for h in hits] == [0, 5, len(expected) - 1]
    with pytest.raises(Exception, match="without a query embedder"):
        ds.search("the treaty", k=1)
    assert ds.search("treaty Ghent", k=1, mode="bm25")[0].text  # BM25 needs no embedder


def test_binary_int8_index_trains_on_the_precomputed_vectors(tmp_path):
    rng = np.random.default_rng(1)
    vectors = _unit(rng, 60, 32)
    corpus = _write_jsonl(tmp_path / "docs.jsonl", [{"text": f"item {i} " + SENTENCES[i % 8], "emb": v.tolist()}
                                                   for i, v in enumerate(vectors)])
    config = _none_config(dim=32, shard_size=25, dense={"type": "binary-flat", "rescore": "int8"})
    report = build_datastore([corpus], tmp_path / "ds", config, progress=False)
    assert report.manifest.dense_index["type"] == "binary-flat"
    ds = Datastore.open(tmp_path / "ds")
    ds.rescore_multiplier = 20
    top = [h[0].chunk_id for h in ds.search_vectors(vectors, k=1)]
    assert np.mean(np.array(top) == np.arange(60)) >= 0.95


BAD_JSONL = {
    "wrong dimension": ({"emb": [0.5] * 4}, "docs.jsonl:3: vector dimension 4 does not match 16"),
    "not finite": ({"emb": [float("nan")] + [0.25] * 15}, "docs.jsonl:3: .* not finite"),
    "not unit length": ({"emb": [1.0] * 16}, r"docs.jsonl:3: vector 0 has norm 4, not 1; pass --normalize"),
    "missing": ({}, "docs.jsonl:3: no vector in field 'emb'"),
    "not numbers": ({"emb": ["a"] * 16}, "docs.jsonl:3: field 'emb' is not a list of numbers"),
    "ragged": ({"emb": [[0.25] * 16, [0.25] * 3]}, "docs.jsonl:3: field 'emb' is not a list of numbers"),
    "two for a document": ({"emb": [[0.25] * 16] * 2}, "docs.jsonl:3: field 'emb' holds 2 vectors; "
                                                       "--vectors-per document expects one"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSONL))
def test_a_bad_jsonl_vector_is_an_error_naming_its_line_and_nothing_is_committed(tmp_path, case):
    bad, message = BAD_JSONL[case]
    good = [{"text": s, "emb": (np.ones(16) / 4).tolist()} for s in SENTENCES[:5]]
    corpus = _write_jsonl(tmp_path / "docs.jsonl", good[:2] + [{"text": "the third record", **bad}] + good[2:])
    with pytest.raises(VectorError, match=message):
        build_datastore([corpus], tmp_path / "ds", _none_config(), progress=False)
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_per_chunk_count_and_parquet_rows_are_named(tmp_path):
    rng = np.random.default_rng(2)
    source = tmp_path / "src"
    source.mkdir()
    per_doc = _parquet_per_chunk(source / "docs.parquet", rng, 16)
    per_doc[3] = per_doc[3][:-1]  # one vector short in row 4
    table = pq.read_table(source / "docs.parquet")
    column = pa.array([v.tolist() for v in per_doc], pa.list_(pa.list_(pa.float32())))
    pq.write_table(table.set_column(2, "emb", column), source / "docs.parquet")
    config = _none_config(chunker="token", chunk_size=40, vectors_per="chunk")
    with pytest.raises(VectorError, match=r"docs.parquet row 4: field 'emb' holds \d+ vectors but the document "
                                          r"was cut into \d+ chunks"):
        build_datastore([source / "docs.parquet"], tmp_path / "ds", config, progress=False)
    with pytest.raises(VectorError, match="no column 'vec' of precomputed vectors"):
        build_datastore([source / "docs.parquet"], tmp_path / "ds2", config.replace(vectors_field="vec"),
                        progress=False)


def test_text_files_have_no_vectors(tmp_path):
    (tmp_path / "a.txt").write_text(SENTENCES[0])
    with pytest.raises(VectorError, match="a.txt: no vector field 'emb'"):
        build_datastore([tmp_path / "a.txt"], tmp_path / "ds", _none_config(), progress=False)


def test_vector_settings_are_checked():
    with pytest.raises(ConfigError, match="dim needs vectors_field"):
        BuildConfig(dim=8)
    with pytest.raises(ConfigError, match="need their dimension"):
        BuildConfig(vectors_field="emb", embedder="none")
    with pytest.raises(ConfigError, match="vectors_per must be one of document, chunk"):
        BuildConfig(vectors_field="emb", vectors_per="page")
    assert "vectors_field" not in BuildConfig().result_params()  # older builds keep their fingerprint
    assert BuildConfig(vectors_field="emb").reader_options == ReaderOptions(vectors_field="emb")


def test_dim_must_match_the_declared_embedder_and_engines_must_be_local(tmp_path, embedder):
    corpus = _write_jsonl(tmp_path / "docs.jsonl", [{"text": SENTENCES[0], "emb": [1.0] + [0.0] * 383}])
    config = BuildConfig(device="cpu", vectors_field="emb", dim=128)
    with pytest.raises(ConfigError, match="--dim 128 does not match the dimension 384"):
        build_datastore([corpus], tmp_path / "a", config, embedder=embedder, progress=False)
    with pytest.raises(EngineError, match="precomputed vectors are written by the local engine"):
        build_datastore([corpus], tmp_path / "b", config.replace(dim=384), embedder=embedder, progress=False,
                        engine=EngineOptions(workers=2))


def test_cli_errors_are_one_line(tmp_path):
    corpus = _write_jsonl(tmp_path / "docs.jsonl", [{"text": SENTENCES[0], "emb": [1.0, 0.0]},
                                                   {"text": SENTENCES[1], "emb": [1.0, 0.0, 0.0]}])
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(corpus), "-o", str(tmp_path / "ds"), "--vectors-field", "emb",
                                  "--dim", "2", "-q"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: docs.jsonl:2: vector dimension 3 does not match 2 (the declared " \
                                    "embedder's or --dim)"
    assert not (tmp_path / "ds" / "manifest.json").exists()
    corpus = _write_jsonl(tmp_path / "docs.jsonl", [{"text": SENTENCES[0], "emb": [3.0, 4.0]}])
    built = runner.invoke(main, ["index", str(corpus), "-o", str(tmp_path / "ds"), "--overwrite",
                                 "--vectors-field", "emb", "--dim", "2", "--normalize", "-q"])
    assert built.exit_code == 0, built.output
    searched = runner.invoke(main, ["search", str(tmp_path / "ds"), "the treaty", "--mode", "dense"])
    assert searched.exit_code == 1
    assert searched.output.count("\n") == 1 and "without a query embedder" in searched.output
    bm25 = runner.invoke(main, ["search", str(tmp_path / "ds"), "treaty", "--mode", "bm25", "--json"])
    assert json.loads(bm25.stdout)[0]["text"] == SENTENCES[0]
