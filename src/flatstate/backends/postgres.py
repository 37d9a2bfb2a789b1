"""The distributed engine: one PostgreSQL database shared by gateways on many hosts.

Open it with ``open_store("postgresql://user:password@host/db")``. The schema
(:mod:`flatstate.backends._pgschema`) keeps every agent's sessions in one set
of tables, each row tagged with its *namespace* (the agent id unless told
otherwise): one row per session (``key``, ``entry`` as json text, kept exactly, ``session_id``,
``updated_at``, ``version``), large object fields stored once by content in
``blobs`` as on SQLite, a change log numbered per namespace, and
``schema_version`` for migrations.

Writes. A write transaction takes the namespace's advisory lock first (one
round trip, sent with BEGIN), so the writers of a namespace, in every
process on every host, take turns, as SQLite's BEGIN IMMEDIATE makes them do
on one machine. Inside the lock the store catches up on the change log and
only then reads what it modifies: a read-modify-write (``patch``,
``update(fn)``) always works on the latest committed state, which is what
makes 4 processes x 500 increments of one counter come out at 2,000. Each
row write is also checked against the row's ``version`` as the store last
read it (``UPDATE ... WHERE version = expected``, in the server functions
``put``/``remove``): under the lock no flatstate writer can fail that check,
but a program that writes the table without taking the lock can, and then
the write is retried from the start (caught up, re-run) a bounded number of
times instead of overwriting that program's change unseen. A patch costs two
round trips and one commit: "BEGIN; lock" in one query, then the row
functions, blob inserts and COMMIT in another. Writes bind their parameters
on the client (psycopg's ClientCursor) and send each batch as one
multi-statement query: on this machine that cost half the client CPU of the
same statements in pipeline mode, and a pooler sees no prepared statement.

Why a lock and not optimistic transactions alone or SERIALIZABLE: a gateway's
writes to one agent are few and short (a lock is held for two round trips),
while optimistic retries under contention (many processes patching one
counter) redo work and can starve; SERIALIZABLE would abort and retry the same
way and still needs a commit-ordered change log, which the lock gives for
free. A write that takes the lock only at commit (one round trip less) was
tried and dropped: a write that ends up writing nothing, or whose function
raises, would then have acted on a view nobody checked. Different agents
(namespaces) never wait for each other.

Freshness. Every committed change notifies the namespace's channel with its
log position. Each backend LISTENs on a dedicated connection in a thread
(:mod:`flatstate.backends._pglisten`) and bumps the store's signal when a
position is newer than what the store has seen, so the next read reloads just
the keys the log names. After a lost connection the listener reconnects and
asks for a catch-up from the log by position, which misses nothing; the
store's periodic check (``check_interval``) is a backstop besides. A
process's own writes are in its cache as soon as they return.

A connection lost during a commit is settled before anything is retried:
each write sets a random marker that the trigger logs with its changes; on a
new connection, under the namespace lock (granted only once the old
transaction has ended), the marker is in the log or it never will be. So a
write is neither lost nor applied twice. Other lost connections are retried
on a fresh one for up to ``lock_timeout``.

Transcripts (and the facts and auth stores) stay in a local state directory
(``state_dir``, default ``~/.flatstate/<namespace>``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from flatstate.backends._blobs import Collector, load_blob, split_entry, updated_at_column
from flatstate.backends._pglisten import Listener, shared_signal
from flatstate.backends._pgschema import (
    CONFLICT_SQLSTATE,
    MIGRATIONS,
    SCHEMA_VERSION,
    channel_name,
    statements,
)
from flatstate.backends.base import Backend, RetryWrite, Row
from flatstate.errors import (
    ConflictError,
    LockTimeout,
    ReadOnlyStore,
    StoreCorrupt,
    StoreUnavailable,
)
from flatstate.frozen import FrozenMap, StringPool, decode_json, encode_json
from flatstate.keys import DEFAULT_AGENT_ID, normalize_agent_id
from flatstate.model import SessionEntry, build_entry

__all__ = ["DEFAULT_SCHEMA", "PostgresBackend", "local_state_dir", "redact_dsn", "split_dsn"]

DEFAULT_SCHEMA = "flatstate"
DEFAULT_POOL_SIZE = 4
TRANSCRIPTS_DIRNAME = "transcripts"
# The DSN's query parameters that are flatstate's, not libpq's.
OWN_PARAMS = ("namespace", "schema", "state_dir")
_SECRET_PARAMS = ("password", "sslpassword")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
MAX_NAMESPACE = 200

# The same figures as SQLite's: object fields this large are stored once by
# content; the log keeps this many positions per namespace, a reader further
# behind reloads everything.
BLOB_CACHE_BYTES = 32 << 20
CHANGE_LOG_KEEP = 10_000
PRUNE_EVERY = 1024
_MAX_REPLAY = 5_000
SCAN_BATCH = 1000
# Between attempts after a lost connection: this, doubling up to 1 s.
RECONNECT_PAUSE = 0.01
# How long to keep asking whether a commit whose reply was lost happened.
OUTCOME_PATIENCE = 30.0

# Row versions the backend remembers: > 0 the row's version, 0 known absent, -1 unknown.
_ABSENT = 0
_UNKNOWN = -1

# SQLSTATEs a write may simply retry after: a row changed under it, a deadlock with a
# writer outside the lock, a serialization failure.
_RETRYABLE = {CONFLICT_SQLSTATE, "40P01", "40001"}
# Connection exceptions (class 08) and the server shutting a session down (57P0x).
_LOST_PREFIXES = ("08", "57P")


Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")


def split_dsn(dsn: str) -> tuple[str, dict[str, str]]:
    """Separate flatstate's own URL parameters (``namespace``, ``schema``, ``state_dir``)
    from the DSN that libpq sees."""
    if "://" not in dsn:
        return dsn, {}
    parts = urlsplit(dsn)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in pairs if k in OWN_PARAMS}
    rest = [(k, v) for k, v in pairs if k not in OWN_PARAMS]
    return urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote))), ours


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password (for messages, logs and ``location``)."""
    if "://" not in dsn:
        try:
            fields = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            return "<unparsable DSN>"
        return make_conninfo(
            "", **{k: v for k, v in fields.items() if k not in _SECRET_PARAMS and v is not None}
        )
    parts = urlsplit(dsn)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = (userinfo.split(":", 1)[0] + at + hosts) if at else parts.netloc
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, v) for k, v in pairs if k not in _SECRET_PARAMS], quote_via=quote)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _safe_dirname(namespace: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", namespace) or "_"


def _default_state_dir(namespace: str) -> str:
    return os.path.expanduser(os.path.join("~", ".flatstate", _safe_dirname(namespace)))


def local_state_dir(dsn: str, *, agent_id: str | None = None) -> str:
    """The local directory (transcripts, facts, auth profiles) a store at ``dsn`` uses, found
    without connecting: the URL's ``state_dir``, else ``~/.flatstate/<namespace>``."""
    options = split_dsn(dsn)[1]
    if options.get("state_dir"):
        return os.path.expanduser(options["state_dir"])
    namespace = options.get("namespace") or normalize_agent_id(agent_id or DEFAULT_AGENT_ID)
    return _default_state_dir(namespace)


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection is gone (not that the statement was wrong)."""
    if not isinstance(exc, psycopg.Error):
        return isinstance(exc, OSError)
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith(_LOST_PREFIXES)


class _Op:
    """One statement of a pending write: a row's ``put`` or ``remove``, or a blob insert."""

    __slots__ = ("key", "params", "put", "query")

    def __init__(
        self, query: str, params: tuple[Any, ...], key: str | None = None, put: bool = False
    ) -> None:
        self.query = query
        self.params = params
        self.key = key
        self.put = put


class PostgresBackend(Backend):
    """Sessions of one namespace in a PostgreSQL database (see the module docstring).

    Options (also accepted as URL parameters ``namespace``, ``schema``,
    ``state_dir``; a keyword wins over the URL):

    - ``namespace``: whose sessions these are (default: ``agent_id``).
    - ``schema`` (``flatstate``): the PostgreSQL schema holding the tables,
      created with them on first use.
    - ``state_dir``: the local directory for transcripts (default
      ``~/.flatstate/<namespace>``).
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
        libpq_dsn, url_options = split_dsn(dsn)
        namespace = namespace or url_options.get("namespace")
        if not namespace:
            namespace = normalize_agent_id(agent_id or DEFAULT_AGENT_ID)
        schema = schema or url_options.get("schema") or DEFAULT_SCHEMA
        state_dir = state_dir or url_options.get("state_dir")
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be a lower-case identifier (letters, digits, _), not {schema!r}"
            )
        if len(namespace) > MAX_NAMESPACE or "\x00" in namespace:
            raise ValueError(f"namespace must be at most {MAX_NAMESPACE} characters, without NUL")
        sync = synchronous.lower()
        if sync not in {"normal", "full", "off"}:
            raise ValueError(f"synchronous must be 'normal', 'full' or 'off', not {synchronous!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        self.pool = pool
        self.readonly = readonly
        self.lock_timeout = lock_timeout
        self.namespace = namespace
        self.schema = schema
        query = urlencode(
            [("namespace", namespace)] + ([("schema", schema)] if schema != DEFAULT_SCHEMA else []),
            quote_via=quote,
        )
        redacted = redact_dsn(libpq_dsn)
        self.location = redacted + ("&" if "?" in redacted else "?") + query
        if "://" not in redacted:
            self.location = f"{redacted} (namespace {namespace!r}, schema {schema!r})"
        self.state_dir = (
            os.path.expanduser(state_dir) if state_dir else _default_state_dir(namespace)
        )
        self.transcripts_dir = os.path.join(self.state_dir, TRANSCRIPTS_DIRNAME)
        self.channel = channel_name(schema, namespace)
        self._synchronous = {"normal": None, "full": "on", "off": "off"}[sync]
        self._lock_timeout_ms = f"{max(1, int(lock_timeout * 1000))}ms"
        self._sql = _Queries(schema)

        try:
            params = conninfo_to_dict(libpq_dsn)
        except psycopg.ProgrammingError:
            # psycopg's message quotes the text it choked on, which may be the password.
            raise ValueError(f"not a usable PostgreSQL DSN: {self.location}") from None
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
        self._blob_cache: OrderedDict[str, FrozenMap] = OrderedDict()
        self._blob_cache_bytes = 0
        self._commits = 0
        self._collector = Collector()
        self._scans = itertools.count()
        # The write transaction in progress.
        self._conn: Conn | None = None
        self._writing = False
        self._ops: list[_Op] = []
        self._touched: set[str] = set()
        self._txn_head: int | None = None  # the log's head read under the lock (eager)
        self._txn_token = 0  # where the store caught up to for this write
        self._marker = 0

        # The first connection migrates the schema, then becomes the listener: LISTEN
        # before the store's first read, so that no commit falls between the two.
        patience = self._patience()
        while True:
            try:
                first = self._connect_listener(migrate=True)
                break
            except _LostWhilePreparing as lost:
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

    # -- connections ---------------------------------------------------------------
    def _unavailable(self, exc: BaseException, doing: str) -> StoreUnavailable:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailable(
            self.location,
            f"could not {doing}: {cause}",
            "Check that PostgreSQL is running and that the DSN (host, port, user, password, "
            "database) is right.",
        )

    def _connect_listener(self, migrate: bool = False) -> Conn:
        """A new listening connection (migrating the schema first, when opening).

        A server that cannot be reached fails at once; a connection lost after it
        was made raises :class:`_LostWhilePreparing`, worth another try.
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
            if _lost(exc):
                raise _LostWhilePreparing(self._unavailable(exc, "prepare the store")) from exc
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

    def _patience(self) -> _Patience:
        return _Patience(self.lock_timeout)

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
                if not _lost(exc) or not patience.again():
                    raise self._translate(exc, "read") from exc
            finally:
                self._putconn(conn)
            self._drop_dead_connections()

    def _translate(self, exc: psycopg.Error, doing: str) -> Exception:
        """The flatstate error for a psycopg one; retryable ones wrapped in RetryWrite."""
        state = exc.sqlstate or ""
        if state in _RETRYABLE:
            return RetryWrite(
                ConflictError(
                    self.location,
                    "the write kept meeting concurrent changes "
                    f"({exc.diag.message_primary or state}); a program writing the sessions "
                    "table without taking the namespace lock "
                    f"(SELECT {self.schema}.lock(namespace)) can cause this",
                )
            )
        if state == "55P03":
            return LockTimeout(
                self.location,
                self.lock_timeout,
                fix="Another process is writing this namespace; wait for it or raise lock_timeout.",
            )
        if state in ("25006", "42501"):
            return ReadOnlyStore(self.location, f"the server refused the write ({state}: {exc})")
        if _lost(exc):
            error = self._unavailable(exc, doing)
            return RetryWrite(error) if self._conn is not None else error
        return exc

    # -- schema --------------------------------------------------------------------
    def _migrate(self, conn: Conn) -> None:
        """Create or upgrade the schema, and register the namespace; serialized by a lock."""
        version = self._schema_version(conn)
        if version == SCHEMA_VERSION and (self.readonly or self._namespace_exists(conn)):
            return
        if version > SCHEMA_VERSION:
            raise StoreCorrupt(
                self.location,
                f"schema version {version} is newer than this flatstate knows ({SCHEMA_VERSION})",
                "Upgrade flatstate to open it.",
            )
        if version < SCHEMA_VERSION and self.readonly:
            raise ReadOnlyStore(self.location, f"schema version {version} needs a migration")
        if self.readonly:
            return
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"flatstate-migrate/{self.schema}",),
                )
                version = self._schema_version(conn)  # again, under the lock
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{self.schema}".schema_version '
                    "(version integer NOT NULL)"
                )
                for step in MIGRATIONS[version:]:
                    for statement in statements(step, self.schema):
                        conn.execute(statement.encode())
                if version < SCHEMA_VERSION:
                    conn.execute(f'DELETE FROM "{self.schema}".schema_version')
                    conn.execute(
                        f'INSERT INTO "{self.schema}".schema_version (version) VALUES (%s)',
                        (SCHEMA_VERSION,),
                    )
                conn.execute(self._sql.add_namespace, (self.namespace, self.namespace))
        except psycopg.Error as exc:
            if exc.sqlstate == "42501":
                raise ReadOnlyStore(
                    self.location,
                    f"the role may not create the schema {self.schema!r} ({exc})",
                ) from exc
            raise self._translate(exc, "migrate the schema") from exc

    def _schema_version(self, conn: Conn) -> int:
        table = f'"{self.schema}".schema_version'
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if not row or not row[0]:
            return 0
        found = conn.execute(f"SELECT max(version) FROM {table}").fetchone()
        return int(found[0] or 0) if found else 0

    def _namespace_exists(self, conn: Conn) -> bool:
        return conn.execute(self._sql.namespace_exists, (self.namespace,)).fetchone() is not None

    # -- reads ---------------------------------------------------------------------
    def _row(self, key: str, text: str, blobs: str | None) -> Row:
        data = decode_json(text)
        if blobs:
            cache = self._blob_cache
            for field, digest in decode_json(blobs).items():
                value = cache.get(digest)
                if value is None:
                    raise _MissingBlob(digest)
                cache.move_to_end(digest)
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
        wanted = []
        for digest in named:
            if digest in cache:
                cache.move_to_end(digest)
            else:
                wanted.append(digest)
        if wanted:
            for digest, text in conn.execute(self._sql.blobs, (self.namespace, wanted)):
                value = load_blob(text, digest, self.pool)
                cache[digest] = value
                self._blob_cache_bytes += value.json_digest()[0]
        while self._blob_cache_bytes > BLOB_CACHE_BYTES and len(cache) > len(named):
            _, old = cache.popitem(last=False)
            self._blob_cache_bytes -= old.json_digest()[0]

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
                if not _lost(exc) or not patience.again():
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
                        if not (own and _lost(exc)) or not patience.again():
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
                self._sql.changes, (self.namespace, token, _MAX_REPLAY + 1)
            ).fetchall()
            if not rows:
                if self._writing and self._txn_head is not None and token > self._txn_head:
                    return None, self._position(conn)  # the log went backwards: reload
                return set(), token
            # Positions are gap-free in commit order: a gap means the log was pruned past
            # this reader, and a full page means it is far behind.
            if rows[0][0] != token + 1 or len(rows) > _MAX_REPLAY:
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

    # -- writes --------------------------------------------------------------------
    def begin(self) -> None:
        """Start a write: BEGIN, then the namespace lock and the log's head (one round trip)."""
        if self.readonly:
            raise ReadOnlyStore(self.location, "the store was opened read-only")
        self._writing = True
        self._ops = []
        self._touched = set()
        self._marker = secrets.randbits(62) + 1
        self._txn_head = None
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
                if _lost(exc) and patience.again():
                    self._drop_dead_connections()
                    continue  # nothing was done yet: try again on another connection
                self._end_write()
                error = self._translate(exc, "start a write")
                # Still nothing done: the store may try the whole write again, after a pause.
                raise (RetryWrite(error) if _lost(exc) else error) from exc
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
            self._ops.append(_Op(sql.put_blob, (self.namespace, digest, text.decode())))
        encoded = encode_json(light)
        updated = updated_at_column(entry)
        self._ops.append(
            _Op(
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
        self._ops.append(_Op(self._sql.remove, (self.namespace, key, self._expected(key)), key))

    def commit(self) -> Any:
        assert self._writing, "commit() without begin()"
        ops = self._ops
        base = self._txn_token
        conn = self._conn
        assert conn is not None
        self._commits += 1
        queries = [op.query for op in ops]
        params: list[Any] = [p for op in ops for p in op.params]
        if self._commits % PRUNE_EVERY == 0:
            queries.append(self._sql.prune)
            params += (self.namespace, base - CHANGE_LOG_KEEP)
        if self._collector.due(self.count):
            queries.append(self._sql.collect_blobs)
            params += (self.namespace, self.namespace)
        queries.append("COMMIT")
        written: list[tuple[_Op, Any]] = []
        try:
            cursor = psycopg.ClientCursor(conn)
            cursor.execute("; ".join(queries), params)
            # One result per statement, in order: each row function's is its position.
            for op in ops:
                if op.key is not None:
                    written.append((op, cursor.fetchone()))
                cursor.nextset()
        except psycopg.Error as exc:
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

    def _forget(self, key: str, version: int) -> None:
        if version == _ABSENT and self._versions_complete:
            self._versions.pop(key, None)
        else:
            self._versions[key] = version

    def _commit_failed(self, conn: Conn, exc: psycopg.Error, keys: list[str], base: int) -> int:
        """Settle a commit that raised: retry it, report it, or find that it did commit."""
        if not _lost(exc):
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
        raise StoreUnavailable(
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
                if not _lost(exc):
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


class _Patience:
    """How long an operation keeps trying through lost connections: the lock timeout,
    the time a writer would also wait for another writer. The first retry is at once
    (one killed session says nothing of the next); later ones back off."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.tries = 0

    def again(self) -> bool:
        self.tries += 1
        if time.monotonic() >= self.deadline:
            return False
        if self.tries > 1:
            time.sleep(min(RECONNECT_PAUSE * 2 ** (self.tries - 2), 1.0))
        return True


class _LostWhilePreparing(Exception):
    def __init__(self, error: StoreUnavailable) -> None:
        super().__init__(str(error))
        self.error = error


class _MissingBlob(Exception):
    def __init__(self, digest: str) -> None:
        super().__init__(digest)
        self.digest = digest


class _Queries:
    """Every statement, with the schema filled in once."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        self.add_namespace = (
            f"INSERT INTO {s}.namespaces (ns, channel) VALUES (%s, {s}.channel(%s)) "
            "ON CONFLICT DO NOTHING"
        )
        self.namespace_exists = f"SELECT 1 FROM {s}.namespaces WHERE ns = %s"
        self.position = f"SELECT seq FROM {s}.namespaces WHERE ns = %s"
        self.read = (
            f"SELECT version, entry::text, blobs::text FROM {s}.sessions WHERE ns = %s AND key = %s"
        )
        rows = f"SELECT key, version, entry::text, blobs::text FROM {s}.sessions WHERE ns = %s"
        self.scan = f"{rows} ORDER BY key"
        self.scan_after = f"{rows} AND key > %s ORDER BY key"
        self.keys = f'SELECT key FROM {s}.sessions WHERE ns = %s ORDER BY key COLLATE "C"'
        self.count = f"SELECT count(*) FROM {s}.sessions WHERE ns = %s"
        self.blobs = f"SELECT hash, value::text FROM {s}.blobs WHERE ns = %s AND hash = ANY(%s)"
        self.changes = (
            f"SELECT seq, key FROM {s}.changes WHERE ns = %s AND seq > %s ORDER BY seq LIMIT %s"
        )
        self.begin_write = f"SELECT {s}.begin_write(%s, %s, %s, %s::bigint)"
        self.lock = f"SELECT {s}.lock(%s)"
        self.committed = (
            f"SELECT EXISTS (SELECT 1 FROM {s}.changes WHERE ns = %s AND seq > %s AND txn = %s)"
        )
        self.put = f"SELECT {s}.put(%s, %s, %s, %s, %s::json, %s::jsonb, %s)"
        self.put_blob = (
            f"INSERT INTO {s}.blobs (ns, hash, value) VALUES (%s, %s, %s::json) "
            "ON CONFLICT DO NOTHING"
        )
        self.remove = f"SELECT {s}.remove(%s, %s, %s)"
        self.prune = f"DELETE FROM {s}.changes WHERE ns = %s AND seq <= %s"
        self.collect_blobs = (
            f"DELETE FROM {s}.blobs b WHERE b.ns = %s AND b.hash NOT IN "
            f"(SELECT j.value FROM {s}.sessions t, jsonb_each_text(t.blobs) AS j "
            "WHERE t.ns = %s AND t.blobs IS NOT NULL)"
        )
        self.disk_bytes = (
            f"SELECT (SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {s}.sessions t "
            "WHERE t.ns = %s) "
            f"+ (SELECT coalesce(sum(pg_column_size(b.*)), 0) FROM {s}.blobs b WHERE b.ns = %s) "
            f"+ (SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM {s}.changes c WHERE c.ns = %s)"
        )
