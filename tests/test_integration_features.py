"""Features across each other: quantized datastores (binary-flat + int8, binary-ivf) under
tombstones, compact, subsample, merge, MMR, --where and hybrid search; the Ray engine building a
quantized datastore; the ask pipeline over quantized and tombstoned datastores; verify and info."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from datastores import Bm25Params, DatastoreWriter
from datastores import Datastore as StoredDatastore
from datastores.dense import CODES_FILE, RESCORE_INT8_FILE, TRAINED_FILE, DenseSpec
from datastores.layout import EMBEDDINGS_FILE, DatastoreLayout
from datastores.manifest import read_manifest
from datastores.ops.compact import compact
from datastores.ops.tombstones import Operation, commit_tombstones, deleted_chunk_ids
from datastores.records import Chunk
from indexers.build import build_datastore
from indexers.engines import EngineOptions
from rag import Datastore, Pipeline
from ragcli import main
from rag.retrieve import build_retriever

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What did the president say about public credit and the debt?"
QUERIES = [QUESTION, "the militia and the defense of the frontier", "treaty with the Indian tribes"]


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def cli_json(*args: str):
    return json.loads(cli(*args, "--json"))


def manifest_of(root: Path):
    return read_manifest(DatastoreLayout(root))


def shard_folders(root: Path) -> list[Path]:
    return [DatastoreLayout(root).shard(s.name) for s in manifest_of(root).shards]


def int8_rows(root: Path) -> np.ndarray:
    """Every shard's int8 rescoring codes, concatenated in chunk id order."""
    return np.concatenate([np.load(f / RESCORE_INT8_FILE) for f in shard_folders(root)])


def sign_codes(root: Path) -> np.ndarray:
    """Every shard's binary index codes, concatenated in chunk id order."""
    from datastores.dense import open_faiss_index

    return np.concatenate([open_faiss_index(f / "dense.faiss").reconstruct_n(0, m.rows)
                           for f, m in zip(shard_folders(root), manifest_of(root).shards)])


def verified(root: Path) -> None:
    """``rag datastore verify`` passes and ``rag info`` runs on ``root``."""
    cli("datastore", "verify", root)
    info = cli_json("info", root)
    assert info["manifest"]["content_checksum"] == manifest_of(root).content_checksum
    cli("info", root)


def hit_key(hit) -> tuple:
    return hit.doc_id, hit.start, hit.end


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, small_corpus) -> Path:
    """The two Washington addresses plus a verbatim copy of the first (exact duplicate chunks)."""
    root = tmp_path_factory.mktemp("integration_corpus")
    shutil.copytree(small_corpus / "sotu", root / "sotu")
    (root / "copy").mkdir()
    shutil.copy(small_corpus / "sotu" / "1790-washington.txt", root / "copy" / "1790-again.txt")
    return root


@pytest.fixture(scope="module")
def qconfig(small_config):
    return small_config.replace(dense={"type": "binary-flat", "rescore": "int8"}, shard_size=16)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, corpus, qconfig, embedder) -> Path:
    """binary-flat + int8 rescoring, built by the local engine (never modified: tests copy it)."""
    out = tmp_path_factory.mktemp("integration") / "quantized"
    build_datastore([corpus], out, qconfig, embedder=embedder, progress=False)
    return out


@pytest.fixture(scope="module")
def tombstoned(tmp_path_factory, quantized) -> Path:
    """A copy of ``quantized`` after ``rag datastore dedup`` (the duplicated address tombstoned)."""
    root = tmp_path_factory.mktemp("integration") / "dedup"
    shutil.copytree(quantized, root)
    report = cli_json("datastore", "dedup", root)
    assert report["removed"] > 0
    return root


def _copy(src: Path, tmp_path: Path, name: str) -> Path:
    shutil.copytree(src, tmp_path / name)
    return tmp_path / name


# -- quantized datastores and the datastore operations ----------------------------------------------


