"""The checkpoint tables on PostgreSQL: ``lg_checkpoints``, ``lg_writes``, ``lg_blobs`` and
``lg_schema_version`` in flatstate's schema (``?schema=`` in the URL, default
``flatstate``), beside the session store's tables and shared by every process and host.

A ``?namespace=`` other than the default (``main``, as for sessions and facts) has tables of
its own, ``lg_<name>_<hash>_checkpoints`` and so on (:func:`table_prefix`): LangGraph's
thread ids are global to a checkpointer, so two namespaces on one database must never
meet, and their own tables keep every statement (shared with SQLite) as it is. The URL's
``state_dir`` is accepted and unused: the checkpointer keeps nothing on local disk.

One writer connection commits each batch of writes in one transaction (group commit); a
batch in which a job fails is undone and its jobs run again one transaction each, so one
bad write never takes the others with it. Reads use a small pool. Only pieces are cached
(a digest always names the same bytes): rows are read from the server every time, since
other hosts write them.

A sweep (after a delete or prune) takes an advisory lock every write shares, so no put can
rely on a piece the sweep is deleting. A connection lost mid-write is retried on a new one
for up to ``lock_timeout``: every write is idempotent (upserts and deletes), so a commit
whose reply was lost is harmless to repeat.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from flatstate._schema import needs_migration
from flatstate.backends.postgres.connection import Patience, lost, unavailable
from flatstate.backends.postgres.dsn import dsn_params, resolve
from flatstate.backends.postgres.schema import table_version
from flatstate.integrations.langgraph._cache import RowCache
from flatstate.integrations.langgraph._engine import Engine
from flatstate.integrations.langgraph._tables import Sql
from flatstate.keys import DEFAULT_AGENT_ID
from flatstate.writer import Job

__all__ = ["PostgresEngine"]

SCHEMA_VERSION = 1
_UNSAFE = re.compile(r"[^a-z0-9_]+")
# Room for the longest name made from a prefix (lg_<tag>_checkpoints_run) in PostgreSQL's 63.
_TAG_CHARS = 24
_SWEEP_LOCK = "flatstate-langgraph-sweep"

MIGRATIONS = [
    (
        """CREATE TABLE {p}checkpoints (
            thread_id text COLLATE "C" NOT NULL,
            checkpoint_ns text COLLATE "C" NOT NULL,
            checkpoint_id text COLLATE "C" NOT NULL,
            parent_id text COLLATE "C",
            run_id text,
            type text NOT NULL,
            checkpoint bytea NOT NULL,
            meta_type text NOT NULL,
            metadata bytea NOT NULL,
            refs bytea NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
        )""",
        "CREATE INDEX {t}checkpoints_run ON {p}checkpoints (run_id) WHERE run_id IS NOT NULL",
        """CREATE TABLE {p}writes (
            thread_id text COLLATE "C" NOT NULL,
            checkpoint_ns text COLLATE "C" NOT NULL,
            checkpoint_id text COLLATE "C" NOT NULL,
            task_id text COLLATE "C" NOT NULL,
            idx integer NOT NULL,
            channel text NOT NULL,
            type text NOT NULL,
            value bytea NOT NULL,
            task_path text COLLATE "C" NOT NULL,
            PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
        )""",
        "CREATE TABLE {p}blobs (digest bytea PRIMARY KEY, body bytea NOT NULL)",
    ),
]


def table_prefix(namespace: str) -> str:
    """What the checkpoint tables of ``namespace`` are named with: ``lg_`` for the default
    namespace (the tables of every earlier release), else ``lg_`` and a readable part of the
    name with a hash of all of it (names differing only in case or punctuation stay apart)."""
    if namespace == DEFAULT_AGENT_ID:
        return "lg_"
    readable = _UNSAFE.sub("_", namespace.lower()).strip("_")[:_TAG_CHARS]
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:10]
    return f"lg_{readable}_{digest}_" if readable else f"lg_{digest}_"


class _Conn:
    """:class:`Db` over a psycopg connection."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, params)

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(sql, list(rows))


