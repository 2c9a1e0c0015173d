"""Dense index types: binary (flat, HNSW, IVF), float IVF-PQ, rescoring layers, filters, builds and resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from indexers.embedding import Embedder
from datastores.dense import DenseShard, DenseSpec, train_dense, write_dense_files
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest, write_manifest
from datastores.verify import verify_datastore
from indexers.build import build_datastore
from indexers.config import BuildConfig, ConfigError, build_config
from rag import Datastore

DIM = 64
QUERIES = ["treaty with Spain", "the militia and the public debt", "commerce and navigation",
           "Indian tribes on the frontier", "the national bank"]


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 20 shared centres: structured like embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(20, DIM))
    x = centres[rng.integers(0, 20, n)] + rng.normal(scale=0.8, size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


VECTORS, QVECS = clustered(2000, 0), clustered(40, 1)
EXACT = np.argsort(-(QVECS @ VECTORS.T), axis=1, kind="stable")[:, :10]

SPECS = {
    "binary-flat/int8": DenseSpec("binary-flat"),
    "binary-flat/float16": DenseSpec("binary-flat", "float16"),
    "binary-flat/none": DenseSpec("binary-flat", "none"),
    "binary-flat/3-bit": DenseSpec("binary-flat", bits=3),
    "binary-hnsw/int8": DenseSpec("binary-hnsw", hnsw_m=16),
    "binary-ivf/int8": DenseSpec("binary-ivf", ivf_nlist=16, ivf_nprobe=4),
    "float-ivfpq/float16": DenseSpec("float-ivfpq", "float16", ivf_nlist=16, ivf_nprobe=4),
}


def open_shard(tmp_path, spec: DenseSpec) -> DenseShard:
    training = train_dense(spec, VECTORS[::2]) if spec.needs_training else None
    write_dense_files(tmp_path, VECTORS, spec, training)
    return DenseShard(tmp_path, spec, training, DIM, len(VECTORS))


def recall(rows: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(r.tolist()) & set(e.tolist())) / exact.shape[1] for r, e in zip(rows, exact)]))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_recall_against_exact_search(tmp_path, name):
    spec = SPECS[name]
    shard = open_shard(tmp_path, spec)
    scores, rows = shard.search(QVECS, 10, rescore_multiplier=10)
    assert rows.shape == (40, 10) and np.all(rows >= 0)
    assert all(len(set(r)) == 10 for r in rows.tolist())
    assert np.all(np.diff(scores, axis=1) <= 0)  # best first
    # sign codes alone < multi-bit codes (asymmetric distance) < int8/float16 rescoring
    floor = 0.2 if spec.rescore == "none" and spec.bits == 1 else 0.6 if spec.bits > 1 else 0.85  # 64 bits only
    assert recall(rows, EXACT) >= floor, name
    if spec.rescore != "none" or spec.bits > 1:  # rescoring helps: more candidates, better recall
        _, few = shard.search(QVECS, 10, rescore_multiplier=1)
        assert recall(rows, EXACT) >= recall(few, EXACT)


def test_rescoring_every_row_equals_exact_float16_search(tmp_path):
    shard = open_shard(tmp_path, DenseSpec("binary-flat", "float16"))
    scores, rows = shard.search(QVECS, 10, rescore_multiplier=len(VECTORS))
    half = VECTORS.astype(np.float16).astype(np.float32)
    exact = half @ QVECS.T
    expected = np.array([np.lexsort((np.arange(len(half)), -exact[:, q]))[:10] for q in range(len(QVECS))])
    assert np.array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(exact.T, expected, axis=1), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_allowed_rows_are_respected_and_k_come_back(tmp_path, name):
    shard = open_shard(tmp_path, SPECS[name])
    allowed = np.zeros(len(VECTORS), dtype=bool)
    allowed[np.random.default_rng(3).choice(len(VECTORS), 300, replace=False)] = True
    _, rows = shard.search(QVECS, 10, allowed)
    assert rows.shape == (40, 10) and np.all(rows >= 0) and allowed[rows].all()
    rare = np.zeros(len(VECTORS), dtype=bool)
    rare[[5, 777, 1999]] = True
    _, rows = shard.search(QVECS[:5], 10, rare)
    assert all(sorted(r[r >= 0].tolist()) == [5, 777, 1999] for r in rows)
    _, none = shard.search(QVECS[:2], 10, np.zeros(len(VECTORS), dtype=bool))
    assert none.shape == (2, 0)


# -- datastores -------------------------------------------------------------------------------------


def dense_hits(ds, vectors, k=5, where=None):
    return [[h.chunk_id for h in hits] for hits in ds.search_vectors(vectors, k=k, where=where)]


@pytest.fixture(scope="module")
def query_vectors(embedder):
    return embedder.encode_passages(QUERIES)


TINY = ["sotu/1790-washington.txt", "sotu/1795-washington.txt"]
IVF = {"dense": {"type": "binary-ivf", "rescore": "int8", "ivf_nlist": 8, "ivf_nprobe": 4, "train_sample": 40},
       "shard_size": 15}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, small_corpus):
    """Two documents (~50 chunks of 100 tokens): enough for several shards, cheap to embed."""
    root = tmp_path_factory.mktemp("tiny")
    for rel in TINY:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small_corpus / rel, root / rel)
    return root


@pytest.fixture(scope="module")
def float_datastore(tmp_path_factory, tiny_corpus, small_config, embedder):
    out = tmp_path_factory.mktemp("float") / "ds"
    build_datastore([tiny_corpus], out, small_config.replace(shard_size=15), embedder=embedder, progress=False)
    return out


@pytest.fixture(scope="module")
def ivf_datastore(tmp_path_factory, tiny_corpus, small_config, embedder):
    out = tmp_path_factory.mktemp("ivf") / "ds"
    build_datastore([tiny_corpus], out, small_config.replace(**IVF), embedder=embedder, progress=False)
    return out


def test_binary_datastore_files_manifest_and_quality(ivf_datastore, float_datastore, query_vectors):
    ds = Datastore.open(ivf_datastore)
    assert len(ds.shards) > 2
    dense = ds.manifest.dense_index
    assert dense["type"] == "binary-ivf" and dense["rescore"] == "int8" and dense["rescore_multiplier"] == 10
    assert dense["ivf"] == {"nlist": 8, "nprobe": 4} and dense["train_sample"] == 40
    assert len(dense["int8"]["low"]) == len(dense["int8"]["high"]) == 384  # one frozen range for all shards
    files = set(ds.manifest.shards[0].files)
    assert {"dense.faiss", "rescore.i8.npy"} <= files and "embeddings.f16.npy" not in files
    assert ds.shards[0].dense().code_size == 384 // 8
    assert verify_datastore(ivf_datastore).ok

    reference = np.array(dense_hits(Datastore.open(float_datastore), query_vectors))
    default = recall(np.array(dense_hits(ds, query_vectors)), reference)
    assert default >= 0.7
    ds.rescore_multiplier = len(ds)  # every row of the probed lists is rescored with int8
    assert recall(np.array(dense_hits(ds, query_vectors)), reference) >= max(default, 0.8)
    filtered = ds.search_vectors(query_vectors, k=5, where="chunk_id % 3 = 0")
    assert all(len(hits) == 5 and all(h.chunk_id % 3 == 0 for h in hits) for hits in filtered)


class FailingEmbedder:
    """The real embedder, failing on a given encode call (a build killed mid-way)."""

    def __init__(self, inner, fail_on: int | None = None):
        self.inner, self.fail_on, self.calls = inner, fail_on, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts, batch_size=None, progress=None):
        self.calls.append(len(texts))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("killed")
        return self.inner.encode(texts, batch_size, progress)


def test_resumed_build_reuses_the_training_and_equals_a_fresh_one(tmp_path, tiny_corpus, small_config, embedder,
                                                                   ivf_datastore):
    config = small_config.replace(**IVF)
    out = tmp_path / "resumed"
    failing = FailingEmbedder(embedder.backend, fail_on=4)  # training sample, shard 0, shard 1, then dies
    with pytest.raises(RuntimeError, match="killed"):
        build_datastore([tiny_corpus], out, config, embedder=Embedder(backend=failing), progress=False)
    assert failing.calls[0] == 40 and (out / "dense_trained.faiss").is_file()
    assert "dense_training" in json.loads((out / "build.json").read_text())
    again = FailingEmbedder(embedder.backend)
    report = build_datastore([tiny_corpus], out, config, resume=True, embedder=Embedder(backend=again), progress=False)
    assert report.shards_resumed == 2
    assert again.calls == [15] * (len(report.manifest.shards) - 3) + [again.calls[-1]]  # shards only, no sample

    a, b = read_manifest(DatastoreLayout(ivf_datastore)), read_manifest(DatastoreLayout(out))
    assert a.content_checksum == b.content_checksum


def test_old_flat_ip_datastores_still_search_the_same(tmp_path, float_datastore, query_vectors):
    old = tmp_path / "old"
    shutil.copytree(float_datastore, old)
    layout = DatastoreLayout(old)
    manifest = read_manifest(layout)
    manifest.dense_index = {"type": "flat-ip", "metric": "inner_product"}
    write_manifest(layout, manifest)
    assert json.loads(layout.manifest.read_text())["dense_index"]["type"] == "flat-ip"
    new = Datastore.open(float_datastore)
    assert new.manifest.dense_index == {"type": "float-flat", "metric": "inner_product"}
    expected = [[(h.chunk_id, h.score) for h in hits] for hits in new.search_vectors(query_vectors, k=5)]
    got = [[(h.chunk_id, h.score) for h in hits] for hits in Datastore.open(old).search_vectors(query_vectors, k=5)]
    assert got == expected


@pytest.mark.parametrize("values, message", [
    ({"type": "binary-lsh"}, "dense_index must be one of"),
    ({"rescore": "int4"}, "rescore must be one of"),
    ({"type": "float-flat", "rescore": "int8"}, "float-flat scores exactly"),
    ({"type": "binary-flat", "bits": 2, "rescore": "int8"}, "multi-bit codes"),
    ({"type": "float-ivfpq", "bits": 2}, "bits > 1 needs a binary index"),
    ({"type": "binary-ivf", "ivf_nlist": 4, "ivf_nprobe": 8}, "ivf_nprobe"),
    ({"hnsw_m": 0}, "hnsw_m must be at least 1"),
    ({"bits": 9, "type": "binary-flat"}, "bits must be at most 8"),
])
def test_bad_dense_settings_are_named(values, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"dense": values})


def test_flat_ip_is_an_alias_of_float_flat():
    assert build_config({"dense": {"type": "flat-ip"}}) == BuildConfig()
    assert build_config({"dense": {"type": "binary-hnsw"}}).dense.rescore == "int8"


def test_ivf_with_too_small_a_sample_fails_clearly(tmp_path, tiny_corpus, small_config, embedder):
    config = small_config.replace(dense={"type": "binary-ivf", "ivf_nlist": 64, "ivf_nprobe": 4, "train_sample": 20})
    with pytest.raises(Exception, match="needs at least 64 training vectors"):
        build_datastore([tiny_corpus], tmp_path / "ds", config, embedder=embedder, progress=False)


def test_cli_index_and_search_with_rescoring(tmp_path, tiny_corpus):
    from ragcli import main

    out = tmp_path / "ds"
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(tiny_corpus), "-o", str(out), "--chunk-size", "100",
                                  "--shard-size", "20", "--device", "cpu", "-q", "--dense-index", "binary-hnsw",
                                  "--rescore", "float16", "--hnsw-m", "8"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dense_index"]["hnsw"]["m"] == 8 and manifest["dense_index"]["rescore"] == "float16"
    result = runner.invoke(main, ["search", str(out), "treaty with Spain", "-k", "3", "--json",
                                  "--rescore-multiplier", "8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    bad = runner.invoke(main, ["index", str(tiny_corpus), "-o", str(tmp_path / "x"), "--dense-index",
                               "float-flat", "--rescore", "int8", "-q"])
    assert bad.exit_code != 0 and "float-flat scores exactly" in bad.output
