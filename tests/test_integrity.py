"""Integrity at read time and in `verify`: same-size corruption of any file a search reads is an
error naming the file (never altered hits), `verify` covers every file, empty queries are refused."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from _ops_data import CHUNKER, passages, text_vectors
from datastores import Bm25Params, DatastoreError, DatastoreWriter
from datastores.dense import DenseSpec, train_dense
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest, write_manifest
from datastores.records import Chunk
from datastores.search import EmptyQueryError
from datastores.verify import verify_datastore
from rag import Datastore
from ragcli import main
from rag.retrieve import build_retriever

TEXTS = passages(words_per_passage=40, count=40)
SPECS = {
    "float-flat": DenseSpec("float-flat"),
    "binary-flat-int8": DenseSpec("binary-flat"),
    "binary-flat-3bit": DenseSpec("binary-flat", bits=3),
    "binary-ivf-int8": DenseSpec("binary-ivf", ivf_nlist=4, ivf_nprobe=2),
}


def build(path: Path, spec: str = "float-flat") -> Path:
    """A datastore of TEXTS (10 chunks per shard) with the dense index ``SPECS[spec]``."""
    writer = DatastoreWriter.create(path, {"texts": len(TEXTS)}, {"name": "hash-vectors", "normalized": True},
                                    CHUNKER, Bm25Params(), dense_index=SPECS[spec])
    vectors = text_vectors(TEXTS)
    if writer.needs_dense_training():
        writer.train_dense(vectors)
    chunks = [Chunk(f"doc{i:04d}", 0, len(t), t, source="doc.txt", metadata={"i": i}) for i, t in enumerate(TEXTS)]
    for start in range(0, len(chunks), 10):
        writer.add_shard(chunks[start:start + 10], vectors[start:start + 10], start)
    writer.finish({"documents": len(chunks)}, vectors.shape[1])
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    return build(tmp_path / "ds")


def _open(path: Path) -> Datastore:
    return Datastore.open(path, query_encoder=text_vectors)


def flip(path: Path, offset: int, mask: int = 0x40) -> None:
    """Change one byte in place: same size, different content."""
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def shard_file(root: Path, shard: int, name: str) -> Path:
    return root / "shards" / f"shard-{shard:05d}" / name


@pytest.mark.parametrize("spec, name", [
    ("float-flat", "dense.faiss"),
    ("binary-flat-int8", "dense.faiss"), ("binary-flat-int8", "rescore.i8.npy"),
    ("binary-flat-3bit", "codes.u8.npy"), ("binary-flat-3bit", "scales.f16.npy"),
    ("binary-ivf-int8", "dense.faiss"),
])
def test_a_flipped_byte_in_a_dense_file_fails_the_search_naming_the_file(tmp_path, spec, name):
    """A byte flipped inside a stored vector (last bytes of the file) makes dense search fail with
    an error naming the file, when the shard's dense layer is first loaded."""
    root = build(tmp_path / "ds", spec)
    assert _open(root).search(TEXTS[12], k=1)[0].chunk_id == 12
    path = shard_file(root, 1, name)
    size = path.stat().st_size
    flip(path, size - 3)
    assert path.stat().st_size == size
    ds = _open(root)
    with pytest.raises(DatastoreError, match=re.escape(str(path)) + ".*sha256"):
        ds.search(TEXTS[12], k=1)
    assert ds.search(TEXTS[12], k=1, mode="bm25")[0].chunk_id == 12  # BM25 does not read dense files


def test_a_flipped_float16_vector_fails_mmr_which_reads_it(root):
    """Float-flat search never reads embeddings.f16.npy (exact scores come from the index); MMR,
    which does, fails naming it, and plain search keeps serving exact results."""
    path = shard_file(root, 1, "embeddings.f16.npy")
    flip(path, path.stat().st_size - 3)
    ds = _open(root)
    assert ds.search(TEXTS[12], k=1)[0].chunk_id == 12
    with pytest.raises(DatastoreError, match=re.escape(str(path)) + ".*sha256"):
        build_retriever(ds, "dense", mmr=0.5, depth=20).retrieve(TEXTS[12], 3)


