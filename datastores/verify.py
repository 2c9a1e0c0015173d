"""Full verification of a datastore: checksums, row counts and index sizes against the manifest."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from datastores.errors import DatastoreError
from datastores.layout import (
    BM25_DIR,
    CHUNKS_FILE,
    DENSE_INDEX_FILE,
    EMBEDDINGS_FILE,
    SHARD_INFO,
    DatastoreLayout,
    sha256_file,
)
from datastores.manifest import Manifest, ShardInfo, read_manifest
from datastores.ops.tombstones import read_deleted_mask
from datastores.rowstore import ROW_OFFSETS_FILE


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

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_hashes(folder: Path, info: ShardInfo, report: VerifyReport, progress: Callable[[int], None]) -> None:
    for name, expected in sorted(info.files.items()):
        path = folder / name
        if not path.is_file():
            report.problems.append(Problem(str(path), "missing"))
            continue
        size = path.stat().st_size
        report.files += 1
        report.bytes += size
        progress(size)
        if size != expected.bytes:
            report.problems.append(Problem(str(path), f"{size} bytes, manifest records {expected.bytes} (truncated or altered)"))
        elif sha256_file(path) != expected.sha256:
            report.problems.append(Problem(str(path), "sha256 differs from the manifest (altered)"))
    listed = set(info.files) | {SHARD_INFO}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.relative_to(folder).as_posix() not in listed:
            report.problems.append(Problem(str(path), "not listed in the manifest"))


def _check_counts(folder: Path, info: ShardInfo, dim: int, report: VerifyReport) -> None:
    """Row counts of every structure equal the manifest's (files already hash-checked)."""
    from datastores.dense import RESCORING_FILES, open_faiss_index

    checks = {
        CHUNKS_FILE: lambda p: pq.ParquetFile(p).metadata.num_rows,
        EMBEDDINGS_FILE: lambda p: np.load(p, mmap_mode="r").shape[0],
        DENSE_INDEX_FILE: lambda p: open_faiss_index(p).ntotal,
        **{name: lambda p: np.load(p, mmap_mode="r").shape[0] for name in RESCORING_FILES},
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
            report.problems.append(Problem(str(path), f"unreadable: {exc}"))
            continue
        if rows != info.rows:
            report.problems.append(Problem(str(path), f"holds {rows} rows, manifest records {info.rows}"))
    embeddings = folder / EMBEDDINGS_FILE
    if embeddings.is_file() and str(embeddings) not in already_bad:
        try:
            shape = np.load(embeddings, mmap_mode="r").shape
            if len(shape) != 2 or shape[1] != dim:
                report.problems.append(Problem(str(embeddings), f"shape {shape}, expected (rows, {dim})"))
        except Exception as exc:
            report.problems.append(Problem(str(embeddings), f"unreadable: {exc}"))


def _check_tombstones(layout: DatastoreLayout, manifest: Manifest, report: VerifyReport) -> None:
    """Every deletion bitmap the manifest references exists, hashes right and fits its shard."""
    rows = {s.name: s.rows for s in manifest.shards}
    for name, info in sorted(manifest.tombstones.items()):
        path = layout.root / info.file
        if name not in rows:
            report.problems.append(Problem(str(layout.manifest), f"tombstones for unknown shard {name}"))
            continue
        if not path.is_file():
            report.problems.append(Problem(str(path), "missing"))
            continue
        report.files += 1
        report.bytes += path.stat().st_size
        if path.stat().st_size != info.bytes or sha256_file(path) != info.sha256:
            report.problems.append(Problem(str(path), "size or sha256 differs from the manifest (altered)"))
            continue
        try:
            read_deleted_mask(layout.root, info, rows[name])
        except DatastoreError as exc:
            report.problems.append(Problem(str(path), str(exc)))


def verify_datastore(root: str | Path, progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Re-hash every file and re-count every structure; problems name the file at fault."""
    started = time.perf_counter()
    layout = DatastoreLayout(Path(root))
    report = VerifyReport()
    progress = progress or (lambda _: None)
    try:
        manifest: Manifest = read_manifest(layout)
    except DatastoreError as exc:
        report.problems.append(Problem(str(layout.manifest), str(exc)))
        report.seconds = time.perf_counter() - started
        return report
    dim = int(manifest.embedder["dim"])
    expected_start = 0
    for info in manifest.shards:
        folder = layout.shard(info.name)
        if not folder.is_dir():
            report.problems.append(Problem(str(folder), "shard folder is missing"))
            continue
        if info.chunk_id_start != expected_start:
            report.problems.append(Problem(str(layout.manifest), f"{info.name} starts at chunk id "
                                           f"{info.chunk_id_start}, expected {expected_start}"))
        expected_start = info.chunk_id_start + info.rows
        _check_hashes(folder, info, report, progress)
        _check_counts(folder, info, dim, report)
    terms = layout.bm25_terms
    recorded = manifest.bm25.get("terms_file", {})
    if not terms.is_file():
        report.problems.append(Problem(str(terms), "missing"))
    else:
        report.files += 1
        report.bytes += terms.stat().st_size
        if sha256_file(terms) != recorded.get("sha256"):
            report.problems.append(Problem(str(terms), "sha256 differs from the manifest (altered)"))
    _check_tombstones(layout, manifest, report)
    if sum(s.rows for s in manifest.shards) != manifest.bm25["stats"]["documents"]:
        report.problems.append(Problem(str(layout.manifest), "BM25 document count differs from the shard rows"))
    report.seconds = time.perf_counter() - started
    return report
