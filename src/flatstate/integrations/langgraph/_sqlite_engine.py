"""The checkpoint tables in a SQLite file of their own (``<state_dir>/langgraph.sqlite``).

Opened like every flatstate database (:mod:`flatstate._sqlite`: 0600 file in a 0700
directory, WAL, a busy timeout, checkpoints of the log on a thread of their own, an
in-place migration list). One writer thread commits every write, with group commit; reads
use one connection per reading thread, and the cache answers most of them. A ``meta`` row
counts commits (``generation``): a reader or the writer that finds it other than the
cache's own knows another process wrote, and drops the cache. Readers ask for it only
when the shared change counter (``langgraph.sqlite.signal``, :mod:`flatstate._signal`),
which every writer bumps after its commit, has moved, or ``CHECK_INTERVAL`` has passed
(for a writer killed between its commit and its bump): so a read served from the cache
costs no query, and a checkpoint acknowledged by any process is seen by the reads that
start after it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from flatstate._signal import open_signal
from flatstate._sqlite import Checkpointer, Translate, connect, restart_log
from flatstate.integrations.langgraph._cache import RowCache
from flatstate.integrations.langgraph._engine import Engine
from flatstate.integrations.langgraph._tables import Sql
from flatstate.writer import Job

__all__ = ["FILE_NAME", "SqliteEngine"]

FILE_NAME = "langgraph.sqlite"
WHAT = "LangGraph checkpoint database"
# Seconds between looks at the generation when the change counter has not moved.
CHECK_INTERVAL = 0.25

MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE checkpoints (
            thread_id TEXT NOT NULL,
            checkpoint_ns TEXT NOT NULL,
            checkpoint_id TEXT NOT NULL,
            parent_id TEXT,
            run_id TEXT,
            type TEXT NOT NULL,
            checkpoint BLOB NOT NULL,
            meta_type TEXT NOT NULL,
            metadata BLOB NOT NULL,
            refs BLOB NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
        )""",
        "CREATE INDEX checkpoints_run ON checkpoints (run_id) WHERE run_id IS NOT NULL",
        """CREATE TABLE writes (
            thread_id TEXT NOT NULL,
            checkpoint_ns TEXT NOT NULL,
            checkpoint_id TEXT NOT NULL,
            task_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            channel TEXT NOT NULL,
            type TEXT NOT NULL,
            value BLOB NOT NULL,
            task_path TEXT NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
        )""",
        # A rowid table: pieces of ~1 KiB fit its pages; in a WITHOUT ROWID table each one
        # would spill a few bytes to an overflow page of its own (4.5 times the disk).
        "CREATE TABLE blobs (digest BLOB PRIMARY KEY, body BLOB NOT NULL)",
        "CREATE TABLE meta (generation INTEGER NOT NULL)",
        "INSERT INTO meta (generation) VALUES (0)",
    ),
]


class _Conn:
    """:class:`Db` over a sqlite3 connection, errors translated to flatstate's."""

    __slots__ = ("conn", "errors")

    def __init__(self, conn: sqlite3.Connection, errors: Translate) -> None:
        self.conn = conn
        self.errors = errors

    def q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.errors:
            return self.conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self.errors:
            self.conn.execute(sql, params)

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.errors:
            self.conn.executemany(sql, rows)


class SqliteEngine(Engine):
    def __init__(
        self,
        state_dir: str,
        *,
        synchronous: str = "normal",
        lock_timeout: float = 30.0,
        cache_bytes: int,
    ) -> None:
        self.path = os.path.join(os.path.abspath(os.path.expanduser(state_dir)), FILE_NAME)
        self.location = self.path
        self.lock_timeout = lock_timeout
        self.sql = Sql("")
        self._errors = Translate(self.path, lock_timeout, sqlite3, WHAT)
        conn = connect(
            self.path,
            MIGRATIONS,
            what=WHAT,
            lock_timeout=lock_timeout,
            readonly=False,
            synchronous=synchronous,
            page_cache_kib=16 << 10,
        )
        self._db = _Conn(conn, self._errors)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._checkpointer = Checkpointer(self.path, name="flatstate-langgraph-checkpoint")
        self._signal = open_signal(self.path + ".signal")
        self._signal_seen = -1  # the counter's value at the last look at the generation
        self._next_check = 0.0
        super().__init__(RowCache(cache_bytes, rows=True), name="flatstate-langgraph-writer")

    def _reader(self) -> _Conn:
        reader: _Conn | None = getattr(self._local, "reader", None)
        if reader is None:
            with self._errors:
                conn = sqlite3.connect(
                    f"file:{self.path}?mode=ro",
                    uri=True,
                    timeout=self.lock_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            with self._readers_lock:
                if self._closed:
                    conn.close()
                    raise self._closed_error()
                self._readers.append(conn)
            reader = self._local.reader = _Conn(conn, self._errors)
        return reader

    @contextlib.contextmanager
    def _reading(self) -> Iterator[_Conn]:
        yield self._reader()

    def _cache_current(self) -> bool:
        return self._signal.read() == self._signal_seen and time.monotonic() < self._next_check

    def _check_generation(self, db: Any) -> None:
        if self._cache_current():
            return
        signal = self._signal.read()  # before the query: a bump after it is looked at next
        (generation,) = db.q("SELECT generation FROM meta")[0]
        if generation != self.cache.generation:
            self.cache.clear()
            self.cache.generation = generation
        self._signal_seen, self._next_check = signal, time.monotonic() + CHECK_INTERVAL

    def _commit(self, batch: list[Job]) -> None:
        db, conn = self._db, self._db.conn
        with self._errors:
            conn.execute("BEGIN IMMEDIATE")
        try:
            # Bumped first: undone with the transaction if nothing commits. Two statements:
            # the same UPDATE with RETURNING took 50-130 us here (SQLite 3.40 builds an
            # ephemeral table for it), these two take 9.
            db.run("UPDATE meta SET generation = generation + 1")
            (generation,) = db.q("SELECT generation - 1 FROM meta")[0]
            if generation != self.cache.generation:
                self.cache.clear()  # another process wrote: nothing cached is certain
            # A lone job needs no savepoint: if it fails, its whole transaction is undone.
            lone = len(batch) == 1
            afters = self._run_jobs(db, batch, contextlib.nullcontext if lone else self._savepoint)
            if lone and batch[0].error is not None:
                conn.execute("ROLLBACK")
                return
            with self._errors:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._signal.bump()  # before any job of the batch is acknowledged
        for after in afters:
            after()
        self.cache.generation = generation + 1
        if self._checkpointer.committed():
            restart_log(conn, int(self.lock_timeout * 1000))

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[None]:
        conn = self._db.conn
        conn.execute("SAVEPOINT job")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            raise
        conn.execute("RELEASE job")

    def _close(self) -> None:
        self._checkpointer.close()
        self._signal.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        self._db.conn.close()

    def disk_bytes(self) -> int:
        """The file and its log, as they are on disk now."""
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))
