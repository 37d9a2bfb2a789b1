"""Access counters (``recall_count``, ``last_accessed_at``), written in batches.

A recall returns a few dozen facts scattered over the database. Writing their
counters on every recall cost more than the recall itself: a transaction,
dozens of dirty pages in the WAL, and the checkpoints (with their fsyncs)
that all those pages bring on. So counts wait here, in memory, and go to disk
in one transaction about once a second, or sooner when many facts wait.
Readers in this process see them at once (:meth:`AccessLog.apply`); other
processes within about a second. A crash loses at most that second of
counts, never a fact.

On PostgreSQL a second's batch (a few thousand counters, a row upserted each)
takes tens of milliseconds, too long to stall the recall that happens to be
due: there the batch goes to a background writer (:meth:`AccessLog.hand_off`)
and stays counted in, "in flight", until that write settles
(:meth:`AccessLog.settle`): committed, the counts are dropped here; failed,
they wait for the next batch.

The counters live in their own narrow table (``fact_access``, on every
backend): a page holds hundreds of them, so a batch dirties few pages
where the same counts on the wide ``facts`` rows would dirty one page each.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["ACCESS_FLUSH_FACTS", "ACCESS_FLUSH_SECONDS", "AccessLog"]

ACCESS_FLUSH_SECONDS = 1.0
ACCESS_FLUSH_FACTS = 8192

Counts = dict[int, tuple[int, int]]
"""seq: (recalls, last access)."""


def _merge(into: Counts, more: Counts) -> None:
    for seq, (count, at) in more.items():
        old = into.get(seq)
        into[seq] = (count, at) if old is None else (old[0] + count, max(old[1], at))


class AccessLog:
    """Recalls counted in memory, by fact ``seq``, until :meth:`flush` writes them.

    Thread-safe: a background writer settles its batch from its own thread.
    """

    __slots__ = ("_flushed_at", "_mutex", "in_flight", "pending")

    def __init__(self) -> None:
        self.pending: Counts = {}
        self.in_flight: Counts = {}
        self._mutex = threading.Lock()
        self._flushed_at = time.monotonic()

    @property
    def waiting(self) -> bool:
        """Whether any counts are not in the database yet."""
        return bool(self.pending or self.in_flight)

    def record(self, seq: int, now: int) -> None:
        with self._mutex:
            count = self.pending.get(seq, (0, 0))[0]
            self.pending[seq] = (count + 1, now)

    def apply(
        self, seq: int, recall_count: int, last_accessed_at: int | None
    ) -> tuple[int, int | None]:
        """The counters of ``seq`` as stored, plus what waits here (in flight too)."""
        with self._mutex:
            for counts in (self.pending, self.in_flight):
                found = counts.get(seq)
                if found is not None:
                    recall_count += found[0]
                    last_accessed_at = max(last_accessed_at or 0, found[1])
        return recall_count, last_accessed_at

    def due(self) -> bool:
        return bool(self.pending) and (
            len(self.pending) >= ACCESS_FLUSH_FACTS
            or time.monotonic() - self._flushed_at >= ACCESS_FLUSH_SECONDS
        )

    def flush(self, write: Callable[[list[tuple[int, int, int]]], object]) -> int:
        """Hand the waiting counts, as (seq, recalls, last access) rows, to ``write`` (one
        transaction of the backend's); return how many facts they cover. If ``write``
        raises, the counts keep waiting. Call it with nothing in flight."""
        self._flushed_at = time.monotonic()
        with self._mutex:
            rows = [(seq, count, at) for seq, (count, at) in self.pending.items()]
        if not rows:
            return 0
        write(rows)
        with self._mutex:
            self.pending.clear()
        return len(rows)

    def hand_off(self) -> list[tuple[int, int, int]]:
        """The waiting counts as rows for a background write, now in flight; none while
        an earlier batch is still in flight (they wait for the next)."""
        self._flushed_at = time.monotonic()
        with self._mutex:
            if self.in_flight or not self.pending:
                return []
            self.in_flight, self.pending = self.pending, {}
            return [(seq, count, at) for seq, (count, at) in self.in_flight.items()]

    def settle(self, committed: bool) -> None:
        """The background write of the batch in flight ended: ``committed``, or not (its
        counts wait again)."""
        with self._mutex:
            flown, self.in_flight = self.in_flight, {}
            if not committed:
                _merge(self.pending, flown)
