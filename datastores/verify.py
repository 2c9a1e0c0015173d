"""Full verification of a datastore: every file it has, against the manifest.

Checked: ``manifest.json`` (format, content checksum); per shard, every listed file (size, sha256),
``shard.json`` (its shard record equals the manifest's), row counts of every structure and the
CRC32 of every row-store record; ``bm25_terms.parquet`` (sha256, term count); the tombstone
bitmaps; ``dense_trained.faiss`` (readable, empty, trained, the shards' coarse centroids); and
files on disk that nothing references. ``problems`` make a datastore fail; ``warnings`` do not
(files nothing references, a row store written before row checksums existed, missing IVF training).
"""

from __future__ import annotations

import json
import mmap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import pyarrow.parquet as pq

from datastores.dense import RESCORING_FILES, TRAINED_FILE, DenseSpec, open_faiss_index
from datastores.errors import DatastoreError
from datastores.layout import (
    BM25_DIR,
    BM25_TERMS,
    CHUNKS_FILE,
    DENSE_INDEX_FILE,
    EMBEDDINGS_FILE,
    LOCK_FILE,
    MANIFEST,
    SHARD_INFO,
    SHARDS_DIR,
    TOMBSTONES_DIR,
    DatastoreLayout,
    sha256_file,
)
from datastores.manifest import Manifest, ShardInfo, read_manifest
from datastores.ops.tombstones import read_deleted_mask
from datastores.rowstore import ROW_CRC_FILE, ROW_OFFSETS_FILE, ROWS_FILE, row_checksums

