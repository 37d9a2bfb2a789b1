"""flatstate as an OpenAI Agents SDK session: ``pip install 'flatstate[openai-agents]'``.

>>> import asyncio, tempfile
>>> from flatstate.integrations.openai_agents import FlatstateSession
>>> async def main() -> list:
...     session = FlatstateSession("conversation-1", tempfile.mkdtemp())
...     await session.add_items([{"role": "user", "content": "Where do we deploy?"}])
...     items = await session.get_items(limit=20)
...     await session.aclose()
...     return items
>>> asyncio.run(main())
[{'role': 'user', 'content': 'Where do we deploy?'}]

:class:`FlatstateSession` satisfies the SDK's ``Session`` protocol and its
compaction-aware variant. The items live in the session's flatstate transcript (see
:mod:`flatstate.integrations._agents_history` for how), so they are durable when a call
returns, shared by every process that opens the store, and read from the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agents.memory import SessionSettings
from agents.memory.session_settings import coerce_session_settings, resolve_session_limit

from flatstate._open import open_store
from flatstate.aio import AsyncSessionStore, await_grouped, loop_notify
from flatstate.compaction import (
    DEFAULT_KEEP_RECENT_TOKENS,
    Summarizer,
    Summary,
    SummaryRequest,
    builtin_summarizer,
    reconcile,
)
from flatstate.errors import InvalidEntry, SessionNotFound
from flatstate.frozen import NotJSON, freeze
from flatstate.integrations._agents_history import (
    History,
    check_items,
    estimate_tokens,
    item_entry,
    new_entry_id,
    plan_cut,
    pop_entry,
    walk,
)
from flatstate.integrations._threads import run_blocking
from flatstate.keys import MAX_KEY_LENGTH, normalize_agent_id, normalize_key
from flatstate.store import SessionStore
from flatstate.transcripts import GroupedAppends, TranscriptLike

if TYPE_CHECKING:
    from agents.items import TResponseInputItem
    from agents.memory import OpenAIResponsesCompactionArgs
    from agents.run_context import RunContextWrapper

__all__ = ["DEFAULT_COMPACT_AFTER_TOKENS", "FlatstateSession"]

log = logging.getLogger("flatstate.integrations.openai_agents")

DEFAULT_COMPACT_AFTER_TOKENS = 100_000
"""``run_compaction`` without ``force`` compacts only a history estimated above this."""

KEY_PREFIX = "openai-agents:"
# Session keys are lowercased and stripped by the store; SDK session ids are not. Every
# character but these is percent-encoded, so distinct ids always get distinct keys.
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.:")
TOUCH_SECONDS = 60.0
"""A session's ``updatedAt`` is refreshed by an append at most this often (maintenance
prunes by it; a busy session must not look idle)."""
COMPACTION_ATTEMPTS = 3
_EMPTY = History([], None, True, None, False)


def session_key(session_id: str, agent_id: str = "main") -> str:
    """The store key of an SDK session: ``agent:<agent_id>:openai-agents:<encoded id>``;
    an id whose key would pass the store's 512 characters is named by its SHA-256 instead
    (``...:openai-agents:~<hex>``; no encoded id holds a ``~``), as SQLiteSession takes ids
    of any length.

    >>> session_key("User 42")
    'agent:main:openai-agents:%55ser%2042'
    """
    if not isinstance(session_id, str):
        raise TypeError(f"session_id is a str, not {type(session_id).__name__}")
    raw = session_id.encode("utf-8", "surrogatepass")
    encoded = "".join(
        c if c in _SAFE else "".join(f"%{b:02x}" for b in c.encode("utf-8", "surrogatepass"))
        for c in session_id
    )
    key = f"agent:{normalize_agent_id(agent_id)}:{KEY_PREFIX}{encoded}"
    if len(key) > MAX_KEY_LENGTH:
        key = f"agent:{normalize_agent_id(agent_id)}:{KEY_PREFIX}~{hashlib.sha256(raw).hexdigest()}"
    return normalize_key(key)


class FlatstateSession:
    """An Agents SDK session kept in a flatstate store.

    ``location`` is anything :func:`flatstate.open_async_store` takes (a state directory,
    a ``postgresql://`` URL, ...), opened on first use on a worker thread with
    ``store_options``; or an open :class:`~flatstate.aio.AsyncSessionStore` (or
    :class:`~flatstate.store.SessionStore`) to share, which closing the session leaves
    open. ``session_settings.limit`` is the default of ``get_items``.

    ``run_compaction`` summarizes old items with ``summarizer`` (sync or async, taking a
    :class:`~flatstate.compaction.SummaryRequest`; default: flatstate's deterministic
    built-in one, no model needed), keeping about ``keep_recent_tokens`` of the newest
    items and always the latest user message. Without ``force`` it compacts only a
    history estimated above ``compact_after_tokens``.
    """

    session_settings: SessionSettings | None

    def __init__(
        self,
        session_id: str,
        location: str | os.PathLike[str] | AsyncSessionStore | SessionStore,
        *,
        agent_id: str = "main",
        session_settings: SessionSettings | dict[str, Any] | None = None,
        summarizer: Summarizer = builtin_summarizer,
        compact_after_tokens: int = DEFAULT_COMPACT_AFTER_TOKENS,
        keep_recent_tokens: int = DEFAULT_KEEP_RECENT_TOKENS,
        **store_options: Any,
    ) -> None:
        self.session_id = session_id
        self.key = session_key(session_id, agent_id)
        self.session_settings = (
            coerce_session_settings(session_settings)
            if session_settings is not None
            else SessionSettings()
        )
        if compact_after_tokens < 0 or keep_recent_tokens < 0:
            raise ValueError("compact_after_tokens and keep_recent_tokens are 0 or more")
        self.summarizer = summarizer
        self.compact_after_tokens = compact_after_tokens
        self.keep_recent_tokens = keep_recent_tokens
        self._store: AsyncSessionStore | None = None
        self._owns_store = False
        self._location: str | os.PathLike[str] | None = None
        self._store_options = store_options
        self._open_lock = threading.Lock()
        self._closed = False
        self._touched = 0.0
        # (sessionId, its transcript, the same when the sync group appends to it)
        self._known: tuple[str | None, TranscriptLike, GroupedAppends | None] | None = None
        if isinstance(location, AsyncSessionStore):
            self._store = location
        elif isinstance(location, SessionStore):
            self._store = AsyncSessionStore(location)
        else:
            self._location = location
            self._owns_store = True
        if store_options and not self._owns_store:
            raise TypeError("store options apply to a store the session opens, not a shared one")

    # -- the store and the transcript ----------------------------------------------
    def _open(self) -> SessionStore:
        """The store underneath (opened here on first use, once); runs on a worker thread."""
        with self._open_lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            if self._store is None:
                assert self._location is not None
                self._store = AsyncSessionStore(open_store(self._location, **self._store_options))
            return self._store.sync

    @property
    def store(self) -> AsyncSessionStore | None:
        """The store the items live in (None until a session that opens its own first runs)."""
        return self._store

    def _transcript(self, create: bool) -> TranscriptLike | None:
        """The session's transcript (None: no session yet, and ``create`` is false).

        The store finds a transcript's path from the session's ``sessionId`` (resolving it
        on disk); it is kept here while that id stays the same, which a cache read checks.
        """
        store = self._open()
        entry = store.get(self.key)
        if entry is None and not create:
            return None
        known = self._known
        if entry is not None and known is not None and known[0] == entry.session_id:
            return known[1]
        try:
            transcript = store.transcript(self.key, create=create, reconcile=False)
        except SessionNotFound:
            return None
        entry = store.get(self.key)
        grouped = transcript if isinstance(transcript, GroupedAppends) else None
        self._known = (entry.session_id if entry is not None else None, transcript, grouped)
        return transcript

    def _grouped_transcript(self) -> GroupedAppends | None:
        """On the loop: the session's transcript when the store's cache alone says it is the
        one known here and it is a file the sync group appends to; else None (then a worker
        thread finds it, and creates the session)."""
        known = self._known
        store = self._store
        if known is None or store is None or not store.sync._in_memory():
            return None
        entry = store.sync.get(self.key)
        if entry is None or entry.session_id != known[0]:
            return None
        return known[2]

    async def _first_transcript(self, items: list[Any]) -> GroupedAppends | None:
        """The transcript file of a session first used here, creating the session if it has
        none yet through the store's writer (no thread waits on its commit), or None when
        the transcript is not a file the sync group appends to."""
        store = self._store
        if store is None:
            await run_blocking(self._open)
            store = self._store
        assert store is not None
        sync = store.sync
        entry = sync.get(self.key) if sync._in_memory() else await run_blocking(sync.get, self.key)
        if entry is None:
            _check_json(self.key, items)  # before the session is created
            await _settle(store.patch(self.key, {}))
        if sync._in_memory():
            # As the async store's transcripts do: the cache names the file, and finding it
            # (its path checked, its directory made once) needs no thread.
            self._transcript(False)
        else:
            await run_blocking(self._transcript, False)
        return self._grouped_transcript()

    def _cached_history(self, limit: int) -> History | None:
        """On the loop: the newest ``limit`` items when the transcript file is known here and
        the lines it remembers from its end hold them (one ``stat``, no read); else None."""
        self._check_open()
        grouped = self._grouped_transcript()
        if grouped is None:
            store = self._store
            if store is not None and store.sync._in_memory() and store.sync.get(self.key) is None:
                return _EMPTY  # no session yet (the cache alone says so): nothing to read
            return None
        window = limit + 2
        entries = grouped.cached_tail_plain(window)
        if entries is None:
            return None
        return walk(entries, limit, len(entries) < window) if entries else _EMPTY

    def _read(self, limit: int | None) -> History:
        """The newest ``limit`` items (None: all), from a tail that grows until it holds them."""
        transcript = self._transcript(create=False)
        if transcript is None:
            return _EMPTY
        return read_history(transcript, limit)

    # -- the Session protocol ---------------------------------------------------------
    async def get_items(
        self, limit: int | None = None, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> list[TResponseInputItem]:
        """The latest ``limit`` items, oldest first (None: ``session_settings.limit``, and
        everything when that is None too). A read: it creates nothing."""
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted is not None and wanted < 0:
            raise ValueError(f"limit is None or 0 or more, not {wanted}")
        if wanted == 0:
            self._check_open()
            return []
        history = self._cached_history(wanted) if wanted is not None else None
        if history is None:
            history = await run_blocking(self._read, wanted)
        return history.plain()  # type: ignore[return-value]

    async def add_items(
        self, items: list[TResponseInputItem], *, wrapper: RunContextWrapper[Any] | None = None
    ) -> None:
        """Append ``items`` (durable when this returns); all of them are checked first, so
        an item JSON cannot carry raises InvalidEntry and nothing is written."""
        self._check_open()
        checked = check_items(items)
        if not checked:
            return
        entries = [item_entry(item) for item in checked]
        grouped = self._grouped_transcript()
        if grouped is None and self._known is None:
            grouped = await self._first_transcript(checked)
        if grouped is not None:
            # The session's transcript file, known and current: the sync group writes and
            # fsyncs the items with the other sessions' appends; no thread waits for it.
            loop = asyncio.get_running_loop()
            future: asyncio.Future[list[str]] = loop.create_future()
            try:
                job = grouped.submit_append(entries, loop_notify(loop), future)
            except InvalidEntry:
                _check_json(self.key, checked)  # the same problem, told in the SDK's terms
                raise
            await await_grouped(job, future)
            if self._touch_due():
                await run_blocking(self._touch)
            return

        def append() -> None:
            transcript = self._transcript(create=False)
            if transcript is None:
                _check_json(self.key, checked)  # before the session is created
                transcript = self._transcript(create=True)
                assert transcript is not None
            try:
                transcript.append_many(entries)  # checks every entry before it writes
            except InvalidEntry:
                _check_json(self.key, checked)  # the same problem, told in the SDK's terms
                raise
            self._touch()

        await _settle(run_blocking(append))

    def _touch_due(self) -> bool:
        """On the loop: whether :meth:`_touch` may have to refresh ``updatedAt`` (False when
        the store's cache alone shows a recent one)."""
        now = time.monotonic()
        if now - self._touched < TOUCH_SECONDS:
            return False
        store = self._store
        if store is not None and store.sync._in_memory():
            entry = store.sync.get(self.key)
            updated = entry.updated_at if entry is not None else None
            if updated is not None and updated >= time.time() * 1000 - TOUCH_SECONDS * 1000:
                self._touched = now
                return False
        return True

    def _touch(self) -> None:
        """Refresh ``updatedAt`` at most every :data:`TOUCH_SECONDS` (on the worker thread)."""
        now = time.monotonic()
        if now - self._touched < TOUCH_SECONDS:
            return
        self._touched = now
        store = self._open()
        entry = store.get(self.key)
        updated = entry.updated_at if entry is not None else None
        if updated is None or updated < time.time() * 1000 - TOUCH_SECONDS * 1000:
            store.patch(self.key, {})

    async def pop_item(
        self, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> TResponseInputItem | None:
        """Remove and return the newest item (None for an empty session), durably: one
        appended line moves the transcript's leaf back past it."""
        self._check_open()
        return await _settle(run_blocking(self._pop))  # type: ignore[no-any-return]

    def _pop(self) -> dict[str, Any] | None:
        transcript = self._transcript(create=False)
        if transcript is None:
            return None
        while True:
            history = read_history(transcript, 1)
            if not history.entries:
                return None
            newest = history.entries[-1]
            item = history.plain()[-1]
            marker = _pop_marker(history, newest)
            if transcript.append_many([marker], guard=_leaf_is(transcript, history.leaf)):
                return item
            # Another writer moved the leaf between our read and our append: read again.

    async def clear_session(self, *, wrapper: RunContextWrapper[Any] | None = None) -> None:
        """Start the session afresh as a reset does: the transcript is archived
        (``<file>.reset.<time>``), a new one starts empty."""
        self._check_open()

        def clear() -> None:
            store = self._open()
            if store.get(self.key) is not None:
                store.reset(self.key)

        await _settle(run_blocking(clear))

    # -- compaction -----------------------------------------------------------------
    async def run_compaction(
        self,
        args: OpenAIResponsesCompactionArgs | None = None,
        *,
        wrapper: RunContextWrapper[Any] | None = None,
    ) -> None:
        """Compact the history offline, atomically: one ``compaction`` entry makes the
        history its summary plus the kept items. Without ``args["force"]`` only a history
        above ``compact_after_tokens`` is compacted (the runner calls this after every
        turn). The other arguments name OpenAI's server-side compaction and are ignored."""
        self._check_open()
        force = bool(args.get("force", False)) if args else False
        for _ in range(COMPACTION_ATTEMPTS):
            planned = await run_blocking(self._plan, force)
            if planned is None:
                return
            history, cut, transcript = planned
            request = SummaryRequest(cut.to_summarize, cut.previous_summary, transcript.path)
            summary = await _summarize(self.summarizer, request)
            if await _settle(run_blocking(self._commit, transcript, history, cut, summary)):
                return
        log.info("%s: history kept changing while compacting; left for the next call", self.key)

    def _plan(self, force: bool) -> tuple[History, Any, TranscriptLike] | None:
        transcript = self._transcript(create=False)
        if transcript is None:
            return None
        if not force and not self._over_budget(transcript):
            return None
        history = read_history(transcript, None)
        cut = plan_cut(history, self.keep_recent_tokens)
        return None if cut is None else (history, cut, transcript)

    def _over_budget(self, transcript: TranscriptLike) -> bool:
        """Whether the history is estimated above ``compact_after_tokens``, reading only
        as far back as it takes to know."""
        limit = 64
        while True:
            history = read_history(transcript, limit)
            tokens = sum(estimate_tokens(item) for item in history.plain())
            if tokens > self.compact_after_tokens:
                return True
            if history.complete:
                return False
            limit *= 4

    def _commit(self, transcript: TranscriptLike, history: History, cut: Any, summary: Any) -> bool:
        text, details = (
            (summary.text, dict(summary.details)) if isinstance(summary, Summary) else (summary, {})
        )
        if not isinstance(text, str):
            raise TypeError(
                f"a summarizer returns a str or a Summary, not {type(summary).__name__}"
            )
        store = self._open()
        details["compactionCount"] = reconcile(store, self.key, transcript) + 1
        entry = {
            "type": "compaction",
            "summary": text,
            "firstKeptEntryId": cut.first_kept,
            "tokensBefore": cut.tokens_before,
            "details": details,
        }
        if not transcript.append_many([entry], guard=_leaf_is(transcript, history.leaf)):
            return False
        reconcile(store, self.key, transcript)
        return True

    # -- lifecycle -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def close(self) -> None:
        """Close the store if this session opened it (a shared one stays open)."""
        with self._open_lock:
            self._closed = True
            store = self._store
            if self._owns_store:
                self._store = None
        if self._owns_store and store is not None:
            store.sync.close()

    async def aclose(self) -> None:
        """:meth:`close` on a worker thread."""
        await run_blocking(self.close)

    async def __aenter__(self) -> FlatstateSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<FlatstateSession {self.session_id!r} ({self.key})>"


def read_history(transcript: TranscriptLike, limit: int | None) -> History:
    """The newest ``limit`` items (None: all) of ``transcript``'s history: the tail read
    grows (x4) until the walk back along the leaf's path is done, so a read costs about
    what it returns."""
    if limit is None:
        return walk(list(transcript.iter_entries()), None, True) or _EMPTY
    window = limit + 2
    while True:
        entries = transcript.tail_plain(window)
        found = walk(entries, limit, len(entries) < window)
        if found is not None:
            return found
        window *= 4


def _check_json(key: str, items: list[Any]) -> None:
    """InvalidEntry naming the first item JSON cannot carry, and where in it."""
    for number, item in enumerate(items):
        try:
            freeze(item)
        except NotJSON as exc:
            raise InvalidEntry(
                key, f"session item {number}, {exc.where()}: {exc.problem}"
            ) from None


def _leaf_is(transcript: TranscriptLike, leaf: str | None) -> Callable[[], bool]:
    """A guard for ``append_many``: under the transcript's lock, the leaf is still ``leaf``
    (nobody added, popped or compacted since the history was read)."""
    return lambda: transcript.leaf_id == leaf


def _pop_marker(history: History, newest: Any) -> dict[str, Any]:
    """The line that takes ``newest`` (the history's last entry) off the path."""
    compaction = history.compaction
    if history.summary_included and len(history.entries) == 1:
        return pop_entry(None, str(newest.get("id")))  # the summary alone: now empty
    if compaction is None:
        return pop_entry(newest.get("parentId"), str(newest.get("id")))
    # The newest item is one the compaction kept, before it on the path: the history
    # without it is that compaction again, one item shorter.
    again = {k: v for k, v in compaction.items() if k not in ("id", "parentId", "timestamp")}
    again["id"] = new_entry_id()
    if newest.get("id") == compaction.get("firstKeptEntryId"):
        again.update(parentId=None, firstKeptEntryId=again["id"])  # the summary alone
    else:
        again["parentId"] = newest.get("parentId")
    return again


async def _summarize(summarizer: Summarizer, request: SummaryRequest) -> str | Summary:
    """Call ``summarizer``: a coroutine function on the loop, anything else on a worker
    thread (a sync model call must not block the loop)."""
    if inspect.iscoroutinefunction(summarizer):
        return await summarizer(request)  # type: ignore[no-any-return]
    result = await asyncio.to_thread(summarizer, request)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _settle(pending: Any) -> Any:
    """Await a write on a worker thread to its outcome even if the caller is cancelled
    (then re-raise the cancellation): a cancelled caller must not think it did not land."""
    task = asyncio.ensure_future(pending)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise
