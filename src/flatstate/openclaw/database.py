"""One of OpenClaw's SQLite files, opened so that nothing beside it changes.

OpenClaw 2026.9 keeps its databases in WAL mode. An ordinary open, even a
read-only one, creates ``-wal`` and ``-shm`` files beside the database and
takes part in its locking by writing to the ``-shm`` file the gateway shares.
:class:`Database` opens the file with ``immutable=1`` instead: SQLite reads it
as a plain file, takes no lock and creates nothing.

Such an open reads the database file alone, so it cannot see commits still in
a ``-wal`` file (left by a gateway that was killed, or by one that runs). When
a non-empty WAL lies beside the database, the database and its WAL are copied
into a private temporary directory and the copy is opened, where SQLite
replays the WAL as usual; the copy is removed on close.

:func:`file_facts` and :func:`wal_state` read the file header and the ``-shm``
index without SQLite, for ``flatstate doctor``: sizes, free pages, WAL frames,
and which processes hold the database open or read an old snapshot. Those come
from the POSIX locks SQLite takes on the ``-shm`` file, tested with
``F_GETLK``, which takes no lock itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import struct
import tempfile
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import msgspec

from flatstate.errors import ConflictError, StoreClosed, StoreCorrupt

__all__ = [
    "Database",
    "FileFacts",
    "Reader",
    "WalState",
    "damaged",
    "file_facts",
    "text",
    "wal_state",
]

Stamp = tuple[tuple[int, int, int] | None, tuple[int, int] | None]
"""(database mtime_ns, size, inode; WAL mtime_ns, size): changes when OpenClaw writes."""


def _octet_length(value: Any) -> int | None:
    """SQLite 3.43's ``octet_length()``, which OpenClaw's CHECK constraints call: an older
    SQLite (Python's own, often) cannot run an integrity check of these files without it."""
    if value is None:
        return None
    return len(value.encode() if isinstance(value, str) else bytes(value))


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _size(path: str) -> int:
    st = _stat(path)
    return st.st_size if st is not None else 0


def text(value: bytes) -> str:
    """A name stored as text (a key, an id), for lookups and messages."""
    return value.decode("utf-8", "replace")


def damaged(path: str, what: str, problem: str) -> StoreCorrupt:
    """The error for an OpenClaw file that cannot be read as it should."""
    return StoreCorrupt(
        path,
        f"cannot be read as {what}: {problem}",
        "flatstate never changes it; check it with: flatstate doctor --store <the OpenClaw "
        "directory>, or restore it from a backup",
    )


class Database:
    """One OpenClaw database, read-only, with nothing created beside it.

    ``replay_wal=False`` reads the database file alone even when a WAL lies
    beside it (doctor's counts, which must not copy gigabytes). Queries are
    serialized by a lock: one connection serves every thread.
    """

    def __init__(self, path: str, what: str, *, replay_wal: bool = True) -> None:
        self.path = os.path.abspath(path)
        self.what = what
        self.copied_wal_bytes = 0
        """Bytes of WAL replayed through a private copy (0 when the file was read in place)."""
        self._private: str | None = None
        self._lock = threading.Lock()
        self._closed: str | None = None
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no {what} here")
        self.stamp = self.current_stamp()
        self.conn = self._connect(replay_wal)

    def _connect(self, replay_wal: bool) -> sqlite3.Connection:
        wal = _size(self.path + "-wal")
        if replay_wal and wal > 0:
            self._private = tempfile.mkdtemp(prefix="flatstate-openclaw-")
            target = os.path.join(self._private, os.path.basename(self.path))
            shutil.copyfile(self.path, target)
            shutil.copyfile(self.path + "-wal", target + "-wal")
            self.copied_wal_bytes = wal
            uri = f"file:{quote(target)}?mode=ro"
        else:
            uri = f"file:{quote(self.path)}?mode=ro&immutable=1"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.create_function("octet_length", 1, _octet_length, deterministic=True)
        # Text comes back as the bytes stored: JSON is parsed from bytes anyway, and a row
        # that is not valid UTF-8 is then one damaged row, not a failed query.
        conn.text_factory = bytes
        try:
            with self._translated():
                self._tables = {
                    text(name) for (name,) in conn.execute("SELECT name FROM sqlite_master")
                }
        except BaseException:
            conn.close()
            self._remove_private()
            raise
        return conn

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, self.what, str(exc)) from None

    def has_table(self, name: str) -> bool:
        return name in self._tables

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Every row of one query; a damaged file raises :class:`StoreCorrupt` naming it.

        A read of a closed view raises :class:`StoreClosed`, or :class:`ConflictError`
        when OpenClaw wrote the file and another thread replaced the view meanwhile
        (read again).
        """
        with self._lock, self._translated():
            if self._closed == "replaced":
                raise ConflictError(
                    self.path, "OpenClaw wrote it during this read, so it was reopened; read again"
                )
            if self._closed:
                raise StoreClosed(self.path)
            return self.conn.execute(sql, params).fetchall()

    def current_stamp(self) -> Stamp:
        """What the files look like now; another value than :attr:`stamp` means OpenClaw wrote."""
        db, wal = _stat(self.path), _stat(self.path + "-wal")
        return (
            (db.st_mtime_ns, db.st_size, db.st_ino) if db is not None else None,
            (wal.st_mtime_ns, wal.st_size) if wal is not None else None,
        )

    def disk_bytes(self) -> int:
        return _size(self.path) + _size(self.path + "-wal")

    def _remove_private(self) -> None:
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None

    def close(self, *, replaced: bool = False) -> None:
        """Close the connection (``replaced``: because a fresh view of a changed file
        takes its place) and remove a private copy."""
        with self._lock:
            self._closed = "replaced" if replaced else "closed"
            self.conn.close()
            self._remove_private()

    def __repr__(self) -> str:
        return f"<Database {self.path}>"


class FileFacts(msgspec.Struct, frozen=True, kw_only=True):
    """A database file's sizes, from its header and the files beside it."""

    path: str
    bytes: int
    wal_bytes: int
    shm_bytes: int
    page_size: int
    pages: int
    free_pages: int
    wal_mode: bool


