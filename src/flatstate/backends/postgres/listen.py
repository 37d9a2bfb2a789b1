"""LISTEN on a thread of its own: how a PostgreSQL store learns of other processes' commits.

Every change to a namespace's sessions sends ``NOTIFY <channel>, '<position>'``
when its transaction commits (see :mod:`flatstate.backends.postgres.schema`). A
:class:`Listener` holds one connection outside the pool, waits on its socket
and, for each notification, calls back with the position; the backend bumps
its :class:`NotifySignal` when that position is newer than what the store has
seen. A read then costs one integer comparison, as on SQLite.

A notification that arrives while the connection is down is lost, so after
every reconnection the listener calls back with ``None`` (``catch up``): the
store then reads the change log from the last position it knows, which misses
nothing. The reconnection waits 50 ms, doubling up to 2 s, between attempts.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import weakref
from collections.abc import Callable

import psycopg
from psycopg import pq

__all__ = ["Listener", "NotifySignal", "shared_signal"]

RETRY_FIRST = 0.05
RETRY_MAX = 2.0


class NotifySignal:
    """A change counter bumped by the listener thread and by the store's own commits.

    The lock makes each bump count: two threads adding one at the same
    instant must add two, or the store would take another process's commit
    for its own and skip the reload.
    """

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def read(self) -> int:
        return self.value

    def bump(self) -> None:
        with self._lock:
            self.value += 1

    def close(self) -> None:
        pass


_signals: weakref.WeakValueDictionary[str, NotifySignal] = weakref.WeakValueDictionary()
_signals_lock = threading.Lock()


def shared_signal(key: str) -> NotifySignal:
    """The signal of every store of this process open on ``key`` (server, schema, namespace).

    Sharing it makes a commit through one store seen at once by a read through
    another in the same process, as the shared counter file does for SQLite;
    other processes learn of it by notification.
    """
    with _signals_lock:
        signal = _signals.get(key)
        if signal is None:
            signal = _signals[key] = NotifySignal()
        return signal


class Listener:
    """Waits for notifications on ``conn`` (already LISTENing) in a daemon thread.

    ``connect`` makes a new listening connection after a loss; ``on_position``
    gets each notified position, or None after a reconnection.
    """

    def __init__(
        self,
        conn: psycopg.Connection[tuple[object, ...]],
        connect: Callable[[], psycopg.Connection[tuple[object, ...]]],
        on_position: Callable[[int | None], None],
    ) -> None:
        self._conn: psycopg.Connection[tuple[object, ...]] | None = conn
        self._connect = connect
        self._on_position = on_position
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self.reconnects = 0
        self.connected = threading.Event()
        self.connected.set()
        self.backend_pid: int | None = conn.info.backend_pid
        self._thread = threading.Thread(target=self._run, name="flatstate-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            conn = self._conn
            if conn is None:
                try:
                    conn = self._conn = self._connect()
                except Exception:  # the server is away, or refuses us for now: try later
                    self._stop.wait(delay)
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                delay = RETRY_FIRST
                self.backend_pid = conn.info.backend_pid
                self.reconnects += 1
                self.connected.set()
                # Whatever was committed while we were away is in the change log.
                self._on_position(None)
            try:
                self._pump(conn)
            except (psycopg.Error, OSError, ValueError):
                self.connected.clear()
                self._conn = None
                with contextlib.suppress(Exception):
                    conn.close()
                self._on_position(None)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()

    def _pump(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Deliver notifications until asked to stop; raise when the connection is lost."""
        pgconn = conn.pgconn
        fd = conn.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([fd, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            pgconn.consume_input()  # raises OperationalError once the server has gone
            if pgconn.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError("the listening connection was lost")
            while (notify := pgconn.notifies()) is not None:
                try:
                    position = int(notify.extra)
                except ValueError:
                    continue
                self._on_position(position)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