def test_rag_search_fails_in_one_line_on_an_altered_faiss_index(tmp_path, small_datastore):
    """`rag search` (real embedder) exits 1 with one line naming dense.faiss after a vector's bytes change."""
    root = tmp_path / "ds"
    shutil.copytree(small_datastore, root)
    path = shard_file(root, 0, "dense.faiss")
    flip(path, path.stat().st_size - 9)
    result = CliRunner().invoke(main, ["search", str(root), "the militia of the United States", "-k", "3"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "shard-00000/dense.faiss" in result.output


def _alter_letter(root: Path, shard: int, row: int) -> str:
    """Change one letter of the text of ``row`` in rows.bin so that it stays valid UTF-8 and JSON."""
    path = shard_file(root, shard, "rows.bin")
    offsets = np.load(shard_file(root, shard, "row_offsets.npy"))
    data = bytearray(path.read_bytes())
    lo, hi = int(offsets[row]), int(offsets[row + 1])
    at = lo + data[lo:hi].index(b"the ", data[lo:hi].index(b'"text"'))
    data[at + 2] = ord("a")
    path.write_bytes(bytes(data))
    return json.loads(bytes(data[lo:hi]))["text"]


def test_changed_letters_in_rows_bin_fail_the_hit_naming_file_and_row(root):
    """Letters changed in rows.bin (still valid UTF-8 and JSON) are never served: the hit fails
    with an error naming rows.bin and the row; other rows are still served."""
    altered = _alter_letter(root, 0, 7)
    assert altered != TEXTS[7] and "tha " in altered
    ds = _open(root)
    for mode in ("dense", "bm25"):
        with pytest.raises(DatastoreError, match=r"shard-00000/rows\.bin: row 7 does not match its checksum"):
            ds.search(TEXTS[7], k=3, mode=mode)
    assert ds.search(TEXTS[3], k=1)[0].text == TEXTS[3]
    result = CliRunner().invoke(main, ["search", str(root), TEXTS[7], "--mode", "bm25", "-k", "3"])
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0
    assert "rows.bin: row 7" in result.output and "tha " not in result.output
    problems = {p.problem for p in verify_datastore(root).problems}
    assert "1 row(s) do not match their checksums in row_crc.npy (rows 7)" in problems


@pytest.mark.parametrize("name, mode", [("bm25/data.npy", "bm25"), ("bm25/indices.npy", "bm25"),
                                        ("row_offsets.npy", "dense"), ("row_crc.npy", "dense")])
def test_altered_bm25_and_row_index_files_fail_on_first_load(root, name, mode):
    """BM25 matrices and the row store's offsets and checksums are hashed when first loaded."""
    path = shard_file(root, 2, name)
    flip(path, path.stat().st_size - 2, 0x01)
    with pytest.raises(DatastoreError, match=re.escape(str(path))):
        _open(root).search(TEXTS[25], k=3, mode=mode)


def test_altered_global_terms_chunk_table_and_bitmap_are_errors(root):
    """bm25_terms.parquet is hashed before idf is read, chunks.parquet before SQL reads it, and a
    tombstone bitmap with the same size and count of deletions before it masks rows."""
    from datastores.ops.tombstones import Operation, commit_tombstones

    flip(root / "bm25_terms.parquet", 40, 0x01)
    with pytest.raises(DatastoreError, match="bm25_terms.parquet does not match the sha256"):
        _open(root).search(TEXTS[1], mode="bm25")
    build(root.parent / "b")
    flip(shard_file(root.parent / "b", 3, "chunks.parquet"), 100, 0x01)
    with pytest.raises(DatastoreError, match="shard-00003/chunks.parquet does not match the sha256"):
        _open(root.parent / "b").search(TEXTS[1], where="i > 3")
    other = build(root.parent / "c")
    commit_tombstones(other, read_manifest(DatastoreLayout(other)), np.array([4]), Operation("t", {}))
    bitmap = next((other / "tombstones").iterdir())
    flip(bitmap, 0, 0b00110000)  # row 4 live again, row 5 deleted: same size, same count
    with pytest.raises(DatastoreError, match=re.escape(bitmap.name)):
        _open(other).search(TEXTS[4], k=3)


def test_verify_reports_an_edited_shard_json(root):
    """verify checks each shard.json against the manifest's shard record and names what differs."""
    path = shard_file(root, 1, "shard.json")
    record = json.loads(path.read_text())
    record["shard"]["rows"] = 9
    record["shard"]["files"]["dense.faiss"]["sha256"] = "0" * 64
    path.write_text(json.dumps(record))
    problems = {p.path: p.problem for p in verify_datastore(root).problems}
    assert problems == {str(path): "differs from the manifest's shard record in files, rows (files: dense.faiss)"}
    result = CliRunner().invoke(main, ["datastore", "verify", str(root)])
    assert result.exit_code == 1 and "shard-00001/shard.json" in result.output
    path.unlink()
    assert {p.path: p.problem for p in verify_datastore(root).problems} == {str(path): "missing"}


def test_verify_covers_every_file_and_warns_about_unreferenced_ones(root):
    """verify counts manifest, shard.json files, bm25_terms.parquet and bitmaps, and warns (without
    failing) about files nothing references: strays at the top, in shards/ and in tombstones/."""
    from datastores.ops.tombstones import Operation, commit_tombstones

    commit_tombstones(root, read_manifest(DatastoreLayout(root)), np.array([1, 2]), Operation("t", {}))
    manifest = read_manifest(DatastoreLayout(root))
    report = verify_datastore(root)
    assert report.ok and not report.warnings
    assert report.files == sum(len(s.files) + 1 for s in manifest.shards) + 2 + len(manifest.tombstones)
    (root / "notes.txt").write_text("x")
    (root / "shards" / "shard-00099").mkdir()
    (root / "tombstones" / "shard-00000.op0009-1-abcd.bits").write_bytes(b"\0\0")
    report = verify_datastore(root)
    assert report.ok
    assert sorted(Path(w.path).name for w in report.warnings) == ["notes.txt", "shard-00000.op0009-1-abcd.bits",
                                                                  "shard-00099"]
    assert {w.problem for w in report.warnings} == {"not referenced by the manifest"}
    result = CliRunner().invoke(main, ["datastore", "verify", str(root)])
    assert result.exit_code == 0 and "warning: notes.txt: not referenced by the manifest" in result.output


def _drop_row_checksums(root: Path):
    """Make ``root`` look written before row checksums existed; returns its manifest."""
    layout = DatastoreLayout(root)
    manifest = read_manifest(layout)
    for info in manifest.shards:
        del info.files["row_crc.npy"]
        (layout.shard(info.name) / "row_crc.npy").unlink()
    write_manifest(layout, manifest)
    for info in manifest.shards:  # shard.json records what the manifest records
        path = layout.shard(info.name) / "shard.json"
        record = json.loads(path.read_text())
        del record["shard"]["files"]["row_crc.npy"]
        path.write_text(json.dumps(record))
    return manifest


def test_a_row_store_without_checksums_still_opens_and_verify_says_so(root):
    """Datastores written before row checksums existed are read unchecked; verify warns."""
    manifest = _drop_row_checksums(root)
    ds = _open(root)
    assert ds.search(TEXTS[7], k=1)[0].text == TEXTS[7]
    assert ds.shards[0].rows().crc is None
    report = verify_datastore(root)
    assert report.ok and len(report.warnings) == len(manifest.shards)
    assert all(w.problem.startswith("no row checksums") for w in report.warnings)


def test_verify_checks_the_trained_ivf_index(tmp_path):
    """dense_trained.faiss must be an empty trained index whose centroids are the shards'."""
    root = build(tmp_path / "ds", "binary-ivf-int8")
    trained = root / "dense_trained.faiss"
    assert trained.is_file() and verify_datastore(root).ok
    other = train_dense(SPECS["binary-ivf-int8"], text_vectors([t[::-1] for t in TEXTS]))
    trained.write_bytes(other.trained_index.tobytes())
    assert {p.problem for p in verify_datastore(root).problems} == {
        "its IVF centroids differ from those of shard-00000"}
    trained.write_bytes(b"not an index")
    assert [p.path for p in verify_datastore(root).problems] == [str(trained)]


def _no_encoder(texts):
    raise AssertionError("an empty query must be refused before it is encoded")


@pytest.mark.parametrize("query", ["", "   ", "\n\t "])
@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_an_empty_query_is_refused_in_every_mode(root, mode, query):
    """Empty or whitespace-only query text is an EmptyQueryError (a ValueError and a
    DatastoreError) before anything is encoded or searched; `rag search` prints it in one line."""
    ds = Datastore.open(root, query_encoder=_no_encoder)
    with pytest.raises(EmptyQueryError, match="the query is empty"):
        build_retriever(ds, mode).retrieve(query, 5)
    if mode != "hybrid":
        with pytest.raises(EmptyQueryError):
            ds.search(query, k=5, mode=mode)
    result = CliRunner().invoke(main, ["search", str(root), query, "--mode", mode])
    assert result.exit_code == 1 and result.output.strip() == "Error: the query is empty: give some text to search for"


def test_an_empty_query_among_many_is_named(root):
    """search_many names which query is empty."""
    with pytest.raises(ValueError, match=r"query 2 of 3"):
        _open(root).search_many(["treaty", " ", "militia"], k=2, mode="bm25")


def test_an_unreadable_row_without_checksums_is_an_error_naming_the_row(root):
    """Hits are decoded together (one JSON array); a record that is not JSON still fails with the
    error naming its own row, and the rows around it are still served."""
    _drop_row_checksums(root)
    path = shard_file(root, 0, "rows.bin")
    offsets = np.load(shard_file(root, 0, "row_offsets.npy"))
    data = bytearray(path.read_bytes())
    data[int(offsets[7])] = ord("[")  # '{' -> '[': same size, no longer one JSON value
    path.write_bytes(bytes(data))
    ds = _open(root)
    with pytest.raises(DatastoreError, match=r"shard-00000/rows\.bin: row 7 is corrupt"):
        ds.search(TEXTS[7], k=3, mode="bm25")
    rows = ds.shards[0].rows()
    assert [r["text"] for r in rows.records([8, 6])] == [TEXTS[8], TEXTS[6]]
    with pytest.raises(DatastoreError, match="row 7 is corrupt"):
        rows.records([6, 7, 8])
