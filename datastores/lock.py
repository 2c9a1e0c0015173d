"""One writer at a time: an exclusive lock file inside the datastore folder.

Every operation that changes a datastore (build, resume, overwrite, tombstone commits, compact,
merge and subsample outputs) holds ``<ds>/.writer.lock`` for its whole run and removes it when it
is done. The lock is an ``fcntl.flock`` on an open file descriptor, so the kernel drops it when
the holder exits or is killed: the stale lock file of a dead process is simply taken over. A
writer that locked a file which was removed or replaced meanwhile notices (the path names another
inode) and locks the current one. The file records who holds it
(pid, host, operation, start time, a random token) for the refusal message. Readers never lock;
they rely on the atomic manifest commit.

Compact builds its copy in ``.NAME.compact-PID-TOKEN`` beside the datastore, locked while it is
written; the next writer of the datastore removes such folders whose lock is free (their writer
died).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from datastores.errors import DatastoreError
from datastores.layout import LOCK_FILE, output_state

STAGING_MARK = ".compact-"
POLL_SECONDS = 0.1
logger = logging.getLogger("terarag.lock")


class DatastoreLockedError(DatastoreError):
    """Another writer holds the datastore's lock."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a writer lock, as recorded in the lock file."""

    pid: int
    operation: str
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    host: str = field(default_factory=socket.gethostname)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (`{self.operation}`, started {self.started})"


def read_holder(root: str | Path) -> LockHolder | None:
    """The holder recorded in ``root``'s lock file (None when absent or unreadable)."""
    for _ in range(5):  # the holder may be writing it right now
        try:
            data = json.loads((Path(root) / LOCK_FILE).read_text(encoding="utf-8"))
            return LockHolder(int(data["pid"]), str(data["operation"]), str(data["started"]), str(data["host"]),
                              str(data["token"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.01)
    return None


@dataclass
class DatastoreLock:
    """A held writer lock of ``root`` (release with ``release`` or by leaving ``writer_lock``)."""

    root: Path
    holder: LockHolder
    fd: int

    def release(self) -> None:
        """Remove the lock file (if it is still ours, at ``root``) and drop the flock."""
        if self.fd < 0:
            return
        path = self.root / LOCK_FILE
        with contextlib.suppress(OSError):
            if _same_file(self.fd, path):
                path.unlink()  # a waiter that opened it re-checks the path after locking and retries
        os.close(self.fd)  # closing the descriptor drops the flock
        self.fd = -1

    def moved_to(self, root: Path) -> None:
        """Record that the locked folder was renamed to ``root`` (compact's directory exchange)."""
        self.root = Path(root).resolve()

    @property
    def active(self) -> bool:
        return self.fd >= 0


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open at ``fd`` (a holder may have replaced it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def try_lock(root: str | Path, operation: str) -> DatastoreLock | None:
    """Take ``root``'s lock if it is free (``root`` must be a folder); None when someone holds it."""
    root = Path(root).resolve()
    path = root / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _same_file(fd, path):
            break
        os.close(fd)  # we locked a file that was replaced meanwhile; lock the current one
    lock = DatastoreLock(root, LockHolder(os.getpid(), operation), fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(asdict(lock.holder), sort_keys=True) + "\n").encode(), 0)
        os.fsync(fd)
    except BaseException:
        lock.release()
        raise
    return lock


def _prepare_folder(root: Path, create: bool) -> None:
    """Check (with ``create``: make) the folder to lock. A lock file never goes into a file, a
    missing datastore or, with ``create``, a folder holding files terarag did not write."""
    if root.exists() and not root.is_dir():
        raise DatastoreError(f"{root} exists and is not a directory")
    if not root.exists():
        if not create:
            raise DatastoreError(f"no datastore at {root}: the directory does not exist")
        root.mkdir(parents=True, exist_ok=True)
    elif create and (state := output_state(root)).kind == "foreign":
        raise DatastoreError(f"{root} is not a terarag datastore (it holds {', '.join(state.foreign[:3])}); "
                             "it is left untouched")


def acquire(root: str | Path, operation: str, wait: bool = False, timeout: float | None = None,
            create: bool = False) -> DatastoreLock:
    """Take ``root``'s writer lock for ``operation``; with ``wait``, block until it is free (at most
    ``timeout`` seconds), else raise ``DatastoreLockedError`` naming the holder at once. ``create``
    makes a missing ``root`` folder. Then removes what killed writers left beside ``root``."""
    root = Path(root).resolve()
    deadline = None if timeout is None else time.monotonic() + timeout
    announced = False
    while True:
        _prepare_folder(root, create)
        with contextlib.suppress(FileNotFoundError):  # the folder vanished meanwhile: prepare it again
            if (lock := try_lock(root, operation)) is not None:
                break
        holder = read_holder(root)
        who = holder.describe() if holder else "another process"
        if not wait or (deadline is not None and time.monotonic() >= deadline):
            waited = f" (waited {timeout:g}s)" if wait else "; wait for it to finish or pass --wait"
            raise DatastoreLockedError(f"{root} is being changed by {who}{waited}")
        if not announced:
            logger.info("waiting for the writer lock of %s, held by %s", root, who)
            announced = True
        time.sleep(POLL_SECONDS)
    remove_dead_staging(root)
    return lock


@contextlib.contextmanager
def writer_lock(root: str | Path, operation: str, *, wait: bool = False, timeout: float | None = None,
                create: bool = False, held: DatastoreLock | None = None) -> Iterator[DatastoreLock]:
    """Hold ``root``'s writer lock for the block (see ``acquire``). A lock the caller already
    ``held`` for the same folder is used as it is, and left held. A folder this call created is
    removed again if the block fails before writing anything into it."""
    root = Path(root).resolve()
    if held is not None and held.active and held.root == root:
        yield held
        return
    created = create and not root.exists()
    lock = acquire(root, operation, wait, timeout, create)
    try:
        yield lock
    except BaseException:
        if created and output_state(root).kind == "empty":
            shutil.rmtree(root, ignore_errors=True)
        raise
    finally:
        lock.release()


def staging_folder(root: str | Path) -> Path:
    """A fresh, unique sibling folder name for building a replacement of ``root`` (compact)."""
    root = Path(root).resolve()
    return root.parent / f".{root.name}{STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def remove_dead_staging(root: str | Path) -> list[Path]:
    """Delete ``staging_folder``s of ``root`` left by killed writers (those whose lock is free);
    call it while holding ``root``'s lock. Returns the folders removed."""
    root = Path(root).resolve()
    removed = []
    prefix = f".{root.name}{STAGING_MARK}"
    for folder in root.parent.iterdir():
        if not (folder.name.startswith(prefix) and folder.is_dir()):
            continue
        lock = try_lock(folder, "remove leftovers")
        if lock is None:
            continue  # its writer is alive (finishing its exchange)
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            lock.release()
    if removed:
        logger.info("removed %d folder(s) left by killed writers of %s", len(removed), root)
    return removed