ROOT_NAMES = frozenset({MANIFEST, BM25_TERMS, SHARDS_DIR, TOMBSTONES_DIR, LOCK_FILE})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a named file."""

    path: str
    problem: str


@dataclass
class VerifyReport:
    """What ``verify_datastore`` checked and found."""

    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def count(self, path: Path) -> None:
        self.files += 1
        self.bytes += path.stat().st_size

    def add(self, path: Path | str, problem: str) -> None:
        self.problems.append(Problem(str(path), problem))


def _check_hashes(folder: Path, info: ShardInfo, report: VerifyReport, progress: Callable[[int], None]) -> None:
    for name, expected in sorted(info.files.items()):
        path = folder / name
        if not path.is_file():
            report.add(path, "missing")
            continue
        size = path.stat().st_size
        report.count(path)
        progress(size)
        if size != expected.bytes:
            report.add(path, f"{size} bytes, manifest records {expected.bytes} (truncated or altered)")
        elif sha256_file(path) != expected.sha256:
            report.add(path, "sha256 differs from the manifest (altered)")
    listed = set(info.files) | {SHARD_INFO}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.relative_to(folder).as_posix() not in listed:
            report.add(path, "not listed in the manifest")


def _check_shard_record(folder: Path, info: ShardInfo, report: VerifyReport) -> None:
    """``shard.json`` exists and records exactly the manifest's shard record."""
    path = folder / SHARD_INFO
    if not path.is_file():
        report.add(path, "missing")
        return
    report.count(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        recorded = data["shard"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        report.add(path, f"unreadable: {exc}")
        return
    expected = asdict(info)
    if not isinstance(recorded, dict):
        recorded = {}
    differ = sorted(k for k in expected if recorded.get(k) != expected[k])
    if data.get("chunk_id_start") != info.chunk_id_start:
        differ.append("chunk_id_start")
    if differ:
        files = expected["files"], recorded.get("files") or {}
        names = sorted(n for n in set(files[0]) | set(files[1]) if files[0].get(n) != files[1].get(n))
        detail = f" (files: {', '.join(names)})" if names else ""
        report.add(path, f"differs from the manifest's shard record in {', '.join(sorted(set(differ)))}{detail}")


def _check_counts(folder: Path, info: ShardInfo, dim: int, report: VerifyReport) -> None:
    """Row counts of every structure equal the manifest's (files already hash-checked)."""
    checks = {
        CHUNKS_FILE: lambda p: pq.ParquetFile(p).metadata.num_rows,
        EMBEDDINGS_FILE: lambda p: np.load(p, mmap_mode="r").shape[0],
        DENSE_INDEX_FILE: lambda p: open_faiss_index(p).ntotal,
        **{name: lambda p: np.load(p, mmap_mode="r").shape[0] for name in (*RESCORING_FILES, ROW_CRC_FILE)},
        ROW_OFFSETS_FILE: lambda p: len(np.load(p, mmap_mode="r")) - 1,
        f"{BM25_DIR}/doc_len.npy": lambda p: len(np.load(p, mmap_mode="r")),
    }
    already_bad = {p.path for p in report.problems}
    for name, count in checks.items():
        path = folder / name
        if not path.is_file() or str(path) in already_bad:
            continue
        try:
            rows = count(path)
        except Exception as exc:  # any reader failure is a finding about this file
            report.add(path, f"unreadable: {exc}")
            continue
        if rows != info.rows:
            report.add(path, f"holds {rows} rows, manifest records {info.rows}")
    embeddings = folder / EMBEDDINGS_FILE
    if embeddings.is_file() and str(embeddings) not in already_bad:
        try:
            shape = np.load(embeddings, mmap_mode="r").shape
            if len(shape) != 2 or shape[1] != dim:
                report.add(embeddings, f"shape {shape}, expected (rows, {dim})")
        except Exception as exc:
            report.add(embeddings, f"unreadable: {exc}")


def _check_row_checksums(folder: Path, info: ShardInfo, report: VerifyReport) -> None:
    """Every record of ``rows.bin`` matches its CRC32 in ``row_crc.npy`` (read-time check, here for all)."""
    rows_path = folder / ROWS_FILE
    if ROW_CRC_FILE not in info.files:
        report.warnings.append(Problem(str(rows_path), "no row checksums (written before they existed); "
                                                        "rows are not checked at read time"))
        return
    try:
        offsets = np.load(folder / ROW_OFFSETS_FILE, mmap_mode="r")
        recorded = np.load(folder / ROW_CRC_FILE, mmap_mode="r")
        with open(rows_path, "rb") as handle:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if rows_path.stat().st_size else b""
    except (OSError, ValueError):
        return  # missing or unreadable files are reported by the hash and count checks
    if len(recorded) != len(offsets) - 1 or int(offsets[-1]) != len(data):
        return
    bad = np.flatnonzero(row_checksums(data, offsets) != recorded)
    if len(bad):
        first = ", ".join(map(str, bad[:5].tolist()))
        report.add(rows_path, f"{len(bad)} row(s) do not match their checksums in {ROW_CRC_FILE} (rows {first}"
                              f"{', ...' if len(bad) > 5 else ''})")


def _check_terms(layout: DatastoreLayout, manifest: Manifest, report: VerifyReport) -> None:
    terms = layout.bm25_terms
    recorded = manifest.bm25.get("terms_file", {})
    if not terms.is_file():
        report.add(terms, "missing")
        return
    report.count(terms)
    if sha256_file(terms) != recorded.get("sha256"):
        report.add(terms, "sha256 differs from the manifest (altered)")
        return
    try:
        rows = pq.ParquetFile(terms).metadata.num_rows
    except Exception as exc:  # a reader failure is a finding about this file
        report.add(terms, f"unreadable: {exc}")
        return
    if rows != manifest.bm25["stats"].get("vocabulary"):
        report.add(terms, f"holds {rows} terms, manifest records {manifest.bm25['stats'].get('vocabulary')}")


def _check_tombstones(layout: DatastoreLayout, manifest: Manifest, report: VerifyReport) -> None:
    """Every deletion bitmap the manifest references exists, hashes right and fits its shard."""
    rows = {s.name: s.rows for s in manifest.shards}
    for name, info in sorted(manifest.tombstones.items()):
        path = layout.root / info.file
        if name not in rows:
            report.add(layout.manifest, f"tombstones for unknown shard {name}")
            continue
        if not path.is_file():
            report.add(path, "missing")
            continue
        report.count(path)
        if path.stat().st_size != info.bytes or sha256_file(path) != info.sha256:
            report.add(path, "size or sha256 differs from the manifest (altered)")
            continue
        try:
            read_deleted_mask(layout.root, info, rows[name])
        except DatastoreError as exc:
            report.add(path, str(exc))


def _coarse_centroids(index: faiss.Index | faiss.IndexBinary) -> np.ndarray:
    """The IVF coarse quantizer's centroids of a float or binary IVF index."""
    ivf = index if isinstance(index, faiss.IndexBinary) else faiss.extract_index_ivf(index)
    quantizer = ivf.quantizer
    return quantizer.reconstruct_n(0, quantizer.ntotal)


def _check_trained(layout: DatastoreLayout, manifest: Manifest, dim: int, report: VerifyReport) -> None:
    """``dense_trained.faiss`` (IVF datastores): an empty trained index whose centroids are the shards'."""
    path = layout.root / TRAINED_FILE
    ivf = DenseSpec.coerce(manifest.dense_index or "float-flat").ivf
    if not path.is_file():
        if ivf:
            report.warnings.append(Problem(str(path), "missing: merge and compact cannot reuse the IVF training"))
        return
    if not ivf:
        report.add(path, "not referenced: the dense index is not IVF")
        return
    report.count(path)
    try:
        trained = open_faiss_index(path)
        if trained.d != dim or trained.ntotal != 0 or not trained.is_trained:
            report.add(path, f"not an empty trained index of dim {dim} (dim {trained.d}, {trained.ntotal} vectors)")
            return
        if manifest.shards:
            shard = open_faiss_index(layout.shard(manifest.shards[0].name) / DENSE_INDEX_FILE)
            if not np.array_equal(_coarse_centroids(trained), _coarse_centroids(shard)):
                report.add(path, f"its IVF centroids differ from those of {manifest.shards[0].name}")
    except (DatastoreError, RuntimeError, AttributeError) as exc:
        report.add(path, f"unreadable: {exc}")


def _check_unreferenced(layout: DatastoreLayout, manifest: Manifest, report: VerifyReport) -> None:
    """Warn about files and folders that nothing in the manifest references (leftovers of killed
    writers, which the next commit removes, or strays); they never change what a search reads."""
    root = layout.root
    known = set(ROOT_NAMES) | {TRAINED_FILE}
    strays = [p for p in root.iterdir() if p.name not in known]
    if layout.shards_dir.is_dir():
        shards = {s.name for s in manifest.shards}
        strays += [p for p in layout.shards_dir.iterdir() if p.name not in shards]
    folder = root / TOMBSTONES_DIR
    if folder.is_dir():
        bitmaps = {t.file for t in manifest.tombstones.values()}
        strays += [p for p in folder.iterdir() if f"{TOMBSTONES_DIR}/{p.name}" not in bitmaps]
    report.warnings += [Problem(str(p), "not referenced by the manifest") for p in sorted(strays)]


def _check_shards(layout: DatastoreLayout, manifest: Manifest, report: VerifyReport,
                  progress: Callable[[int], None]) -> None:
    dim = int(manifest.embedder["dim"])
    expected_start = 0
    for info in manifest.shards:
        folder = layout.shard(info.name)
        if not folder.is_dir():
            report.add(folder, "shard folder is missing")
            continue
        if info.chunk_id_start != expected_start:
            report.add(layout.manifest, f"{info.name} starts at chunk id {info.chunk_id_start}, "
                                        f"expected {expected_start}")
        expected_start = info.chunk_id_start + info.rows
        _check_hashes(folder, info, report, progress)
        _check_shard_record(folder, info, report)
        _check_counts(folder, info, dim, report)
        _check_row_checksums(folder, info, report)


def verify_datastore(root: str | Path, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Re-hash every file and re-count every structure; problems name the file at fault."""
    started = time.perf_counter()
    layout = DatastoreLayout(Path(root))
    report = VerifyReport()
    try:
        manifest: Manifest = read_manifest(layout)
    except DatastoreError as exc:
        report.add(layout.manifest, str(exc))
        report.seconds = time.perf_counter() - started
        return report
    report.count(layout.manifest)
    _check_shards(layout, manifest, report, progress or (lambda _: None))
    _check_terms(layout, manifest, report)
    _check_tombstones(layout, manifest, report)
    _check_trained(layout, manifest, int(manifest.embedder["dim"]), report)
    _check_unreferenced(layout, manifest, report)
    if sum(s.rows for s in manifest.shards) != manifest.bm25["stats"]["documents"]:
        report.add(layout.manifest, "BM25 document count differs from the shard rows")
    report.seconds = time.perf_counter() - started
    return report
