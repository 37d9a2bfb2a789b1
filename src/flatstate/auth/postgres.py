"""Auth profiles in PostgreSQL: a row per profile, one store per namespace, shared by every host.

Open one with ``open_auth_store("postgresql://...", agent_id=...)``; the rules
(rotation, cooldowns, refresh) are the store's (:mod:`flatstate.auth.store`),
this module only keeps the document. Its tables live in the store's schema
(``flatstate`` unless the URL says ``schema=``), beside the sessions' tables,
with a version of their own in ``auth_schema_version``:

- ``auth_profiles``: a row per profile id, holding the credential exactly as
  OpenClaw stores it and its ``usageStats`` entry (``json``, whose text is
  kept as written), each with its position in OpenClaw's key order. A row
  may hold stats only: this agent's stats of a profile it inherits.
- ``auth_stores``: a row per namespace with the rest of the document
  (``version``, ``order``, ``lastGood``, unknown top-level fields) and
  ``version``, a number a trigger draws from a sequence at every change of
  the namespace's rows, whoever makes it (flatstate, ``psql``, a script).
- ``auth_refresh_claims``: the OAuth refreshes under way (below).

**Reads** serve the cached document, and at most every ``check_interval``
compare ``version`` (one round trip), reloading every row of the namespace
in one statement when it moved. **Writes** are the file's locked
read-modify-write: BEGIN, the namespace's advisory lock, read every row, run
the change, write the rows that differ, COMMIT. A connection lost on the way
is settled before anything is retried: the transaction's id, read before
COMMIT, is looked up with ``pg_xact_status`` once the namespace lock can be
had again (so the old transaction has ended). Committed: the write is done.
Not: it runs again on the latest rows. So a write is never lost and never
applied twice.

**OAuth refresh.** The refresh lock is a transaction-level advisory lock,
taken on a connection of its own and held while the token endpoint is
called; waiters queue on it, on any host. Because a lock dies with its
session (``pg_terminate_backend``, a network cut) while the process holding
it lives on and is still talking to the provider, the holder also commits a
*claim* on the profile: who refreshes, from which tokens (a hash), until
when (the server's clock + ``refresh_lock_timeout``). Whoever gets the lock
next and finds a live claim on the same tokens waits for it to go; a claim
whose tokens were replaced (the refresh committed) or whose time ran out is
taken over. So the endpoint is called once per refresh token unless the
process holding the claim dies, or takes longer than
``refresh_lock_timeout``; then the next one refreshes again from the stored
token. The new tokens are committed with the store's compare-and-swap
(:meth:`~flatstate.auth.store.AuthStore.commit_refresh`), which never writes
an older refresh token over a newer one.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import psycopg

from flatstate.auth.document import AuthDocument, check_writable
from flatstate.auth.postgres_schema import BEGIN_WRITE, Queries, migrate
from flatstate.auth.profiles import normalize_document, strip_plaintext
from flatstate.auth.storage import AuthStorage, Updater, changed_copy
from flatstate.backends.postgres.connection import Patience, lost, unavailable
from flatstate.backends.postgres.dsn import dsn_params, redact_dsn, resolve
from flatstate.errors import (
    FlatstateError,
    InvalidLocation,
    InvalidProfile,
    LockTimeout,
    ReadOnlyStore,
    StoreCorrupt,
    StoreUnavailable,
)
from flatstate.frozen import decode_json

__all__ = ["PostgresAuthStorage"]

log = logging.getLogger("flatstate.auth")

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

_FIX_DOC = "Repair the auth_stores row by hand (its doc must be a JSON object)."
_thread_locks: dict[str, threading.Lock] = {}
_thread_guard = threading.Lock()


class _Rows(NamedTuple):
    """A namespace's rows as read: the version, the document row, each profile row."""

    version: int
    doc: str | None
    # profile id -> (profile_pos, credential text, stats_pos, stats text), in file order
    profiles: dict[str, tuple[int | None, str | None, int | None, str | None]]


