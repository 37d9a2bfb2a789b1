"""Transcript appends on PostgreSQL: group commit, the per-transcript order, and lost
connections settled by what the database shows.

One thread per store (started by the first append) commits every append queued while the
previous commit was under way, of every task, thread and transcript, in one transaction:
64 tasks appending at once cost a few commits, not 64. A caller blocks on (or, through the
async API, awaits) the future of its own append, which resolves only after the commit.

Order. A transaction locks the row of each transcript it appends to (``SELECT ... FOR
UPDATE`` on ``transcripts``, in name order so that two hosts' batches never deadlock) and
holds the lock to its commit. Under it, it reads ``lines`` (the next line number) and
``leaf`` (the parent of the next entry), numbers its lines from there and writes the new
count back. So the appends to one transcript, from every process on every host, take
turns: their line numbers are handed out one transaction at a time, in commit order and
without gaps, and each entry's ``parentId`` is the true leaf. A sequence would not do (its
numbers are taken before commit, so a reader could see line 7 before line 6 commits, and
the leaf would still need a lock); an advisory lock would, but the row lock also waits for
an archive (which renames the row) and needs no second name for the same thing.

Lost connections. Each transaction sets a random marker in the ``txn`` column of every
line it writes. A connection lost before the commit was sent loses nothing: the batch
runs again. One lost after it was sent is settled on a new connection: under the same row
locks (granted only once the old transaction has ended), the marker is among the lines or
it never will be. Committed: the appends are acknowledged as they are. Not: they run
again (with ids kept, parents read afresh). Never both, never neither.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from flatstate.backends.base import RetryWrite
from flatstate.backends.postgres.connection import Patience, lost, translate
from flatstate.backends.postgres.transcript_schema import TranscriptQueries
from flatstate.errors import StoreClosed, StoreUnavailable
from flatstate.frozen import encode_json
from flatstate.transcripts import SESSION_VERSION, iso_now

__all__ = ["Append", "Appender", "Host"]

log = logging.getLogger("flatstate.transcripts")

# A batch stops growing at this many lines or bytes: one transaction stays a few MB.
MAX_BATCH_LINES = 2000
MAX_BATCH_BYTES = 8 << 20
OUTCOME_PATIENCE = 30.0
# How long the thread waits for a batch as large as the last one to queue up again.
GATHER_SECONDS = 0.002

Conn = psycopg.Connection[tuple[Any, ...]]
# A deadlock or serialization failure: the transaction did nothing and may run again.
_AGAIN = ("40P01", "40001")
_random = random.Random()  # seeded from the OS once; reseeded in a forked child below
os.register_at_fork(after_in_child=_random.seed)


class Host(Protocol):
    """What transcripts use of the store's backend (:class:`PostgresBackend
    <flatstate.backends.postgres.backend.PostgresBackend>`): its pool, its settings and
    how it waits through lost connections."""

    location: str
    namespace: str
    schema: str
    lock_timeout: float
    readonly: bool
    readonly_reason: str
    transcripts_dir: str
    _lock_timeout_ms: str
    _synchronous: str | None

    def _getconn(self) -> Conn: ...
    def _putconn(self, conn: Conn) -> None: ...
    def _drop_dead_connections(self) -> None: ...
    def _patience(self) -> Patience: ...


@dataclass
class Append:
    """Entries for one transcript, their ids and timestamps chosen before the lock (so a
    retried batch keeps them), their parents filled in under it."""

    name: str
    session_id: str
    cwd: str
    entries: list[dict[str, Any]]
    ids: list[Any]
    stamps: list[str]
    guard: Callable[[], bool] | None = None
    future: Future[list[str]] = field(default_factory=Future)
    size: int = 0


def new_append(
    name: str,
    session_id: str,
    cwd: str,
    entries: Sequence[Mapping[str, Any]],
    guard: Callable[[], bool] | None,
) -> Append:
    records = [dict(entry) for entry in entries]
    # 8 hex characters as OpenClaw's; random, not os.urandom, which gives up the GIL and
    # may wait a switch interval to get it back from the commit thread.
    ids = [r["id"] if "id" in r else f"{_random.getrandbits(32):08x}" for r in records]
    stamps = [iso_now() for _ in records]
    size = sum(len(encode_json(r)) for r in records)
    return Append(name, session_id, cwd, records, ids, stamps, guard, size=size)


class Appender:
    """The group-commit thread of one store's transcripts (see the module docstring)."""

    def __init__(self, backend: Host, sql: TranscriptQueries) -> None:
        self._backend = backend
        self._sql = sql
        self._queue: deque[Append] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        self.commits = 0
        """Transactions committed (for tests and benchmarks: appends / commits = batching)."""

    def submit(self, append: Append) -> Future[list[str]]:
        with self._wake:
            if self._closed:
                raise StoreClosed(self._backend.location)
            if self._thread is None or self._pid != os.getpid():
                # A forked child has the parent's queue but not its thread: start its own.
                self._queue = deque()
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="flatstate-transcripts", daemon=True
                )
                self._thread.start()
            self._queue.append(append)
            self._wake.notify()
        return append.future

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        last = 1  # appends in the previous batch
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:
                    return
                # The waiters of a large batch come back together, one by one: give them
                # a moment to, so that the next commit carries them all, not the first few.
                deadline = time.monotonic() + GATHER_SECONDS
                while len(self._queue) < last and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                batch = self._take()
                last = len(batch)
            try:
                results = self._commit(batch)
            except BaseException as exc:  # every waiter hears of it; the thread goes on
                for append in batch:
                    append.future.set_exception(exc)
                continue
            for append, ids in zip(batch, results, strict=True):
                append.future.set_result(ids)

    def _take(self) -> list[Append]:
        """The next batch: a guarded append alone (its guard reads what it guards),
        otherwise everything queued up to the batch limits."""
        first = self._queue.popleft()
        batch, lines, size = [first], len(first.entries), first.size
        if first.guard is not None:
            return batch
        while self._queue:
            nxt = self._queue[0]
            lines += len(nxt.entries)
            size += nxt.size
            if nxt.guard is not None or lines > MAX_BATCH_LINES or size > MAX_BATCH_BYTES:
                break
            batch.append(self._queue.popleft())
        return batch

    # -- one transaction -------------------------------------------------------
    def _commit(self, batch: list[Append]) -> list[list[str]]:
        backend = self._backend
        marker = secrets.randbits(62) + 1
        # An append nobody has committed yet may always run again: it keeps trying through
        # lost connections as long as a commit's outcome is looked for (30 s), not just the
        # lock timeout, rather than failing a caller whose append would land a moment later.
        patience = Patience(max(OUTCOME_PATIENCE, backend.lock_timeout))
        while True:
            conn = backend._getconn()
            sent = False
            try:
                heads = self._lock(conn, batch)
                if len(heads) < len({a.name for a in batch}):
                    # Archived (renamed) between its creation and its lock: create it again.
                    self._end(conn, "ROLLBACK")
                    continue
                guard = batch[0].guard
                if guard is not None and not guard():
                    self._end(conn, "ROLLBACK")
                    return [[]]
                queries, params, base = self._writes(batch, heads, marker)
                sent = True
                cursor = psycopg.ClientCursor(conn)
                cursor.execute("; ".join(queries), params)
            except psycopg.Error as exc:
                if not lost(exc):
                    self._end(conn, "ROLLBACK")
                    if exc.sqlstate in _AGAIN and patience.again():
                        continue  # a deadlock with a writer outside flatstate: nothing written
                    raise self._error(exc) from exc
                backend._putconn(conn)  # broken: the pool discards it
                backend._drop_dead_connections()
                if sent:
                    committed = self._settle(base, marker)
                    if committed is None:
                        raise StoreUnavailable(
                            backend.location,
                            "the connection was lost while transcript appends committed, and "
                            f"whether they did is unknown ({exc})",
                            "Read the transcript's tail before appending them again.",
                        ) from exc
                    if committed:
                        self.commits += 1
                        return [[str(i) for i in a.ids] for a in batch]
                if not patience.again():
                    raise self._error(exc) from exc
                continue
            except BaseException:
                self._end(conn, "ROLLBACK")
                raise
            backend._putconn(conn)
            self.commits += 1
            return [[str(i) for i in a.ids] for a in batch]

    def _lock(self, conn: Conn, batch: list[Append]) -> dict[str, tuple[int, int, str | None]]:
        """BEGIN, create the transcripts that do not exist yet and lock every one of the
        batch (one round trip): name -> (id, lines, leaf)."""
        backend = self._backend
        sessions = {a.name: a.session_id for a in batch}
        names = sorted(sessions)
        cursor = psycopg.ClientCursor(conn)
        cursor.execute(
            "; ".join(("BEGIN", self._sql.settings, self._sql.create, self._sql.lock)),
            (
                backend._lock_timeout_ms,
                backend._synchronous,
                backend.namespace,
                names,
                [sessions[n] for n in names],
                backend.namespace,
                names,
            ),
        )
        for _ in range(3):  # BEGIN, the settings, the creation: then the locked rows
            cursor.nextset()
        return {name: (tid, lines, leaf) for tid, name, lines, leaf in cursor.fetchall()}

    def _writes(
        self, batch: list[Append], heads: dict[str, tuple[int, int, str | None]], marker: int
    ) -> tuple[list[str], list[Any], dict[int, int]]:
        """The statements that write the batch and commit, and where each transcript's new
        lines start (for the settlement)."""
        rows: list[tuple[int, int, str | None, str | None, str]] = []
        lines = {name: seq for name, (_, seq, _) in heads.items()}  # the next line number
        leaves = {name: leaf for name, (_, _, leaf) in heads.items()}
        base = {tid: seq for tid, seq, _ in heads.values()}
        for append in batch:
            tid = heads[append.name][0]
            seq, leaf = lines[append.name], leaves[append.name]
            if seq == 0:
                header = {
                    "type": "session",
                    "version": SESSION_VERSION,
                    "id": append.session_id,
                    "timestamp": append.stamps[0] if append.stamps else iso_now(),
                    "cwd": append.cwd,
                }
                rows.append((tid, 0, "session", append.session_id, _text(header)))
                seq = 1
            for entry, entry_id, stamp in zip(
                append.entries, append.ids, append.stamps, strict=True
            ):
                record = dict(entry)
                record.setdefault("id", entry_id)
                record.setdefault("parentId", leaf)
                record.setdefault("timestamp", stamp)
                rows.append((tid, seq, _str(record.get("type")), _str(entry_id), _text(record)))
                seq += 1
                leaf = entry_id if isinstance(entry_id, str) else None
            lines[append.name], leaves[append.name] = seq, leaf
        queries = [self._sql.insert]
        params: list[Any] = [marker, encode_json(rows).decode()]
        for name, (tid, seq, _) in heads.items():
            if lines[name] != seq:
                queries.append(self._sql.set_head)
                params += (lines[name], leaves[name], tid)
        queries.append("COMMIT")
        return queries, params, base

    def _settle(self, base: dict[int, int], marker: int) -> bool | None:
        """Whether the batch marked ``marker`` committed (None: cannot tell). Its lines are
        there or they never will be once the row locks are ours again."""
        backend = self._backend
        tid, start = next(iter(base.items()))
        patience = backend._patience()
        while True:
            try:
                conn = backend._getconn()
            except StoreUnavailable:
                return None
            try:
                cursor = psycopg.ClientCursor(conn)
                cursor.execute(
                    "; ".join(
                        ("BEGIN", self._sql.settings, self._sql.lock_ids, self._sql.committed)
                    ),
                    (
                        backend._lock_timeout_ms,
                        None,
                        list(base),
                        tid,
                        start,
                        marker,
                    ),
                )
                for _ in range(3):  # BEGIN, the settings, the locks: then the answer
                    cursor.nextset()
                row = cursor.fetchone()
                self._end(conn, "ROLLBACK")
                return bool(row and row[0])
            except psycopg.Error as exc:
                backend._putconn(conn)
                if not lost(exc) or not patience.again():
                    return None
                backend._drop_dead_connections()

    def _end(self, conn: Conn, how: str) -> None:
        if not conn.broken and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.execute(how)
        self._backend._putconn(conn)

    def _error(self, exc: psycopg.Error) -> Exception:
        backend = self._backend
        error = translate(
            exc,
            "append to a transcript",
            location=backend.location,
            schema=backend.schema,
            lock_timeout=backend.lock_timeout,
            writing=False,
        )
        return error.error if isinstance(error, RetryWrite) else error


def _text(record: Mapping[str, Any]) -> str:
    return encode_json(record).decode()


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
