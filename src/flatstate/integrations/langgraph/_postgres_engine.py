"""The checkpoint tables on PostgreSQL: ``lg_checkpoints``, ``lg_writes``, ``lg_blobs`` and
``lg_schema_version`` in flatstate's schema (``?schema=`` in the URL, default
``flatstate``), beside the session store's tables and shared by every process and host.

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
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from flatstate._schema import needs_migration
from flatstate.backends.postgres.connection import Patience, lost, unavailable
from flatstate.backends.postgres.dsn import DEFAULT_SCHEMA, redact_dsn, split_dsn
from flatstate.integrations.langgraph._cache import RowCache
from flatstate.integrations.langgraph._engine import Engine
from flatstate.integrations.langgraph._tables import Sql
from flatstate.writer import Job

__all__ = ["PostgresEngine"]

SCHEMA_VERSION = 1
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Writes take it shared, a sweep exclusive (pg_advisory_xact_lock_shared / _lock).
_SWEEP_LOCK = "flatstate-langgraph-sweep"

MIGRATIONS = [
    (
        """CREATE TABLE {s}.lg_checkpoints (
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
        "CREATE INDEX lg_checkpoints_run ON {s}.lg_checkpoints (run_id) WHERE run_id IS NOT NULL",
        """CREATE TABLE {s}.lg_writes (
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
        "CREATE TABLE {s}.lg_blobs (digest bytea PRIMARY KEY, body bytea NOT NULL)",
    ),
]


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
        libpq_dsn, ours = split_dsn(dsn)
        unknown = sorted(set(ours) - {"schema"})
        self.location = redact_dsn(libpq_dsn)
        if unknown:
            raise ValueError(
                f"{self.location}: the checkpointer takes only ?schema= of flatstate's URL "
                f"parameters, not {', '.join(unknown)}; drop them"
            )
        schema = ours.get("schema") or DEFAULT_SCHEMA
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be a lower-case identifier (letters, digits, _), not {schema!r}"
            )
        try:
            params = conninfo_to_dict(libpq_dsn)
        except psycopg.ProgrammingError:
            raise ValueError(f"not a usable PostgreSQL DSN: {self.location}") from None
        self.schema = schema
        self.lock_timeout = lock_timeout
        self.sql = Sql(f'"{schema}".lg_', "%s")
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
            conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.lg_schema_version (version integer)")
            for step in MIGRATIONS[version:]:
                for statement in step:
                    conn.execute(statement.replace("{s}", s).encode())
            if version < SCHEMA_VERSION:
                conn.execute(f"DELETE FROM {s}.lg_schema_version")
                conn.execute(f"INSERT INTO {s}.lg_schema_version VALUES (%s)", (SCHEMA_VERSION,))

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        found = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f'"{self.schema}".lg_schema_version',)
        ).fetchone()
        if not found or not found[0]:
            return 0
        row = conn.execute(f'SELECT max(version) FROM "{self.schema}".lg_schema_version').fetchone()
        return int(row[0] or 0) if row else 0

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
            db.run("SELECT pg_advisory_xact_lock_shared(hashtextextended(%s, 0))", (_SWEEP_LOCK,))
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
                        (_SWEEP_LOCK,),
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
            db.run("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (_SWEEP_LOCK,))
            return inner(db)

        return job

    def _close(self) -> None:
        self._pool.close()
        self._drop_conn()


class _Undo(Exception):
    """A job of the batch failed: undo the batch, then run its jobs one by one."""
