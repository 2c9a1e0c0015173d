"""``--cpu-workers N``: chunking and shard writes in worker processes give the same datastore bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import indexers.cpu_pool as cpu_pool
import indexers.engines as engines
import indexers.readers as readers
from datastores.records import Document
from indexers import BuildConfig, build_datastore, make_chunker
from indexers.cpu_pool import CpuPool, tasks
from indexers.engines import EngineError, EngineOptions
from indexers.vectors import VectorError
from ragcli import main


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in ("manifest.json", ".writer.lock")}


def _corpus(path: Path, n: int, dim: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    words = np.array("treaty peace war congress river city public credit debt navy army court judge".split())
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            vector = rng.normal(size=dim)
            text = " ".join(words[rng.integers(0, len(words), size=int(rng.integers(20, 120)))])
            out.write(json.dumps({"id": i, "text": text, "emb": (vector / np.linalg.norm(vector)).tolist()}) + "\n")
    return path


def test_tasks_keep_order_and_bounds(monkeypatch):
    monkeypatch.setattr(cpu_pool, "TASK_RECORDS", 3)
    monkeypatch.setattr(cpu_pool, "TASK_BYTES", 10)
    docs = [Document(str(i), "x" * (i % 5 + 1), "s") for i in range(20)]
    batches = list(tasks(iter(docs)))
    assert [d.id for b in batches for d in b] == [d.id for d in docs]
    assert all(1 <= len(b) <= 3 for b in batches)
    assert all(sum(len(d.text) for d in b[:-1]) < 10 for b in batches)  # a task closes once it reaches 10


def test_one_and_two_cpu_workers_write_identical_datastores(tmp_path, small_corpus, small_config, embedder,
                                                             monkeypatch):
    monkeypatch.setattr(cpu_pool, "TASK_RECORDS", 1)  # one chunking task per document
    monkeypatch.setattr(engines, "EMBED_BLOCK", 9)
    config = small_config.replace(shard_size=15)
    reports = {n: build_datastore([small_corpus], tmp_path / f"cpu-{n}", config, embedder=embedder, progress=False,
                                  engine=EngineOptions(cpu_workers=n)) for n in (1, 2)}
    one, two = reports[1].manifest, reports[2].manifest
    assert len(one.shards) >= 4
    assert one.content_checksum == two.content_checksum
    assert _files(tmp_path / "cpu-1") == _files(tmp_path / "cpu-2")
    assert one.stats == two.stats and reports[2].timings["write"] > 0


def test_precomputed_build_with_two_workers_and_no_overlap_matches(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PIECE_RECORDS", 7)
    corpus = _corpus(tmp_path / "docs.jsonl", 300)
    config = BuildConfig(chunker="token", chunk_size=30, shard_size=40, vectors_field="emb", embedder="none", dim=8,
                         vectors_per="document")
    for n, overlap in ((1, True), (2, True), (2, False)):
        build_datastore([corpus], tmp_path / f"ds-{n}-{overlap}", config, progress=False,
                        engine=EngineOptions(cpu_workers=n, overlap=overlap))
    reference = _files(tmp_path / "ds-1-True")
    assert len([f for f in reference if f.endswith("shard.json")]) >= 10
    assert _files(tmp_path / "ds-2-True") == reference == _files(tmp_path / "ds-2-False")


def test_a_bad_record_in_a_worker_stops_the_build_naming_it(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PIECE_RECORDS", 5)
    corpus = _corpus(tmp_path / "docs.jsonl", 40)
    lines = corpus.read_text().splitlines()
    record = json.loads(lines[33])
    record["emb"] = [v * 2 for v in record["emb"]]
    lines[33] = json.dumps(record)
    corpus.write_text("\n".join(lines) + "\n")
    config = BuildConfig(chunk_size=50, shard_size=10, vectors_field="emb", embedder="none", dim=8)
    with pytest.raises(VectorError, match=r"docs.jsonl:34: vector 0 has norm 2, not 1"):
        build_datastore([corpus], tmp_path / "ds", config, progress=False, engine=EngineOptions(cpu_workers=2))
    assert not (tmp_path / "ds" / "manifest.json").exists()


def test_cpu_workers_are_checked():
    with pytest.raises(EngineError, match="cpu_workers must be at least 1"):
        EngineOptions(cpu_workers=0)
    with pytest.raises(EngineError, match="--cpu-workers sets the local engine"):
        EngineOptions("ray", cpu_workers=2)
    with CpuPool(1, None, make_chunker("token", 10, 0)) as pool:
        assert pool.write_depth == 0 and pool.executor is None


def test_cli_cpu_workers(tmp_path):
    corpus = _corpus(tmp_path / "docs.jsonl", 60)
    runner = CliRunner()
    for n in (1, 2):
        result = runner.invoke(main, ["index", str(corpus), "-o", str(tmp_path / f"ds{n}"), "--vectors-field", "emb",
                                      "--dim", "8", "--shard-size", "20", "--cpu-workers", str(n), "-q"])
        assert result.exit_code == 0, result.output
    assert _files(tmp_path / "ds1") == _files(tmp_path / "ds2")
