"""The async face of the store: the same semantics, errors and return types, off the loop.

No call here blocks the event loop on a file or a server:

- Writes go to the store's writer thread (:mod:`flatstate.writer`), the same one
  the sync API uses, so tasks and threads share its group commits. A task
  awaits a future the writer completes through ``loop.call_soon_threadsafe``.
- Reads run inline when the cache alone can answer them (a complete cache and
  no change signalled: microseconds, no I/O) and on a worker thread otherwise.
- A transcript append to a file is written at once when no other writer holds the
  transcript (a few system calls that never wait: no lock wait, no fsync), else by the
  transcripts' sync group (:mod:`flatstate.transcripts.syncgroup`) once it has the lock;
  the group's fsync completes the task's future the same way, so many tasks' appends
  share their fsyncs and none holds a thread while it waits. Other transcript calls,
  deletes (which archive a transcript) and opening or closing the store run on worker
  threads.

Cancelling a task that awaits a write never leaves it half-applied: a write the
writer has not taken yet is withdrawn and never happens; one it has taken runs
to its outcome, and the cancelled task waits for it before it stops, so that what
it and later readers see after the cancellation is the write's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, cast

from flatstate._open import open_store
from flatstate.frozen import FrozenMap
from flatstate.model import SessionEntry
from flatstate.snapshot import Draft, EntryInput, Snapshot
from flatstate.store import SessionStore, StoreStats, plain_update
from flatstate.transcripts import Context, GroupedAppends, QueuedAppends, TranscriptLike, syncgroup
from flatstate.writer import Job, Notify

__all__ = [
    "AsyncSessionStore",
    "AsyncTranscript",
    "Opening",
    "await_grouped",
    "loop_notify",
    "open_async_store",
]

T = TypeVar("T")


class _AsyncClosable(Protocol):
    async def aclose(self) -> None: ...


Closable = TypeVar("Closable", bound=_AsyncClosable)


class Opening(Generic[Closable]):
    """What ``open_async_*`` returns: await it, or use it as ``async with`` (which
    closes the store on the way out). The open itself runs on a worker thread."""

    def __init__(self, open_: Callable[[], Closable]) -> None:
        self._open = open_
        self._opened: Closable | None = None

    def __await__(self) -> Generator[Any, None, Closable]:
        return asyncio.to_thread(self._open).__await__()

    async def __aenter__(self) -> Closable:
        self._opened = await asyncio.to_thread(self._open)
        return self._opened

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._opened is not None:
            await self._opened.aclose()


# The futures completed in one pass of the event loop. The tasks they wake run in the next
# pass, back to back: a batch of 128 resumed at once kept the loop from its timers for 5-11 ms.
SETTLE_SLICE = 16


def _settle(jobs: list[Job], start: int = 0) -> None:
    """On the loop: complete the futures of a batch's jobs, a slice per pass of the loop."""
    end = start + SETTLE_SLICE
    for job in jobs[start:end]:
        future: asyncio.Future[Any] = job.waiter
        if future.done():  # the awaiting task was cancelled; the outcome stands regardless
            continue
        if job.error is not None:
            future.set_exception(job.error)
        else:
            future.set_result(job.result)
    if end < len(jobs):
        # After the tasks just woken: call_soon queues behind them.
        asyncio.get_running_loop().call_soon(_settle, jobs, end)


def _notifier(loop: asyncio.AbstractEventLoop) -> Notify:
    def notify(jobs: list[Job]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
            loop.call_soon_threadsafe(_settle, jobs)

    return notify


# One notify function per event loop: a writer groups a batch's jobs by it.
_notifiers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Notify] = (
    weakref.WeakKeyDictionary()
)


def loop_notify(loop: asyncio.AbstractEventLoop) -> Notify:
    """The notify function of ``loop``: a writer (the store's, or the transcripts' sync
    group) completes a batch's futures on it with one wake of the loop."""
    found = _notifiers.get(loop)
    if found is None:
        found = _notifiers[loop] = _notifier(loop)
    return found