def _text(value: Any) -> str:
    """JSON text for a ``json`` column (a lone surrogate, which UTF-8 cannot carry, escaped)."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise InvalidProfile(None, "a value is NaN or infinite, which JSON cannot hold") from None
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(value, separators=(",", ":"))
    return text


def _same_text(stored: str | None) -> str | None:
    """Stored JSON in the form :func:`_text` writes, so that a row is compared by value."""
    return None if stored is None else _text(decode_json(stored))


def _positions(old: dict[str, int], keys: list[str]) -> dict[str, int]:
    """Positions for ``keys`` in their order, keeping the old ones when the order allows.

    Dict order is insertion order: a key added goes last, one kept stays
    where it was. Anything else (a key removed and added back, a section
    rebuilt in a new order) renumbers the section.

    >>> _positions({"a": 1, "b": 2, "c": 3}, ["a", "c", "d"])
    {'a': 1, 'c': 3, 'd': 4}
    >>> _positions({"a": 1, "b": 2}, ["b", "a"])
    {'b': 1, 'a': 2}
    """
    kept = [k for k in keys if k in old]
    if all(old[a] < old[b] for a, b in itertools.pairwise(kept)):
        top = max(old.values(), default=0)
        result = {}
        for key in keys:
            if key in old:
                result[key] = old[key]
            else:
                top += 1
                result[key] = top
        return result
    return {key: i + 1 for i, key in enumerate(keys)}


def _tokens_digest(credential: Any) -> str:
    """Names the tokens a refresh starts from, without holding them."""
    if not isinstance(credential, dict):
        return "-"
    pair = json.dumps([credential.get("refresh"), credential.get("access")])
    return hashlib.sha256(pair.encode()).hexdigest()[:32]


def _thread_lock(key: str) -> threading.Lock:
    with _thread_guard:
        return _thread_locks.setdefault(key, threading.Lock())


class PostgresAuthStorage:
    """A namespace's auth profiles in PostgreSQL (a :class:`~flatstate.auth.storage.AuthStorage`).

    ``dsn`` is a ``postgresql://`` URL (its ``namespace``, ``schema`` and
    ``state_dir`` parameters are flatstate's); the namespace is the agent id
    unless the URL or ``namespace`` names one. Raises
    :class:`~flatstate.errors.InvalidLocation` for a DSN that cannot be used
    and :class:`~flatstate.errors.StoreUnavailable` when the server cannot
    be reached; neither message holds the password.
    """

    def __init__(
        self,
        dsn: str,
        *,
        agent_id: str | None,
        namespace: str | None = None,
        readonly: bool,
        lock_timeout: float,
        refresh_lock_timeout: float,
        connect_timeout: float = 10.0,
    ) -> None:
        try:
            where = resolve(
                dsn, agent_id=agent_id, namespace=namespace, schema=None, state_dir=None
            )
        except FlatstateError:
            raise  # a bad agent id: InvalidSessionKey
        except ValueError as exc:  # a bad schema or namespace
            raise InvalidLocation(redact_dsn(dsn), str(exc), _FIX_URL) from None
        self.namespace = where.namespace
        self.schema = where.schema
        self.path = where.redacted
        self.directory = where.state_dir
        self.readonly = readonly
        self.lock_timeout = lock_timeout
        self.refresh_lock_timeout = refresh_lock_timeout
        self.suppressed_writes = 0
        params = dsn_params(where.libpq_dsn, self.path)
        self._dsn = where.libpq_dsn
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "prepare_threshold": None,  # a pooler (PgBouncer) in transaction mode stays fine
            "application_name": params.get("application_name")
            or f"flatstate-auth:{self.namespace}"[:63],
        }
        if "connect_timeout" not in params:
            self._kwargs["connect_timeout"] = max(1, int(connect_timeout))
        self._sql = Queries(self.schema)
        self._lock_key = f"{self.schema}/auth/{self.namespace}"
        self._lock_timeout_ms = f"{max(1, int(lock_timeout * 1000))}ms"
        self._mutex = threading.RLock()
        self._conn: Conn | None = None
        self._spare: Conn | None = None  # a refresh lock's connection, kept for the next
        self._doc: AuthDocument | None = None
        self._version: int | None = None
        self._who = f"{socket.gethostname()}:{os.getpid()}"
        try:
            self._conn = self._connect()
            migrate(self._conn, self.schema, readonly=readonly, location=self.path)
        except psycopg.Error as exc:
            self.close()
            raise self._error(exc, "open the auth store") from None

    @property
    def cli_store(self) -> str:
        return self.path

    def same_as(self, other: AuthStorage) -> bool:
        return (
            isinstance(other, PostgresAuthStorage)
            and other._dsn == self._dsn
            and (other.schema, other.namespace) == (self.schema, self.namespace)
        )

    def __repr__(self) -> str:
        return f"PostgresAuthStorage({self.path!r})"

    # -- connections ---------------------------------------------------------------
    def _connect(self, **overrides: Any) -> Conn:
        conn: Conn = psycopg.connect(self._dsn, **{**self._kwargs, **overrides})
        return conn

    def _connection(self) -> Conn:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self._drop()
            conn = self._conn = self._connect()
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _lock_connection(self) -> Conn:
        """A connection outside autocommit for a refresh lock: the one kept, or a new one."""
        with self._mutex:
            conn, self._spare = self._spare, None
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        return self._connect(autocommit=False)

    def _spare_lock_connection(self, conn: Conn) -> None:
        with self._mutex:
            old, self._spare = self._spare, conn
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()

    def close(self) -> None:
        with self._mutex:
            self._drop()
            spare, self._spare = self._spare, None
        if spare is not None:
            with contextlib.suppress(Exception):
                spare.close()

    def drop(self) -> None:
        """Delete this namespace's profiles, document and claims (benchmarks, tests)."""
        if self.readonly:
            raise ReadOnlyStore(self.path, "the store was opened read-only")
        s = f'"{self.schema}"'

        def delete(conn: Conn) -> None:
            with conn.transaction():
                for table in ("auth_refresh_claims", "auth_profiles", "auth_stores"):
                    conn.execute(f"DELETE FROM {s}.{table} WHERE ns = %s", (self.namespace,))

        self._retrying(delete, "delete the auth profiles")
        self._doc = self._version = None

    def _error(self, exc: psycopg.Error, doing: str) -> Exception:
        """The flatstate error for a psycopg one. Only the server's primary message is
        kept: its DETAIL and CONTEXT lines can quote a row or a JSON value, secrets included."""
        state = exc.sqlstate or ""
        if state == "55P03":
            return LockTimeout(
                self.path,
                self.lock_timeout,
                fix="Another process is writing these auth profiles; wait or raise lock_timeout.",
            )
        if state in ("25006", "42501"):
            primary = exc.diag.message_primary or state
            return ReadOnlyStore(self.path, f"the server refused to {doing} ({state}: {primary})")
        if lost(exc):
            return unavailable(self.path, exc, doing)
        primary = exc.diag.message_primary or type(exc).__name__
        if state.startswith(("22", "23", "42")):  # data, integrity, schema: tables changed
            return StoreCorrupt(
                self.path,
                f"the server refused to {doing} ({state}: {primary})",
                "Check the auth tables against flatstate.auth.postgres_schema; "
                "they may have been changed by hand.",
            )
        return StoreUnavailable(
            self.path,
            f"the server could not {doing} ({state or 'no SQLSTATE'}: {primary})",
            "Check the server's log.",
        )

    def _retrying(self, fn: Callable[[Conn], T], doing: str) -> T:
        """Run ``fn`` on the connection, again on a new one after a lost connection."""
        with self._mutex:
            patience = Patience(self.lock_timeout)
            while True:
                try:
                    return fn(self._connection())
                except psycopg.Error as exc:
                    if not lost(exc):
                        raise self._error(exc, doing) from None
                    self._drop()
                    if not patience.again():
                        raise self._error(exc, doing) from None

    # -- reading -------------------------------------------------------------------
    def _load(self, conn: Conn) -> _Rows:
        version, doc = 0, None
        profiles: list[tuple[int, str, tuple[int | None, str | None, int | None, str | None]]] = []
        for pid, ver, text, ppos, cred, spos, stats in conn.execute(
            self._sql.load, {"ns": self.namespace}
        ).fetchall():
            if pid is None:
                version, doc = int(ver), text
            else:
                order = ppos if ppos is not None else (1 << 62) + (spos or 0)
                profiles.append((order, pid, (ppos, cred, spos, stats)))
        profiles.sort(key=lambda item: item[0])
        return _Rows(version, doc, {pid: row for _, pid, row in profiles})

    def _plain(self, rows: _Rows) -> dict[str, Any]:
        """The OpenClaw document the rows hold; StoreCorrupt when the document row is not
        an object (a hand edit), which would make any write lose it."""
        top = decode_json(rows.doc) if rows.doc is not None else {"version": 1}
        if not isinstance(top, dict):
            raise StoreCorrupt(
                self.path, "the auth_stores row's doc is not a JSON object", _FIX_DOC
            )
        doc: dict[str, Any] = {}
        if "version" in top:
            doc["version"] = top["version"]
        doc["profiles"] = {
            pid: decode_json(cred) for pid, (_, cred, _, _) in rows.profiles.items() if cred
        }
        doc.update((k, v) for k, v in top.items() if k not in ("version", "profiles"))
        stats = sorted(
            (spos, pid, text)
            for pid, (_, _, spos, text) in rows.profiles.items()
            if text is not None and spos is not None
        )
        if stats:
            doc["usageStats"] = {pid: decode_json(text) for _, pid, text in stats}
        normalize_document(doc)
        return doc

    def _document(self, rows: _Rows) -> AuthDocument:
        try:
            return AuthDocument(self.path, self._plain(rows))
        except StoreCorrupt as exc:
            log.warning("%s", exc)
            return AuthDocument(self.path, None, corrupt=exc)

    def current(self) -> AuthDocument:
        """The cached document, reloaded first if the namespace's version moved."""

        def fetch(conn: Conn) -> AuthDocument:
            if self._doc is not None:
                row = conn.execute(self._sql.version, (self.namespace,)).fetchone()
                if (int(row[0]) if row else 0) == self._version:
                    return self._doc
            rows = self._load(conn)
            doc = self._document(rows)
            for problem in doc.problems:
                if problem.kind != "corrupt_file":  # logged once already
                    log.warning("%s: %s", problem.path, problem.message)
            self._doc, self._version = doc, rows.version
            return doc

        return self._retrying(fetch, "read the auth profiles")

    # -- writing -------------------------------------------------------------------
    def update(self, change: Updater) -> AuthDocument:
        """Apply ``change`` to the latest rows under the namespace's lock (see the module
        docstring for what a lost connection does); read-only: to this process's copy."""
        if self.readonly:
            return self._update_in_memory(change)
        with self._mutex:
            patience = Patience(self.lock_timeout)
            while True:
                xid: str | None = None
                try:
                    conn = self._connection()
                    conn.execute("BEGIN")
                    try:
                        row = conn.execute(
                            BEGIN_WRITE, (self._lock_timeout_ms, self._lock_key)
                        ).fetchone()
                        assert row is not None
                        xid = str(row[0])
                        rows = self._load(conn)
                        doc = self._plain(rows)
                        result = AuthDocument(self.path, doc)  # a frozen copy, as read
                        version = rows.version
                        if change(doc):
                            strip_plaintext(doc)
                            check_writable(doc)
                            if self._write(conn, rows, doc):
                                found = conn.execute(
                                    self._sql.version, (self.namespace,)
                                ).fetchone()
                                version = int(found[0]) if found else 0
                            result = AuthDocument(self.path, doc)
                        self._commit(conn)
                    except BaseException:
                        if not conn.broken:
                            with contextlib.suppress(psycopg.Error):
                                conn.execute("ROLLBACK")
                        raise
                    self._doc, self._version = result, version
                    return result
                except psycopg.Error as exc:
                    if not lost(exc):
                        raise self._error(exc, "write the auth profiles") from None
                    self._drop()
                    if xid is not None and self._committed(xid, patience):
                        return self.current()
                    if not patience.again():
                        raise self._error(exc, "write the auth profiles") from None

    def _commit(self, conn: Conn) -> None:
        """COMMIT the write transaction (a seam of its own: the tests kill the session
        just after it, to lose the reply of a commit that happened)."""
        conn.execute("COMMIT")

    def _write(self, conn: Conn, rows: _Rows, doc: dict[str, Any]) -> bool:
        """Write the rows of ``doc`` that differ from ``rows``; False if none did."""
        profiles = doc.get("profiles")
        if not isinstance(profiles, dict):
            raise StoreCorrupt(self.path, "'profiles' must stay a JSON object", _FIX_DOC)
        usage = doc.get("usageStats")
        stats: dict[str, Any] = usage if isinstance(usage, dict) else {}
        # A usageStats that is not an object (kept as found) stays in the document row.
        top = {
            k: v
            for k, v in doc.items()
            if k != "profiles" and not (k == "usageStats" and stats is usage)
        }
        old = rows.profiles
        profile_pos = _positions(
            {pid: r[0] for pid, r in old.items() if r[0] is not None}, list(profiles)
        )
        stats_pos = _positions(
            {pid: r[2] for pid, r in old.items() if r[2] is not None}, list(stats)
        )
        upserts, deletes = [], []
        for pid in dict.fromkeys([*old, *profiles, *stats]):
            cred = _text(profiles[pid]) if pid in profiles else None
            stat = _text(stats[pid]) if pid in stats else None
            new = (
                profile_pos.get(pid) if cred else None,
                cred,
                stats_pos.get(pid) if stat else None,
                stat,
            )
            before = old.get(pid)
            if before is not None and new == (
                before[0],
                _same_text(before[1]),
                before[2],
                _same_text(before[3]),
            ):
                continue
            if cred is None and stat is None:
                deletes.append(pid)
            else:
                upserts.append((self.namespace, pid, *new))
        top_text = _text(top)
        wrote = False
        if top_text != (_same_text(rows.doc) if rows.doc is not None else None):
            conn.execute(self._sql.upsert_store, (self.namespace, top_text))
            wrote = True
        if deletes:
            conn.execute(self._sql.delete_profiles, (self.namespace, deletes))
        if upserts:
            with conn.cursor() as cur:
                cur.executemany(self._sql.upsert_profile, upserts)
        return wrote or bool(deletes or upserts)

    def _committed(self, xid: str, patience: Patience) -> bool:
        """Whether the write transaction ``xid``, whose connection was lost, committed.

        Asked under the namespace lock, which that transaction held: once it
        can be had, the transaction has ended one way or the other.
        """
        while True:
            try:
                conn = self._connection()
                with conn.transaction():
                    conn.execute(BEGIN_WRITE, (self._lock_timeout_ms, self._lock_key))
                    row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
                return row is not None and row[0] == "committed"
            except psycopg.Error as exc:
                if not lost(exc):
                    raise self._error(exc, "settle a write whose connection was lost") from None
                self._drop()
                if not patience.again():
                    raise self._error(exc, "settle a write whose connection was lost") from None

    def _update_in_memory(self, change: Updater) -> AuthDocument:
        with self._mutex:
            new = changed_copy(self.current(), change)
            if new is None:
                return self.current()
            # The version stays: when the rows change, they replace this copy.
            self._doc = new
            if self.suppressed_writes == 0:
                log.warning(
                    "%s is read-only: changes stay in this process only, until the rows change",
                    self.path,
                )
            self.suppressed_writes += 1
            return new

    # -- the refresh lock ------------------------------------------------------------
    @contextlib.contextmanager
    def refresh_lock(self, provider: str, profile_id: str) -> Iterator[None]:
        """The advisory lock and the claim of one profile's refresh (the module docstring)."""
        digest = hashlib.sha256(f"{provider}\0{profile_id}".encode()).hexdigest()[:24]
        key = f"{self._lock_key}/refresh/{digest}"
        lock = _RefreshLock(self, key, profile_id)
        mutex = _thread_lock(f"{self._dsn}\0{key}")  # one session may take its lock twice
        if not mutex.acquire(timeout=self.refresh_lock_timeout):
            raise lock.timeout("Another thread of this process is refreshing this profile.")
        try:
            if self.readonly:
                yield
                return
            lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            mutex.release()

    def _claim(self, profile_id: str, claimant: str, seconds: float) -> tuple[str, int] | None:
        """Claim the refresh of ``profile_id``; None when ours, else (holder, seconds left)."""

        def claim(conn: Conn) -> tuple[str, int] | None:
            rows = self._load(conn)
            cred = rows.profiles.get(profile_id, (None, None, None, None))[1]
            digest = _tokens_digest(decode_json(cred) if cred else None)
            args = (self.namespace, profile_id, claimant, digest, seconds)
            if conn.execute(self._sql.claim, args).fetchone() is not None:
                return None
            row = conn.execute(self._sql.claim_holder, (self.namespace, profile_id)).fetchone()
            return (str(row[0]), int(row[1])) if row else ("?", 0)

        return self._retrying(claim, "claim an OAuth refresh")

    def _unclaim(self, profile_id: str, claimant: str) -> None:
        self._retrying(
            lambda conn: conn.execute(self._sql.unclaim, (self.namespace, profile_id, claimant)),
            "release an OAuth refresh claim",
        )