def test_quantized_build_keeps_int8_not_float16_and_verifies(quantized):
    manifest = manifest_of(quantized)
    assert manifest.dense_index["type"] == "binary-flat" and manifest.dense_index["rescore"] == "int8"
    assert "int8" in manifest.dense_index and len(manifest.shards) >= 3
    for folder in shard_folders(quantized):
        assert (folder / RESCORE_INT8_FILE).is_file() and not (folder / EMBEDDINGS_FILE).exists()
    verified(quantized)


def test_dedup_tombstones_are_never_returned_by_any_search(tombstoned):
    manifest = manifest_of(tombstoned)
    deleted = set(deleted_chunk_ids(tombstoned, manifest).tolist())
    assert deleted and manifest.num_live == manifest.num_chunks - len(deleted)
    ds = Datastore.open(tombstoned, device="cpu")
    for hits in ds.search_many(QUERIES, k=manifest.num_chunks, mode="dense"):
        assert len(hits) == manifest.num_live and not deleted & {h.chunk_id for h in hits}
    for hits in ds.search_many(QUERIES, k=manifest.num_chunks, mode="bm25"):  # chunks sharing no term drop out
        assert hits and not deleted & {h.chunk_id for h in hits}
    hybrid = build_retriever(ds, "hybrid", mmr=0.5, depth=manifest.num_chunks, device="cpu")
    hits = hybrid.retrieve(QUESTION, 10)
    assert len(hits) == 10 and not deleted & {h.chunk_id for h in hits}
    verified(tombstoned)


def test_where_filters_with_hybrid_and_mmr_on_a_quantized_datastore(tombstoned):
    where = "source LIKE '%1795%'"
    out = cli_json("search", tombstoned, QUESTION, "-k", "4", "--mode", "hybrid", "--mmr", "0.5",
                   "--where", where, "--device", "cpu")
    assert len(out) == 4 and all("1795" in h["source"] for h in out)
    dense = Datastore.open(tombstoned, device="cpu").search(QUESTION, k=50, where=where)
    assert dense and all("1795" in h.source for h in dense)


def test_mmr_reads_the_int8_layer_of_a_binary_datastore(quantized, embedder):
    ds = Datastore.open(quantized, device="cpu")
    manifest = ds.manifest
    ids = [0, manifest.num_chunks - 1, 5, 17, 5]
    vectors = ds.vectors(ids)
    texts = ds.get_chunks(ids)
    exact = embedder.encode_passages([texts[i]["text"] for i in ids])
    step = float(np.max(np.asarray(manifest.dense_index["int8"]["high"]) - manifest.dense_index["int8"]["low"]))
    assert np.max(np.abs(vectors - exact)) <= step / 255 / 2 + 1e-5
    lam0 = build_retriever(ds, "dense", mmr=0.0, depth=20, device="cpu").retrieve(QUESTION, 5)
    plain = ds.search(QUESTION, k=5)
    assert len(lam0) == 5 and lam0[0].chunk_id == plain[0].chunk_id


def test_compact_keeps_codes_calibration_and_results(tombstoned, tmp_path):
    before = manifest_of(tombstoned)
    deleted = deleted_chunk_ids(tombstoned, before)
    live = np.setdiff1d(np.arange(before.num_chunks), deleted)
    out = tmp_path / "compacted"
    cli("datastore", "compact", tombstoned, "-o", out)
    after = manifest_of(out)
    assert after.num_chunks == len(live) and not after.tombstones
    assert after.dense_index == before.dense_index  # the frozen int8 calibration is carried over
    assert np.array_equal(int8_rows(out), int8_rows(tombstoned)[live])
    assert np.array_equal(sign_codes(out), sign_codes(tombstoned)[live])
    old, new = Datastore.open(tombstoned, device="cpu"), Datastore.open(out, device="cpu")
    # same codes, so the same dense results (BM25 statistics are recomputed over the live rows)
    for a, b in zip(old.search_many(QUERIES, k=8), new.search_many(QUERIES, k=8)):
        assert [hit_key(h) for h in a] == [hit_key(h) for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-5, atol=1e-6)
    verified(out)


