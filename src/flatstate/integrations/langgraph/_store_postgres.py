"""The LangGraph store on PostgreSQL: ``lg_store_items`` and ``lg_store_vectors`` in
flatstate's schema (``?schema=``, default ``flatstate``), shared by every process and host.

Every row carries ``ns``, the URL's ``?namespace=`` (default ``main``, as for sessions and
facts): stores of several namespaces share the tables and never see each other's items.
Per row: ``namespace`` and ``key`` as UTF-8 ``bytea`` (namespaces encoded as in
:mod:`._items`), so they sort as on SQLite and hold any character, NUL included;
``value`` the item's JSON text; ``search`` the ``tsvector`` of its indexed text (NULL when
not indexed), under a GIN index. Keyword queries are the facts' (:mod:`flatstate.facts.query`
picks the words): each word a bound parameter of ``plainto_tsquery``, OR-ed, so no text is
ever parsed as query syntax; the same folding (lower case, no diacritics, punctuation as
spaces) and Snowball English stemming as the facts, in a text search configuration of the
store's own. Filters are matched in Python over the rows of the namespace range (the rules of
:mod:`._filters`). Vectors are ``real[]`` (unit length), searched by casting to pgvector's
``vector``: a store with ``index=`` needs the extension on the server.

A batch's reads run in one ``REPEATABLE READ`` read-only transaction on a pooled
connection; writes go through one writer connection, each batch of jobs one transaction
(a job that fails is undone alone, in a savepoint). A connection lost mid-read or mid-write
is retried on a new one for up to ``lock_timeout``: every write is an upsert, an update of
expiry times or a delete, harmless to repeat when a commit's reply was lost.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from langgraph.store.base import GetOp, Item, ListNamespacesOp, SearchItem, SearchOp
from psycopg_pool import ConnectionPool

from flatstate.backends.postgres.connection import Patience, lost, unavailable
from flatstate.backends.postgres.dsn import dsn_params, resolve
from flatstate.backends.postgres.schema import run_migrations
from flatstate.errors import LockTimeout, ReadOnlyStore, StoreClosed
from flatstate.facts.postgres_schema import MARKS, PUNCTUATION, check_pgvector
from flatstate.facts.query import query_terms
from flatstate.integrations.langgraph._filters import CompiledFilter
from flatstate.integrations.langgraph._items import encode_namespace
from flatstate.integrations.langgraph._plan import Plan, Put, sql_page
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

__all__ = ["PostgresStoreEngine"]

Conn = psycopg.Connection[tuple[Any, ...]]
VERSION_TABLE = "lg_store_schema_version"
_CONFIG = "'{s}.lg_store_search'::regconfig"
# Rows a filtered search fetches from the server at a time.
_ITERSIZE = 256

MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TEXT SEARCH DICTIONARY {s}.lg_store_stem (TEMPLATE = snowball, Language = english)",
        "CREATE TEXT SEARCH CONFIGURATION {s}.lg_store_search (PARSER = pg_catalog.default)",
        "ALTER TEXT SEARCH CONFIGURATION {s}.lg_store_search ADD MAPPING FOR asciiword, word, "
        "numword, asciihword, hword, numhword, hword_asciipart, hword_part, hword_numpart, "
        "int, uint, float, sfloat, version WITH {s}.lg_store_stem",
        f"""CREATE FUNCTION {{s}}.lg_store_fold(p text) RETURNS text
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
            SELECT regexp_replace(regexp_replace(normalize(lower(p), NFKD),
                '{MARKS}', '', 'g'), '{PUNCTUATION}', ' ', 'g')
        $$""",
        """CREATE TABLE {s}.lg_store_items (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            ns text NOT NULL,
            namespace bytea NOT NULL,
            key bytea NOT NULL,
            value text NOT NULL,
            created_at bigint NOT NULL,
            updated_at bigint NOT NULL,
            ttl_minutes double precision,
            expires_at bigint,
            search tsvector,
            UNIQUE (ns, namespace, key)
        )""",
        # Search without a query reads the newest first, as on SQLite.
        "CREATE INDEX lg_store_items_recent ON {s}.lg_store_items "
        "(ns, updated_at DESC, namespace, key)",
        "CREATE INDEX lg_store_items_expiry ON {s}.lg_store_items (ns, expires_at) "
        "WHERE expires_at IS NOT NULL",
        "CREATE INDEX lg_store_items_search ON {s}.lg_store_items USING gin (search) "
        "WHERE search IS NOT NULL",
        """CREATE TABLE {s}.lg_store_vectors (
            seq bigint NOT NULL REFERENCES {s}.lg_store_items (seq) ON DELETE CASCADE,
            field text NOT NULL,
            embedding real[] NOT NULL,
            PRIMARY KEY (seq, field)
        )""",
    ),
]

_LIVE = "ns = %s AND (expires_at IS NULL OR expires_at > %s)"


def _namespace_range(labels: Sequence[str]) -> tuple[str, list[Any]]:
    if not labels:
        return "", []
    low = encode_namespace(labels)
    return " AND namespace >= %s AND namespace < %s", [low, low + b"\x01"]


def _vector(blob: bytes) -> list[float]:
    return array("f", blob).tolist()


class _Failed(Exception):
    """A lone job failed: its transaction is undone (psycopg rolls back on the way out)."""


class PostgresStoreEngine(StoreEngine):
    def __init__(
        self,
        dsn: str,
        *,
        vectors: bool,
        dims: int,
        clock: Clock,
        lock_timeout: float,
        synchronous: str,
        connect_timeout: float,
        pool_size: int,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        where = resolve(dsn, agent_id=None, namespace=None, schema=None, state_dir=None)
        self.location = where.redacted
        self.namespace = where.namespace
        self.schema = where.schema
        self.clock = clock
        self._vectors = vectors
        self._dims = dims
        self._lock_timeout = lock_timeout
        self._dsn = where.libpq_dsn
        params = dsn_params(self._dsn, self.location)
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": params.get("application_name")
            or f"flatstate-lgstore:{self.namespace}"[:63],
        }
        if "connect_timeout" not in params:
            self._kwargs["connect_timeout"] = max(1, int(connect_timeout))
        self._settings = [
            ("client_min_messages", "warning"),  # "word too long to be indexed" is no news
            ("lock_timeout", f"{max(1, int(lock_timeout * 1000))}ms"),
        ]
        if synchronous == "full":
            self._settings.append(("synchronous_commit", "on"))
        s = f'"{self.schema}"'
        self._items = f"{s}.lg_store_items"
        self._vectors_table = f"{s}.lg_store_vectors"
        self._config = _CONFIG.replace("{s}", s)
        self._fold = f"{s}.lg_store_fold"
        # One round trip a put: the upsert, and the item's old vectors deleted with it (the
        # DELETE sees the table as it was before the statement, so the new row is untouched).
        self._upsert = (
            f"WITH up AS (INSERT INTO {self._items} AS i (ns, namespace, key, value, "
            "created_at, updated_at, ttl_minutes, expires_at, search) VALUES "
            f"(%s, %s, %s, %s, %s, %s, %s, %s, to_tsvector({self._config}, {self._fold}(%s))) "
            "ON CONFLICT (ns, namespace, key) DO UPDATE SET value = excluded.value, "
            "created_at = CASE WHEN i.expires_at <= excluded.updated_at "
            "THEN excluded.created_at ELSE i.created_at END, "
            "updated_at = excluded.updated_at, ttl_minutes = excluded.ttl_minutes, "
            "expires_at = excluded.expires_at, search = excluded.search RETURNING seq), "
            f"old AS (DELETE FROM {self._vectors_table} AS v USING up WHERE v.seq = up.seq) "
            "SELECT seq FROM up"
        )
        self._closed = False
        self._commit_lock = threading.Lock()
        self._cursors = itertools.count()
        self._local = threading.local()  # .conn: the snapshot's connection
        self._conn: Conn | None = None
        self._connected = False  # a connection was made once: losing one is worth a retry
        self._write_conn()  # connects and migrates, or says why not
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            self._dsn,
            kwargs=self._kwargs,
            min_size=1,
            max_size=max(1, pool_size),
            timeout=max(connect_timeout, lock_timeout),
            configure=self._configure,
            name="flatstate-lgstore",
            open=False,
        )
        try:
            self._pool.open()
        except BaseException:
            self._drop_conn()
            raise
        self._writer = Writer(
            self._commit, lambda: StoreClosed(self.location), name="flatstate-lgstore-writer"
        )

    # -- connections ----------------------------------------------------------------
    def _configure(self, conn: Conn) -> None:
        for name, value in self._settings:
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))

    def _write_conn(self) -> Conn:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop_conn()
        patience = Patience(self._lock_timeout)
        while True:
            try:
                conn = psycopg.connect(self._dsn, **self._kwargs)
                try:
                    self._configure(conn)
                    run_migrations(
                        conn,
                        self.schema,
                        MIGRATIONS,
                        table=VERSION_TABLE,
                        readonly=False,
                        location=self.location,
                    )
                    if self._vectors:
                        check_pgvector(
                            conn, readonly=False, without="open the store without index="
                        )
                except BaseException:
                    conn.close()
                    raise
                break
            except psycopg.Error as exc:
                # A server that refuses us fails at once; a session lost once made (or
                # terminated while starting) is worth another try.
                made = self._connected or (exc.sqlstate or "").startswith("57P")
                if not (made and lost(exc) and patience.again()):
                    raise self._translate(exc, "open the LangGraph store") from None
        self._conn = conn
        self._connected = True
        return conn

    def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _translate(self, exc: psycopg.Error, doing: str) -> Exception:
        state = exc.sqlstate or ""
        if state == "55P03":
            return LockTimeout(
                self.location,
                self._lock_timeout,
                fix="Another process is writing these items; wait for it or raise lock_timeout.",
            )
        if state in ("25006", "42501"):
            return ReadOnlyStore(self.location, f"the server refused it ({state}: {exc})")
        if lost(exc):
            return unavailable(self.location, exc, doing)
        return exc

    def close(self) -> None:
        if self._closed:
            return
        self._writer.close()
        self._closed = True
        self._pool.close()
        self._drop_conn()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.location)

    # -- reads ----------------------------------------------------------------------
    def read(self, plan: Plan, query_blobs: dict[str, bytes | None]) -> tuple[list[Any], list[int]]:
        patience = Patience(self._lock_timeout)
        while True:
            self._check_open()
            try:
                return super().read(plan, query_blobs)
            except psycopg.Error as exc:
                if not (lost(exc) and patience.again()):
                    raise self._translate(exc, "read the LangGraph store") from None

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def _q(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        conn: Conn = self._local.conn
        return conn.execute(sql, args).fetchall()

    def get(self, op: GetOp, now: int, refresh: list[int]) -> Item | None:
        rows = self._q(
            f"SELECT {ROW_COLUMNS} FROM {self._items} "
            f"WHERE {_LIVE} AND namespace = %s AND key = %s",
            (self.namespace, now, encode_namespace(op.namespace), op.key.encode()),
        )
        if not rows:
            return None
        row = rows[0]
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
        in_range, range_args = _namespace_range(op.namespace_prefix)
        where = _LIVE + in_range
        args: list[Any] = [self.namespace, now, *range_args]
        terms = query_terms(op.query) if op.query and not self._vectors else []
        blob = query_blobs.get(op.query) if op.query else None
        if blob is not None:  # None also for a zero vector, which points nowhere: unranked
            sql = (
                f"SELECT {ROW_COLUMNS}, (SELECT max(1.0 - (v.embedding::vector <=> q.v)) "
                f"FROM {self._vectors_table} AS v WHERE v.seq = i.seq "
                "AND cardinality(v.embedding) = %s) AS score "
                f"FROM (SELECT %s::real[]::vector AS v) AS q, {self._items} AS i "
                f"WHERE {where} ORDER BY score DESC NULLS LAST, {ORDER}"
            )
            args = [self._dims, _vector(blob), *args]
        elif terms:
            one = f"plainto_tsquery({self._config}, {self._fold}(%s))"
            sql = (
                f"SELECT {ROW_COLUMNS}, ts_rank(i.search, q.q) AS score "
                f"FROM (SELECT ({' || '.join([one] * len(terms))}) AS q) AS q, "
                f"{self._items} AS i WHERE i.search @@ q.q AND {where} "
                f"ORDER BY score DESC, {ORDER}"
            )
            args = [*terms, *args]
        else:
            sql = f"SELECT {ROW_COLUMNS}, NULL FROM {self._items} WHERE {where} ORDER BY {ORDER}"
        predicate = compiled.predicate(whole=True)
        rows: Iterable[Sequence[Any]]
        if predicate is None:
            window = (sql_page(op.limit), sql_page(op.offset))
            rows = self._q(f"{sql} LIMIT %s OFFSET %s", (*args, *window))
        else:
            # The rows stream from the server until the page is full.
            conn: Conn = self._local.conn
            with conn.cursor(name=f"lgstore{next(self._cursors)}") as cursor:
                cursor.itersize = _ITERSIZE
                cursor.execute(sql, args)
                rows = page(cursor, predicate, op.offset, op.limit)
        out = []
        for row in rows:
            if op.refresh_ttl and row[6] is not None:
                refresh.append(row[0])
            out.append(search_item(row))
        return out

    def list_namespaces(self, op: ListNamespacesOp, now: int) -> list[tuple[str, ...]]:
        in_range, args = _namespace_range(literal_prefix(tuple(op.match_conditions or ())))
        rows = self._q(
            f"SELECT DISTINCT namespace FROM {self._items} WHERE {_LIVE}{in_range} "
            "ORDER BY namespace",
            [self.namespace, now, *args],
        )
        return listing((bytes(blob) for (blob,) in rows), op)

    # -- writes ---------------------------------------------------------------------
    def write(self, puts: list[Put], blobs: Blobs, refresh: list[int]) -> None:
        self._check_open()
        self._writer.run(Job(lambda conn: self._write(conn, puts, blobs, refresh)))

    def _write(self, conn: Conn, puts: list[Put], blobs: Blobs, refresh: list[int]) -> None:
        now = self.clock()
        items, ns = self._items, self.namespace
        with conn.cursor() as cur:
            if refresh:
                cur.executemany(
                    f"UPDATE {items} SET expires_at = %s + floor(ttl_minutes * %s)::bigint "
                    f"WHERE seq = %s AND ttl_minutes IS NOT NULL AND {_LIVE}",
                    [(now, MS_PER_MINUTE, seq, ns, now) for seq in refresh],
                )
            for put, pairs in zip(puts, blobs, strict=True):
                key = put.key.encode()
                if put.value is None:
                    cur.execute(
                        f"DELETE FROM {items} WHERE ns = %s AND namespace = %s AND key = %s",
                        (ns, put.namespace, key),
                    )
                    continue
                expires = None if put.ttl is None else now + int(put.ttl * MS_PER_MINUTE)
                # PostgreSQL text holds no NUL; to the index it is a space between words.
                keyword = None if put.keyword is None else put.keyword.replace("\x00", " ")
                # An item that expired but was not swept yet is replaced as a new one.
                cur.execute(
                    self._upsert,
                    (ns, put.namespace, key, put.value, now, now, put.ttl, expires, keyword),
                )
                found = cur.fetchone()
                assert found is not None
                seq = found[0]
                if pairs:
                    cur.executemany(
                        f"INSERT INTO {self._vectors_table} (seq, field, embedding) "
                        "VALUES (%s, %s, %s::real[])",
                        [(seq, name, _vector(blob)) for name, blob in pairs],
                    )

    def _commit(self, jobs: list[Job]) -> None:
        """The writer's commit: every job in one transaction, each undone alone if it fails;
        a lost connection retries the batch on a new one."""
        patience = Patience(self._lock_timeout)
        while True:
            try:
                # The writer may commit on its thread while a caller commits inline.
                with self._commit_lock:
                    self._commit_once(jobs)
                return
            except psycopg.Error as exc:
                if not lost(exc):
                    raise self._translate(exc, "write the LangGraph store") from None
                self._drop_conn()
                if not patience.again():
                    raise unavailable(self.location, exc, "write the LangGraph store") from None
                for job in jobs:
                    job.error, job.result = None, None

    def _commit_once(self, jobs: list[Job]) -> None:
        self._check_open()
        conn = self._write_conn()
        alone = len(jobs) == 1
        try:
            with conn.transaction():
                for job in jobs:
                    try:
                        if alone:
                            job.result = job.fn(conn)
                        else:
                            with conn.transaction():  # a savepoint: undoes this job alone
                                job.result = job.fn(conn)
                    except psycopg.Error as exc:
                        if lost(exc):
                            raise
                        job.error = self._translate(exc, "write the LangGraph store")
                    except Exception as exc:
                        job.error = exc
                    if alone and job.error is not None:
                        raise _Failed
        except _Failed:
            pass

    def sweep(self) -> int:
        self._check_open()

        def sweep(conn: Conn) -> int:
            return conn.execute(
                f"DELETE FROM {self._items} "
                "WHERE ns = %s AND expires_at IS NOT NULL AND expires_at <= %s",
                (self.namespace, self.clock()),
            ).rowcount

        return int(self._writer.run(Job(sweep)))