_MAGIC = b"SQLite format 3\x00"


def file_facts(path: str, what: str) -> FileFacts:
    """Sizes and free pages of ``path`` from its 100-byte header (raises StoreCorrupt)."""
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or not header.startswith(_MAGIC):
        raise damaged(path, what, "the file does not start with a SQLite header")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    size = _size(path)
    pages = int.from_bytes(header[28:32], "big")
    if header[92:96] != header[24:28] or pages == 0:  # the in-header size is stale
        pages = size // page_size if page_size else 0
    return FileFacts(
        path=path,
        bytes=size,
        wal_bytes=_size(path + "-wal"),
        shm_bytes=_size(path + "-shm"),
        page_size=page_size,
        pages=pages,
        free_pages=int.from_bytes(header[36:40], "big"),
        wal_mode=header[18] == 2 and header[19] == 2,
    )


class Reader(msgspec.Struct, frozen=True):
    """A process reading a snapshot that ends at WAL frame ``frame``; checkpoints cannot copy
    the ``behind`` frames committed after it until it ends its read."""

    pid: int
    frame: int
    behind: int


class WalState(msgspec.Struct, frozen=True, kw_only=True):
    """What the ``-shm`` index says about a WAL and who uses it."""

    frames: int
    """Frames in the WAL."""
    backfilled: int
    """Frames already copied into the database by a checkpoint."""
    open_by: int | None
    """A process that holds the database open (one of them, if several do)."""
    readers: list[Reader]
    """Readers of the WAL's snapshots, the oldest first."""


# The -shm layout (SQLite's wal.c and os_unix.c): two copies of a 48-byte index
# header, the checkpoint info (nBackfill and five read marks), then the lock
# bytes: write, checkpoint, recover, the five read locks, and the "dead man
# switch" every connection holds shared while it has the database open.
_HEADER = struct.Struct("=IIIBBHII")
_CHECKPOINT = struct.Struct("=I5I")
_READ_LOCK, _DMS_LOCK = 123, 128
_UNUSED_MARK = 0xFFFFFFFF
_FLOCK = struct.Struct("hhqqi")  # struct flock on Linux: type, whence, start, len, pid


def _holder(fd: int, offset: int) -> int | None:
    """The pid of another process holding a lock on byte ``offset``, or None."""
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        kind, _, _, _, pid = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except OSError:
        return None
    return pid if kind != fcntl.F_UNLCK and pid > 0 else None


def wal_state(path: str) -> WalState | None:
    """The WAL index beside ``path`` as SQLite keeps it; None when there is none to read.

    Only tests locks (``F_GETLK``) and reads: the index is the gateway's shared
    memory, and a reader that wrote to it would take part in its locking. This
    process must hold no SQLite connection of its own to ``path``: closing any
    descriptor of a file drops the POSIX locks the process holds on it.
    """
    try:
        fd = os.open(path + "-shm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.pread(fd, 136, 0)
        if len(data) < 136 or data[:48] != data[48:96]:
            return None  # not initialised, or being rewritten this instant
        version, _, _, initialised, _, _, frames, _ = _HEADER.unpack_from(data, 0)
        if version != 3007000 or not initialised:
            return None
        backfilled, *marks = _CHECKPOINT.unpack_from(data, 96)
        readers = []
        for slot in range(1, 5):
            mark = marks[slot]
            pid = _holder(fd, _READ_LOCK + slot) if mark != _UNUSED_MARK else None
            if pid is not None:
                readers.append(Reader(pid, mark, max(0, frames - mark)))
        return WalState(
            frames=frames,
            backfilled=backfilled,
            open_by=_holder(fd, _DMS_LOCK),
            readers=sorted(readers, key=lambda r: r.frame),
        )
    finally:
        os.close(fd)