def test_compact_in_place_after_filter(quantized, tmp_path):
    root = _copy(quantized, tmp_path, "filtered")
    report = cli_json("datastore", "filter", root, "--where", "source NOT LIKE '%copy%'", "--compact")
    assert report["removed"] > 0 and report["compacted_chunks"] == manifest_of(root).num_chunks
    assert all("copy" not in h.source for h in Datastore.open(root, device="cpu").search(QUESTION, k=100))
    verified(root)


def test_subsample_and_merge_of_quantized_datastores(quantized, tombstoned, tmp_path):
    source = manifest_of(quantized)
    sub = tmp_path / "sub"
    written = cli_json("datastore", "subsample", quantized, "-p", "0.5", "--seed", "3", "-o", sub)
    sub_manifest = manifest_of(sub)
    assert sub_manifest.num_chunks == round(0.5 * source.num_chunks) == written["chunks"]
    assert sub_manifest.dense_index == source.dense_index
    verified(sub)
    merged = tmp_path / "merged"
    cli_json("datastore", "merge", tombstoned, sub, "-o", merged, "--prefix")  # both hold the same documents
    m = manifest_of(merged)
    assert m.num_chunks == manifest_of(tombstoned).num_live + sub_manifest.num_chunks
    assert m.dense_index == source.dense_index
    live = np.setdiff1d(np.arange(source.num_chunks), deleted_chunk_ids(tombstoned, manifest_of(tombstoned)))
    expected = np.concatenate([int8_rows(tombstoned)[live], int8_rows(sub)])
    assert np.array_equal(int8_rows(merged), expected)
    assert np.array_equal(sign_codes(merged), np.concatenate([sign_codes(tombstoned)[live], sign_codes(sub)]))
    hits = Datastore.open(merged, device="cpu").search(QUESTION, k=m.num_chunks)
    assert len(hits) == m.num_chunks
    verified(merged)


def test_a_rewrite_without_stored_vectors_names_the_problem(tmp_path):
    # a binary index with rescore none keeps only sign codes: rewriting it needs the source text
    writer = DatastoreWriter.create(tmp_path / "signs", {}, {"name": "hash"}, {"name": "given"}, Bm25Params(),
                                    DenseSpec("binary-flat", rescore="none"))
    rng = np.random.default_rng(0)
    chunks = [Chunk(f"d{i}", 0, 5, f"text number {i}") for i in range(12)]
    writer.add_shard(chunks[:6], rng.standard_normal((6, 16)).astype(np.float32), 0)
    writer.add_shard(chunks[6:], rng.standard_normal((6, 16)).astype(np.float32), 6)
    writer.finish({"documents": 12}, 16)
    manifest = manifest_of(tmp_path / "signs")
    commit_tombstones(tmp_path / "signs", manifest, np.array([2]), Operation("test", {}))
    from datastores.errors import DatastoreError

    with pytest.raises(DatastoreError, match="without re-embedding"):
        compact(tmp_path / "signs", tmp_path / "signs-out")
    assert not (tmp_path / "signs-out" / "manifest.json").exists()


