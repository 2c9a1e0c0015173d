"""The streaming build's pipeline: blocks, read-ahead, background writes, the torch feeder."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import indexers.engines as engines
from datastores.records import Chunk
from indexers.build import build_datastore
from indexers.embedding import PROBE_TEXTS, load_embedder
from indexers.engines import ChunkRun, EngineOptions, chunk_blocks, read_ahead, shard_jobs


def _chunk(i: int) -> Chunk:
    return Chunk(doc_id=str(i), start=0, end=1, text="x")


def _ids(chunks) -> list[int]:
    return [int(c.doc_id) for c in chunks]


def _runs(n: int, cuts: list[int], vectors: bool) -> list[ChunkRun]:
    """Chunks 0..n-1 in runs cut at ``cuts``, each chunk's vector holding its number."""
    bounds = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return [ChunkRun([_chunk(i) for i in range(lo, hi)],
                     np.arange(lo, hi, dtype=np.float32)[:, None] if vectors else None)
            for lo, hi in zip(bounds[:-1], bounds[1:])]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 60), shard_size=st.integers(1, 17), block_size=st.integers(1, 9),
       cuts=st.lists(st.integers(0, 60), max_size=8), vectors=st.booleans())
def test_blocks_cut_shards_at_fixed_offsets(n, shard_size, block_size, cuts, vectors):
    blocks = list(chunk_blocks(iter(_runs(n, cuts, vectors)), shard_size, block_size))
    assert [i for b in blocks for i in _ids(b.chunks)] == list(range(n))
    for b in blocks:
        assert 1 <= len(b.chunks) <= block_size
        offset = _ids(b.chunks)[0] - b.shard_first_chunk_id
        assert offset % block_size == 0  # blocks start at fixed offsets of their shard
        assert b.shard_first_chunk_id == b.shard * shard_size
        assert _ids(b.chunks)[-1] < b.shard_first_chunk_id + shard_size
        if vectors:  # the runs' vectors travel with their chunks, whatever the runs' cut
            assert b.vectors[:, 0].tolist() == _ids(b.chunks)
        else:
            assert b.vectors is None
    assert [b.closes_shard for b in blocks].count(True) == -(-n // shard_size)
    jobs = list(shard_jobs(iter(blocks)))
    assert [j.index for j in jobs] == list(range(len(jobs)))
    assert [len(j.chunks) for j in jobs] == [min(shard_size, n - k) for k in range(0, n, shard_size)]
    assert all(j.first_chunk_id == _ids(j.chunks)[0] for j in jobs)


def test_read_ahead_keeps_order_and_bounds_the_lead():
    produced = []

    def items():
        for i in range(50):
            produced.append(i)
            yield i

    seen = []
    for item in read_ahead(items(), depth=2):
        # the producer is at most depth + 1 items ahead (depth queued, one waiting to be put)
        assert len(produced) - len(seen) <= 4
        seen.append(item)
    assert seen == list(range(50))


def test_read_ahead_raises_the_producers_error():
    def items():
        yield 1
        raise ValueError("bad input file")

    out = []
    with pytest.raises(ValueError, match="bad input file"):
        for item in read_ahead(items()):
            out.append(item)
    assert out == [1]


def test_read_ahead_stops_its_thread_when_the_consumer_stops():
    before = {t.name for t in threading.enumerate() if t.name == "terarag-read"}
    assert not before
    stream = read_ahead(iter(range(1000)), depth=1)
    assert next(stream) == 0
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "terarag-read"]


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def test_overlapped_build_equals_the_sequential_one(tmp_path, small_corpus, small_config, embedder, monkeypatch):
    monkeypatch.setattr(engines, "EMBED_BLOCK", 7)  # several blocks per shard of 40
    config = small_config.replace(shard_size=25)
    reports = {}
    for overlap in (True, False):
        out = tmp_path / f"overlap-{overlap}"
        reports[overlap] = build_datastore([small_corpus], out, config, embedder=embedder, progress=False,
                                           engine=EngineOptions(overlap=overlap))
    on, off = reports[True], reports[False]
    assert len(on.manifest.shards) >= 3
    assert on.manifest.content_checksum == off.manifest.content_checksum
    assert _files(tmp_path / "overlap-True") == _files(tmp_path / "overlap-False")
    assert on.embedding["texts"] == off.embedding["texts"] == on.manifest.num_chunks
    assert on.embedding["batches"] > len(on.manifest.shards)  # embedded block by block


