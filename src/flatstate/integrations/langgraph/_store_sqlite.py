"""The LangGraph store in ``<state_dir>/langgraph-store.sqlite``, a database of its own beside
the facts' (whose ``facts`` table is keyed by fact id, not by namespace and key).

Opened the way every flatstate database is (0600, WAL, a busy timeout, background
checkpoints, migrations in place, a damaged file reported and never replaced). Schema
(version 1):

- ``items``: one row per item; ``namespace`` is the encoded BLOB of :mod:`._items`,
  ``value`` the item's JSON; ``ttl_minutes`` and ``expires_at`` (epoch ms) are set for
  items with a TTL.
- ``items_fts``: FTS5 (porter stemming over unicode61) over each item's indexed text,
  rowid = ``items.seq``, for the keyword ``query``; queries go through the facts' query
  sanitiser, so any text is a safe query.
- ``item_vectors``: one unit-length float32 embedding per indexed field of an item, for
  semantic search with sqlite-vec.

Deleting an item deletes its index entry and vectors by trigger, whoever deletes it (a put
of None, a TTL sweep, the ``sqlite3`` shell). A batch's reads run in one read transaction;
writes take ``BEGIN IMMEDIATE``, so processes sharing the file take turns.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from langgraph.store.base import GetOp, Item, ListNamespacesOp, SearchItem, SearchOp

from flatstate import _sqlite
from flatstate._sqlite import Checkpointer, Translate, restart_log
from flatstate.errors import StoreClosed
from flatstate.facts.query import fts_query
from flatstate.facts.vectors import fact_driver, load_sqlite_vec, vector_driver
from flatstate.integrations.langgraph._filters import CompiledFilter
from flatstate.integrations.langgraph._items import encode_namespace
from flatstate.integrations.langgraph._plan import Put, sql_page
from flatstate.integrations.langgraph._store_engine import (
    MS_PER_MINUTE,
    ORDER,
    ROW_COLUMNS,
    Blobs,
    StoreEngine,
    item_of,
    listing,
    literal_prefix,
    page,
    search_item,
)
from flatstate.model import Clock
from flatstate.writer import Job, Writer

__all__ = ["DB_FILENAME", "SqliteStoreEngine"]

DB_FILENAME = "langgraph-store.sqlite"
WHAT = "LangGraph store database"
PAGE_CACHE_KIB = 8192
_LIVE = "(expires_at IS NULL OR expires_at > ?)"

MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE items (
            seq INTEGER PRIMARY KEY,
            namespace BLOB NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            ttl_minutes REAL,
            expires_at INTEGER,
            UNIQUE (namespace, key)
        )""",
        # Search without a query reads the newest first: this index gives that order, so a
        # page is read, not every match sorted (4x at 2,000 items; a put costs ~5% more).
        "CREATE INDEX items_recent ON items (updated_at DESC, namespace, key)",
        # The sweep's index, holding only the items that can expire.
        "CREATE INDEX items_expiry ON items (expires_at) WHERE expires_at IS NOT NULL",
        "CREATE VIRTUAL TABLE items_fts USING fts5(doc, tokenize='porter unicode61')",
        """CREATE TABLE item_vectors (
            seq INTEGER NOT NULL,
            field TEXT NOT NULL,
            embedding BLOB NOT NULL,
            PRIMARY KEY (seq, field)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER items_delete AFTER DELETE ON items BEGIN
            DELETE FROM items_fts WHERE rowid = old.seq;
            DELETE FROM item_vectors WHERE seq = old.seq;
        END""",
    ),
]


def _namespace_range(labels: Sequence[str]) -> tuple[str, list[Any]]:
    """SQL (and its arguments) for the namespaces that start with ``labels``."""
    if not labels:
        return "", []
    low = encode_namespace(labels)
    # Every namespace under ``low`` lies in [low, low + 0x01): its next byte is a separator.
    return " AND namespace >= ? AND namespace < ?", [low, low + b"\x01"]


