"""Access counters written in the background on PostgreSQL (see ``access``).

A second's worth of recalls leaves a few thousand counters, and upserting
them costs tens of milliseconds: the recall that found them due would pay
it all. So :class:`BackgroundAccess` writes each batch from a thread of its
own, on a connection of its own (a second backend for the same facts, made
on first use), while recalls go on on the store's connection.

A batch is counted in by this process's reads until it settles (``access``).
For no read to see it twice (stored, and still in flight) or not at all, the
commit and the settling happen under the read guard of the store's backend,
which its reads hold throughout: a read sees the counts either committed and
settled, or neither. Its writes do not hold the guard (they take the facts
lock, which a batch holds while it waits for the guard to commit).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ["BackgroundAccess"]

Rows = list[tuple[int, int, int]]
T = TypeVar("T")


class AccessWriter(Protocol):
    """What the background needs of its backend (a PostgresFacts of its own)."""

    def write(self, fn: Callable[[], T], committed: Callable[[], object] | None = None) -> T: ...

    def write_access(self, rows: Rows) -> None: ...

    def close(self) -> None: ...


class BackgroundAccess:
    """One batch of access counters at a time, written by a thread of its own."""

    def __init__(self, make: Callable[[], AccessWriter]) -> None:
        self._make = make
        self._backend: AccessWriter | None = None
        self._thread: threading.Thread | None = None

    def start(self, rows: Rows, settle: Callable[[bool], None]) -> None:
        """Write ``rows`` in the background, then ``settle(committed)``."""
        self.wait()
        self._thread = threading.Thread(
            target=self._run, args=(rows, settle), name="flatstate-facts-access", daemon=True
        )
        self._thread.start()

    def wait(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _run(self, rows: Rows, settle: Callable[[bool], None]) -> None:
        settled = False

        def committed() -> None:
            nonlocal settled
            settled = True
            settle(True)

        try:
            if self._backend is None:
                self._backend = self._make()
            backend = self._backend
            backend.write(lambda: backend.write_access(rows), committed=committed)
        except Exception:
            # The counts wait for the next batch; a store that cannot write them at all
            # says so on its next flush() or close(), which write in the caller's time.
            if self._backend is not None:
                self._backend.close()
                self._backend = None
        finally:
            if not settled:
                settle(False)

    def close(self) -> None:
        self.wait()
        if self._backend is not None:
            self._backend.close()
            self._backend = None
