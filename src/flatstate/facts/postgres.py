"""Facts in a PostgreSQL database, shared by every host: the PostgreSQL side of the facts
backend. Open with ``open_facts("postgresql://...")``.

One namespace's facts (the agent id unless told otherwise; ``namespace``,
``schema`` as for sessions, also as URL parameters) in the tables of
:mod:`~flatstate.facts.postgres_schema`. Each store keeps one connection,
which the store's lock serializes.

Writes. A write transaction takes the namespace's facts lock first (an
advisory transaction lock, sent with BEGIN in one round trip), so the
writers of one namespace's facts, in every process on every host, take
turns as SQLite's ``BEGIN IMMEDIATE`` makes them: the duplicate check and
the insert see the same facts, and two hosts adding one fact store it once.

Lost connections. A read is simply tried again on a new connection. A write
learns its transaction id with the lock; when the connection dies before
COMMIT was sent, the server rolls the transaction back and the write runs
again from the start; when it dies during COMMIT, a new connection asks the
server (``pg_xact_status``) whether that transaction committed, waiting
while it is still in progress. Committed: the write returns what it did.
Aborted: it runs again. So a write is neither lost nor applied twice, for up
to ``lock_timeout`` of trying.

Keyword search is ``tsvector`` with a GIN index, over the same words the
planner keeps on SQLite (``query``): each word is a bound parameter of
``plainto_tsquery``, the words OR-ed, so no text is ever parsed as query
syntax. ``ts_rank`` (negated, bm25's sign) scores them. Vectors need
pgvector on the server (:func:`~flatstate.facts.postgres_schema.check_pgvector`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from flatstate.backends.postgres.connection import Patience, lost, unavailable
from flatstate.backends.postgres.dsn import dsn_params, resolve
from flatstate.errors import InvalidFact, LockTimeout, ReadOnlyStore, StoreUnavailable
from flatstate.facts.backend import FILLED, STORED, FactsBackend, Row
from flatstate.facts.postgres_access import BackgroundAccess
from flatstate.facts.postgres_schema import (
    SCHEMA_VERSION,
    check_pgvector,
    migrate,
    namespace_lexeme,
)
from flatstate.facts.postgres_sql import Statements
from flatstate.facts.query import (
    DOC_FREQ_CACHE_GROWTH,
    DOC_FREQ_CACHE_TERMS,
    POSTINGS_BUDGET,
    QueryPlanner,
)
from flatstate.facts.vectors import MIN_SIMILARITY, Embed
from flatstate.frozen import encode_json

__all__ = ["PgVectorIndex", "PostgresFacts"]

# Longer words are not indexed by PostgreSQL (2,047 bytes), so never worth searching for.
MAX_TERM_BYTES = 2047
# Counting a term's facts reads a row per match here (FTS5 reads only its index): stop
# just past the budget, which is all the planner's choice needs; among terms past it the
# first of the prompt is kept.
DOC_FREQ_CAP = POSTINGS_BUDGET + 1
TOP_SEQ_SECONDS = 1.0
# How long to keep asking whether a commit whose reply was lost happened.
OUTCOME_PATIENCE = 30.0
OUTCOME_PAUSE = 0.01

Conn = psycopg.Connection[tuple[Any, ...]]
IDLE = psycopg.pq.TransactionStatus.IDLE
T = TypeVar("T")


def _has_nul(*values: Any) -> bool:
    return any(isinstance(v, str) and "\x00" in v for v in values)


class PostgresFacts(FactsBackend):
    """One namespace's facts in a PostgreSQL database (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        *,
        agent_id: str | None = None,
        namespace: str | None = None,
        schema: str | None = None,
        lock_timeout: float = 30.0,
        synchronous: str = "normal",
        readonly: bool = False,
        create: bool = True,
        connect_timeout: float = 10.0,
        prepare_threshold: int | None = 5,
    ) -> None:
        self._clone: dict[str, Any] = {
            "dsn": dsn,
            "agent_id": agent_id,
            "namespace": namespace,
            "schema": schema,
            "lock_timeout": lock_timeout,
            "synchronous": synchronous,
            "connect_timeout": connect_timeout,
            "prepare_threshold": prepare_threshold,
        }
        sync = synchronous.lower()
        if sync not in {"normal", "full", "off"}:
            raise ValueError(f"synchronous must be 'normal', 'full' or 'off', not {synchronous!r}")
        where = resolve(dsn, agent_id=agent_id, namespace=namespace, schema=schema, state_dir=None)
        self.location = where.redacted
        self.namespace = where.namespace
        self.schema = where.schema
        self.readonly = readonly
        self.lock_timeout = lock_timeout
        self.schema_version = SCHEMA_VERSION
        self._dsn = where.libpq_dsn
        params = dsn_params(self._dsn, self.location)
        self._conn_kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": prepare_threshold,
            "application_name": params.get("application_name")
            or f"flatstate-facts:{self.namespace}"[:63],
        }
        if "connect_timeout" not in params:
            self._conn_kwargs["connect_timeout"] = max(1, int(connect_timeout))
        self._begin_params = (
            f"{max(1, int(lock_timeout * 1000))}ms",
            {"normal": None, "full": "on", "off": "off"}[sync],
            f"flatstate-facts/{self.schema}/{self.namespace}",
        )
        self._conn: Conn | None = None
        # Reads hold _guard throughout; a background batch of access counters commits
        # and settles under the guard of the backend it writes for (postgres_access).
        self._guard = threading.RLock()
        self._commit_guard: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
        self._access = BackgroundAccess(self._background) if not readonly else None
        self._ns_lexeme = namespace_lexeme(self.namespace)
        self._writing = False
        self._sql = Statements(f'"{self.schema}"')
        self._planner = QueryPlanner(
            self._count_matching, self._top_seq, self._floor_of, cap=DOC_FREQ_CAP
        )
        self._top: tuple[float, int] = (-TOP_SEQ_SECONDS, 0)  # (when read, the highest seq)
        self._floors: dict[tuple[str, ...], int] = {}
        self._floors_at = 0  # the highest seq when the floors were found
        patience = Patience(lock_timeout)
        while True:
            try:
                conn = self._connect()
                migrate(conn, self.schema, readonly=readonly, create=create, location=self.location)
                break
            except psycopg.Error as exc:
                # A server that refuses us fails at once; a session lost once made (or
                # terminated while starting) is worth another try.
                made = self._conn is not None or (exc.sqlstate or "").startswith("57P")
                self._drop()
                if not (made and lost(exc) and patience.again()):
                    raise self._translate(exc, "open the facts") from exc
            except BaseException:
                self._drop()
                raise

    # -- connections ---------------------------------------------------------------
    def _connect(self) -> Conn:
        """The store's connection, made anew when there is none or it broke (psycopg's
        errors pass: the callers' loops decide what is worth another try)."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop()
        conn = psycopg.connect(self._dsn, **self._conn_kwargs)
        self._conn = conn
        # "word too long to be indexed" and the like are no news to a caller.
        conn.execute("SET client_min_messages = warning")
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    @property
    def conn(self) -> Conn:
        """The connection, inside read or write."""
        assert self._conn is not None, "a statement outside read() or write()"
        return self._conn

    @property
    def backend_pid(self) -> int | None:
        """The server process of the current connection (for tests: pg_terminate_backend)."""
        conn = self._conn
        return None if conn is None or conn.closed else int(conn.info.backend_pid)

    def _translate(self, exc: psycopg.Error, doing: str) -> Exception:
        state = exc.sqlstate or ""
        if state == "55P03":
            return LockTimeout(
                self.location,
                self.lock_timeout,
                fix="Another process is writing these facts; wait for it or raise lock_timeout.",
            )
        if state in ("25006", "42501"):
            return ReadOnlyStore(self.location, f"the server refused it ({state}: {exc})")
        if lost(exc):
            return unavailable(self.location, exc, doing)
        return exc

    # -- transactions ------------------------------------------------------------
    def read(self, fn: Callable[[], T]) -> T:
        if self._writing:
            return fn()
        patience = Patience(self.lock_timeout)
        with self._guard:
            while True:
                try:
                    self._connect()
                    return fn()
                except psycopg.Error as exc:
                    conn = self._conn
                    if conn is not None and conn.info.transaction_status != IDLE:
                        self._rollback(conn)
                    if not (lost(exc) and patience.again()):
                        raise self._translate(exc, "read the facts") from exc
                    self._drop()

    def write(self, fn: Callable[[], T], committed: Callable[[], object] | None = None) -> T:
        """See FactsBackend.write; ``committed`` runs right after the commit, under
        the commit guard (postgres_access)."""
        patience = Patience(self.lock_timeout)
        while True:
            xid: str | None = None
            committing = False
            self._writing = True
            try:
                conn = self._connect()
                xid = self._begin(conn)
                result = fn()
                committing = True
                with self._commit_guard:
                    conn.execute("COMMIT")
                    if committed is not None:
                        committed()
                return result
            except psycopg.Error as exc:
                if not lost(exc):
                    self._rollback(self._conn)
                    raise self._translate(exc, "write the facts") from exc
                self._drop()
                if committing and xid is not None:
                    outcome = self._outcome(xid)
                    if outcome == "committed":
                        if committed is not None:
                            with self._commit_guard:
                                committed()
                        return result
                    if outcome is None:
                        raise StoreUnavailable(
                            self.location,
                            "the connection was lost during a commit and whether it happened "
                            f"is unknown ({exc})",
                            "Read the facts again before repeating the write.",
                        ) from exc
                if not patience.again():
                    raise unavailable(self.location, exc, "write the facts") from exc
            except BaseException:
                self._rollback(self._conn)
                raise
            finally:
                self._writing = False

    def _begin(self, conn: Conn) -> str:
        """BEGIN, the settings and the namespace's facts lock, in one round trip; the
        transaction's id."""
        cursor = psycopg.ClientCursor(conn)
        cursor.execute(
            "BEGIN; SELECT set_config('lock_timeout', %s, true), set_config('synchronous_commit', "
            "coalesce(%s, current_setting('synchronous_commit')), true); "
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0)), pg_current_xact_id()::text",
            self._begin_params,
        )
        cursor.nextset()
        cursor.nextset()
        row = cursor.fetchone()
        assert row is not None
        return str(row[1])

    def _rollback(self, conn: Conn | None) -> None:
        if conn is not None and not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")

    def _outcome(self, xid: str) -> str | None:
        """Whether transaction ``xid`` committed ("committed", "aborted"), asked on a new
        connection, waiting while the server still runs it; None: cannot tell."""
        deadline = time.monotonic() + max(OUTCOME_PATIENCE, self.lock_timeout)
        while time.monotonic() < deadline:
            try:
                conn = self._connect()
                row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
            except psycopg.Error:
                self._drop()
                time.sleep(OUTCOME_PAUSE)
                continue
            status = row[0] if row else None
            if status != "in progress":
                return str(status) if status in ("committed", "aborted") else None
            time.sleep(OUTCOME_PAUSE)
        return None

    def close(self) -> None:
        if self._access is not None:
            self._access.close()
        self._drop()

    # -- access counters in the background -----------------------------------------
    background_access = True

    def _background(self) -> PostgresFacts:
        """A second backend for these facts, whose commits settle under our guard."""
        other = PostgresFacts(**self._clone, create=False)
        other._commit_guard = self._guard
        return other

    def write_access_later(
        self, rows: list[tuple[int, int, int]], settle: Callable[[bool], None]
    ) -> None:
        assert self._access is not None, "no access counters on read-only facts"
        self._access.start(rows, settle)

    def wait_access(self) -> None:
        if self._access is not None:
            self._access.wait()

    # -- writes --------------------------------------------------------------------
    def _check_storable(self, names: Sequence[str], values: Sequence[Any]) -> None:
        for name, value in zip(names, values, strict=True):
            if _has_nul(value):
                raise InvalidFact(f"{name} contains a NUL character, which PostgreSQL cannot store")

    def find_duplicate(
        self, digest: str, scope: str, scope_target: str | None, text: str
    ) -> int | None:
        if _has_nul(scope, scope_target, text):
            return None
        row = self.conn.execute(
            self._sql.duplicate, (self.namespace, digest, scope, scope_target, text)
        ).fetchone()
        return int(row[0]) if row else None

    def insert(self, values: Sequence[Any]) -> int:
        self._check_storable(STORED.split(", "), values)
        row = self.conn.execute(self._sql.insert, (self.namespace, *values)).fetchone()
        assert row is not None
        return int(row[0])

    def decay_class_of(self, seq: int) -> str:
        row = self.conn.execute(self._sql.decay_class, (seq,)).fetchone()
        assert row is not None
        return str(row[0])

    def confirm(
        self,
        seq: int,
        now: int,
        decay_class: str,
        expires_at: int | None,
        confidence: float,
        importance: float,
        filled: Sequence[Any],
    ) -> None:
        self._check_storable(FILLED, filled)
        self.conn.execute(
            self._sql.confirm, (now, decay_class, expires_at, confidence, importance, *filled, seq)
        )

    def supersede(self, old_id: str, new_id: str, now: int) -> int | None:
        if _has_nul(old_id, new_id):
            return None
        row = self.conn.execute(
            self._sql.supersede, (now, new_id, self.namespace, old_id)
        ).fetchone()
        return int(row[0]) if row else None

    def superseded_by(self, fact_id: str) -> tuple[bool, str | None]:
        if _has_nul(fact_id):
            return False, None
        row = self.conn.execute(self._sql.superseded_by, (self.namespace, fact_id)).fetchone()
        return (False, None) if row is None else (True, row[0])

    def exists(self, fact_id: str) -> bool:
        if _has_nul(fact_id):
            return False
        return self.conn.execute(self._sql.exists, (self.namespace, fact_id)).fetchone() is not None

    def update(self, fact_id: str, sets: dict[str, Any]) -> int:
        self._check_storable(list(sets), list(sets.values()))
        assignments = ", ".join(f'"{name}" = %s' for name in sets)
        row = self.conn.execute(
            f"UPDATE {self._sql.s}.facts SET {assignments} WHERE ns = %s AND id = %s RETURNING seq",
            (*sets.values(), self.namespace, fact_id),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def delete(self, fact_id: str) -> bool:
        if _has_nul(fact_id):
            return False
        return self.conn.execute(self._sql.delete, (self.namespace, fact_id)).rowcount > 0

    def expire(self, now: int) -> int:
        return self.conn.execute(self._sql.expire, (self.namespace, now)).rowcount

    def halve(self, decay_class: str, until: int, ttl: int, now: int) -> int:
        return self.conn.execute(
            self._sql.halve, (now, self.namespace, decay_class, until, ttl)
        ).rowcount

    def drop_faint(self, floor: float) -> int:
        return self.conn.execute(self._sql.drop_faint, (self.namespace, floor)).rowcount

    def put_vector_as_is(self, seq: int, model: str, vector: list[float]) -> bool:
        cursor = self.conn.execute(self._sql.put_vector_as_is, (seq, self.namespace, model, vector))
        return cursor.rowcount == 1

    def write_access(self, rows: list[tuple[int, int, int]]) -> None:
        self.conn.execute(self._sql.access, (encode_json(rows).decode(),))

    def vacuum(self) -> None:
        def run() -> None:
            for table in ("facts", "fact_access", "fact_vectors"):
                self.conn.execute(f"VACUUM (ANALYZE) {self._sql.s}.{table}".encode())

        self.read(run)

    # -- reads ---------------------------------------------------------------------
    def by_seq(self, seq: int) -> Row:
        row = self.conn.execute(self._sql.by_seq, (seq,)).fetchone()
        assert row is not None
        return row

    def by_id(self, fact_id: str) -> Row | None:
        if _has_nul(fact_id):
            return None
        return self.conn.execute(self._sql.by_id, (self.namespace, fact_id)).fetchone()

    def by_prefix(self, prefix: str) -> Sequence[Row]:
        if _has_nul(prefix):
            return []
        return self.conn.execute(
            self._sql.by_prefix, (self.namespace, prefix, prefix + "\U0010ffff")
        ).fetchall()

    def page(self, after: int, limit: int) -> Sequence[Row]:
        return self.conn.execute(self._sql.page, (self.namespace, after, limit)).fetchall()

    def newest(self, now: int, n: int) -> Sequence[Row]:
        return self.conn.execute(self._sql.newest, (self.namespace, now, n)).fetchall()

    def lookup(self, entity: str, key: str | None, now: int, limit: int) -> Sequence[Row]:
        if _has_nul(entity, key):
            return []
        if key is None:
            return self.conn.execute(
                self._sql.lookup_entity, (self.namespace, entity, now, limit)
            ).fetchall()
        return self.conn.execute(
            self._sql.lookup_key, (self.namespace, entity, key, now, limit)
        ).fetchall()

    def count_live(self, now: int) -> int:
        row = self.conn.execute(self._sql.count_live, (self.namespace, now)).fetchone()
        return int(row[0]) if row else 0

    def vector_page(self, after: int, limit: int) -> list[tuple[int, str, str, list[float]]]:
        rows = self.conn.execute(self._sql.vector_page, (self.namespace, after, limit))
        # real[] arrives as the shortest decimals of its float32s: back to their exact
        # values, as SQLite's float32 BLOBs give them, so both export the same numbers.
        return [(int(seq), str(i), str(m), array("f", v).tolist()) for seq, i, m, v in rows]

    def vector_dims(self, model: str) -> int | None:
        row = self.conn.execute(self._sql.vector_length, (self.namespace, model)).fetchone()
        return None if row is None else int(row[0])

    def vector_models(self) -> dict[str, int]:
        rows = self.conn.execute(self._sql.vector_models, (self.namespace,)).fetchall()
        return {str(model): int(dims) for model, dims in rows}

    def by_seqs(self, seqs: list[int]) -> Sequence[Row]:
        return self.conn.execute(self._sql.by_seqs, (self.namespace, seqs)).fetchall()

    def is_live(self, seq: int) -> bool:
        return self.conn.execute(self._sql.is_live, (seq,)).fetchone() is not None

    def keyword(self, query: str, now: int, pool: int) -> list[tuple[float, Row]]:
        plan = self._planner.plan(query)
        if plan is None:
            return []
        terms, floor = plan
        since = (floor,) if floor > 0 else ()
        rows = self.conn.execute(
            self._sql.keyword(len(terms), bool(since)),
            (*terms, self._ns_lexeme, self.namespace, *since, now, pool),
        ).fetchall()
        return [(float(row[0]), row[1:]) for row in rows]

    def _searchable(self, terms: Sequence[str]) -> list[str]:
        return [t for t in terms if len(t.encode("utf-8", "surrogatepass")) <= MAX_TERM_BYTES]

    def _count_matching(self, term: str, cap: int) -> int:
        if not self._searchable([term]):
            return 0
        row = self.conn.execute(self._sql.count_matching, (term, self._ns_lexeme, cap)).fetchone()
        return int(row[0]) if row else 0

    def _top_seq(self) -> int:
        """The highest seq, read at most every TOP_SEQ_SECONDS (it only tells the planner
        when its counts are stale: one round trip a recall saved)."""
        at, top = self._top
        now = time.monotonic()
        if now - at >= TOP_SEQ_SECONDS:
            row = self.conn.execute(self._sql.top_seq, (self.namespace,)).fetchone()
            top = int(row[0] or 0) if row else 0
            self._top = (now, top)
        return top

    def _floor_of(self, terms: list[str], n: int) -> int:
        """The seq of the ``n``-th newest fact matching ``terms``, remembered (bounded) until
        the facts grow by the planner's 10%: finding it reads every match, and a floor
        found earlier only lets the facts added since be scored too."""
        top = self._top[1]
        if top > self._floors_at * (1 + DOC_FREQ_CACHE_GROWTH) + 100 or top < self._floors_at:
            self._floors.clear()
            self._floors_at = top
        key = tuple(terms)
        found = self._floors.get(key)
        if found is None:
            row = self.conn.execute(
                self._sql.floor(len(terms)), (*terms, self._ns_lexeme, self.namespace, n)
            ).fetchone()
            found = int(row[0]) if row else 0
            if len(self._floors) >= DOC_FREQ_CACHE_TERMS:
                self._floors.clear()
            self._floors[key] = found
        return found

    def stats(self, now: int) -> tuple[int, int, int, tuple[tuple[str, int], ...], int]:
        conn = self.conn
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            row = conn.execute(self._sql.stats, (now, self.namespace)).fetchone()
            assert row is not None
            by_class = tuple(
                (str(name), int(n))
                for name, n in conn.execute(self._sql.by_class, (self.namespace, now))
            )
            vectors = conn.execute(self._sql.count_vectors, (self.namespace,)).fetchone()
        finally:
            self._rollback(conn)
        total, superseded, expired = (int(x) for x in row)
        return total, superseded, expired, by_class, int(vectors[0]) if vectors else 0

    def disk_bytes(self) -> int:
        row = self.conn.execute(self._sql.disk_bytes, (self.namespace,) * 3).fetchone()
        return int(row[0] or 0) if row else 0

    def vectors(self, embed: Embed, model: str) -> PgVectorIndex:
        version = check_pgvector(self.conn, readonly=self.readonly)
        return PgVectorIndex(self, embed, model, version)


class PgVectorIndex:
    """Embeddings of one model for one namespace's facts, searched with pgvector's cosine
    distance (an exact scan; see ``postgres_schema`` for why the column is ``real[]``)."""

    def __init__(self, backend: PostgresFacts, embed: Embed, model: str, version: str) -> None:
        self._backend = backend
        self._embed = embed
        self.model = model
        self.version = version
        self._sql = backend._sql

    def encode(self, text: str) -> list[float]:
        values = [float(x) for x in self._embed(text)]
        norm = math.sqrt(math.fsum(x * x for x in values))
        if not values or not math.isfinite(norm) or norm == 0.0:
            raise InvalidFact(f"the embedding function returned no usable vector for {text[:40]!r}")
        b = self._backend
        row = b.conn.execute(self._sql.vector_length, (b.namespace, self.model)).fetchone()
        if row is not None and row[0] != len(values):
            raise InvalidFact(
                f"the embedding has {len(values)} dimensions but model {self.model!r} stored "
                f"{row[0]}; pass a different embed_model for a different function"
            )
        return [x / norm for x in values]

    def put(self, seq: int, vector: list[float]) -> None:
        b = self._backend
        b.conn.execute(self._sql.put_vector, (seq, b.namespace, self.model, vector))

    def nearest(
        self, vector: list[float], now: int, k: int, min_similarity: float = MIN_SIMILARITY
    ) -> list[tuple[int, float]]:
        b = self._backend
        rows = b.conn.execute(
            self._sql.nearest, (vector, b.namespace, self.model, now, k)
        ).fetchall()
        return [(int(seq), float(sim)) for seq, sim in rows if sim >= min_similarity]

    def missing(self, limit: int) -> list[tuple[int, str]]:
        b = self._backend
        rows = b.conn.execute(self._sql.missing_vectors, (self.model, b.namespace, limit))
        return [(int(seq), str(text)) for seq, text in rows]
