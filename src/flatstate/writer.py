"""One writer thread per store: every write, from a thread or a task, commits through it.

A caller hands the writer a :class:`Job` and waits (a thread on an event, a task
on a future). The writer takes everything waiting at once, bounded by
``max_batch``, with no sleep and no window: a lone write on an idle store
commits at once, and writes that arrive while a commit runs share the next one
(group commit: one durable commit, one fsync with ``synchronous="full"``, for
the whole batch). The batch runs in one transaction in the order it was queued,
so writes from one caller stay in order; a job that raises is undone alone
(see :mod:`flatstate.pipeline`). Every job is acknowledged only after the commit
that holds it.

A thread that writes to an idle store (nothing queued, nothing committing)
commits its own write at once instead of handing it to the thread and waiting
to be woken: the two thread switches cost a lone write 60 % of its time here
(seed loop: 76,000 against 47,000 operations a second). Writes that arrive
while that commit runs queue for the writer thread as usual. A task never
commits on the event loop: its writes always go through the thread.

A job the writer has not taken yet may be withdrawn (a cancelled task): it
never happens. A job already taken runs to its outcome.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from flatstate._fork import fork_guard
from flatstate.errors import StoreClosed

__all__ = ["MAX_BATCH", "Job", "Notify", "Writer"]

# A batch commits at most this many writes: large enough that 256 waiting tasks share
# two commits, small enough that one transaction stays a few MiB and a few ms.
MAX_BATCH = 128


Notify = Callable[[list["Job"]], None]
"""Tells the callers of these jobs (all of them passed this same function) their outcome."""


class Job:
    """One caller's write function, its outcome, and how the caller learns of it.

    A thread waits on ``done``. A task passes ``notify`` and its ``waiter`` (a
    future) instead: the writer calls each distinct ``notify`` once per batch with
    its jobs, so a batch of a hundred tasks wakes their event loop once.
    """

    __slots__ = ("done", "error", "fn", "notify", "result", "waiter")

    def __init__(
        self, fn: Callable[[Any], Any], notify: Notify | None = None, waiter: Any = None
    ) -> None:
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.notify = notify
        self.waiter = waiter
        self.done: threading.Event | None = None  # made only when a thread must wait

    def outcome(self) -> Any:
        """The result, or the job's exception raised again."""
        if self.error is not None:
            raise self.error
        return self.result


class Writer:
    """A queue of jobs drained by one thread into ``commit(batch)``.

    ``commit`` runs every job of the batch and sets its result or error; it
    raises only when none of them committed, and then every job fails with it. The thread starts
    with the first write, so a store only read never has one.
    """

    def __init__(
        self,
        commit: Callable[[list[Job]], None],
        closed: Callable[[], StoreClosed],
        *,
        name: str,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._commit = commit
        self._closed_error = closed
        self._name = name
        self.max_batch = max_batch
        self._queue: deque[Job] = deque()
        self._mutex = threading.Lock()  # the condition's own lock, taken directly where no wait
        self._wake = threading.Condition(self._mutex)
        self._thread: threading.Thread | None = None
        self._busy = False  # a batch is committing (on the thread, or inline by its caller)
        self._sleeping = False  # the thread waits for a job: only then does a submit wake it
        self._stopping = False
        self._inline = threading.local()  # .active: this thread is committing inline
        self._working = fork_guard()  # held by whoever commits a batch
        self.batches = 0
        self.jobs = 0
        self.busy_seconds = 0.0  # wall time spent committing batches (a perf counter)
        _writers.add(self)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises StoreClosed once the writer is closing, and RuntimeError
        from inside a write function of this writer (it would wait for itself forever)."""
        self._refuse_own_thread()
        with self._wake:
            if self._stopping:
                raise self._closed_error()
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._sleeping:
                self._sleeping = False
                self._wake.notify()

    def run(self, job: Job) -> Any:
        """Queue ``job``, wait for its commit, and return its result (or raise its error)."""
        self._refuse_own_thread()
        with self._mutex:
            inline = not self._busy and not self._queue and not self._stopping
            if inline:
                self._busy = True
        if not inline:
            job.done = threading.Event()
            self.submit(job)
            job.done.wait()
            return job.outcome()
        self._inline.active = True
        try:
            self._commit_batch([job])
        finally:
            self._inline.active = False
            with self._mutex:
                self._busy = False
                if self._queue and self._sleeping:
                    self._sleeping = False
                    self._wake.notify()
        return job.outcome()

    def _refuse_own_thread(self) -> None:
        thread = self._thread
        if (thread is not None and thread.ident == threading.get_ident()) or getattr(
            self._inline, "active", False
        ):
            # A write function that writes would wait for itself forever.
            raise RuntimeError("a write function cannot write to its own store")

    def withdraw(self, job: Job) -> bool:
        """Take back a job the writer has not started; whether it was still waiting."""
        with self._wake:
            try:
                self._queue.remove(job)
            except ValueError:
                return False
            return True

    @property
    def mean_batch(self) -> float:
        return self.jobs / self.batches if self.batches else 0.0

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._sleeping = True
                    self._wake.wait()
                    self._sleeping = False
                if not self._queue:
                    return
                count = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
                self._busy = True
            try:
                self._commit_batch(batch)
            finally:
                with self._wake:
                    self._busy = False

    def _commit_batch(self, batch: list[Job]) -> None:
        started = time.perf_counter()
        try:
            with self._working:
                self._commit(batch)
        except BaseException as exc:  # every waiting caller learns why
            for job in batch:
                job.error = exc
        self.busy_seconds += time.perf_counter() - started
        self.batches += 1
        self.jobs += len(batch)
        if batch[0].done is not None or batch[0].notify is not None or len(batch) > 1:
            _settle(batch)  # else: one job, its caller committed it inline and knows

    def _forked(self) -> None:
        """In a forked child: the thread did not come along; the next write starts one.

        The jobs still queued are the parent's, whose callers wait there: the parent's
        writer commits them, and the child must not commit them a second time.
        """
        self._mutex = threading.Lock()
        self._wake = threading.Condition(self._mutex)
        self._queue.clear()
        self._busy = False
        self._sleeping = False
        self._thread = None

    def close(self) -> None:
        """Commit what is queued, then stop the thread; later writes raise StoreClosed."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _settle(batch: list[Job]) -> None:
    """Tell every caller of ``batch`` its outcome is final (once, after the commit)."""
    groups: dict[Notify, list[Job]] = {}
    for job in batch:
        if job.notify is None:
            if job.done is not None:  # None: its caller committed it inline
                job.done.set()
        else:
            groups.setdefault(job.notify, []).append(job)
    for notify, jobs in groups.items():
        notify(jobs)


# A child of fork() has none of its parent's threads: a writer inherited mid-run would
# otherwise wait forever for a thread that is not there.
_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _after_fork() -> None:
    for writer in _writers:
        writer._forked()


os.register_at_fork(after_in_child=_after_fork)
