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
from datastores import DatastoreWriter
from datastores.records import Document
from indexers import BuildConfig, build_datastore, make_chunker
from indexers.cpu_pool import CpuPool, tasks
from indexers.engines import EngineError, EngineOptions
from indexers.readers import ReaderOptions, ReadReport, iter_documents
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


WORDS = np.array("treaty peace war congress river city public credit debt navy army court judge".split())


def _records(n: int, per: str, dim: int = 8, seed: int = 1) -> list[dict]:
    """``n`` records with vectors per document or per chunk (as many as a 30-token chunker cuts), a
    duplicate id, an empty text and a record without text among them."""
    rng = np.random.default_rng(seed)
    chunker = make_chunker("token", 30, 0)
    records = []
    for i in range(n):
        text = " ".join(WORDS[rng.integers(0, len(WORDS), size=int(rng.integers(5, 90)))])
        rows = len(chunker.chunk(Document("d", text, "s"))) if per == "chunk" else 1
        vectors = rng.normal(size=(rows, dim))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records.append({"id": i, "text": text, "emb": vectors.tolist() if per == "chunk" else vectors[0].tolist()})
    records[7]["id"] = 3  # a duplicate id: skipped, whoever chunks it
    records[11]["text"] = "   "
    del records[13]["text"]
    return records


def _write(records: list[dict], path: Path) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"id": [r["id"] for r in records], "text": [r.get("text") for r in records],
                          "emb": [r["emb"] for r in records]})
        pq.write_table(table, path, row_group_size=50)
    return path


@pytest.mark.parametrize("kind,per", [("jsonl", "chunk"), ("parquet", "document"), ("parquet", "chunk")])
def test_worker_counts_give_identical_datastores_for_each_input_kind(tmp_path, monkeypatch, kind, per):
    monkeypatch.setattr(readers, "PIECE_RECORDS", 9)   # many pieces ...
    monkeypatch.setattr(cpu_pool, "TASK_RECORDS", 20)  # ... and tasks of several pieces
    corpus = _write(_records(150, per), tmp_path / f"docs.{kind}")
    config = BuildConfig(chunker="token", chunk_size=30, shard_size=45, vectors_field="emb", vectors_per=per,
                         embedder="none", dim=8)
    config = config.replace(dense={"type": "binary-flat", "rescore": "int8", "train_sample": 60})
    reports = {n: build_datastore([corpus], tmp_path / f"ds-{n}", config, progress=False,
                                  engine=EngineOptions(cpu_workers=n)) for n in (1, 2)}
    one, two = reports[1], reports[2]
    assert len(one.manifest.shards) >= 4
    assert _files(tmp_path / "ds-1") == _files(tmp_path / "ds-2")
    assert one.manifest.dense_index == two.manifest.dense_index  # the same training sample
    assert one.manifest.stats == two.manifest.stats and one.manifest.stats["documents"] == 147
    assert [s.path for s in one.read.skipped] == [s.path for s in two.read.skipped]
    assert sorted(s.reason.split(" (")[0] for s in one.read.skipped) == \
        ["duplicate document id", "empty document", "field 'text' is missing or not a string"]


def test_a_resumed_build_with_another_worker_count_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PIECE_RECORDS", 16)
    corpus = _write(_records(120, "document"), tmp_path / "docs.parquet")
    config = BuildConfig(chunker="token", chunk_size=30, shard_size=20, vectors_field="emb", embedder="none",
                         dim=8).replace(dense={"type": "binary-flat", "rescore": "int8", "train_sample": 50})
    build_datastore([corpus], tmp_path / "reference", config, progress=False)
    record = DatastoreWriter.record_shard

    def stop_after_three(writer, info, resumed=False):
        if len(writer.shards) == 3:
            raise KeyboardInterrupt("killed")
        record(writer, info, resumed)

    monkeypatch.setattr(DatastoreWriter, "record_shard", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        build_datastore([corpus], tmp_path / "ds", config, progress=False)
    monkeypatch.setattr(DatastoreWriter, "record_shard", record)
    assert not (tmp_path / "ds" / "manifest.json").exists()
    report = build_datastore([corpus], tmp_path / "ds", config, progress=False, resume=True,
                             engine=EngineOptions(cpu_workers=2))
    assert report.shards_resumed >= 3 and report.shards_written >= 2
    assert _files(tmp_path / "ds") == _files(tmp_path / "reference")


def test_jsonl_pieces_hold_whole_lines_numbered_as_in_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PIECE_RECORDS", 3)
    monkeypatch.setattr(readers, "PIECE_BYTES", 64)
    lines = [json.dumps({"text": f"line {i} " + "x" * (200 if i == 5 else i)}) for i in range(1, 12)]
    lines[3] = ""  # a blank line keeps its number
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())  # a BOM and no final newline
    report = ReadReport()
    pieces = list(readers.iter_pieces([path], ReaderOptions(), report))
    assert all(p.data.count(b"\n") <= 3 for p in pieces) and len(pieces) >= 4
    assert b"".join(p.data for p in pieces) == path.read_bytes()
    ids = [d.id for d in iter_documents([path])]
    assert ids == [f"a.jsonl#L{i}" for i in range(1, 12) if i != 4]
    assert [d.text.split()[1] for d in iter_documents([path])] == [str(i) for i in range(1, 12) if i != 4]


