"""The facts database on disk: its schema, its migrations, and how it is opened.

Schema (version 1), in ``<state_dir>/facts.sqlite``:

- ``facts``: one row per fact. ``seq`` is the integer rowid the full-text
  index, the counters and the vectors hang off; ``id`` is the fact's public,
  stable UUID. ``decayed_at`` (when confidence was last halved) is
  bookkeeping for ``decay()`` and not part of :class:`~agentstate.memory.Fact`.
- ``fact_access``: ``recall_count`` and ``last_accessed_at`` of the facts
  that were ever recalled, in a narrow table of their own (see ``access``).
- ``facts_fts``: FTS5 (porter stemming over unicode61) over text, category,
  entity, key and value, an external-content index of the facts that are not
  superseded.
- ``fact_vectors``: one embedding per fact that is not superseded (float32,
  unit length) and the name of the model that made it, for the optional
  vector search.
- ``schema_version``: the version, migrated in place on open.

The index and the vectors are kept in step by triggers rather than by
statements in our write path: a trigger runs inside whatever transaction
changes the row, whoever makes it (agentstate, the ``sqlite3`` shell, a
script), so the index can never drift from the table. The update trigger
fires only when an indexed column changes, so bumping access counters on
every recall never touches the index.

``fact_vectors`` is a plain table, not a sqlite-vec ``vec0`` virtual table:
a trigger that named a ``vec0`` table would fail in every connection without
the extension loaded, and this database must stay writable by a process
(or a CLI) that has no vectors. sqlite-vec's distance functions scan it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from types import ModuleType
from typing import Any

from agentstate.errors import LockTimeout, ReadOnlyStore, StoreCorrupt

__all__ = [
    "DB_FILENAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Checkpointer",
    "Translate",
    "connect",
    "inspect_hint",
]

DB_FILENAME = "facts.sqlite"

# Each migration moves the schema from version i to i + 1 inside one
# transaction. Never edit a released step: append a new one.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        # seq is declared, not the implicit rowid: VACUUM may renumber an
        # implicit rowid, and the index and the vectors are keyed by it.
        """CREATE TABLE facts (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            text TEXT NOT NULL,
            why TEXT,
            category TEXT NOT NULL DEFAULT 'other',
            importance REAL NOT NULL DEFAULT 0.5,
            entity TEXT,
            key TEXT,
            value TEXT,
            source TEXT,
            created_at INTEGER NOT NULL,
            decay_class TEXT NOT NULL DEFAULT 'normal',
            expires_at INTEGER,
            last_confirmed_at INTEGER,
            confidence REAL NOT NULL DEFAULT 1.0,
            normalized_hash TEXT NOT NULL,
            superseded_at INTEGER,
            superseded_by TEXT,
            tags TEXT,
            scope TEXT NOT NULL DEFAULT 'global',
            scope_target TEXT,
            session_key TEXT,
            entry_id TEXT,
            decayed_at INTEGER
        )""",
        # Few indexes on purpose: each one is another page written per add.
        # "Newest" is seq order, so no index on created_at.
        "CREATE INDEX facts_hash ON facts (normalized_hash)",
        # count() reads only this narrow index, not the wide rows: at 100k facts
        # a scan of the table took 37 ms, and the after-compaction hook counts.
        "CREATE INDEX facts_live ON facts (superseded_at, expires_at)",
        """CREATE INDEX facts_entity ON facts (entity COLLATE NOCASE, key COLLATE NOCASE)
            WHERE entity IS NOT NULL""",
        """CREATE VIRTUAL TABLE facts_fts USING fts5(
            text, category, entity, key, value,
            content='facts', content_rowid='seq', tokenize='porter unicode61'
        )""",
        # Only facts that are not superseded are indexed: recall never wants the
        # others, and this way they cost it nothing however many pile up.
        """CREATE TRIGGER facts_fts_insert AFTER INSERT ON facts
            WHEN new.superseded_at IS NULL BEGIN
            INSERT INTO facts_fts (rowid, text, category, entity, key, value)
            VALUES (new.seq, new.text, new.category, new.entity, new.key, new.value);
        END""",
        """CREATE TRIGGER facts_fts_delete AFTER DELETE ON facts
            WHEN old.superseded_at IS NULL BEGIN
            INSERT INTO facts_fts (facts_fts, rowid, text, category, entity, key, value)
            VALUES ('delete', old.seq, old.text, old.category, old.entity, old.key, old.value);
        END""",
        # An external-content index must be told the old values to remove them.
        """CREATE TRIGGER facts_fts_update
            AFTER UPDATE OF seq, text, category, entity, key, value, superseded_at ON facts BEGIN
            INSERT INTO facts_fts (facts_fts, rowid, text, category, entity, key, value)
            SELECT 'delete', old.seq, old.text, old.category, old.entity, old.key, old.value
            WHERE old.superseded_at IS NULL;
            INSERT INTO facts_fts (rowid, text, category, entity, key, value)
            SELECT new.seq, new.text, new.category, new.entity, new.key, new.value
            WHERE new.superseded_at IS NULL;
        END""",
        # Access counters apart from the wide rows: see access.py.
        """CREATE TABLE fact_access (
            seq INTEGER PRIMARY KEY,
            recall_count INTEGER NOT NULL DEFAULT 0,
            last_accessed_at INTEGER
        )""",
        """CREATE TRIGGER fact_access_delete AFTER DELETE ON facts BEGIN
            DELETE FROM fact_access WHERE seq = old.seq;
        END""",
        """CREATE TABLE fact_vectors (
            seq INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            embedding BLOB NOT NULL
        )""",
        """CREATE TRIGGER fact_vectors_delete AFTER DELETE ON facts BEGIN
            DELETE FROM fact_vectors WHERE seq = old.seq;
        END""",
        # A changed text makes its embedding wrong (embed_missing() redoes it), and
        # a superseded fact is never searched or deduplicated against.
        """CREATE TRIGGER fact_vectors_stale AFTER UPDATE OF seq, text, superseded_at ON facts
            WHEN new.superseded_at IS NOT NULL OR new.text IS NOT old.text
                OR new.seq IS NOT old.seq BEGIN
            DELETE FROM fact_vectors WHERE seq = old.seq;
        END""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

