"""The versioned ``manifest.json`` that describes a whole datastore."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datastores.errors import DatastoreError, IncompleteBuildError
from datastores.layout import DatastoreLayout, atomic_write_json, unfinished_advice

FORMAT_NAME = "terarag-datastore"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FileInfo:
    """Size and sha256 of one file inside a shard."""

    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its folder name, row count, first global chunk id and files."""

    name: str
    rows: int
    chunk_id_start: int
    files: dict[str, FileInfo]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShardInfo":
        files = {name: FileInfo(**info) for name, info in data["files"].items()}
        return cls(data["name"], int(data["rows"]), int(data["chunk_id_start"]), files)


@dataclass(frozen=True)
class TombstoneInfo:
    """The deletion bitmap of one shard: a file below ``tombstones/``, its size, sha256 and how
    many rows it marks deleted (``np.packbits`` of a boolean [rows] mask, little bit order)."""

    file: str
    bytes: int
    sha256: str
    deleted: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TombstoneInfo":
        return cls(str(data["file"]), int(data["bytes"]), str(data["sha256"]), int(data["deleted"]))


@dataclass
class Manifest:
    """Everything needed to read and query a datastore, and how it was built."""

    embedder: dict[str, Any]
    chunker: dict[str, Any]
    bm25: dict[str, Any]
    dense_index: dict[str, Any]
    shards: list[ShardInfo]
    stats: dict[str, Any]
    build: dict[str, Any] = field(default_factory=dict)
    content_checksum: str = ""
    #: shard name -> deletion bitmap; shards without an entry have every row live
    tombstones: dict[str, TombstoneInfo] = field(default_factory=dict)
    #: every operation applied after the build: operation, parameters, counts, time, seconds
    lineage: list[dict[str, Any]] = field(default_factory=list)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    @property
    def num_chunks(self) -> int:
        return sum(shard.rows for shard in self.shards)

    @property
    def num_deleted(self) -> int:
        return sum(t.deleted for t in self.tombstones.values())

    @property
    def num_live(self) -> int:
        return self.num_chunks - self.num_deleted

    def compute_content_checksum(self) -> str:
        """A digest of everything that determines search results (not timestamps)."""
        payload = {
            "embedder": self.embedder,
            "chunker": self.chunker,
            "bm25": self.bm25,
            "dense_index": self.dense_index,
            "shards": [asdict(shard) for shard in self.shards],
        }
        if self.tombstones:  # absent from older manifests, whose checksums stay valid
            payload["tombstones"] = {name: asdict(t) for name, t in sorted(self.tombstones.items())}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "manifest.json") -> "Manifest":
        if data.get("format") != FORMAT_NAME:
            raise DatastoreError(f"{where}: not a terarag datastore manifest (format={data.get('format')!r})")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise DatastoreError(
                f"{where}: format version {version!r} is not supported (this terarag reads {FORMAT_VERSION})"
            )
        try:
            return cls(
                embedder=dict(data["embedder"]),
                chunker=dict(data["chunker"]),
                bm25=dict(data["bm25"]),
                dense_index=dict(data["dense_index"]),
                shards=[ShardInfo.from_dict(s) for s in data["shards"]],
                stats=dict(data["stats"]),
                build=dict(data.get("build", {})),
                content_checksum=str(data.get("content_checksum", "")),
                tombstones={str(k): TombstoneInfo.from_dict(v) for k, v in data.get("tombstones", {}).items()},
                lineage=[dict(entry) for entry in data.get("lineage", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatastoreError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from exc


def write_manifest(layout: DatastoreLayout, manifest: Manifest) -> None:
    """Stamp the content checksum and commit the manifest atomically."""
    manifest.content_checksum = manifest.compute_content_checksum()
    atomic_write_json(layout.manifest, manifest.to_dict())


def read_manifest(layout: DatastoreLayout) -> Manifest:
    """Read and validate ``manifest.json``; errors name the file and what is wrong."""
    root = layout.root
    if not root.exists():
        raise DatastoreError(f"no datastore at {root}: the directory does not exist")
    if not root.is_dir():
        raise DatastoreError(f"no datastore at {root}: not a directory")
    path = layout.manifest
    if not path.exists():
        if layout.build_state.exists():
            raise IncompleteBuildError(f"{root} holds an unfinished build (no {path.name}); {unfinished_advice(layout)}")
        raise DatastoreError(f"no datastore at {root}: {path.name} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatastoreError(f"{path} is corrupt: {exc}") from exc
    if not isinstance(data, dict):
        raise DatastoreError(f"{path} is corrupt: expected a JSON object")
    manifest = Manifest.from_dict(data, where=str(path))
    if manifest.content_checksum and manifest.content_checksum != manifest.compute_content_checksum():
        raise DatastoreError(f"{path} is corrupt: its content checksum does not match its contents")
    return manifest