class PostgresEngine(Engine):
    def __init__(
        self,
        dsn: str,
        *,
        lock_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        cache_bytes: int,
        pool_size: int = 4,
    ) -> None:
        where = resolve(dsn, agent_id=None, namespace=None, schema=None, state_dir=None)
        libpq_dsn, schema = where.libpq_dsn, where.schema
        self.location = where.redacted
        self.namespace = where.namespace
        self.tables = table_prefix(where.namespace)
        params = dsn_params(libpq_dsn, self.location)
        self.schema = schema
        self.lock_timeout = lock_timeout
        self.sql = Sql(f'"{schema}".{self.tables}', "%s")
        # Writes take it shared, a sweep exclusive (pg_advisory_xact_lock_shared / _lock).
        self._sweep_lock = f"{_SWEEP_LOCK}/{schema}/{self.tables}"
        self._dsn = libpq_dsn
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": params.get("application_name") or "flatstate-langgraph",
        }
        if "connect_timeout" not in params:
            self._kwargs["connect_timeout"] = max(1, int(connect_timeout))
        self._conn: psycopg.Connection[Any] | None = None
        self._write_conn()  # connects and migrates, or says why not
        self._pool = ConnectionPool(
            libpq_dsn,
            kwargs=self._kwargs,
            min_size=1,
            max_size=max(1, pool_size),
            timeout=max(connect_timeout, lock_timeout),
            name="flatstate-langgraph",
            open=False,
        )
        try:
            self._pool.open()
        except BaseException:
            self._drop_conn()
            raise
        super().__init__(RowCache(cache_bytes, rows=False), name="flatstate-langgraph-pg-writer")

    # -- connections ----------------------------------------------------------------
    def _write_conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            patience = Patience(self.lock_timeout)
            while True:
                try:
                    conn = psycopg.connect(self._dsn, **self._kwargs)
                    try:
                        self._migrate(conn)
                    except BaseException:
                        conn.close()
                        raise
                    break
                except psycopg.Error as exc:
                    if not lost(exc) or not patience.again():
                        raise unavailable(self.location, exc, "connect") from None
            self._conn = conn
        return self._conn

    def _drop_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        s = f'"{self.schema}"'
        version = self._version(conn)
        if not needs_migration(self.location, version, SCHEMA_VERSION, readonly=False):
            return
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"flatstate-langgraph-migrate/{self.schema}",),
            )
            version = self._version(conn)
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            p = f"{s}.{self.tables}"
            conn.execute(f"CREATE TABLE IF NOT EXISTS {p}schema_version (version integer)")
            for step in MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement.replace("{p}", p).replace("{t}", self.tables).encode())
            if version < SCHEMA_VERSION:
                conn.execute(f"DELETE FROM {p}schema_version")
                conn.execute(f"INSERT INTO {p}schema_version VALUES (%s)", (SCHEMA_VERSION,))

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        return table_version(conn, self.schema, f"{self.tables}schema_version")

    @contextlib.contextmanager
    def _reading(self) -> Iterator[_Conn]:
        try:
            with self._pool.connection() as conn:
                yield _Conn(conn)
        except psycopg.Error as exc:
            if lost(exc):
                raise unavailable(self.location, exc, "read checkpoints") from None
            raise

    # -- writes ---------------------------------------------------------------------
    def _commit(self, batch: list[Job]) -> None:
        patience = Patience(self.lock_timeout)
        while True:
            try:
                try:
                    self._commit_once(batch)
                except _Undo:
                    self._run_alone(batch)
                return
            except psycopg.Error as exc:
                if not lost(exc):
                    raise
                self._drop_conn()
                if not patience.again():
                    raise unavailable(self.location, exc, "write checkpoints") from None
                for job in batch:
                    job.error = None

    def _commit_once(self, batch: list[Job]) -> None:
        conn = self._write_conn()
        db = _Conn(conn)
        with conn.transaction():
            db.run(
                "SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))", (self._sweep_lock,)
            )
            afters = self._run_jobs(db, batch, contextlib.nullcontext)
            if any(job.error is not None for job in batch):
                raise _Undo
        for after in afters:
            after()

    def _run_alone(self, batch: list[Job]) -> None:
        conn = self._write_conn()
        db = _Conn(conn)
        for job in batch:
            job.error = None
            try:
                with conn.transaction():
                    db.run(
                        "SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))",
                        (self._sweep_lock,),
                    )
                    result, after = job.fn(db)
            except psycopg.Error as exc:
                if lost(exc):
                    raise
                job.error = exc
                continue
            except Exception as exc:
                job.error = exc
                continue
            job.result = result
            if after is not None:
                after()

    def maintenance_job(self, fn: Any) -> Any:
        inner = super().maintenance_job(fn)

        def job(db: Any) -> Any:
            db.run("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (self._sweep_lock,))
            return inner(db)

        return job

    def _close(self) -> None:
        self._pool.close()
        self._drop_conn()


class _Undo(Exception):
    """A job of the batch failed: undo the batch, then run its jobs one by one."""