def test_binary_ivf_rewrites_keep_the_trained_index(tmp_path):
    spec = DenseSpec("binary-ivf", ivf_nlist=4, ivf_nprobe=4)
    root = tmp_path / "ivf"
    writer = DatastoreWriter.create(root, {}, {"name": "random"}, {"name": "given"}, Bm25Params(), spec)
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((60, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    writer.train_dense(vectors)
    chunks = [Chunk(f"d{i}", 0, 10, f"passage {i} word{i % 7}") for i in range(60)]
    for start in range(0, 60, 20):
        writer.add_shard(chunks[start:start + 20], vectors[start:start + 20], start)
    writer.finish({"documents": 60}, 32)
    commit_tombstones(root, manifest_of(root), np.arange(3, 60, 4), Operation("test", {}))
    out = tmp_path / "ivf-compact"
    compact(root, out)
    assert (out / TRAINED_FILE).read_bytes() == (root / TRAINED_FILE).read_bytes()
    assert manifest_of(out).dense_index == manifest_of(root).dense_index
    queries = rng.standard_normal((5, 32)).astype(np.float32)
    a = StoredDatastore.open(root).search_vectors(queries, 10)
    b = StoredDatastore.open(out).search_vectors(queries, 10)
    for x, y in zip(a, b):
        assert [hit_key(h) for h in x] == [hit_key(h) for h in y]
        np.testing.assert_allclose([h.score for h in x], [h.score for h in y], rtol=1e-5, atol=1e-6)
    cli("datastore", "verify", out)


def test_multibit_rewrite_keeps_the_first_plane(tmp_path):
    spec = DenseSpec("binary-flat", bits=2)
    root = tmp_path / "bits"
    writer = DatastoreWriter.create(root, {}, {"name": "random"}, {"name": "given"}, Bm25Params(), spec)
    vectors = np.random.default_rng(2).standard_normal((30, 24)).astype(np.float32)
    chunks = [Chunk(f"d{i}", 0, 10, f"passage {i}") for i in range(30)]
    writer.add_shard(chunks, vectors, 0)
    writer.finish({"documents": 30}, 24)
    commit_tombstones(root, manifest_of(root), np.array([0, 7]), Operation("test", {}))
    compact(root, tmp_path / "bits-out")
    keep = np.setdiff1d(np.arange(30), [0, 7])
    planes = lambda r: np.concatenate([np.load(f / CODES_FILE)[:, 0] for f in shard_folders(r)])  # noqa: E731
    assert np.array_equal(planes(tmp_path / "bits-out"), planes(root)[keep])
    cli("datastore", "verify", tmp_path / "bits-out")


# -- the ask pipeline ----------------------------------------------------------------------------


def test_pipeline_over_binary_and_tombstoned_datastores(quantized, tombstoned):
    config = REPO / "configs" / "pipelines" / "default.yaml"
    answer = Pipeline.from_config(config, datastore=Datastore.open(quantized, device="cpu")).ask(QUESTION)
    assert answer.text and answer.citations
    ds = Datastore.open(tombstoned, device="cpu")
    deleted = set(deleted_chunk_ids(tombstoned, ds.manifest).tolist())
    answer = Pipeline.from_config(config, datastore=ds).ask(QUESTION)
    cited = {c.chunk_id for c in answer.citations} | {p.chunk_id for p in answer.context}
    assert answer.citations and not cited & deleted
    # the question is about the duplicated address: its live twins are what gets cited
    assert any("1790" in c.doc_id for c in answer.citations)
    hybrid = Pipeline.from_config({**_yaml(config), "retriever": {"mode": "hybrid", "mmr": 0.5}}, datastore=ds)
    answer = hybrid.ask(QUESTION, where="source LIKE '%1790%'")
    assert answer.citations and not {c.chunk_id for c in answer.citations} & deleted
    assert all("1790" in c.source for c in answer.citations)


def _yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


# -- the Ray engine ----------------------------------------------------------------------------------


def test_ray_engine_builds_the_same_quantized_datastore(tmp_path, corpus, qconfig, embedder, quantized, ray_cluster):
    out = tmp_path / "ray"
    build_datastore([corpus], out, qconfig, embedder=embedder, progress=False,
                    engine=EngineOptions("ray", num_workers=2))
    remote, local = manifest_of(out), manifest_of(quantized)
    assert len(remote.shards) >= 2
    assert remote.dense_index == local.dense_index
    assert remote.content_checksum == local.content_checksum
    assert np.array_equal(int8_rows(out), int8_rows(quantized))
    verified(out)