async def await_grouped(job: Job, future: asyncio.Future[T]) -> T:
    """Await a sync-group append (:meth:`~flatstate.transcripts.Transcript.submit_append`).
    A cancelled caller withdraws it if the group has not taken it yet (it never happens);
    otherwise it waits for its outcome, then is cancelled: an append that lands is never
    one its caller was told did not."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if not syncgroup.group().withdraw(job):
            await _outcome(future)
        raise


async def _outcome(future: asyncio.Future[Any]) -> None:
    """Wait for a write the writer took from a cancelled caller: what lands is never what
    its caller was told did not (its error, if any, goes with the cancellation)."""
    await asyncio.wait({future})
    if not future.cancelled():
        future.exception()  # retrieved: no "never retrieved" warning


async def _write_in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``asyncio.to_thread`` for a write that cannot be withdrawn once its thread runs: a
    cancelled caller waits for the outcome, then is cancelled, so that later readers never
    see a write land that its caller was told was cancelled."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _outcome(future)
        raise


def _notifier_unset(jobs: list[Job]) -> None:
    raise AssertionError("no event loop has written yet")


class AsyncSessionStore:
    """Sessions for asyncio code; see :class:`~flatstate.store.SessionStore` for what
    each method means. ``sync`` is the store underneath, shared with threads."""

    def __init__(self, store: SessionStore) -> None:
        self.sync = store
        # The loop of the last write and its notify: the usual case, without the weak lookup.
        self._last_loop: asyncio.AbstractEventLoop | None = None
        self._last_notify: Notify = _notifier_unset

    # -- reads -----------------------------------------------------------------
    async def _read(self, read: Callable[[], T]) -> T:
        if self.sync._in_memory():
            return read()
        return await asyncio.to_thread(read)

    async def get(self, key: str) -> SessionEntry | None:
        return await self._read(lambda: self.sync.get(key))

    async def snapshot(self) -> Snapshot:
        return await self._read(self.sync.snapshot)

    async def keys(self) -> tuple[str, ...]:
        return await self._read(self.sync.keys)

    async def count(self) -> int:
        """The number of sessions (``len(store)``)."""
        return await self._read(self.sync.__len__)

    async def contains(self, key: str) -> bool:
        """``key in store``."""
        return await self._read(lambda: key in self.sync)

    async def stats(self) -> StoreStats:
        return await asyncio.to_thread(self.sync.stats)

    # -- writes ----------------------------------------------------------------
    def _notify(self, loop: asyncio.AbstractEventLoop) -> Notify:
        """:func:`loop_notify`, with the loop of the last write remembered."""
        if loop is self._last_loop:
            return self._last_notify
        found = loop_notify(loop)
        self._last_loop, self._last_notify = loop, found
        return found

    async def _write(self, fn: Callable[[Draft], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = Job(fn, self._notify(loop), future)
        writer = self.sync._writer
        writer.submit(job)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if not writer.withdraw(job):  # taken: its outcome first, then the cancellation
                await _outcome(future)
            raise

    async def upsert(self, key: str, entry: EntryInput) -> SessionEntry:
        # Checking and freezing the new entry is the caller's part of the write, and it takes
        # a big entry tens of milliseconds: a worker thread does it.
        write = await asyncio.to_thread(self.sync._upsert_fn, key, entry)
        return await self._write(write)

    async def patch(
        self,
        key: str,
        changes: EntryInput,
        *,
        preserve_activity: bool = False,
        create: bool = True,
    ) -> SessionEntry | None:
        return await self._write(self.sync._patch_fn(key, changes, preserve_activity, create))

    async def update(self, fn: Callable[[Draft], T]) -> T:
        """Run ``fn`` (a plain function; it runs on the writer thread) on a draft of the
        whole store and commit what it changed, all or nothing."""
        return await self._write(plain_update(fn))

    async def delete(self, key: str, *, archive: bool = True) -> bool:
        return await _write_in_thread(self.sync.delete, key, archive=archive)

    async def reset(self, key: str, *, compress: bool = False) -> SessionEntry:
        return await _write_in_thread(self.sync.reset, key, compress=compress)

    def transcript(self, key: str, *, create: bool = True) -> AsyncTranscript:
        """The transcript of session ``key``; it is opened (and the session created
        unless ``create=False``) by its first call, on a worker thread."""
        return AsyncTranscript(self.sync, key, create)

    # -- lifecycle -------------------------------------------------------------
    async def aclose(self) -> None:
        """Commit what is queued and close the store (on a worker thread)."""
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncSessionStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncSessionStore {self.sync.location}>"


class AsyncTranscript:
    """A session's transcript for asyncio code; every call runs on a worker thread, except
    where the transcript queues its appends itself (PostgreSQL): then the append waits on
    the commit as a future, holding no thread, and many tasks' appends share one commit."""

    def __init__(self, store: SessionStore, key: str, create: bool) -> None:
        self._store = store
        self._key = key
        self._create = create
        self._reconciled = False

    def _open(self) -> TranscriptLike:
        """The session's transcript as it is now (a reset moves it); compactionCount is
        reconciled with it on the first call, as opening it does."""
        found = self._store.transcript(
            self._key, create=self._create, reconcile=not self._reconciled
        )
        self._reconciled = True
        return found

    async def _run(self, call: Callable[[TranscriptLike], T]) -> T:
        return await asyncio.to_thread(lambda: call(self._open()))

    async def append(self, entry: Mapping[str, Any]) -> str:
        return (await self.append_many([entry]))[0]

    async def append_many(self, entries: Sequence[Mapping[str, Any]]) -> list[str]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[str]] = loop.create_future()
        notify = loop_notify(loop)

        def start(transcript: TranscriptLike) -> list[str] | Future[list[str]] | Job:
            if _queues(transcript):
                return cast(QueuedAppends, transcript).submit(entries)
            if _groups(transcript):
                grouped = cast(GroupedAppends, transcript)
                return grouped.submit_append(entries, notify, future)
            return transcript.append_many(entries)

        store = self._store
        if self._reconciled and store._in_memory() and store.get(self._key) is not None:
            # Opened before and answered by the cache: no thread to find it again.
            found = store.transcript(self._key, create=False, reconcile=False)
            if _queues(found) or _groups(found):
                started = start(found)
            else:
                started = await self._run(start)
        else:
            started = await self._run(start)
        if isinstance(started, Future):
            return await asyncio.wrap_future(started)
        if isinstance(started, Job):
            return await await_grouped(started, future)
        return started

    async def tail(self, n: int) -> tuple[FrozenMap, ...]:
        return await self._run(lambda t: t.tail(n))

    async def tail_plain(self, n: int) -> list[dict[str, Any]]:
        return await self._run(lambda t: t.tail_plain(n))

    async def context(self) -> Context:
        return await self._run(lambda t: t.context())

    async def header(self) -> FrozenMap | None:
        return await self._run(lambda t: t.header())

    async def leaf_id(self) -> str | None:
        return await self._run(lambda t: t.leaf_id)