class SqliteStoreEngine(StoreEngine):
    def __init__(
        self,
        state_dir: str,
        *,
        vectors: bool,
        dims: int,
        clock: Clock,
        lock_timeout: float,
        synchronous: str,
    ) -> None:
        self.path = self.location = os.path.join(os.path.expanduser(state_dir), DB_FILENAME)
        self.clock = clock
        self._vectors = vectors
        self._dims = dims
        self._lock_timeout = lock_timeout
        driver = vector_driver() if vectors else fact_driver()
        self._driver = driver
        self._errors = Translate(self.path, lock_timeout, driver, WHAT)
        self._conn: sqlite3.Connection = _sqlite.connect(
            self.path,
            MIGRATIONS,
            what=WHAT,
            lock_timeout=lock_timeout,
            readonly=False,
            synchronous=synchronous,
            page_cache_kib=PAGE_CACHE_KIB,
            driver=driver,
        )
        self._lock = threading.RLock()
        self._closed = False
        try:
            if vectors:
                load_sqlite_vec(self._conn)
        except BaseException:
            self._conn.close()
            raise
        self._checkpointer = Checkpointer(
            self.path, driver=driver, name="flatstate-langgraph-checkpoint"
        )
        self._writer = Writer(
            self._commit, lambda: StoreClosed(self.path), name="flatstate-langgraph-writer"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    def close(self) -> None:
        self._writer.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._checkpointer.close()
            # Another process may hold the log; its own checkpoints will copy it back.
            with contextlib.suppress(self._driver.Error):
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._conn.close()

    # -- reads ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        with self._lock, self._errors:
            self._check_open()
            self._conn.execute("BEGIN")  # every read of the batch sees the same state
            try:
                yield
            finally:
                self._conn.execute("COMMIT")

    def get(self, op: GetOp, now: int, refresh: list[int]) -> Item | None:
        row = self._conn.execute(
            f"SELECT {ROW_COLUMNS} FROM items WHERE namespace = ? AND key = ? AND {_LIVE}",
            (encode_namespace(op.namespace), op.key, now),
        ).fetchone()
        if row is None:
            return None
        if op.refresh_ttl and row[6] is not None:
            refresh.append(row[0])
        return item_of(row, tuple(op.namespace))

    def search(
        self,
        op: SearchOp,
        compiled: CompiledFilter,
        query_blobs: dict[str, bytes | None],
        now: int,
        refresh: list[int],
    ) -> list[SearchItem]:
        where = _LIVE
        args: list[Any] = [now]
        in_range, range_args = _namespace_range(op.namespace_prefix)
        where += in_range
        args += range_args
        for clause in compiled.sql:
            where += f" AND {clause}"
        args += compiled.args
        match = fts_query(op.query) if op.query and not self._vectors else None
        blob = query_blobs.get(op.query) if op.query else None
        if blob is not None:  # None also for a zero vector, which points nowhere: unranked
            sql = (
                f"SELECT {ROW_COLUMNS}, (SELECT max(1.0 - vec_distance_cosine(v.embedding, ?)) "
                "FROM item_vectors AS v WHERE v.seq = items.seq AND length(v.embedding) = ?) "
                f"AS score FROM items WHERE {where} "
                f"ORDER BY score IS NULL, score DESC, {ORDER}"
            )
            args = [blob, self._dims * 4, *args]
        elif match is not None:
            # bm25 is lower for better matches; the score given out is higher for them.
            sql = (
                f"SELECT {ROW_COLUMNS}, -m.b FROM (SELECT rowid, bm25(items_fts) AS b "
                "FROM items_fts WHERE items_fts MATCH ?) AS m "
                f"JOIN items ON items.seq = m.rowid WHERE {where} ORDER BY m.b, {ORDER}"
            )
            args = [match, *args]
        else:
            sql = f"SELECT {ROW_COLUMNS}, NULL FROM items WHERE {where} ORDER BY {ORDER}"
        predicate = compiled.predicate()
        if predicate is None:
            rows: Iterable[Sequence[Any]] = self._conn.execute(
                f"{sql} LIMIT ? OFFSET ?", (*args, sql_page(op.limit), sql_page(op.offset))
            ).fetchall()
        else:
            rows = page(self._conn.execute(sql, args), predicate, op.offset, op.limit)
        out = []
        for row in rows:
            if op.refresh_ttl and row[6] is not None:
                refresh.append(row[0])
            out.append(search_item(row))
        return out

    def list_namespaces(self, op: ListNamespacesOp, now: int) -> list[tuple[str, ...]]:
        in_range, args = _namespace_range(literal_prefix(tuple(op.match_conditions or ())))
        cursor = self._conn.execute(
            f"SELECT DISTINCT namespace FROM items WHERE {_LIVE}{in_range} ORDER BY namespace",
            [now, *args],
        )
        return listing((blob for (blob,) in cursor), op)

    # -- writes --------------------------------------------------------------------------
    def write(self, puts: list[Put], blobs: Blobs, refresh: list[int]) -> None:
        self._check_open()
        self._writer.run(Job(lambda conn: self._write(conn, puts, blobs, refresh)))

    def _write(self, conn: Any, puts: list[Put], blobs: Blobs, refresh: list[int]) -> None:
        now = self.clock()
        if refresh:
            conn.executemany(
                "UPDATE items SET expires_at = ? + CAST(ttl_minutes * ? AS INTEGER) "
                f"WHERE seq = ? AND ttl_minutes IS NOT NULL AND {_LIVE}",
                [(now, MS_PER_MINUTE, seq, now) for seq in refresh],
            )
        for put, pairs in zip(puts, blobs, strict=True):
            if put.value is None:
                conn.execute(
                    "DELETE FROM items WHERE namespace = ? AND key = ?", (put.namespace, put.key)
                )
                continue
            expires = None if put.ttl is None else now + int(put.ttl * MS_PER_MINUTE)
            # An item that expired but was not swept yet is replaced as a new one.
            seq = conn.execute(
                "INSERT INTO items (namespace, key, value, created_at, updated_at, ttl_minutes, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
                "created_at = CASE WHEN items.expires_at <= excluded.updated_at "
                "THEN excluded.created_at ELSE items.created_at END, "
                "updated_at = excluded.updated_at, ttl_minutes = excluded.ttl_minutes, "
                "expires_at = excluded.expires_at RETURNING seq",
                (put.namespace, put.key, put.value, now, now, put.ttl, expires),
            ).fetchone()[0]
            conn.execute("DELETE FROM items_fts WHERE rowid = ?", (seq,))
            conn.execute("DELETE FROM item_vectors WHERE seq = ?", (seq,))
            if put.keyword:
                conn.execute("INSERT INTO items_fts (rowid, doc) VALUES (?, ?)", (seq, put.keyword))
            if pairs:
                conn.executemany(
                    "INSERT OR REPLACE INTO item_vectors (seq, field, embedding) VALUES (?, ?, ?)",
                    [(seq, name, blob) for name, blob in pairs],
                )

    def _commit(self, jobs: list[Job]) -> None:
        """The writer's commit: every job in one transaction, each undone alone if it fails."""
        with self._lock, self._errors:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                # A lone job (most often) needs no savepoint: the transaction is its own.
                alone = len(jobs) == 1
                for job in jobs:
                    if not alone:
                        conn.execute("SAVEPOINT job")
                    try:
                        with self._errors:
                            job.result = job.fn(conn)
                    except Exception as exc:
                        conn.execute("ROLLBACK" if alone else "ROLLBACK TO job")
                        job.error = exc
                    if not alone:
                        conn.execute("RELEASE job")
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if self._checkpointer.committed():
                restart_log(conn, int(self._lock_timeout * 1000), self._driver)

    def sweep(self) -> int:
        self._check_open()

        def sweep(conn: Any) -> int:
            return int(
                conn.execute(
                    "DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at <= ?",
                    (self.clock(),),
                ).rowcount
            )

        return int(self._writer.run(Job(sweep)))