def test_a_failing_write_stops_the_build_with_its_error(tmp_path, small_corpus, small_config, embedder, monkeypatch):
    from datastores import DatastoreWriter

    original = DatastoreWriter.write_shard

    def failing(self, index, *args, **kwargs):
        if index == 1:
            raise OSError("disk full")
        return original(self, index, *args, **kwargs)

    monkeypatch.setattr(DatastoreWriter, "write_shard", failing)
    out = tmp_path / "ds"
    with pytest.raises(OSError, match="disk full"):
        build_datastore([small_corpus], out, small_config.replace(shard_size=20), embedder=embedder,
                        progress=False)
    assert not (out / "manifest.json").exists()  # nothing reads as a valid datastore
    assert (out / "shards" / "shard-00000" / "shard.json").exists()  # the shard before it is kept for --resume


def test_torch_backend_feeds_its_own_token_ids():
    embedder = load_embedder(device="cpu", backend="torch").backend
    assert embedder.feeder is not None
    texts = list(PROBE_TEXTS) + [Path(__file__).read_text(encoding="utf-8")[:3000]]
    vectors = embedder.encode(texts, batch_size=3)
    reference = embedder.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(vectors - reference).max() < 1e-5
    assert embedder.last_stats.truncated == 2
    embedder.feeder = None  # the SentenceTransformer.encode path gives the same vectors
    assert np.abs(embedder.encode(texts, batch_size=3) - vectors).max() < 1e-5


def test_float16_checkpoints_run_in_float32_on_cpu(tmp_path):
    from safetensors.torch import load_file, save_file

    source = Path(load_embedder(device="cpu", backend="torch").backend.location.path_or_name)
    folder = tmp_path / "minilm-fp16"
    shutil.copytree(source, folder)
    weights = load_file(str(source / "model.safetensors"))
    save_file({k: v.half().contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
    embedder = load_embedder(str(folder), device="cpu", backend="torch").backend
    assert {p.dtype for p in embedder.model.parameters()} == {__import__("torch").float32}
    vectors = embedder.encode(list(PROBE_TEXTS))
    reference = load_embedder(device="cpu", backend="torch").encode_passages(list(PROBE_TEXTS))
    assert float(np.min(np.sum(vectors * reference, axis=1))) > 0.999  # only the weights were rounded


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_feeder_matches_the_cpu_model():
    model = os.environ.get("TERARAG_TEST_EMBEDDER", "all-MiniLM-L6-v2")  # a local folder on GPU machines
    gpu = load_embedder(model, device="cuda", backend="torch").backend
    cpu = load_embedder(model, device="cpu", backend="torch").backend
    assert gpu.backend == "torch-fp16" and gpu.feeder is not None and gpu.feeder.pinned
    texts = list(PROBE_TEXTS) * 40
    a, b = gpu.encode(texts, batch_size=16), cpu.encode(texts)
    assert a.dtype == np.float32
    assert float(np.min(np.sum(a * b, axis=1))) > 0.999


def test_embedding_worker_processes_give_the_same_datastore(tmp_path, small_corpus, small_config, monkeypatch):
    from datastores.dense import EMBEDDINGS_F16_FILE, read_embeddings

    import indexers.embed_pool as embed_pool

    monkeypatch.setattr(engines, "EMBED_BLOCK", 9)  # many blocks in flight at once,
    monkeypatch.setattr(embed_pool, "MIN_PIECE", 2)  # each cut into two pieces
    config = small_config.replace(shard_size=25)
    reports = {w: build_datastore([small_corpus], tmp_path / f"workers-{w}", config, progress=False,
                                  engine=EngineOptions(workers=w)) for w in (1, 2)}
    one, two = reports[1], reports[2]
    assert [s.rows for s in one.manifest.shards] == [s.rows for s in two.manifest.shards]
    assert two.embedding["texts"] == one.embedding["texts"] == one.manifest.num_chunks
    assert two.embedding["tokens"] == one.embedding["tokens"] > 0
    shards = sorted(p.name for p in (tmp_path / "workers-1" / "shards").iterdir())
    assert len(shards) >= 3
    for name in shards:
        same = [f"{name}/{f}" for f in ("chunks.parquet", "rows.bin", "row_offsets.npy", "bm25/data.npy")]
        assert {f: _files(tmp_path / "workers-1" / "shards")[f] for f in same} == \
            {f: _files(tmp_path / "workers-2" / "shards")[f] for f in same}
        a = read_embeddings(tmp_path / "workers-1" / "shards" / name / EMBEDDINGS_F16_FILE).astype(np.float32)
        b = read_embeddings(tmp_path / "workers-2" / "shards" / name / EMBEDDINGS_F16_FILE).astype(np.float32)
        assert a.shape == b.shape and np.abs(a - b).max() < 2e-3  # other batches and threads: last bits move


def test_workers_belong_to_the_local_engine():
    with pytest.raises(ValueError, match="workers must be at least 1"):
        EngineOptions(workers=0)
    with pytest.raises(ValueError, match="--num-workers"):
        EngineOptions("ray", workers=2)