# The page cache: large enough for the FTS index's hot pages at 100k facts.
PAGE_CACHE_KIB = 16384
# A background checkpoint after this many commits keeps the WAL to a few MiB.
CHECKPOINT_EVERY = 256
WAL_RESTART_FRAMES = 4096


def inspect_hint(path: str) -> str:
    return f"Inspect it with: sqlite3 {path} 'PRAGMA integrity_check'"


class Translate:
    """A context that turns a driver's errors into agentstate's, naming the file and the fix.

    A class rather than a generator context manager: it wraps every call.
    ``driver`` is the DB-API module the connection came from (the standard
    ``sqlite3``, or ``pysqlite3`` where vectors need it): their exception
    classes differ.
    """

    __slots__ = ("driver", "lock_timeout", "path")

    def __init__(self, path: str, lock_timeout: float, driver: ModuleType) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self.driver = driver

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
        if isinstance(exc, self.driver.OperationalError):
            if "locked" in text or "busy" in text:
                raise LockTimeout(self.path, self.lock_timeout) from exc
            if "readonly" in text or "read-only" in text:
                raise ReadOnlyStore(self.path, text) from exc
            if not ("malformed" in text or "not a database" in text or "disk image" in text):
                return
        raise StoreCorrupt(
            self.path, f"not a usable facts database ({text})", inspect_hint(self.path)
        ) from exc


def connect(
    path: str,
    *,
    driver: ModuleType = sqlite3,
    lock_timeout: float,
    readonly: bool,
    create: bool,
    synchronous: str,
) -> sqlite3.Connection:
    """Open ``path`` (creating it 0600 in a 0700 directory if allowed) and migrate its schema.

    Raises StoreCorrupt, naming the file and how to inspect it, when the file
    is not a facts database; the file is never replaced.
    """
    if synchronous.lower() not in {"normal", "full"}:
        raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
    if not os.path.exists(path):
        if readonly or not create:
            raise FileNotFoundError(
                f"{path}: no facts database here. Add a fact first "
                "(agentstate facts add), or pass the right --state-dir."
            )
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    if not os.path.isfile(path):
        raise StoreCorrupt(path, "is not a regular file", inspect_hint(path))
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn: sqlite3.Connection = driver.connect(
        uri, uri=True, timeout=lock_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        with Translate(path, lock_timeout, driver):
            conn.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            conn.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
            if not readonly:
                # Checkpoints run on a thread of their own (Checkpointer).
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                conn.execute(f"PRAGMA journal_size_limit = {WAL_RESTART_FRAMES * 4096 * 2}")
            _migrate(conn, path, readonly)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: str, readonly: bool) -> None:
    conn.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
    try:
        tables = {
            name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        version = 0
        if "schema_version" in tables:
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0] or 0
        elif tables:
            raise StoreCorrupt(
                path,
                "is a SQLite database but not a facts database (no schema_version table)",
                inspect_hint(path),
            )
        if version > SCHEMA_VERSION:
            raise StoreCorrupt(
                path,
                f"schema version {version} is newer than this agentstate knows ({SCHEMA_VERSION})",
                "Upgrade agentstate to open it.",
            )
        if version < SCHEMA_VERSION and readonly:
            raise ReadOnlyStore(path, f"schema version {version} needs a migration")
        if "schema_version" not in tables and not readonly:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class Checkpointer:
    """Copies the WAL back into the database from a thread of its own.

    SQLite's automatic checkpoint runs inside whichever commit crosses its
    threshold and fsyncs there: it halved the rate of one-fact adds here
    (1,400/s against 2,900/s without). A second connection in a background
    thread keeps it off the writer's path; the session store's SQLite
    backend does the same. ``driver`` must be the writer's own: two copies
    of SQLite in one process must never open the same file (closing one's
    descriptor drops the other's POSIX locks).
    """

    def __init__(
        self, path: str, driver: ModuleType, every_commits: int = CHECKPOINT_EVERY
    ) -> None:
        self.every = every_commits
        self._path = path
        self._driver = driver
        self._commits = 0
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(
            target=self._run, name="agentstate-facts-checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self) -> None:
        self._commits += 1
        if self._commits % self.every == 0:
            self._wake.set()

    def _run(self) -> None:
        conn = self._driver.connect(self._path, timeout=1.0, isolation_level=None)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                with contextlib.suppress(self._driver.Error):
                    _, log_frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    # A passive checkpoint never waits, so under a steady writer
                    # the log is never fully copied and never restarts: once it
                    # is long, wait for a gap between commits and start it over.
                    if log_frames >= WAL_RESTART_FRAMES:
                        conn.execute("PRAGMA wal_checkpoint(RESTART)")
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()
