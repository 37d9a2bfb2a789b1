"""How the PostgreSQL backend meets a network: which errors mean a lost connection, how long
to keep trying, and the flatstate error each psycopg error becomes."""

from __future__ import annotations

import time

import psycopg

from flatstate.backends.base import RetryWrite
from flatstate.backends.postgres.schema import CONFLICT_SQLSTATE
from flatstate.errors import ConflictError, LockTimeout, ReadOnlyStore, StoreUnavailable

__all__ = ["LostWhilePreparing", "Patience", "lost", "translate", "unavailable"]

# Between attempts after a lost connection: this, doubling up to 1 s.
RECONNECT_PAUSE = 0.01
# SQLSTATEs a write may simply retry after: a row changed under it, a deadlock with a
# writer outside the lock, a serialization failure.
_RETRYABLE = {CONFLICT_SQLSTATE, "40P01", "40001"}
# Connection exceptions (class 08) and the server shutting a session down (57P0x).
_LOST_PREFIXES = ("08", "57P")


def lost(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection is gone (not that the statement was wrong)."""
    if not isinstance(exc, psycopg.Error):
        return isinstance(exc, OSError)
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith(_LOST_PREFIXES)


def unavailable(location: str, exc: BaseException, doing: str) -> StoreUnavailable:
    """StoreUnavailable for a server that cannot be reached (``location`` is redacted)."""
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreUnavailable(
        location,
        f"could not {doing}: {cause}",
        "Check that PostgreSQL is running and that the DSN (host, port, user, password, "
        "database) is right.",
    )


def translate(
    exc: psycopg.Error,
    doing: str,
    *,
    location: str,
    schema: str,
    lock_timeout: float,
    writing: bool,
) -> Exception:
    """The flatstate error for a psycopg one; retryable ones (``writing``: a lost connection
    too) wrapped in RetryWrite."""
    state = exc.sqlstate or ""
    if state in _RETRYABLE:
        return RetryWrite(
            ConflictError(
                location,
                "the write kept meeting concurrent changes "
                f"({exc.diag.message_primary or state}); a program writing the sessions "
                "table without taking the namespace lock "
                f"(SELECT {schema}.lock(namespace)) can cause this",
            )
        )
    if state == "55P03":
        return LockTimeout(
            location,
            lock_timeout,
            fix="Another process is writing this namespace; wait for it or raise lock_timeout.",
        )
    if state == "42501" and doing == "migrate the schema":
        return ReadOnlyStore(location, f"the role may not create the schema {schema!r} ({exc})")
    if state in ("25006", "42501"):
        return ReadOnlyStore(location, f"the server refused the write ({state}: {exc})")
    if lost(exc):
        error = unavailable(location, exc, doing)
        return RetryWrite(error) if writing else error
    return exc


class Patience:
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


class LostWhilePreparing(Exception):
    def __init__(self, error: StoreUnavailable) -> None:
        super().__init__(str(error))
        self.error = error
