"""Access counters (``recall_count``, ``last_accessed_at``), written in batches.

A recall returns a few dozen facts scattered over the database. Writing their
counters on every recall cost more than the recall itself: a transaction,
dozens of dirty pages in the WAL, and the checkpoints (with their fsyncs)
that all those pages bring on. So counts wait here, in memory, and go to disk
in one transaction about once a second, or sooner when many facts wait.
Readers in this process see them at once (:meth:`AccessLog.apply`); other
processes within about a second. A crash loses at most that second of
counts, never a fact.

The counters live in their own narrow table (``fact_access``, on every
backend): a page holds hundreds of them, so a batch dirties few pages
where the same counts on the wide ``facts`` rows would dirty one page each.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ACCESS_FLUSH_FACTS", "ACCESS_FLUSH_SECONDS", "AccessLog"]

ACCESS_FLUSH_SECONDS = 1.0
ACCESS_FLUSH_FACTS = 8192


class AccessLog:
    """Recalls counted in memory, by fact ``seq``, until :meth:`flush` writes them."""

    __slots__ = ("_flushed_at", "pending")

    def __init__(self) -> None:
        self.pending: dict[int, tuple[int, int]] = {}
        self._flushed_at = time.monotonic()

    def record(self, seq: int, now: int) -> None:
        count = self.pending.get(seq, (0, 0))[0]
        self.pending[seq] = (count + 1, now)

    def apply(
        self, seq: int, recall_count: int, last_accessed_at: int | None
    ) -> tuple[int, int | None]:
        """The counters of ``seq`` as stored, plus what waits here."""
        found = self.pending.get(seq)
        if found is None:
            return recall_count, last_accessed_at
        return recall_count + found[0], max(last_accessed_at or 0, found[1])

    def due(self) -> bool:
        return bool(self.pending) and (
            len(self.pending) >= ACCESS_FLUSH_FACTS
            or time.monotonic() - self._flushed_at >= ACCESS_FLUSH_SECONDS
        )

    def flush(self, write: Callable[[list[tuple[int, int, int]]], object]) -> int:
        """Hand the waiting counts, as (seq, recalls, last access) rows, to ``write`` (one
        transaction of the backend's); return how many facts they cover. If ``write``
        raises, the counts keep waiting."""
        self._flushed_at = time.monotonic()
        if not self.pending:
            return 0
        rows = [(seq, count, at) for seq, (count, at) in self.pending.items()]
        write(rows)
        self.pending.clear()
        return len(rows)
