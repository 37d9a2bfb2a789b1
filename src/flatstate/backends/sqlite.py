"""The embedded default: one SQLite database per state directory.

Schema (version 1):

- ``sessions``: one row per session: ``key``, ``session_id``, ``updated_at``
  (indexed, for listing and maintenance), ``entry`` (the entry's compact JSON)
  and ``blobs``. A top-level object field whose JSON is at least
  ``BLOB_MIN_BYTES`` (256, see ``_blobs``) long (the skills snapshot, the system-prompt report) is
  stored once, by content, in ``blobs``; in ``entry`` its value is then the
  blob's sha256, and the row's ``blobs`` column maps field -> sha256.
- ``blobs``: ``hash`` -> ``value`` (JSON text). Nine sessions sharing one
  skills prompt share one row, and a patch of a token counter rewrites ~1 KiB
  instead of the whole 10-100 KiB entry. Unreferenced blobs are looked for
  between two commits when ``_blobs.Collector`` says enough writes may have left
  some behind, and deleted by the commits that follow, a bounded batch in each.
- Housekeeping never holds a commit long: the change log is pruned and blobs
  are deleted at most ``PRUNE_BATCH`` rows, ``COLLECT_BATCH`` blobs and
  ``COLLECT_BATCH_BYTES`` of their JSON per commit.
- ``changes``: triggers append every insert, update and delete of a session,
  whoever makes it (flatstate, the ``sqlite3`` shell, a script), so another
  process reloads only the keys that changed.
- ``schema_version``: the version, migrated in place on open.

WAL mode: readers never block the writer, and a committed write survives a
crash of the process (``synchronous=NORMAL``) or also of the machine
(``synchronous=FULL``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from typing import Any

from flatstate._signal import open_signal
from flatstate._sqlite import (
    Checkpointer,
    Translate,
    connect,
    inspect_hint,
    is_empty_file,
    open_file,
    restart_log,
)
from flatstate.backends._blobs import (
    CHANGE_LOG_KEEP,
    COLLECT_BATCH,
    MAX_REPLAY,
    PRUNE_EVERY,
    BlobCache,
    Collector,
    load_blob,
    replayable,
    split_entry,
    updated_at_column,
)
from flatstate.backends.base import Backend, FileCheck, Row
from flatstate.errors import StoreCorrupt
from flatstate.frozen import FrozenMap, StringPool, decode_json, encode_json
from flatstate.model import SessionEntry, build_entry

__all__ = ["DB_FILENAME", "SCHEMA_VERSION", "SQLiteBackend"]

DB_FILENAME = "sessions.sqlite"
TRANSCRIPTS_DIRNAME = "transcripts"

# Each migration moves the schema from version i to i + 1, inside one
# transaction; a database is never left between two versions. Never edit a
# released step: append a new one.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE sessions (
            key TEXT NOT NULL UNIQUE,
            session_id TEXT NOT NULL,
            updated_at INTEGER,
            entry TEXT NOT NULL,
            blobs TEXT
        )""",
        "CREATE TABLE blobs (hash TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
        "CREATE INDEX sessions_updated_at ON sessions (updated_at)",
        # seq is a plain rowid (max + 1): the newest rows are never pruned, so it
        # only grows, and there is no sqlite_sequence page to rewrite per commit.
        "CREATE TABLE changes (seq INTEGER PRIMARY KEY, key TEXT NOT NULL)",
        """CREATE TRIGGER sessions_insert AFTER INSERT ON sessions BEGIN
            INSERT INTO changes (key) VALUES (new.key); END""",
        """CREATE TRIGGER sessions_update AFTER UPDATE ON sessions BEGIN
            INSERT INTO changes (key) VALUES (old.key);
            INSERT INTO changes (key) SELECT new.key WHERE new.key IS NOT old.key; END""",
        """CREATE TRIGGER sessions_delete AFTER DELETE ON sessions BEGIN
            INSERT INTO changes (key) VALUES (old.key); END""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)  # what this flatstate writes (connect migrates to it)

# The blobs some session refers to, and those none does (see collect_blobs).
_REFERENCED_BLOBS = (
    "SELECT j.value FROM sessions, json_each(sessions.blobs) AS j WHERE sessions.blobs IS NOT NULL"
)
_UNREFERENCED_BLOBS = f"SELECT hash FROM blobs WHERE hash NOT IN ({_REFERENCED_BLOBS})"
# Housekeeping inside a commit is bounded: at most this many change-log rows, and this many
# blobs (under SQLite's limit on bound parameters) or bytes of blob JSON, per commit.
PRUNE_BATCH = 2_000
COLLECT_BATCH_BYTES = 1 << 20
# The page cache: large enough to hold the b-tree interior pages and the
# recently written leaves of a store of tens of thousands of sessions.
PAGE_CACHE_KIB = 8192


class SQLiteBackend(Backend):
    def __init__(
        self,
        state_dir: str,
        *,
        pool: StringPool,
        lock_timeout: float = 10.0,
        synchronous: str = "normal",
        readonly: bool = False,
    ) -> None:
        self.pool = pool
        self.readonly = readonly
        self.lock_timeout = lock_timeout
        self.path = os.path.join(state_dir, DB_FILENAME)
        self.location = self.path
        self._translate = Translate(self.path, lock_timeout, what="session store")
        self.transcripts_dir = os.path.join(state_dir, TRANSCRIPTS_DIRNAME)
        self._conn = connect(
            self.path,
            MIGRATIONS,
            what="session store",
            lock_timeout=lock_timeout,
            readonly=readonly,
            synchronous=synchronous,
            page_cache_kib=PAGE_CACHE_KIB,
        )
        # A reader uses the counter a writer made, and makes none (a read writes nothing).
        self.signal = open_signal(self.path + ".signal", create=not readonly)
        self._commits = 0
        self._collector = Collector()
        self._prune_pending = False  # the change log's last prune stopped at its bound
        self._garbage: list[str] = []  # unreferenced blobs found, deleted a batch per commit
        self._checkpointer = None if readonly else Checkpointer(self.path)
        self._blob_cache = BlobCache()

    @classmethod
    def check_files(cls, location: str) -> FileCheck:
        path = os.path.join(os.path.abspath(location), DB_FILENAME)
        wal = os.path.getsize(path + "-wal") if os.path.isfile(path + "-wal") else 0
        check = FileCheck(path, os.path.join(location, TRANSCRIPTS_DIRNAME), {}, [], wal)
        if not os.path.exists(path) or is_empty_file(path):
            return check  # a store not made yet (see _sqlite.connect)
        try:
            conn = open_file(path, readonly=True)
            try:
                verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    check.problems.append(f"quick_check says: {verdict}")
                rows = conn.execute("SELECT key, entry FROM sessions").fetchall()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            check.problems.append(
                f"{exc}. Inspect it with: sqlite3 {path} 'PRAGMA integrity_check'"
            )
            return check
        check.entries.update((key, text.encode()) for key, text in rows)
        return check

    # -- errors ----------------------------------------------------------------
    def _errors(self) -> Translate:
        """A context that turns sqlite3's errors into flatstate's, naming the file and the fix."""
        return self._translate

    # -- reads -----------------------------------------------------------------
    def _row(self, key: str, text: str, blobs: str | None, conn: Any = None) -> Row:
        data = decode_json(text)
        if blobs:
            for field, digest in decode_json(blobs).items():
                data[field] = self._blob(digest, conn or self._conn)
        return key, build_entry(key, data, pool=self.pool, on_load=True)

    def _blob(self, digest: str, conn: Any) -> FrozenMap:
        """The frozen value stored under ``digest``: one object for every row that shares it."""
        cached = self._blob_cache.get(digest)
        if cached is not None:
            return cached
        found = conn.execute("SELECT value FROM blobs WHERE hash = ?", (digest,)).fetchone()
        if found is None:
            raise StoreCorrupt(
                self.path,
                f"a session refers to blob {digest[:12]}... which is missing",
                inspect_hint(self.path),
            )
        value = load_blob(found[0], digest, self.pool)
        self._blob_cache.add(digest, value)
        self._blob_cache.trim()
        return value

    def _token(self) -> int:
        row = self._conn.execute("SELECT max(seq) FROM changes").fetchone()
        return row[0] or 0

    def _side_connection(self) -> sqlite3.Connection:
        """A connection for one whole-table read, closed by the caller: its page cache
        goes with it instead of staying in the writer's."""
        conn: sqlite3.Connection = open_file(self.path, self.readonly, timeout=self.lock_timeout)
        return conn

    def scan(self) -> tuple[Any, Iterator[Row]]:
        # Inside a write transaction the scan joins it. Otherwise it reads on a
        # connection of its own, in one read transaction (the rows and the token
        # agree), closed afterwards: a whole-store read would otherwise leave the
        # writer's page cache full of pages no patch will touch again.
        joined = self._conn.in_transaction
        conn = self._conn if joined else self._side_connection()
        with self._errors():
            if not joined:
                conn.execute("BEGIN")
            token = conn.execute("SELECT max(seq) FROM changes").fetchone()[0] or 0
            cursor = conn.execute("SELECT key, entry, blobs FROM sessions")

        def rows() -> Iterator[Row]:
            try:
                with self._errors():
                    # fetchmany: the blob look-ups below share the connection.
                    while batch := cursor.fetchmany(256):
                        for key, text, blobs in batch:
                            yield self._row(key, text, blobs, conn)
            finally:
                if not joined:
                    conn.close()

        return token, rows()

    def read(self, key: str) -> Row | None:
        with self._errors():
            found = self._conn.execute(
                "SELECT entry, blobs FROM sessions WHERE key = ?", (key,)
            ).fetchone()
            return self._row(key, found[0], found[1]) if found else None

    def scan_keys(self) -> list[str]:
        with self._errors():
            return [k for (k,) in self._conn.execute("SELECT key FROM sessions ORDER BY key")]

    def count(self) -> int:
        with self._errors():
            return int(self._conn.execute("SELECT count(*) FROM sessions").fetchone()[0])

    def changes_since(self, token: Any) -> tuple[set[str] | None, Any]:
        with self._errors():
            rows = self._conn.execute(
                "SELECT seq, key FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                (token, MAX_REPLAY + 1),
            ).fetchall()
        if not rows:
            return set(), token
        if not replayable([seq for seq, _ in rows], token):
            return None, self._token()
        return {key for _, key in rows}, rows[-1][0]

    def disk_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(self.path + suffix)
        return total

    def wal_bytes(self) -> int:
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0

    # -- writes ----------------------------------------------------------------
    def _begin(self) -> None:
        with self._errors():
            self._conn.execute("BEGIN IMMEDIATE")

    def put(self, key: str, entry: SessionEntry, previous: SessionEntry | None) -> int:
        layout = split_entry(entry, previous)
        self._collector.wrote(layout.may_orphan)
        with self._errors():
            for digest, value in layout.new_blobs:
                self._conn.execute(
                    "INSERT OR IGNORE INTO blobs (hash, value) VALUES (?, ?)",
                    (digest, encode_json(value).decode()),
                )
            text = encode_json(layout.light).decode()
            self._conn.execute(
                "INSERT INTO sessions (key, session_id, updated_at, entry, blobs) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET session_id = excluded.session_id, "
                "updated_at = excluded.updated_at, entry = excluded.entry, blobs = excluded.blobs",
                (
                    key,
                    entry.session_id,
                    updated_at_column(entry),
                    text,
                    encode_json(layout.refs).decode() if layout.refs else None,
                ),
            )
        return len(text.encode()) + layout.blob_bytes

    def remove(self, key: str) -> None:
        self._collector.wrote(True)
        with self._errors():
            self._conn.execute("DELETE FROM sessions WHERE key = ?", (key,))

    def commit(self) -> Any:
        with self._errors():
            token = self._token()
            self._commits += 1
            if self._prune_pending or self._commits % PRUNE_EVERY == 0:
                self._prune_pending = self._prune(token - CHANGE_LOG_KEEP)
            if self._garbage:
                self._delete_garbage()
            self._conn.execute("COMMIT")
        self.signal.bump()
        if not self._garbage and self._collector.due(self.count):
            # Between two commits, outside any transaction: the next commits delete the
            # blobs found here a bounded batch at a time.
            self._garbage = self._find_garbage()
        if self._checkpointer is not None and self._checkpointer.committed():
            restart_log(self._conn, int(self.lock_timeout * 1000))
        return token

    def _prune(self, keep_after: int) -> bool:
        """Delete at most PRUNE_BATCH of the oldest change-log rows up to ``keep_after``;
        whether more are left for the next commit."""
        oldest: int | None = self._conn.execute("SELECT min(seq) FROM changes").fetchone()[0]
        if oldest is None or oldest > keep_after:
            return False
        upto = min(keep_after, oldest + PRUNE_BATCH - 1)
        self._conn.execute("DELETE FROM changes WHERE seq <= ?", (upto,))
        return upto < keep_after

    def _find_garbage(self) -> list[str]:
        """The blobs no session refers to, found on a connection of its own (closed
        afterwards, so reading the whole blobs table leaves nothing in the writer's page
        cache); each is checked again when deleted."""
        with self._errors(), contextlib.closing(self._side_connection()) as side:
            return [digest for (digest,) in side.execute(_UNREFERENCED_BLOBS)]

    def _delete_garbage(self) -> int:
        """Inside a write transaction: delete the next found blobs that are still unreferenced,
        at most COLLECT_BATCH of them and COLLECT_BATCH_BYTES of their JSON."""
        taken, size = 0, 0
        for digest in self._garbage[:COLLECT_BATCH]:
            found = self._conn.execute(
                "SELECT length(value) FROM blobs WHERE hash = ?", (digest,)
            ).fetchone()
            taken += 1
            size += found[0] if found else 0
            if size >= COLLECT_BATCH_BYTES:
                break
        batch, self._garbage = self._garbage[:taken], self._garbage[taken:]
        cursor = self._conn.execute(
            f"DELETE FROM blobs WHERE hash IN ({','.join('?' * len(batch))}) "
            f"AND hash NOT IN ({_REFERENCED_BLOBS})",
            batch,
        )
        self._blob_cache.clear()
        return int(cursor.rowcount)

    def collect_blobs(self) -> int:
        """Delete every blob no session refers to, inside a write transaction (for tests and
        maintenance: the writer deletes a bounded batch per commit). Returns the count."""
        with self._errors():
            self._garbage = self._find_garbage()
            removed = 0
            while self._garbage:
                removed += self._delete_garbage()
        return removed

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.signal.close()
        self._conn.close()
