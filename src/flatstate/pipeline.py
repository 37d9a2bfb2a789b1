"""The commit pipeline: how a batch of write functions becomes one durable transaction.

The writer thread (:mod:`flatstate.writer`) hands :meth:`Pipeline.commit_batch`
every job waiting. The pipeline takes the store's lock, starts the backend's
transaction, catches up on what other processes committed, runs each job's
function on one :class:`~flatstate.snapshot.Draft`, hands the changes to the
backend and commits; the store then swaps the new entries into its cache.

A job that raises is undone alone: the draft is the batch's savepoint (nothing
reaches the backend before :meth:`Pipeline._stage`), so undoing a job is
putting back the draft's changes as they were before it. If the commit itself fails (an
entry over the size limit, a lost connection), every job runs again on its own,
so that only the guilty one fails and the others commit; except when the
backend cannot tell whether the commit happened (a connection lost during it
and never settled, :class:`~flatstate.errors.CommitOutcomeUnknown`): then every
job of the batch fails with that error, since running one again could apply it
twice.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from flatstate._cache import EntryCache
from flatstate.backends.base import Backend, RetryWrite, StaleView
from flatstate.errors import CommitOutcomeUnknown, EntryTooLarge
from flatstate.model import SessionEntry
from flatstate.snapshot import Committed, Draft
from flatstate.writer import Job

__all__ = ["RETRY_PAUSE", "WRITE_ATTEMPTS", "Host", "Pipeline", "Staged"]

# A write the backend bounced (RetryWrite: a row changed under it, a lost connection)
# runs at most this many times, pausing a little longer before each new attempt.
WRITE_ATTEMPTS = 5
RETRY_PAUSE = 0.01

Staged = list[tuple[str, SessionEntry | None]]
"""(canonical key, new entry or None for a removal) of one committed transaction."""


class Host(Committed, Protocol):
    """What the pipeline needs of the store: its lock, backend and cache, and its freshness."""

    _lock: threading.RLock
    _backend: Backend
    _cache: EntryCache
    max_entry_bytes: int

    def _check_open(self) -> None: ...
    def _sync_locked(self) -> None: ...
    def _signal_read(self) -> int: ...
    def _committed_batch(self, staged: Staged, token: Any, signal_before: int) -> None: ...


class Pipeline:
    """Runs batches of jobs against one store; see the module's docstring."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def commit_batch(self, jobs: list[Job]) -> None:
        """What the writer runs: every job's outcome set, none raised."""
        with self._host._lock:
            self._host._check_open()
            if len(jobs) > 1:
                self._apply(jobs)
                return
            try:
                jobs[0].result = self._apply_retrying(jobs[0])
            except BaseException as exc:  # a function may raise CancelledError, for one
                jobs[0].error = exc

    def _apply_retrying(self, job: Job) -> Any:
        """Apply one job, running it again when the backend says the write surely did not
        commit and may simply be repeated (see :class:`~flatstate.backends.base.RetryWrite`):
        each attempt catches up first, so the job sees what got in its way."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return self._apply([job])[0]
            except RetryWrite as retry:
                if attempt == WRITE_ATTEMPTS:
                    raise retry.error from retry
                time.sleep(RETRY_PAUSE * attempt)
        raise AssertionError("unreachable")

    def _apply(self, jobs: list[Job]) -> list[Any]:
        """Run ``jobs`` on one draft and commit them together; the caller holds the lock.

        A single job's exception propagates. In a batch, a job that raises is
        undone alone; if the commit itself fails, each job is retried on its own.
        A batch the backend ran on a view that turned out stale (nothing was
        written) runs once more at once, the backend locking first this time.
        """
        try:
            return self._attempt(jobs)
        except StaleView:
            for job in jobs:
                job.result = job.error = None
            return self._attempt(jobs)

    def _attempt(self, jobs: list[Job]) -> list[Any]:
        host = self._host
        backend = host._backend
        try:
            backend.begin()
        except RetryWrite:
            if len(jobs) == 1:
                raise
            # Nothing was done (a connection lost at BEGIN): each job runs on its own, with
            # its retries, instead of the whole batch failing with an internal error.
            return self._one_by_one(jobs)
        try:
            host._sync_locked()
            signal_before = host._signal_read()
            staged = self._run(jobs, Draft(host))
            token = backend.commit() if staged else None
        except BaseException as exc:
            backend.rollback()
            if len(jobs) == 1 or isinstance(exc, StaleView):
                raise
            if isinstance(exc, CommitOutcomeUnknown):
                # The batch may have committed: running its jobs again could apply them twice.
                for job in jobs:
                    if job.error is None:  # a job that raised was never part of it
                        job.error, job.result = exc, None
                return [job.result for job in jobs]
            return self._one_by_one(jobs)
        if not staged:
            backend.rollback()
        else:
            host._committed_batch(staged, token, signal_before)
        return [job.result for job in jobs]

    def _run(self, jobs: list[Job], draft: Draft) -> Staged:
        """Run the jobs' functions on ``draft`` and stage the changes for the backend.

        An outcome that commits nothing (a single job raised, or nothing changed) is
        checked by no commit, so the backend confirms that its view was current first.
        """
        backend = self._host._backend
        try:
            if len(jobs) == 1:
                jobs[0].result = jobs[0].fn(draft)
            else:
                for job in jobs:
                    _run_undoable(job, draft)
            staged = self._stage(draft)
        except Exception:
            backend.confirm_view()
            raise
        finally:
            draft.seal()  # a function that kept the draft cannot write through it later
        if not staged:
            backend.confirm_view()
        return staged

    def _one_by_one(self, jobs: list[Job]) -> list[Any]:
        """Run every job of a batch that could not commit whole again, alone."""
        for job in jobs:
            job.error = None
            try:
                job.result = self._apply_retrying(job)
            except BaseException as exc:
                job.error = exc
        return [job.result for job in jobs]

    def _stage(self, draft: Draft) -> Staged:
        """Hand the draft's changes to the backend, folding aliases; check sizes."""
        host = self._host
        backend = host._backend
        cache = host._cache
        limit = host.max_entry_bytes
        staged: Staged = []
        for canon, entry in draft._changes.items():
            for alias in cache.candidates(canon)[1:]:
                backend.remove(alias)
            if entry is None:
                backend.remove(canon)
            else:
                size = backend.put(canon, entry, cache.entries.get(canon))
                if size > limit:
                    raise EntryTooLarge(canon, size, limit)
            staged.append((canon, entry))
        return staged


def _run_undoable(job: Job, draft: Draft) -> None:
    """Run one job of a batch on the shared draft; if it raises, put the draft back as it was.

    A copy of the draft's changes is the savepoint: they hold one entry per key
    the batch touched, and copying a batch's worth costs ~1 us.
    """
    saved = dict(draft._changes)
    try:
        job.result = job.fn(draft)
    except BaseException as exc:  # any: CancelledError too is this job's alone
        draft._changes = saved
        job.error = exc