_FIX_URL = "Write it as postgresql://user@host:port/database (see docs/postgres.md)."


class _RefreshLock:
    """One hold of a profile's refresh lock: the advisory lock on a connection of its own,
    and the claim beside it (see the module docstring)."""

    def __init__(self, storage: PostgresAuthStorage, key: str, profile_id: str) -> None:
        self.storage = storage
        self.key = key
        self.profile_id = profile_id
        self.claimant = f"{storage._who}:{secrets.token_hex(4)}"
        self.deadline = time.monotonic() + storage.refresh_lock_timeout
        self.conn: Conn | None = None
        self.claimed = False

    def timeout(self, why: str) -> LockTimeout:
        return LockTimeout(
            f"{self.storage.path} (refresh of {self.profile_id!r})",
            self.storage.refresh_lock_timeout,
            fix=why,
        )

    def _lock(self) -> None:
        """Take the advisory lock, through lost connections, until the deadline."""
        patience = Patience(self.storage.lock_timeout)  # for a server that is down
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise self.timeout("Another process is refreshing this profile; try again.")
            try:
                conn = self.conn = self.storage._lock_connection()
                conn.execute(
                    "SELECT set_config('lock_timeout', %s, true), "
                    "pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"{max(1, int(left * 1000))}ms", self.key),
                )
                return
            except psycopg.Error as exc:
                self._unlock()
                if exc.sqlstate == "55P03":
                    raise self.timeout(
                        "Another process is refreshing this profile (its token endpoint is "
                        "slow?); try again, or raise refresh_lock_timeout."
                    ) from None
                if not lost(exc):
                    raise self.storage._error(exc, "lock an OAuth refresh") from None
                if time.monotonic() >= self.deadline or not patience.again():
                    raise self.storage._error(exc, "lock an OAuth refresh") from None

    def _unlock(self) -> None:
        """End the lock's transaction, which releases the lock; keep a sound connection
        for the next refresh (a new one costs more than the rest of a refresh)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            conn.rollback()
        except Exception:
            with contextlib.suppress(Exception):
                conn.close()  # the transaction ends with the session, and the lock with it
            return
        self.storage._spare_lock_connection(conn)

    def acquire(self) -> None:
        pause = 0.02
        claim_for = self.storage.refresh_lock_timeout
        while True:
            self._lock()
            try:
                holder = self.storage._claim(self.profile_id, self.claimant, claim_for)
            except BaseException:
                self._unlock()
                raise
            if holder is None:
                self.claimed = True
                return
            # The lock was free but a refresh is under way: its holder lost the lock's
            # connection (or died) while calling the token endpoint. Wait for its tokens.
            self._unlock()
            who, left = holder
            if time.monotonic() + pause >= self.deadline:
                raise self.timeout(
                    f"{who} is refreshing it but lost its lock's connection; its claim "
                    f"lapses in {max(left, 0)} s unless its new tokens arrive first"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def release(self) -> None:
        """Drop the claim, then the lock (waiters that get the lock find no claim)."""
        try:
            if self.claimed:
                self.storage._unclaim(self.profile_id, self.claimant)
        except Exception as exc:  # the claim then lapses by itself; the new tokens are stored
            log.warning(
                "%s: the refresh claim of %r was not removed (%s); it lapses by itself",
                self.storage.path,
                self.profile_id,
                type(exc).__name__,
            )
        finally:
            self._unlock()
