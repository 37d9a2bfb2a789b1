"""What a saver's database does for it, whichever database it is: writes through one
writer thread with group commit (:mod:`flatstate.writer`), reads through the cache, and the
jobs a write runs inside the writer's transaction.

An engine (:mod:`._sqlite_engine`, :mod:`._postgres_engine`) supplies connections, the
commit of a batch, and how to read; everything above the SQL is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from flatstate.errors import StoreClosed, StoreCorrupt
from flatstate.integrations.langgraph import _maintenance
from flatstate.integrations.langgraph._cache import Entry, RowCache, writes_dict
from flatstate.integrations.langgraph._tables import Db, Row, Sql, WriteRow, list_rows
from flatstate.writer import Job, Notify, Writer

__all__ = ["After", "Engine", "JobFn"]

T = TypeVar("T")
After = Callable[[], None]
JobFn = Callable[[Db], tuple[Any, After | None]]
"""Runs inside the writer's transaction; returns its result and what to tell the cache once
the transaction committed."""

MISS = object()


class Engine:
    """The database half of a saver (see the module's docstring)."""

    sql: Sql
    location: str  # redacted: for messages

    def __init__(self, cache: RowCache, *, name: str) -> None:
        self.cache = cache
        self._closed = False
        # The writer may commit on its thread while a caller commits inline: one at a time.
        self._commit_lock = threading.Lock()
        self._writer = Writer(self._locked_commit, self._closed_error, name=name)
        self._notifiers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Notify] = (
            weakref.WeakKeyDictionary()
        )

    # -- to be supplied -------------------------------------------------------------
    def _commit(self, batch: list[Job]) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Db]:
        """A connection for reads outside any write transaction."""
        raise NotImplementedError
        yield

    def _check_generation(self, db: Db) -> None:
        """Drop the cache if another process changed the tables since it was filled."""

    def _cache_current(self) -> bool:
        """Whether the cache is known current without asking the database."""
        return False

    def _close(self) -> None:
        raise NotImplementedError

    # -- writes ---------------------------------------------------------------------
    def _locked_commit(self, batch: list[Job]) -> None:
        with self._commit_lock:
            self._commit(batch)

    def _closed_error(self) -> StoreClosed:
        return StoreClosed(self.location)

    def _run_jobs(self, db: Db, batch: list[Job], savepoint: Callable[[], Any]) -> list[After]:
        """Run each job of ``batch`` in ``savepoint()`` (a context that undoes the job alone
        when it raises); the cache updates of those that succeeded."""
        afters: list[After] = []
        for job in batch:
            try:
                with savepoint():
                    result, after = job.fn(db)
            except Exception as exc:
                job.error = exc
                continue
            job.result = result
            if after is not None:
                afters.append(after)
        return afters

    def write(self, fn: JobFn) -> Any:
        if self._closed:
            raise self._closed_error()
        return self._writer.run(Job(fn))

    async def awrite(self, fn: JobFn) -> Any:
        if self._closed:
            raise self._closed_error()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        notify = self._notifiers.get(loop)
        if notify is None:
            notify = self._notifiers[loop] = _notifier(loop)
        job = Job(fn, notify, future)
        self._writer.submit(job)
        try:
            return await future
        except asyncio.CancelledError:
            self._writer.withdraw(job)
            raise

    # -- jobs -----------------------------------------------------------------------
    def put_job(
        self,
        row: Row,
        pieces: list[tuple[bytes, bytes]],
        joined: dict[str, bytes],
        result: Any,
    ) -> JobFn:
        sql, cache = self.sql, self.cache

        def job(db: Db) -> tuple[Any, After | None]:
            db.run(sql["put_row"], row)
            new = cache.unstored(pieces)
            if new:
                db.many(sql["put_blob"], new)
            if not cache.rows_enabled:
                return result, None
            # Writes may reach a checkpoint before its row does (LangGraph saves the
            # row in the background while the next tasks already write).
            entry = Entry(row, writes_dict(self._writes(db, row)), joined)
            return result, lambda: cache.apply_put(entry, new)

        return job

    def writes_job(
        self, key: tuple[str, str, str], rows: list[WriteRow], pieces: list[tuple[bytes, bytes]]
    ) -> JobFn:
        sql, cache = self.sql, self.cache

        def job(db: Db) -> tuple[None, After]:
            new = cache.unstored(pieces)
            if new:
                db.many(sql["put_blob"], new)
            keep = [(*key, *w) for w in rows if w.idx >= 0]
            replace = [(*key, *w) for w in rows if w.idx < 0]
            if keep:
                db.many(sql["put_write"], keep)
            if replace:
                db.many(sql["replace_write"], replace)
            return None, lambda: cache.apply_writes(key, rows, new)

        return job

    def maintenance_job(self, fn: Callable[[Db, Sql], None]) -> JobFn:
        """A delete, prune or copy: the cache is dropped before it runs (a sweep may delete
        pieces the cache holds) and again after it commits."""
        sql, cache = self.sql, self.cache

        def job(db: Db) -> tuple[None, After]:
            cache.clear()
            fn(db, sql)
            return None, cache.clear

        return job

    def delete_thread(self, thread_ids: Sequence[str]) -> JobFn:
        return self.maintenance_job(lambda db, sql: _maintenance.delete_thread(db, sql, thread_ids))

    def delete_for_runs(self, run_ids: Sequence[str]) -> JobFn:
        return self.maintenance_job(lambda db, sql: _maintenance.delete_for_runs(db, sql, run_ids))

    def copy_thread(self, source: str, target: str) -> JobFn:
        return self.maintenance_job(
            lambda db, sql: _maintenance.copy_thread(db, sql, source, target)
        )

    def prune(
        self, thread_ids: Sequence[str], strategy: str, delta: _maintenance.DeltaChannels
    ) -> JobFn:
        return self.maintenance_job(
            lambda db, sql: _maintenance.prune(db, sql, thread_ids, strategy, delta)
        )

    # -- reads ----------------------------------------------------------------------
    def fetch(self, thread_id: str, ns: str, checkpoint_id: str | None) -> Entry | None:
        """A checkpoint row with its writes (the latest of the thread's namespace when
        ``checkpoint_id`` is None), or None."""
        found: Entry | None = self._fetch(thread_id, ns, checkpoint_id, cached_only=False)
        return found

    def fetch_cached(self, thread_id: str, ns: str, checkpoint_id: str | None) -> Any:
        """:meth:`fetch` if the cache alone can answer, else MISS."""
        return self._fetch(thread_id, ns, checkpoint_id, cached_only=True)

    def _fetch(
        self, thread_id: str, ns: str, checkpoint_id: str | None, *, cached_only: bool
    ) -> Any:
        if self._closed:
            raise self._closed_error()
        cache = self.cache
        if self._cache_current():  # answered from memory, no connection needed
            entry = cache.find(thread_id, ns, checkpoint_id)
            if entry is not None:
                return entry
        with self._reading() as db:
            self._check_generation(db)
            epoch = cache.epoch
            entry = cache.find(thread_id, ns, checkpoint_id)
            if entry is not None:
                return entry
            if cached_only:
                return MISS
            if checkpoint_id is None:
                found = db.q(self.sql["latest_row"], (thread_id, ns))
            else:
                found = db.q(self.sql["get_row"], (thread_id, ns, checkpoint_id))
            if not found:
                return None
            row = Row(*found[0])
            row = row._replace(
                checkpoint=bytes(row.checkpoint), metadata=bytes(row.metadata), refs=bytes(row.refs)
            )
            entry = Entry(row, writes_dict(self._writes(db, row)))
            cache.fill_row(epoch, entry, latest=checkpoint_id is None)
            return entry

    def _writes(self, db: Db, row: Row) -> list[WriteRow]:
        key = (row.thread_id, row.checkpoint_ns, row.checkpoint_id)
        return [
            WriteRow(t, i, c, ty, bytes(v), p)
            for t, i, c, ty, v, p in db.q(self.sql["get_writes"], key)
        ]

    def scan(
        self,
        thread_id: str | None,
        ns: str | None,
        checkpoint_id: str | None,
        before: str | None,
    ) -> Iterator[Entry]:
        """Rows newest first, each with its writes; read in one go, then handed out."""
        if self._closed:
            raise self._closed_error()
        query = self.sql.format(
            list_rows(
                thread=thread_id is not None,
                ns=ns is not None,
                checkpoint=checkpoint_id is not None,
                before=before is not None,
            )
        )
        params = [p for p in (thread_id, ns, checkpoint_id, before) if p is not None]
        with self._reading() as db:
            rows = [Row(*r) for r in db.q(query, params)]
        for row in rows:
            row = row._replace(
                checkpoint=bytes(row.checkpoint), metadata=bytes(row.metadata), refs=bytes(row.refs)
            )
            with self._reading() as db:
                writes = self._writes(db, row)
            yield Entry(row, writes_dict(writes))

    def bodies(self, digests: list[bytes]) -> dict[bytes, bytes]:
        """The stored pieces for ``digests`` (from the cache where it has them)."""
        cache = self.cache
        found, missing = cache.blobs(digests)
        if missing:
            epoch = cache.epoch
            with self._reading() as db:
                for digest in missing:
                    rows = db.q(self.sql["get_blob"], (digest,))
                    if not rows:
                        raise StoreCorrupt(
                            self.location,
                            f"a checkpoint names the piece {digest.hex()}, which is missing "
                            "(deleted by a concurrent prune or delete?)",
                            "Read the checkpoint again; if it persists, the thread's "
                            "checkpoints are damaged: delete the thread.",
                        )
                    body = bytes(rows[0][0])
                    found[digest] = body
                    cache.fill_blob(epoch, digest, body)
        return found

    def cached_bodies(self, digests: list[bytes]) -> dict[bytes, bytes] | None:
        found, missing = self.cache.blobs(digests)
        return None if missing else found

    # -- closing --------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._writer.close()
        self._closed = True
        self._close()
        self.cache.clear()


def _settle(jobs: list[Job]) -> None:
    for job in jobs:
        future: asyncio.Future[Any] = job.waiter
        if future.done():
            continue
        if job.error is not None:
            future.set_exception(job.error)
        else:
            future.set_result(job.result)


def _notifier(loop: asyncio.AbstractEventLoop) -> Notify:
    def notify(jobs: list[Job]) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, jobs)

    return notify
