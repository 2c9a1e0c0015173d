"""Writing a datastore shard by shard, resumable, with the manifest committed last."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datastores.bm25 import Bm25Params, TermMatrix, merge_document_frequencies
from datastores.chunks import write_chunk_table
from datastores.dense import (
    TRAINED_FILE,
    DenseSpec,
    DenseTraining,
    manifest_dense_index,
    train_dense,
    training_from_manifest,
    write_dense_files,
)
from datastores.errors import DatastoreError
from datastores.layout import (
    BM25_DIR,
    CHUNKS_FILE,
    SHARD_INFO,
    DatastoreLayout,
    OutputState,
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    clear_folder,
    output_state,
    remove_stale_temporaries,
    sha256_file,
    shard_name,
)
from datastores.lock import DatastoreLock, DatastoreLockedError, read_holder
from datastores.manifest import FileInfo, Manifest, ShardInfo, write_manifest
from datastores.records import Chunk
from datastores.rowstore import write_row_store

WRITE_MODES = ("create", "resume", "overwrite")


def fingerprint(params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the build parameters."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


#: the rescoring depth of every build fingerprinted before the depth left the build's identity
PINNED_RESCORE_MULTIPLIER = 4


def build_fingerprints(params: dict[str, Any], embedder: dict[str, Any], chunker: dict[str, Any],
                       bm25: Bm25Params, dense: DenseSpec) -> tuple[str, str]:
    """(this build's fingerprint, the one older code gave the same settings). The rescoring depth is a
    search setting that shapes no file, so the first leaves it out (pinned to 4, its value in every
    build started with the default before, so those resume); the second is the older formula (the
    actual depth, in the params too when it is not 4), so a build started with an explicit depth resumes."""
    settings = dense.settings()  # float-flat's hold no depth

    def of(depth: int, params: dict[str, Any]) -> str:
        depth_part = {"rescore_multiplier": depth} if "rescore_multiplier" in settings else {}
        return fingerprint({"params": params, "embedder": embedder, "chunker": chunker, "bm25": bm25.to_dict(),
                            "dense_index": {**settings, **depth_part}})

    plain = {k: v for k, v in params.items() if k != "rescore_multiplier"}
    depth = dense.rescore_multiplier
    older = plain if depth == PINNED_RESCORE_MULTIPLIER else {**plain, "rescore_multiplier": depth}
    return of(PINNED_RESCORE_MULTIPLIER, plain), of(depth, older)


def chunk_digest(chunks: Sequence[Chunk]) -> str:
    """Identity of a shard's content: document ids and spans of its chunks."""
    digest = hashlib.sha256()
    for c in chunks:
        digest.update(f"{c.doc_id}\x00{c.start}\x00{c.end}\n".encode())
    return digest.hexdigest()


def check_output(root: str | Path, mode: str, resumable: bool = True) -> OutputState:
    """Refuse, with a one-line ``DatastoreError``, to ``mode`` (create / resume / overwrite) the
    folder ``root``; else return what it holds. Only folders that hold nothing but what terarag
    writers leave (a datastore or a killed run's partial output) are resumed or replaced."""
    if mode not in WRITE_MODES:
        raise ValueError(f"unknown write mode {mode!r}")
    state = output_state(root)
    if state.kind == "foreign":
        held = ", ".join(state.foreign[:3])
        raise DatastoreError({
            "create": f"{root} is not empty and holds files terarag did not write ({held}); choose another folder",
            "resume": f"{root} holds no terarag build to resume (it holds {held})",
            "overwrite": f"{root} is not a terarag datastore (it holds {held}); refusing to delete it with --overwrite",
        }[mode])
    if mode == "create" and state.terarag:
        again = "pass --resume to continue the build or --overwrite to replace it" if resumable else \
            "pass --overwrite to replace it"
        what = "a terarag datastore" if state.kind == "datastore" else "the partial output of a killed run"
        raise DatastoreError(f"{root} is not empty: it holds {what}; {again}")
    return state


class DatastoreWriter:
    """Writes the datastore at ``root``; start one with ``create``, ``resume`` or ``overwrite``.

    ``params`` are the build parameters (everything that changes the result); a resumed build
    must use the same ones. Shards are written to temporary folders and renamed into place; the
    manifest is written last, so a killed build never reads as a valid datastore.
    """

    def __init__(self, root: str | Path, params: dict[str, Any], embedder: dict[str, Any],
                 chunker: dict[str, Any], bm25: Bm25Params, dense_index: "str | DenseSpec" = "float-flat",
                 lock: DatastoreLock | None = None):
        """The writer's settings; touches no file (the constructors below prepare the folder)."""
        self.layout = DatastoreLayout(Path(root))
        if lock is not None and lock.root != self.layout.root.resolve():
            raise ValueError(f"the lock of {lock.root} does not cover {self.layout.root}")
        #: the holder token of the writer lock the caller holds: shards are written only while it does
        self.lock_token = lock.holder.token if lock is not None else None
        self.params = params
        self.embedder = embedder
        self.chunker = chunker
        self.bm25 = bm25
        self.dense = DenseSpec.coerce(dense_index)
        self.dense_index = self.dense.type
        #: int8 range / IVF training shared by every shard (train_dense, or reloaded on resume)
        self.training: DenseTraining | None = None
        self.fingerprint, older = build_fingerprints(params, embedder, chunker, bm25, self.dense)
        #: fingerprints of an interrupted run of this build (``build_fingerprints``) that may resume
        self.resumable_fingerprints = frozenset({self.fingerprint, older})
        #: shards of an interrupted run may be adopted (``adopt_shard``) only by a resumed writer
        self.resuming = False
        self.started = False
        self.shards: list[ShardInfo] = []
        self.resumed_shards = 0

    # -- set-up -----------------------------------------------------------------------------

    @classmethod
    def create(cls, *args: Any, resumable: bool = True, **kwargs: Any) -> "DatastoreWriter":
        """A writer of a new datastore (arguments as ``DatastoreWriter``); refuses a folder that
        holds anything (``resumable``: whether the refusal suggests ``--resume``)."""
        writer = cls(*args, **kwargs)
        check_output(writer.layout.root, "create", resumable)
        return writer._start()

    @classmethod
    def resume(cls, *args: Any, **kwargs: Any) -> "DatastoreWriter":
        """A writer continuing the interrupted build in the folder, which must have had the same
        settings; a folder holding only a killed run's leftovers (temporaries, lock, shards without
        a build state) resumes as a fresh build that adopts the shards this build's fingerprint matches."""
        writer = cls(*args, **kwargs)
        if check_output(writer.layout.root, "resume").has_build:
            writer._check_resumable()
        writer.resuming = True
        return writer._start()

    @classmethod
    def overwrite(cls, *args: Any, **kwargs: Any) -> "DatastoreWriter":
        """A writer replacing the datastore (or a killed run's partial output) in the folder: it is
        emptied first; a folder holding files terarag did not write is refused."""
        writer = cls(*args, **kwargs)
        if check_output(writer.layout.root, "overwrite").kind != "absent":
            clear_folder(writer.layout.root)
        return writer._start()

    @classmethod
    def for_mode(cls, mode: str, *args: Any, **kwargs: Any) -> "DatastoreWriter":
        """``create``, ``resume`` or ``overwrite``, named by ``mode`` (``WRITE_MODES``)."""
        if mode not in WRITE_MODES:
            raise ValueError(f"unknown write mode {mode!r}")
        return getattr(cls, mode)(*args, **kwargs)

    def _start(self) -> "DatastoreWriter":
        """Record this build's state in the checked folder; from here on it reads as an unfinished
        build until ``finish`` commits."""
        root = self.layout.root
        root.mkdir(parents=True, exist_ok=True)
        self.layout.shards_dir.mkdir(exist_ok=True)
        remove_stale_temporaries(root)
        remove_stale_temporaries(self.layout.shards_dir)
        self._write_build_state()
        self.layout.manifest.unlink(missing_ok=True)
        self.started = True
        return self

    def _check_started(self) -> None:
        if not self.started:
            raise ValueError("start a DatastoreWriter with create, resume or overwrite before writing")

    def check_lock(self) -> None:
        """Raise if the writer lock this writer was given is now held by someone else (its holder
        was killed and another writer took over: an orphaned task must not write)."""
        if self.lock_token is None:
            return
        holder = read_holder(self.layout.root)
        if holder is None or holder.token != self.lock_token:
            who = holder.describe() if holder else "nobody"
            raise DatastoreLockedError(f"{self.layout.root} is no longer locked by this build (now: {who}); "
                                       "stopping without writing")

    def _check_resumable(self) -> None:
        state_path = self.layout.build_state
        if state_path.exists():
            try:
                state = json.loads(state_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise DatastoreError(f"{state_path} is corrupt ({exc}); rebuild with --overwrite") from exc
            previous = state.get("fingerprint")
        else:
            try:
                manifest = json.loads(self.layout.manifest.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise DatastoreError(f"{self.layout.manifest} is corrupt ({exc}); rebuild with --overwrite") from exc
            previous = manifest.get("build", {}).get("fingerprint")
            state = {"params": manifest.get("build", {}).get("params", {}),
                     "dense_training": manifest.get("dense_index", {})}
        if previous not in self.resumable_fingerprints:
            old = state.get("params", {})
            changed = sorted(k for k in set(old) | set(self.params) if old.get(k) != self.params.get(k))
            detail = f" (changed: {', '.join(changed)})" if changed else " (embedder, chunker or index settings)"
            raise DatastoreError(
                f"cannot resume {self.layout.root}: it was started with different parameters{detail}; "
                "use the original parameters or --overwrite"
            )
        self._load_training(state.get("dense_training"))

    # -- dense training ---------------------------------------------------------------------

    def _write_build_state(self) -> None:
        state = {"fingerprint": self.fingerprint, "params": self.params}
        if self.training is not None:
            state["dense_training"] = self.training.manifest_part()
        atomic_write_json(self.layout.build_state, state)

    def _load_training(self, recorded: dict[str, Any] | None) -> None:
        """Reuse the training of the interrupted build, so resumed shards agree with the kept ones."""
        if recorded is None or not self.dense.needs_training:
            return
        training = training_from_manifest(recorded)
        if self.dense.ivf:
            trained = self.layout.root / TRAINED_FILE
            if not trained.is_file():
                return
            training.trained_index = np.fromfile(trained, dtype=np.uint8)
        if self.dense.rescore == "int8" and training.int8 is None:
            return
        self.training = training

    def reuse_dense_training(self, dense_index: dict[str, Any], source_root: Path) -> None:
        """Adopt the frozen int8 range / IVF training of another datastore (merge, compact, subsample
        rewrite shards of ``source_root`` and must quantize new shards exactly like the old ones)."""
        trained = Path(source_root) / TRAINED_FILE
        if self.dense.ivf and trained.is_file():
            atomic_write_bytes(self.layout.root / TRAINED_FILE, trained.read_bytes())
        self._load_training(dense_index)
        self._write_build_state()

    def needs_dense_training(self) -> bool:
        """True when ``train_dense`` must run before the first shard is written."""
        return self.dense.needs_training and self.training is None

    def train_dense(self, sample: np.ndarray) -> DenseTraining:
        """Compute the datastore-wide int8 range / IVF centroids from ``sample`` [n, dim] and record
        them (build state and ``dense_trained.faiss``) before any shard uses them."""
        training = train_dense(self.dense, sample)
        if training.trained_index is not None:
            atomic_write_bytes(self.layout.root / TRAINED_FILE, training.trained_index.tobytes())
        self.training = training
        self._write_build_state()
        return training

    # -- shards -----------------------------------------------------------------------------

    def may_adopt(self, index: int) -> bool:
        """Whether shard ``index`` may come from the interrupted run (resuming, and its record is on
        disk); the local engine asks at the shard's first block, before it has all its chunks."""
        return self.resuming and (self.layout.shard(shard_name(index)) / SHARD_INFO).is_file()

    def adopt_shard(self, index: int, chunks: Sequence[Chunk], first_chunk_id: int) -> ShardInfo | None:
        """The resume rule, for every engine: the record of shard ``index`` when the interrupted run
        of this build wrote it from exactly these chunks; None when there is none to adopt (or it is
        unreadable: the shard is written again). A shard written from other input is an error."""
        if not self.may_adopt(index):
            return None
        folder = self.layout.shard(shard_name(index))
        try:
            data = json.loads((folder / SHARD_INFO).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        if (data.get("fingerprint") not in self.resumable_fingerprints or data.get("chunk_digest") != chunk_digest(chunks)
                or data.get("chunk_id_start") != first_chunk_id):
            raise DatastoreError(
                f"{folder} was written from different input; the corpus changed since the interrupted "
                "build, so rebuild with --overwrite"
            )
        return ShardInfo.from_dict(data["shard"])

    def add_shard(self, chunks: Sequence[Chunk], embeddings: np.ndarray, first_chunk_id: int) -> ShardInfo:
        """Adopt or write the next shard in this process and record it (the serial path)."""
        index = len(self.shards)
        adopted = self.adopt_shard(index, chunks, first_chunk_id)
        info = adopted or self.write_shard(index, chunks, embeddings, first_chunk_id)
        self.record_shard(info, resumed=adopted is not None)
        return info

    def record_shard(self, info: ShardInfo, resumed: bool = False) -> None:
        """Make shard ``len(self.shards)`` part of the datastore: the one way a shard is recorded,
        in order, whoever wrote it (``write_shard`` here, in a thread or a Ray worker) or adopted it."""
        if info.name != shard_name(len(self.shards)):
            raise ValueError(f"shard {info.name} recorded out of order (expected {shard_name(len(self.shards))})")
        self.shards.append(info)
        self.resumed_shards += int(resumed)

    def write_shard(self, index: int, chunks: Sequence[Chunk], embeddings: np.ndarray,
                    first_chunk_id: int) -> ShardInfo:
        """Write shard ``index``'s files into place and return its record, without recording it.

        Touches only the shard's own folder, so it can run in another process (a Ray worker on
        the same filesystem) with a pickled copy of this writer.
        """
        if len(embeddings) != len(chunks):
            raise ValueError(f"{len(chunks)} chunks but {len(embeddings)} embeddings")
        self._check_started()
        self.check_lock()
        name = shard_name(index)
        with atomic_directory(self.layout.shard(name)) as tmp:
            write_chunk_table(tmp / CHUNKS_FILE, chunks, first_chunk_id)
            write_row_store(tmp, chunks, first_chunk_id)
            write_dense_files(tmp, embeddings, self.dense, self.training)
            matrix = TermMatrix.from_token_lists([self.bm25.tokenize(c.text) for c in chunks])
            matrix.save(tmp / BM25_DIR)
            files = {
                p.relative_to(tmp).as_posix(): FileInfo(p.stat().st_size, sha256_file(p))
                for p in sorted(tmp.rglob("*")) if p.is_file()
            }
            info = ShardInfo(name, len(chunks), first_chunk_id, files)
            atomic_write_json(tmp / SHARD_INFO, {
                "shard": asdict(info),
                "fingerprint": self.fingerprint,
                "chunk_digest": chunk_digest(chunks),
                "chunk_id_start": first_chunk_id,
                "bm25_tokens": int(matrix.doc_len.sum()),
            })
        return info

    # -- commit -----------------------------------------------------------------------------

    def finish(self, stats: dict[str, Any], embedder_dim: int) -> Manifest:
        """Compute global BM25 statistics, drop stray shards (and a training this index does not use)
        and commit the manifest."""
        self._check_started()
        self.check_lock()
        keep = {s.name for s in self.shards}
        for folder in self.layout.shards_dir.iterdir():
            if folder.is_dir() and folder.name not in keep:
                shutil.rmtree(folder)
        if not self.dense.ivf:  # a killed IVF build's training, not this build's
            (self.layout.root / TRAINED_FILE).unlink(missing_ok=True)
        term_files = [self.layout.shard(s.name) / BM25_DIR / "terms.parquet" for s in self.shards]
        total_tokens = 0
        for s in self.shards:
            total_tokens += json.loads((self.layout.shard(s.name) / SHARD_INFO).read_text())["bm25_tokens"]
        documents = sum(s.rows for s in self.shards)
        bm25_stats = merge_document_frequencies(term_files, self.layout.bm25_terms, documents, total_tokens)
        terms_file = self.layout.bm25_terms
        manifest = Manifest(
            embedder={**self.embedder, "dim": embedder_dim},
            chunker=self.chunker,
            bm25={**self.bm25.to_dict(), "stats": bm25_stats.to_dict(),
                  "terms_file": {"bytes": terms_file.stat().st_size, "sha256": sha256_file(terms_file)}},
            dense_index=manifest_dense_index(self.dense, self.training),
            shards=list(self.shards),
            stats={**stats, "chunks": documents, "shards": len(self.shards)},
            build={"params": self.params, "fingerprint": self.fingerprint},
        )
        write_manifest(self.layout, manifest)
        self.layout.build_state.unlink(missing_ok=True)
        return manifest