_queueing: dict[type, bool] = {}
_grouping: dict[type, bool] = {}


def _queues(transcript: TranscriptLike) -> bool:
    """Whether ``transcript`` queues its appends (a protocol check costs microseconds, so it
    is made once per class)."""
    kind = type(transcript)
    found = _queueing.get(kind)
    if found is None:
        found = _queueing[kind] = isinstance(transcript, QueuedAppends)
    return found


def _groups(transcript: TranscriptLike) -> bool:
    """Whether ``transcript`` is a file whose appends the sync group writes (once per class)."""
    kind = type(transcript)
    found = _grouping.get(kind)
    if found is None:
        found = _grouping[kind] = isinstance(transcript, GroupedAppends)
    return found


def open_async_store(
    location: str | os.PathLike[str], **options: Any
) -> Opening[AsyncSessionStore]:
    """Open a store for asyncio code: the same locations and options as
    :func:`flatstate.open_store`.

    >>> import asyncio, tempfile
    >>> async def main() -> int:
    ...     async with open_async_store(tempfile.mkdtemp()) as store:
    ...         await store.patch("main", {"turns": 1})
    ...         entry = await store.get("main")
    ...         return entry["turns"]
    >>> asyncio.run(main())
    1
    """
    return Opening(lambda: AsyncSessionStore(open_store(location, **options)))
