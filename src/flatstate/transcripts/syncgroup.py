"""Group commit for transcript files: the fsyncs of many appends taken together.

An append writes its lines under the transcript's lock, as before, and keeps a duplicate of
the file descriptor; it releases the lock (the next append to that file need not wait for
the disk) and hands the descriptor to the group, which acknowledges it only after an fsync
of that file that began after the write. The group is a :class:`~flatstate.writer.Writer`:
it takes everything waiting at once, with no sleep and no window; a lone append on an idle
group syncs at once, on its caller's own thread. Appends to one file that wait together
share one fsync; an fsync that fails fails the appends it was to cover, and no other.

Distinct files are synced in parallel, on up to :data:`PARALLEL` threads. On ext4
(``data=ordered``, delayed allocation) each file's fsync writes that file's own blocks, so
one thread syncing 64 freshly written files in a row costs about what 64 lone fsyncs cost
(measured here: 20-140 ms for 64, ~0.2-0.8 ms each after the first); the same fsyncs issued
from 8-16 threads at once took 9-11 ms (the journal commits concurrent fsyncs together and
the disk takes their writes in parallel).

A task's append (:meth:`~flatstate.transcripts.file.Transcript.submit_append`) is written
at once when no other writer holds the transcript, else :meth:`SyncGroup.submit` queues a
function that writes it under the lock on the group's thread; either way the task awaits a
future that the group completes through its ``notify`` (one wake of the event loop per
batch) after the fsync, holding no thread while it waits.

There is one group per process (:func:`group`): transcripts outlive the stores that hand
them out, and the fsyncs of every store's transcripts can share a batch.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from flatstate.errors import StoreClosed
from flatstate.writer import Job, Notify, Writer

__all__ = ["PARALLEL", "SyncGroup", "Written", "group"]

PARALLEL = 16
"""The most fsyncs of distinct files that one batch runs at once (its own thread included)."""


class Written:
    """What one append left to sync: a descriptor of its file (the group closes it), the
    file's identity (appends to one file share its fsync) and the append's result.
    ``fd`` None: nothing to sync (a guard refused the append, or the policy batches)."""

    __slots__ = ("fd", "key", "result")

    def __init__(self, fd: int | None, key: tuple[int, int], result: Any) -> None:
        self.fd = fd
        self.key = key
        self.result = result


class _Helpers:
    """Daemon threads that fsync descriptors handed to them; started on demand."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[int, list[BaseException | None], int, _Latch]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._threads = 0

    def fsync_all(self, fds: list[int]) -> list[BaseException | None]:
        """fsync every descriptor, up to :data:`PARALLEL` at once; the error of each, or None."""
        errors: list[BaseException | None] = [None] * len(fds)
        if len(fds) == 1:
            _fsync_into(fds[0], errors, 0)
            return errors
        helpers = min(len(fds), PARALLEL) - 1
        self._start(helpers)
        latch = _Latch(len(fds) - 1)
        for index in range(1, len(fds)):
            self._jobs.put((fds[index], errors, index, latch))
        _fsync_into(fds[0], errors, 0)
        while True:  # help with the rest rather than wait idle
            try:
                fd, out, index, other = self._jobs.get_nowait()
            except queue.Empty:
                break
            _fsync_into(fd, out, index)
            other.count_down()
        latch.wait()
        return errors

    def _start(self, wanted: int) -> None:
        with self._lock:
            while self._threads < wanted:
                self._threads += 1
                threading.Thread(
                    target=self._work, name=f"flatstate-fsync-{self._threads}", daemon=True
                ).start()

    def _work(self) -> None:
        while True:
            fd, errors, index, latch = self._jobs.get()
            _fsync_into(fd, errors, index)
            latch.count_down()
            del errors, latch

    def _forked(self) -> None:
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0


class _Latch:
    """Waits until ``count`` helpers have reported."""

    __slots__ = ("_count", "_done", "_lock")

    def __init__(self, count: int) -> None:
        self._count = count
        self._lock = threading.Lock()
        self._done = threading.Event()
        if count == 0:
            self._done.set()

    def count_down(self) -> None:
        with self._lock:
            self._count -= 1
            if self._count == 0:
                self._done.set()

    def wait(self) -> None:
        self._done.wait()


def _fsync_into(fd: int, errors: list[BaseException | None], index: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        errors[index] = exc


class SyncGroup:
    """The group commit of transcript fsyncs (see the module docstring)."""

    def __init__(self, name: str = "flatstate-transcript-sync") -> None:
        self._writer = Writer(self._commit, lambda: StoreClosed(name), name=name)
        self._helpers = _Helpers()
        self.fsyncs = 0
        """fsync calls made (for tests and benchmarks: appends / fsyncs = sharing)."""

    @property
    def batches(self) -> int:
        return self._writer.batches

    def sync(self, written: Written) -> Any:
        """On the thread that wrote: wait until ``written`` is durable; its result."""
        return self._writer.run(Job(lambda _: written))

    def submit(self, write: Callable[[], Written], notify: Notify, waiter: Any) -> Job:
        """Queue ``write`` (it writes under the transcript's lock, on the group's thread);
        ``notify`` gets the job once it is durable, with ``result`` the written result."""
        job = Job(lambda _: write(), notify, waiter)
        self._writer.submit(job)
        return job

    def withdraw(self, job: Job) -> bool:
        """Take back a job the group has not taken yet (it never happens); whether it was."""
        return self._writer.withdraw(job)

    def _commit(self, batch: list[Job]) -> None:
        """Run each job's write (a write that fails fails alone), fsync each file once,
        then set every outcome."""
        files: dict[tuple[int, int], tuple[int, list[Job]]] = {}  # key: (a descriptor, jobs)
        fds: list[int] = []
        try:
            for job in batch:
                try:
                    written: Written = job.fn(None)
                except Exception as exc:
                    job.error = exc
                    continue
                job.result = written.result
                if written.fd is None:
                    continue
                fds.append(written.fd)
                files.setdefault(written.key, (written.fd, []))[1].append(job)
            if files:
                shared = list(files.values())
                errors = self._helpers.fsync_all([fd for fd, _ in shared])
                self.fsyncs += len(shared)
                for (_, jobs), error in zip(shared, errors, strict=True):
                    if error is not None:
                        for job in jobs:
                            job.error, job.result = error, None
        finally:
            for fd in fds:
                os.close(fd)

    def _forked(self) -> None:
        self._helpers._forked()


_group: SyncGroup | None = None
_group_lock = threading.Lock()


def group() -> SyncGroup:
    """This process's sync group (made on first use; a forked child gets its own)."""
    global _group
    found = _group
    if found is None:
        with _group_lock:
            if _group is None:
                _group = SyncGroup()
            found = _group
    return found


def _after_fork() -> None:
    global _group_lock
    _group_lock = threading.Lock()
    if _group is not None:
        _group._forked()


os.register_at_fork(after_in_child=_after_fork)