def test_token_chunker_counts_tokens_from_its_one_tokenization():
    chunker = make_chunker("token", 7, 2)
    for text in ("", "one", "Grüße aus Köln, 東京 und 🙂 " * 9, "plain words " * 40):
        document = Document("d", text, "s")
        chunks, tokens = chunker.chunk_counted(document)
        assert chunks == chunker.chunk(document)
        assert tokens == chunker.tokenizer.count(text)


def test_seen_ids_find_every_duplicate_across_runs():
    seen = readers.SeenIds()
    ids = [f"docs/part-{i % 7}.jsonl#{i}" for i in range(5000)]
    again = ids[::37]
    stream = ids[:2500] + again + ids[2500:] + ids[:3] + ["new", "new"]
    fresh = np.concatenate([seen.first_seen(stream[lo:lo + 100]) for lo in range(0, len(stream), 100)])
    expected, known = [], set()
    for doc_id in stream:
        expected.append(doc_id not in known)
        known.add(doc_id)
    assert fresh.tolist() == expected and len(seen.runs) > 1


def test_auto_cpu_workers_uses_every_core_only_for_large_inputs_the_cpu_does_not_embed():
    big = cpu_pool.AUTO_MIN_BYTES
    assert cpu_pool.auto_cpu_workers(big, cpu_embeds=False, cores=16) == 16
    assert cpu_pool.auto_cpu_workers(big - 1, cpu_embeds=False, cores=16) == 1  # pool start-up not worth it
    assert cpu_pool.auto_cpu_workers(10 * big, cpu_embeds=True, cores=16) == 1  # workers would take the embedder's cores
    assert cpu_pool.auto_cpu_workers(big, cpu_embeds=False) == cpu_pool.usable_cores() >= 1


def test_build_input_bytes_counts_the_files_under_its_paths(tmp_path):
    from indexers.build_input import BuildInput

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("x" * 100)
    (tmp_path / "b.txt").write_text("y" * 50)
    assert BuildInput(paths=(tmp_path,)).input_bytes() == 150
    assert BuildInput(paths=(tmp_path / "b.txt", tmp_path / "missing.txt")).input_bytes() == 50
    assert BuildInput(documents=[Document("1", "text", "s")]).input_bytes() == 0


def test_auto_cpu_workers_in_a_build_gives_the_same_datastore(tmp_path, monkeypatch):
    import indexers.build as build

    picked = []

    def any_size(input_bytes, cpu_embeds, cores=None, min_bytes=0):  # as if the input were large
        picked.append(cpu_pool.auto_cpu_workers(input_bytes, cpu_embeds, cores=2, min_bytes=0))
        return picked[-1]

    monkeypatch.setattr(build, "auto_cpu_workers", any_size)
    monkeypatch.setattr(readers, "PIECE_RECORDS", 7)
    corpus = _corpus(tmp_path / "docs.jsonl", 120)
    config = BuildConfig(chunker="token", chunk_size=30, shard_size=40, vectors_field="emb", embedder="none", dim=8)
    build_datastore([corpus], tmp_path / "auto", config, progress=False)  # EngineOptions().cpu_workers is None
    build_datastore([corpus], tmp_path / "one", config, progress=False, engine=EngineOptions(cpu_workers=1))
    assert picked == [2]  # precomputed vectors: the CPU does not embed, so auto takes the (2) cores
    assert _files(tmp_path / "auto") == _files(tmp_path / "one")
