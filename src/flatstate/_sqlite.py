"""What every SQLite database of flatstate shares: opening, migrating, errors, checkpoints.

The session store (``sessions.sqlite``) and the facts store (``facts.sqlite``)
open their files the same way (created 0600 in a 0700 directory, WAL, a busy
timeout, background checkpoints), keep a ``schema_version`` table with an
in-place migration list, and report a damaged file without ever replacing it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from flatstate._fork import fork_guard
from flatstate._schema import needs_migration
from flatstate.errors import DiskFull, LockTimeout, ReadOnlyStore, StoreCorrupt, is_disk_full
from flatstate.files import READ_ONLY_FS, check_place, on_read_only_fs

__all__ = [
    "CHECKPOINT_EVERY",
    "Checkpointer",
    "Translate",
    "connect",
    "inspect_hint",
    "is_empty_file",
    "migrate",
    "open_file",
    "restart_log",
]

# A background checkpoint after this many commits keeps the WAL to a few MiB; under group
# commit one commit may hold a hundred writes, so the log's size is checked as well.
CHECKPOINT_EVERY = 200
CHECKPOINT_WAL_BYTES = 4 << 20
SIZE_CHECK_EVERY = 8
# Past this the writer restarts the log itself between two commits: under a steady stream of
# group commits the background thread's restart can keep finding the writer in the way.
HARD_WAL_BYTES = 24 << 20
# How long that restart may wait for readers still on the old log before it gives up.
RESTART_WAIT_MS = 50
WAL_RESTART_FRAMES = 4096

Migrations = Sequence[tuple[str, ...]]
"""Step i moves the schema from version i to i + 1; a released step is never edited."""


def inspect_hint(path: str) -> str:
    return f"Inspect it with: sqlite3 {path} 'PRAGMA integrity_check'"


class Translate:
    """A context that turns a driver's errors into flatstate's, naming the file and the fix.

    A class rather than a generator context manager: it wraps every call on
    the hot path. ``driver`` is the DB-API module the connection came from
    (the standard ``sqlite3``, or ``pysqlite3`` where vectors need it); their
    exception classes differ.
    """

    __slots__ = ("driver", "lock_timeout", "path", "what")

    def __init__(
        self,
        path: str,
        lock_timeout: float,
        driver: ModuleType = sqlite3,
        what: str = "SQLite database",
    ) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self.driver = driver
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or not isinstance(exc, self.driver.DatabaseError):
            return
        if isinstance(exc, self.driver.IntegrityError):
            return
        text = str(exc)
        if is_disk_full(exc):
            raise DiskFull(self.path) from exc
        if isinstance(exc, self.driver.OperationalError):
            if "locked" in text or "busy" in text:
                raise LockTimeout(self.path, self.lock_timeout) from exc
            if "readonly" in text or "read-only" in text:
                raise ReadOnlyStore(self.path, text) from exc
            if not ("malformed" in text or "not a database" in text or "disk image" in text):
                return
        raise StoreCorrupt(
            self.path, f"not a usable {self.what} ({text})", inspect_hint(self.path)
        ) from exc


def connect(
    path: str,
    migrations: Migrations,
    *,
    what: str,
    lock_timeout: float,
    readonly: bool,
    synchronous: str,
    page_cache_kib: int,
    driver: ModuleType = sqlite3,
    missing: str | None = None,
) -> Any:
    """Open ``path`` (creating it 0600 in a 0700 directory unless ``missing`` says why not),
    set the pragmas, and migrate its schema in place.

    Raises StoreCorrupt, naming the file and how to inspect it, when the file
    is not a database of this kind; the file is never replaced.
    """
    if synchronous.lower() not in {"normal", "full"}:
        raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
    check_place(os.path.dirname(path), directory=True)
    check_place(path, directory=False)
    if not os.path.exists(path) or (readonly and is_empty_file(path)):
        # An empty file is what a writer killed between creating the file and its schema
        # leaves: no store yet, which the next write makes.
        if readonly or missing is not None:
            raise FileNotFoundError(missing or f"{path}: no store here to open read-only")
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    if not os.path.isfile(path):
        raise StoreCorrupt(path, "is not a regular file", inspect_hint(path))
    if not readonly and on_read_only_fs(path):
        raise ReadOnlyStore(path, READ_ONLY_FS)
    conn = open_file(
        path,
        readonly,
        driver=driver,
        timeout=lock_timeout,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        with Translate(path, lock_timeout, driver, what):
            conn.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            conn.execute(f"PRAGMA cache_size = -{page_cache_kib}")
            if not readonly:
                # Checkpoints run on a thread of their own (Checkpointer).
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                # A log started over is cut back to this size, so that its size on disk
                # says how much was written since (Checkpointer.committed reads it).
                conn.execute(f"PRAGMA journal_size_limit = {CHECKPOINT_WAL_BYTES}")
            migrate(conn, path, readonly, migrations, what)
    except BaseException:
        conn.close()
        raise
    return conn


def is_empty_file(path: str) -> bool:
    """What a writer killed between creating the file and its schema leaves."""
    return os.path.isfile(path) and os.path.getsize(path) == 0


def open_file(path: str, readonly: bool, *, driver: ModuleType = sqlite3, **options: Any) -> Any:
    """A connection to ``path``: read-write, or one that cannot write.

    A ``mode=ro`` connection to a WAL database creates its -wal and -shm files but cannot
    remove them when it closes, so a command that only reads would leave two new files
    behind. Where the database and its directory are writable and no WAL is there yet, a
    read-only open is therefore a read-write connection with ``query_only`` set: SQLite
    refuses every write on it, and the last connection to close removes both files. On a
    read-only file system with nothing to replay the file is opened as immutable.
    """
    if not readonly:
        return driver.connect(f"file:{path}", uri=True, **options)
    if _leaves_no_files(path):
        conn = driver.connect(f"file:{path}?mode=rw", uri=True, **options)
        conn.execute("PRAGMA query_only = 1")
        return conn
    immutable = "&immutable=1" if _unchangeable(path) else ""
    return driver.connect(f"file:{path}?mode=ro{immutable}", uri=True, **options)


def _leaves_no_files(path: str) -> bool:
    """Whether a read-write connection may stand in for a read-only one (see open_file)."""
    if os.path.exists(path + "-wal") or on_read_only_fs(path):
        return False
    return os.access(path, os.W_OK) and os.access(os.path.dirname(path) or ".", os.W_OK)


def _unchangeable(path: str) -> bool:
    """Whether ``path`` has no WAL beside it to replay and a directory this process cannot
    write (a read-only file system, or modes that forbid it).

    SQLite cannot make the shared-memory file a read needs there, so the file is opened as
    immutable: what it holds is read as it is, and a writer that starts meanwhile is not
    seen by this connection. A WAL left by a crashed or live writer is still read the
    ordinary way (SQLite can, with its -shm beside it)."""
    try:
        wal = os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
    except OSError:
        return False
    directory = os.path.dirname(path) or "."
    return wal == 0 and (on_read_only_fs(path) or not os.access(directory, os.W_OK))


def restart_log(conn: Any, busy_timeout_ms: int, driver: ModuleType = sqlite3) -> None:
    """Copy the whole WAL back and start it over, on the writer's connection between two
    commits; waits at most RESTART_WAIT_MS for readers on the old log, then lets it be."""
    conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
    try:
        with contextlib.suppress(driver.Error):
            conn.execute("PRAGMA wal_checkpoint(RESTART)")
    finally:
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")


def migrate(conn: Any, path: str, readonly: bool, migrations: Migrations, what: str) -> None:
    """Bring the schema to ``len(migrations)`` in one transaction; a database is never
    left between two versions."""
    latest = len(migrations)
    conn.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
    try:
        tables = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        version = 0
        if "schema_version" in tables:
            version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        elif tables:
            problem = f"is a SQLite database but not a {what} (no schema_version table)"
            raise StoreCorrupt(path, problem, inspect_hint(path))
        missing = sorted(_created_by(migrations[:version]) - tables)
        if missing:  # another kind's database: each keeps a schema_version of its own
            problem = f"is a SQLite database but not a {what} (it has no {missing[0]} table)"
            raise StoreCorrupt(path, problem, inspect_hint(path))
        if needs_migration(path, version, latest, readonly=readonly):
            if "schema_version" not in tables:
                conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            for step in migrations[version:]:
                for statement in step:
                    conn.execute(statement)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (latest,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_CREATE_TABLE = re.compile(r"\s*CREATE\s+(?:VIRTUAL\s+)?TABLE\s+(\w+)", re.IGNORECASE)


def _created_by(steps: Migrations) -> set[str]:
    """The tables these migration steps create (none of ours drops or renames one)."""
    return {m.group(1) for step in steps for m in map(_CREATE_TABLE.match, step) if m}


class Checkpointer:
    """Copies the WAL back into the database from a thread of its own.

    SQLite's automatic checkpoint runs inside whichever commit crosses its
    threshold and fsyncs there: one commit in a few hundred took 20-60 ms
    here, and one-fact adds ran at half the rate. A second connection in a
    background thread keeps that off the writer's path (the driver releases
    the GIL while it works). ``driver`` must be the writer's own: two copies
    of SQLite in one process must never open the same file (closing one's
    descriptor drops the other's POSIX locks).
    """

    def __init__(
        self,
        path: str,
        *,
        driver: ModuleType = sqlite3,
        every_commits: int = CHECKPOINT_EVERY,
        name: str = "flatstate-checkpoint",
    ) -> None:
        self.every = every_commits
        self._woken_at = 0  # the log's size when the thread was last woken
        self._path = path
        self._driver = driver
        self._commits = 0
        self._wake = threading.Event()
        self._stop = False
        self._working = fork_guard()  # held while the thread is inside SQLite
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def committed(self) -> bool:
        """Count a commit and wake the thread when a checkpoint is due; whether the log is
        past HARD_WAL_BYTES (the writer should then :func:`restart_log` itself)."""
        self._commits += 1
        size = self._wal_bytes() if self._commits % SIZE_CHECK_EVERY == 0 else -1
        if 0 <= size < self._woken_at:
            self._woken_at = 0  # the log started over (and was cut back)
        # Woken by growth since the last wake, not by size alone: a log that is not started
        # over keeps its size, and waking the thread every few commits for it cost a lone
        # writer ~35 us a write in GIL hand-offs.
        if self._commits % self.every == 0 or size >= self._woken_at + CHECKPOINT_WAL_BYTES:
            self._woken_at = max(size, self._woken_at)
            self._wake.set()
        return size >= HARD_WAL_BYTES

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(self._path + "-wal")
        except OSError:
            return 0

    def _run(self) -> None:
        with self._working:
            conn = self._driver.connect(self._path, timeout=1.0, isolation_level=None)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                with self._working, contextlib.suppress(self._driver.Error):
                    _, log_frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    # A passive checkpoint never waits, so under a steady writer
                    # the log is never fully copied and never restarts: once it
                    # is long, wait for a gap between commits and start it over.
                    if log_frames >= WAL_RESTART_FRAMES:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)")
        finally:
            with self._working:
                conn.close()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()
