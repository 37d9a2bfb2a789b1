"""The PostgreSQL backend: reads, the write protocol and the listener's hand-off (the
package docstring, :mod:`flatstate.backends.postgres`, tells the design)."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from flatstate.backends._blobs import (
    CHANGE_LOG_KEEP,
    COLLECT_BATCH,
    MAX_REPLAY,
    BlobCache,
    Collector,
    load_blob,
    replayable,
    split_entry,
    updated_at_column,
)
from flatstate.backends.base import Backend, RetryWrite, Row, StaleView
from flatstate.backends.postgres.connection import (
    RECONNECT_PAUSE,
    LostWhilePreparing,
    Patience,
    lost,
    translate,
    unavailable,
)
from flatstate.backends.postgres.dsn import dsn_params, resolve, split_dsn
from flatstate.backends.postgres.listen import Listener, shared_signal
from flatstate.backends.postgres.queries import Op, Queries
from flatstate.backends.postgres.schema import STALE_SQLSTATE, channel_name, migrate
from flatstate.backends.postgres.transcript_schema import migrate_transcripts
from flatstate.backends.postgres.transcripts import PgTranscript, PgTranscripts
from flatstate.errors import CommitOutcomeUnknown, StoreCorrupt, StoreUnavailable
from flatstate.frozen import StringPool, decode_json, encode_json
from flatstate.model import SessionEntry, build_entry

__all__ = ["PostgresBackend"]

DEFAULT_POOL_SIZE = 4
TRANSCRIPTS_DIRNAME = "transcripts"
SCAN_BATCH = 1000
# The change log is pruned every PRUNE_EVERY commits by at most PRUNE_BATCH rows, in the
# commit's own round trip: up to 256 rows a commit, more than a full batch of writes logs.
PRUNE_EVERY = 16
PRUNE_BATCH = 4096
# How long to keep asking whether a commit whose reply was lost happened.
OUTCOME_PATIENCE = 30.0
# After a write run on the store's view found the namespace moved on, this many writes
# take the lock first (another process is writing: a view would likely be stale again).
LOCK_FIRST_AFTER_STALE = 16

# Row versions the backend remembers: > 0 the row's version, 0 known absent, -1 unknown.
_ABSENT = 0
_UNKNOWN = -1

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")


class PostgresBackend(Backend):
    """Sessions of one namespace in a PostgreSQL database (see the module docstring).

    Options (also accepted as URL parameters ``namespace``, ``schema``,
    ``state_dir``; a keyword wins over the URL):

    - ``namespace``: whose sessions these are (default: ``agent_id``).
    - ``schema`` (``flatstate``): the PostgreSQL schema holding the tables,
      created with them on first use.
    - ``state_dir``: the local directory of what stays local (facts, auth; default
      ``~/.flatstate/<namespace>``); transcripts live in the database.
    - ``pool_size`` (4): most pooled connections; one more, outside the pool,
      listens for notifications.
    - ``prepare_threshold`` (5, psycopg's default): executions before a
      read's statement is prepared server-side (writes bind on the client);
      ``None`` never prepares, which PgBouncer in transaction mode needs
      before version 1.21.
    - ``listen_dsn``: where the listening connection goes, when the pool goes
      through a pooler that cannot LISTEN (PgBouncer in transaction mode);
      defaults to the DSN.
    - ``synchronous``: ``"normal"`` keeps the server's ``synchronous_commit``
      (on, unless changed); ``"full"`` forces it on; ``"off"`` turns it off
      (faster; a crash of the server may lose the last commits, never corrupts).
    """

    keeps_transcripts = True

    def __init__(
        self,
        dsn: str,
        *,
        pool: StringPool,
        agent_id: str | None = None,
        namespace: str | None = None,
        schema: str | None = None,
        state_dir: str | None = None,
        lock_timeout: float = 10.0,
        synchronous: str = "normal",
        readonly: bool = False,
        pool_size: int = DEFAULT_POOL_SIZE,
        prepare_threshold: int | None = 5,
        listen_dsn: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        sync = synchronous.lower()
        if sync not in {"normal", "full", "off"}:
            raise ValueError(f"synchronous must be 'normal', 'full' or 'off', not {synchronous!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        where = resolve(
            dsn, agent_id=agent_id, namespace=namespace, schema=schema, state_dir=state_dir
        )
        libpq_dsn, namespace = where.libpq_dsn, where.namespace
        self.pool = pool
        self.readonly = readonly
        self.lock_timeout = lock_timeout
        self.namespace = namespace
        self.schema = where.schema
        self.location = where.redacted
        self.state_dir = where.state_dir
        self.transcripts_dir = os.path.join(self.state_dir, TRANSCRIPTS_DIRNAME)
        self.channel = channel_name(self.schema, namespace)
        self._synchronous = {"normal": None, "full": "on", "off": "off"}[sync]
        self._lock_timeout_ms = f"{max(1, int(lock_timeout * 1000))}ms"
        self._sql = Queries(self.schema)

        params = dsn_params(libpq_dsn, self.location)
        extra: dict[str, Any] = {}
        if "connect_timeout" not in params:
            extra["connect_timeout"] = max(1, int(connect_timeout))
        app = params.get("application_name") or f"flatstate:{namespace}"[:63]
        self._conn_kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": prepare_threshold,
            "application_name": app,
            **extra,
        }
        self._listen_dsn = split_dsn(listen_dsn)[0] if listen_dsn else libpq_dsn
        self._listen_kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": f"flatstate-listen:{namespace}"[:63],
            # Notice a silently dead server within ~10 s rather than never.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            **extra,
        }

        self.signal = shared_signal(self.location)
        self._known = 0  # the newest log position the store has taken in
        self.notified = 0  # the newest log position the listener has announced
        self._versions: dict[str, int] = {}
        self._versions_complete = False
        self._blob_cache = BlobCache()
        self._commits = 0
        self._collector = Collector()
        self._collect_pending = False  # the last collection stopped at its bound
        self._scans = itertools.count()
        # The write transaction in progress.
        self._conn: Conn | None = None
        self._writing = False
        self._ops: list[Op] = []
        self._touched: set[str] = set()
        self._txn_head: int | None = None  # the log's head read under the lock (eager)
        self._txn_token = 0  # where the store caught up to for this write
        self._marker = 0
        self._speculating = False  # this write runs on the store's view, locked at commit
        self._lock_first = 0  # writes left that take the lock first (after a stale view)

        # The first connection migrates the schema, then becomes the listener: LISTEN
        # before the store's first read, so that no commit falls between the two.
        patience = self._patience()
        while True:
            try:
                first = self._connect_listener(migrate=True)
                break
            except LostWhilePreparing as lost:
                if not patience.again():
                    raise lost.error from lost
        try:
            self._listener = Listener(first, self._connect_listener, self._notified)
        except BaseException:
            first.close()
            raise
        self._pool = ConnectionPool(
            libpq_dsn,
            kwargs=self._conn_kwargs,
            min_size=1,
            max_size=max(1, pool_size),
            timeout=max(connect_timeout, lock_timeout),
            num_workers=1,
            name=f"flatstate:{namespace}",
            open=False,
        )
        try:
            self._pool.open()
        except BaseException:
            self._listener.close()
            raise
        self.transcripts = PgTranscripts(self)

    # -- connections ---------------------------------------------------------------
    def _unavailable(self, exc: BaseException, doing: str) -> StoreUnavailable:
        return unavailable(self.location, exc, doing)

    def _connect_listener(self, migrate: bool = False) -> Conn:
        """A new listening connection (migrating the schema first, when opening).

        A server that cannot be reached fails at once; a connection lost after it
        was made raises :class:`LostWhilePreparing`, worth another try.
        """
        try:
            conn: Conn = psycopg.connect(self._listen_dsn, **self._listen_kwargs)
        except psycopg.Error as exc:
            raise self._unavailable(exc, "connect") from exc
        try:
            if migrate:
                self._migrate(conn)
            conn.execute(f'LISTEN "{self.channel}"')
        except psycopg.Error as exc:
            conn.close()
            if lost(exc):
                raise LostWhilePreparing(self._unavailable(exc, "prepare the store")) from exc
            raise self._translate(exc, "prepare the store") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _notified(self, position: int | None) -> None:
        """From the listener thread: a commit at ``position`` (None: catch up from the log)."""
        if position is None or position > self._known:
            self.signal.bump()
        # Published after the bump: a reader that sees this value and then reads is served
        # that commit or a later one.
        if position is not None and position > self.notified:
            self.notified = position

    def _getconn(self) -> Conn:
        try:
            return self._pool.getconn()
        except PoolTimeout as exc:
            raise self._unavailable(exc, "get a connection from the pool") from exc

    def _putconn(self, conn: Conn) -> None:
        with contextlib.suppress(Exception):
            self._pool.putconn(conn)

    def _patience(self) -> Patience:
        return Patience(self.lock_timeout)

    def _drop_dead_connections(self) -> None:
        """After one connection was found dead, test the idle others (a server restart or
        a terminated session kills them all) so the next attempt gets a live one."""
        with contextlib.suppress(Exception):
            self._pool.check()

    def _reading(self, fn: Callable[[Conn], T]) -> T:
        """Run ``fn`` on the write transaction's connection, or on a pooled one.

        Outside a transaction a lost connection is retried on another; inside,
        the transaction is gone with it and the whole write is retried.
        """
        if self._conn is not None:
            try:
                return fn(self._conn)
            except psycopg.Error as exc:
                raise self._translate(exc, "read") from exc
        patience = self._patience()
        while True:
            conn = self._getconn()
            try:
                return fn(conn)
            except psycopg.Error as exc:
                if not lost(exc) or not patience.again():
                    raise self._translate(exc, "read") from exc
            finally:
                self._putconn(conn)
            self._drop_dead_connections()

    def _translate(self, exc: psycopg.Error, doing: str) -> Exception:
        """The flatstate error for a psycopg one; retryable ones wrapped in RetryWrite."""
        return translate(
            exc,
            doing,
            location=self.location,
            schema=self.schema,
            lock_timeout=self.lock_timeout,
            writing=self._conn is not None,
        )

    # -- schema --------------------------------------------------------------------
    def _migrate(self, conn: Conn) -> None:
        """Create or upgrade the schema, and register the namespace; serialized by a lock."""
        try:
            migrate(conn, self.schema, readonly=self.readonly, location=self.location)
            migrate_transcripts(conn, self.schema, readonly=self.readonly, location=self.location)
            if not self.readonly:
                conn.execute(self._sql.add_namespace, (self.namespace, self.namespace))
        except psycopg.Error as exc:
            if lost(exc):
                raise  # the connection died under the migration: the opener tries again
            raise self._translate(exc, "migrate the schema") from exc

    # -- reads ---------------------------------------------------------------------
    def _row(self, key: str, text: str, blobs: str | None) -> Row:
        data = decode_json(text)
        if blobs:
            for field, digest in decode_json(blobs).items():
                value = self._blob_cache.get(digest)
                if value is None:
                    raise _MissingBlob(digest)
                data[field] = value
        return key, build_entry(key, data, pool=self.pool, on_load=True)

    def _load_blobs(self, conn: Conn, refs: list[str | None]) -> None:
        """Have in the cache every blob that ``refs`` (rows' blob columns) name, fetching
        the missing ones in one query; the rows about to be built keep theirs even when
        that takes the cache past its bound."""
        named: set[str] = set()
        for text in refs:
            if text:
                named.update(decode_json(text).values())
        if not named:
            return
        cache = self._blob_cache
        wanted = [digest for digest in named if cache.get(digest) is None]
        if wanted:
            for digest, text in conn.execute(self._sql.blobs, (self.namespace, wanted)):
                cache.add(digest, load_blob(text, digest, self.pool))
        cache.trim(keep=len(named))

    def _missing_blob(self, digest: str) -> StoreCorrupt:
        return StoreCorrupt(
            self.location,
            f"a session refers to blob {digest[:12]}... which is missing",
            f"Look for it with: SELECT hash FROM {self.schema}.blobs WHERE hash = '{digest}'",
        )

    def scan(self) -> tuple[Any, Iterator[Row]]:
        """Every row, in key order, streamed in batches from a server-side cursor.

        Outside a write the token and the rows come from one snapshot. A
        connection lost mid-scan is replaced and the scan resumes after the last
        key it gave, in a newer snapshot: rows that changed meanwhile are newer
        than the token, and the change log after the token (which the store
        replays) covers them.
        """
        if self._conn is not None:
            try:
                token = self._position(self._conn)
                cursor = self._open_scan(self._conn, None)
            except psycopg.Error as exc:
                raise self._translate(exc, "read the sessions") from exc
            self._txn_token = token
            return self._scan_result(token, self._conn, cursor, own=False)
        patience = self._patience()
        while True:
            conn = self._getconn()
            try:
                # One snapshot for the token and every row (and every blob they name).
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                token = self._position(conn)
                cursor = self._open_scan(conn, None)
            except psycopg.Error as exc:
                self._end_read(conn)
                if not lost(exc) or not patience.again():
                    raise self._translate(exc, "read the sessions") from exc
                self._drop_dead_connections()
                continue
            if self._writing:
                self._txn_token = token
            return self._scan_result(token, conn, cursor, own=True)

    def _open_scan(self, conn: Conn, after: str | None) -> psycopg.ServerCursor[Any]:
        cursor = conn.cursor(name=f"flatstate_scan_{next(self._scans)}")
        if after is None:
            cursor.execute(self._sql.scan, (self.namespace,))
        else:
            cursor.execute(self._sql.scan_after, (self.namespace, after))
        return cursor

    def _scan_result(
        self, token: int, conn: Conn, cursor: psycopg.ServerCursor[Any], *, own: bool
    ) -> tuple[int, Iterator[Row]]:
        self._known = max(self._known, token)
        versions: dict[str, int] = {}
        self._versions = versions
        self._versions_complete = False

        def rows() -> Iterator[Row]:
            nonlocal conn
            scanning: psycopg.ServerCursor[Any] | None = cursor
            holding = own  # whether ``conn`` is ours to give back
            last: str | None = None
            patience = self._patience()
            try:
                while True:
                    try:
                        if scanning is None:  # resume on another connection
                            conn = self._getconn()
                            holding = True
                            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                            scanning = self._open_scan(conn, last)
                        batch = scanning.fetchmany(SCAN_BATCH)
                        if not batch:
                            break
                        self._load_blobs(conn, [blobs for _, _, _, blobs in batch])
                    except psycopg.Error as exc:
                        if not (own and lost(exc)) or not patience.again():
                            raise self._translate(exc, "read the sessions") from exc
                        self._end_read(conn)
                        holding = False
                        self._drop_dead_connections()
                        scanning = None
                        # The rest comes from a newer snapshot: have the store replay the log.
                        self.signal.bump()
                        continue
                    for key, version, text, blobs in batch:
                        versions[key] = version
                        try:
                            yield self._row(key, text, blobs)
                        except _MissingBlob as missing:
                            raise self._missing_blob(missing.digest) from None
                        last = key
                self._versions_complete = True
            finally:
                if scanning is not None:
                    with contextlib.suppress(psycopg.Error):
                        scanning.close()
                if holding:
                    self._end_read(conn)

        return token, rows()

    def _end_read(self, conn: Conn) -> None:
        if not conn.broken and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.execute("COMMIT")
        self._putconn(conn)

    def _position(self, conn: Conn) -> int:
        row = conn.execute(self._sql.position, (self.namespace,)).fetchone()
        return int(row[0]) if row else 0

    def read(self, key: str) -> Row | None:
        def fetch(conn: Conn) -> Row | None:
            digest = ""
            # Outside a write transaction a blob may be collected between the row's read
            # and the blob's (the row was rewritten meanwhile): read the row again.
            for _ in range(3):
                found = conn.execute(self._sql.read, (self.namespace, key)).fetchone()
                if found is None:
                    self._forget(key, _ABSENT)
                    return None
                version, text, blobs = found
                self._load_blobs(conn, [blobs])
                try:
                    row = self._row(key, text, blobs)
                except _MissingBlob as missing:
                    digest = missing.digest
                    continue
                self._versions[key] = version
                return row
            raise self._missing_blob(digest)

        return self._reading(fetch)

    def scan_keys(self) -> list[str]:
        return self._reading(
            lambda conn: [k for (k,) in conn.execute(self._sql.keys, (self.namespace,))]
        )

    def count(self) -> int:
        def fetch(conn: Conn) -> int:
            row = conn.execute(self._sql.count, (self.namespace,)).fetchone()
            return int(row[0]) if row else 0

        return self._reading(fetch)

    def changes_since(self, token: Any) -> tuple[set[str] | None, Any]:
        if self._writing and token == self._txn_head:
            # The head of the log, read under the lock, says nothing happened since.
            self._txn_token = token
            return set(), token

        def fetch(conn: Conn) -> tuple[set[str] | None, int]:
            rows = conn.execute(
                self._sql.changes, (self.namespace, token, MAX_REPLAY + 1)
            ).fetchall()
            if not rows:
                if self._writing and self._txn_head is not None and token > self._txn_head:
                    return None, self._position(conn)  # the log went backwards: reload
                return set(), token
            if not replayable([position for position, _ in rows], token):
                return None, self._position(conn)
            return {key for _, key in rows}, rows[-1][0]

        changed, newest = self._reading(fetch)
        if changed is not None:
            self._known = max(self._known, newest)
            if self._writing:
                self._txn_token = newest
        return changed, newest

    def disk_bytes(self) -> int:
        def fetch(conn: Conn) -> int:
            row = conn.execute(self._sql.disk_bytes, (self.namespace,) * 3).fetchone()
            return int(row[0] or 0) if row else 0

        return self._reading(fetch)

    def transcript(self, entry: SessionEntry, key: str) -> PgTranscript:
        return self.transcripts.open(entry, key)

    def transcript_usage(self) -> tuple[int, int]:
        return self.transcripts.usage()

    def archive_transcript(
        self, entry: SessionEntry, key: str, reason: str, now_ms: int
    ) -> str | None:
        return self.transcripts.archive(self.transcripts.open(entry, key).name, reason, now_ms)

    # -- writes --------------------------------------------------------------------
    def _begin(self) -> None:
        """Start a write: BEGIN, then the namespace lock and the log's head (one round trip).

        When no other writer's commit has been announced since the store last caught
        up, nothing is sent: the write runs on the store's view and :meth:`commit`
        sends the lock, a check that the log's head is still there, the rows and
        ``COMMIT`` in one round trip. If the head moved, nothing is written and the
        store runs the write again (:class:`StaleView`), locking first.
        """
        self._writing = True
        self._ops = []
        self._touched = set()
        self._marker = secrets.randbits(62) + 1
        self._txn_head = None
        if self._lock_first:
            self._lock_first -= 1
        elif self.notified <= self._known:
            self._speculating = True
            self._txn_head = self._txn_token = self._known
            return
        patience = self._patience()
        while True:
            conn = self._getconn_writing()
            try:
                cursor = psycopg.ClientCursor(conn)
                cursor.execute(
                    "BEGIN; " + self._sql.begin_write,
                    (self.namespace, self._lock_timeout_ms, self._synchronous, self._marker),
                )
                cursor.nextset()
                row = cursor.fetchone()
            except psycopg.Error as exc:
                self._abandon(conn)
                if lost(exc) and patience.again():
                    self._drop_dead_connections()
                    continue  # nothing was done yet: try again on another connection
                self._end_write()
                error = self._translate(exc, "start a write")
                # Still nothing done: the store may try the whole write again, after a pause.
                raise (RetryWrite(error) if lost(exc) else error) from exc
            assert row is not None
            self._conn = conn
            self._txn_head = self._txn_token = int(row[0])
            return

    def _getconn_writing(self) -> Conn:
        try:
            return self._getconn()
        except BaseException:
            self._end_write()
            raise

    def _end_write(self) -> None:
        self._writing = False
        self._speculating = False
        self._txn_head = None
        self._conn = None
        self._ops = []

    def _abandon(self, conn: Conn) -> None:
        """Roll back whatever ``conn`` holds and give it back (a broken one is discarded)."""
        if not conn.broken and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        self._putconn(conn)

    def _expected(self, key: str) -> int | None:
        """The version ``key`` must be at for this write: None when it cannot be known."""
        if key in self._touched:
            return None  # written earlier in this transaction
        self._touched.add(key)
        version = self._versions.get(key)
        if version is None:
            return _ABSENT if self._versions_complete else None
        return None if version == _UNKNOWN else version

    def put(self, key: str, entry: SessionEntry, previous: SessionEntry | None) -> int:
        sql = self._sql
        # A value shared with the row being replaced is stored already, and cannot
        # be collected meanwhile: collecting takes the namespace lock and moves the
        # log's head, which this write checks.
        light, refs, new_blobs, blob_bytes, may_orphan = split_entry(entry, previous)
        self._collector.wrote(may_orphan)
        for digest, value in new_blobs:
            text = encode_json(value)
            self._ops.append(Op(sql.put_blob, (self.namespace, digest, text.decode())))
        encoded = encode_json(light)
        updated = updated_at_column(entry)
        self._ops.append(
            Op(
                sql.put,
                (
                    self.namespace,
                    key,
                    entry.session_id,
                    updated,
                    encoded.decode(),
                    encode_json(refs).decode() if refs else None,
                    self._expected(key),
                ),
                key,
                put=True,
            )
        )
        return len(encoded) + blob_bytes

    def remove(self, key: str) -> None:
        self._collector.wrote(True)
        self._ops.append(Op(self._sql.remove, (self.namespace, key, self._expected(key)), key))

    def commit(self) -> Any:
        assert self._writing, "commit() without begin()"
        ops = self._ops
        base = self._txn_token
        speculating = self._speculating
        statements: list[tuple[str, Sequence[Any]]] = [(op.query, op.params) for op in ops]
        if speculating:
            self._conn = self._getconn_writing()
            lock = (self.namespace, self._lock_timeout_ms, self._synchronous, self._marker, base)
            statements.insert(0, ("BEGIN; " + self._sql.begin_write_at, lock))
        assert self._conn is not None
        conn = self._conn
        self._commits += 1
        pruning = self._commits % PRUNE_EVERY == 0
        if pruning:
            prune = (self.namespace, base - CHANGE_LOG_KEEP, self.namespace, PRUNE_BATCH - 1)
            statements.append((self._sql.prune, prune))
        collecting = self._collect_pending or self._collector.due(self.count)
        if collecting:
            collect = (self.namespace, self.namespace, self.namespace, COLLECT_BATCH)
            statements.append((self._sql.collect_blobs, collect))
        written: list[tuple[Op, Any]] = []
        try:
            cursor = psycopg.ClientCursor(conn)
            # Bound one statement at a time, then sent as one query: psycopg keeps the parse
            # of each short statement, while the batch joined first is new text every time
            # and was parsed afresh (~40 % of binding's cost at 64 tasks).
            cursor.execute("; ".join([*(cursor.mogrify(q, p) for q, p in statements), "COMMIT"]))
            if speculating:
                cursor.nextset()  # past BEGIN
                cursor.nextset()  # past the lock and the check of the log's head
            # One result per statement, in order: each row function's is its position.
            for op in ops:
                if op.key is not None:
                    written.append((op, cursor.fetchone()))
                cursor.nextset()
            if collecting:
                if pruning:
                    cursor.nextset()  # past the prune's result
                # A full batch: more may be left for the next commit.
                self._collect_pending = cursor.rowcount >= COLLECT_BATCH
        except psycopg.Error as exc:
            if speculating and exc.sqlstate == STALE_SQLSTATE:
                self._abandon(conn)
                raise self._stale() from exc
            keys = [op.key for op in ops if op.key is not None]
            return self._commit_failed(conn, exc, keys, base)
        finally:
            self._end_write()
        self._putconn(conn)
        positions: list[int] = []
        for op, row in written:
            assert op.key is not None
            position = row[0] if row else None
            if position is not None:
                positions.append(position)
            # A put's position is the row's new version; after a removal the row is gone.
            self._forget(op.key, position if op.put and position is not None else _ABSENT)
        # Positions come in commit order without gaps: if ours follow the catch-up point
        # directly, nobody else committed in between and the store is up to date.
        if positions == list(range(base + 1, base + 1 + len(positions))):
            token = positions[-1] if positions else base
        else:
            token = base  # a writer outside the lock slipped in: the store replays the log
        self._known = max(self._known, token)
        self.signal.bump()
        return token

    def confirm_view(self) -> None:
        if self._speculating and self._reading(self._position) != self._txn_token:
            raise self._stale()

    def _stale(self) -> StaleView:
        self._lock_first = LOCK_FIRST_AFTER_STALE
        return StaleView(f"{self.location}: another writer committed since the store looked")

    def _forget(self, key: str, version: int) -> None:
        if version == _ABSENT and self._versions_complete:
            self._versions.pop(key, None)
        else:
            self._versions[key] = version

    def _commit_failed(self, conn: Conn, exc: psycopg.Error, keys: list[str], base: int) -> int:
        """Settle a commit that raised: retry it, report it, or find that it did commit."""
        if not lost(exc):
            self._abandon(conn)
            raise self._translate(exc, "commit") from exc
        self._putconn(conn)  # broken: the pool discards it
        self._drop_dead_connections()
        committed = self._committed(self._marker, base)
        if committed:
            # Only the reply was lost. The store keeps what it wrote and, from the
            # signal, re-reads those keys from the log to learn their versions.
            for key in keys:
                self._versions[key] = _UNKNOWN
            self.signal.bump()
            self.signal.bump()
            return base
        if committed is False:
            raise RetryWrite(self._unavailable(exc, "commit (nothing was written)")) from exc
        raise CommitOutcomeUnknown(
            self.location,
            f"the connection was lost during a commit and whether it happened is unknown ({exc})",
            "Read the session again before repeating the write.",
        ) from exc

    def _committed(self, marker: int, base: int) -> bool | None:
        """Whether the write marked ``marker`` committed (None: cannot tell).

        Taking the namespace lock first waits for that transaction to end if the
        server still runs it (the lock is granted in order); then its changes are
        in the log, marked, or they never will be. Asking again after lost
        connections goes on for ``OUTCOME_PATIENCE`` seconds: an unknown outcome
        is the one answer the caller cannot act on.
        """
        deadline = time.monotonic() + max(OUTCOME_PATIENCE, self.lock_timeout)
        while time.monotonic() < deadline:
            try:
                conn = self._getconn()
            except StoreUnavailable:
                return None
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, true)", (self._lock_timeout_ms,)
                    )
                    conn.execute(self._sql.lock, (self.namespace,))
                    cursor = conn.execute(self._sql.committed, (self.namespace, base, marker))
                row = cursor.fetchone()
                return bool(row and row[0])
            except psycopg.Error as exc:
                if not lost(exc):
                    return None
                self._drop_dead_connections()
                time.sleep(RECONNECT_PAUSE)
            finally:
                self._abandon(conn)
        return None

    def rollback(self) -> None:
        conn = self._conn
        self._end_write()
        if conn is not None:
            self._abandon(conn)

    def close(self) -> None:
        self.rollback()
        self.transcripts.close()
        self._listener.close()
        self._pool.close(timeout=5.0)
        self.signal.close()

    # -- for tests and operators ----------------------------------------------------
    @property
    def listener_pid(self) -> int | None:
        """The server process id of the listening connection (for pg_terminate_backend)."""
        return self._listener.backend_pid

    @property
    def listener_reconnects(self) -> int:
        return self._listener.reconnects


class _MissingBlob(Exception):
    def __init__(self, digest: str) -> None:
        super().__init__(digest)
        self.digest = digest
