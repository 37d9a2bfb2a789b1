"""SessionStore: reads that share, writes that copy only what they change.

The cache is an immutable hash-array-mapped trie (``immutables.Map``) from
canonical session key to frozen :class:`~flatstate.model.SessionEntry`.

- A read checks one shared counter (see :mod:`flatstate._signal`) and returns
  the cached object itself: no copy, no parse, no allocation that grows with
  the store. Two reads of an unchanged entry return the same object.
- A write takes the backend's writer lock, catches up on what other processes
  committed, builds the new entries from the old ones, commits, and swaps in a
  new map that shares every untouched entry with the old one.
- A snapshot is the map at one instant, wrapped read-only; it stays valid
  (and unchanged) however the store moves on.

When the store outgrows ``cache_bytes`` the cache keeps the most recently used
entries, a miss reads from the backend, and listings stream from it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

import immutables
import msgspec

from flatstate._cache import EntryCache, fresher, freshest
from flatstate.backends.base import Backend
from flatstate.errors import (
    InvalidEntry,
    InvalidSessionKey,
    SessionNotFound,
    StoreClosed,
    StoreCorrupt,
)
from flatstate.keys import DEFAULT_AGENT_ID, normalize_agent_id, normalize_key
from flatstate.maintenance import (
    MaintenanceConfig,
    MaintenancePlan,
    MaintenanceReport,
    plan_maintenance,
)
from flatstate.model import Clock, SessionEntry, build_entry, merge_patch, now_ms
from flatstate.pipeline import Pipeline, Staged
from flatstate.snapshot import Draft, EntryInput, Snapshot
from flatstate.transcripts import (
    FsyncPolicy,
    Transcript,
    TranscriptLike,
    archive,
    move_aside,
    transcript_path,
    zstd,
)
from flatstate.transcripts.reconcile import reconcile as reconcile_count
from flatstate.writer import Job, Writer

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_MAX_ENTRY_BYTES",
    "SessionStore",
    "StoreStats",
]

DEFAULT_CACHE_BYTES = 256 << 20
DEFAULT_MAX_ENTRY_BYTES = 4 << 20
DEFAULT_CHECK_INTERVAL = 0.25
log = logging.getLogger("flatstate.store")

# What a reset does to the entry, as OpenClaw's new-session path does (its reply/session.ts):
# the old run's token and cost counters, model cache, prompt caches and run status go; the
# token count of the new, empty transcript is a known zero; the compaction count restarts.
RESET_CLEARS = (
    "inputTokens",
    "outputTokens",
    "cacheRead",
    "cacheWrite",
    "contextTokens",
    "contextBudgetStatus",
    "estimatedCostUsd",
    "model",
    "modelProvider",
    "systemPromptReport",
    "skillsSnapshot",
    "memoryFlushAt",
    "memoryFlushCompactionCount",
    "memoryFlushContextHash",
    "fallbackNoticeSelectedModel",
    "fallbackNoticeActiveModel",
    "fallbackNoticeReason",
    "startedAt",
    "endedAt",
    "runtimeMs",
    "status",
    "goal",
)
RESET_SETS = {
    "compactionCount": 0,
    "totalTokens": 0,
    "totalTokensFresh": True,
    "systemSent": False,
    "abortedLastRun": False,
}

T = TypeVar("T")


class StoreStats(msgspec.Struct, frozen=True, kw_only=True):
    """What ``store.stats()`` reports; every figure is cheap to compute."""

    backend: str
    location: str
    entries: int
    cached_entries: int
    cache_bytes: int
    cache_limit: int
    cache_complete: bool
    pooled_strings: int
    pooled_bytes: int
    disk_bytes: int
    wal_bytes: int
    hits: int
    misses: int
    syncs: int
    full_reloads: int
    commits: int
    """Commits this store made; each holds a batch of writes (group commit)."""
    writes: int
    """Writes this store's writer committed or failed."""


class SessionStore:
    """Sessions keyed by session key, shared across threads and processes.

    Open one with :func:`flatstate.open_store`. Reads (``get``, ``snapshot``,
    ``keys``, iteration) return shared immutable objects; writes (``upsert``,
    ``patch``, ``delete``, ``update``) are atomic, durable when they return,
    and visible to the next read in any process that opened the same store.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        agent_id: str = DEFAULT_AGENT_ID,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        maintenance: MaintenanceConfig | None = None,
        transcript_fsync: FsyncPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._backend = backend
        self.maintenance = maintenance or MaintenanceConfig()
        self.transcript_fsync = transcript_fsync or FsyncPolicy()
        self._transcripts: OrderedDict[str, Transcript] = OrderedDict()
        # Its own lock: the store's is held through every commit (and its fsync).
        self._transcripts_lock = threading.Lock()
        self.commits = 0
        self._pipeline = Pipeline(self)
        self._writer = Writer(
            self._pipeline.commit_batch,
            lambda: StoreClosed(backend.location),
            name=f"flatstate-writer {backend.location}",
        )
        self.agent_id = normalize_agent_id(agent_id)
        self.cache_limit = cache_bytes
        self.max_entry_bytes = max_entry_bytes
        self.check_interval = check_interval
        self._clock: Clock = clock or now_ms
        self._lock = threading.RLock()
        self._signal_read = backend.signal.read
        self._closed = False
        self._hits = self._misses = self._syncs = self._reloads = 0
        self._cache = EntryCache(cache_bytes, backend.pool.min_length)
        self._index = self._cache.index  # read by get() without the lock
        self._snapshot: Snapshot | None = None
        with self._lock:
            self._load_all()

    # -- cache state -------------------------------------------------------------
    def canonical_key(self, key: str) -> str:
        """The key as the store keeps it (``main`` -> ``agent:main:main``); raises
        InvalidSessionKey for a key that can never be stored."""
        return normalize_key(key, self.agent_id)

    def _load_all(self) -> None:
        """Read every row into a fresh cache, folding legacy keys as we go."""
        self._seen = self._signal_read()
        self._snapshot = None
        token, rows = self._backend.scan()
        # A backend may make its counter at its first sound read: a value other than the one
        # seen above only costs one more check.
        self._signal_read = self._backend.signal.read
        complete = self._cache.fill(rows, self._canonical_or_none)
        if hasattr(rows, "close"):
            rows.close()
        if not complete:
            for raw in self._backend.scan_keys():
                canon = self._canonical_or_none(raw)
                if canon is not None:
                    self._cache.note_alias(canon, raw)
        self._token = token
        self._next_check = time.monotonic() + self.check_interval
        self._reloads += 1

    def _canonical_or_none(self, raw: str) -> str | None:
        try:
            return self.canonical_key(raw)
        except InvalidSessionKey:
            return None  # left on disk untouched; `flatstate doctor` reports it

    def _set_cached(self, key: str, entry: SessionEntry | None) -> None:
        """Put ``entry`` (or its absence) in the cache; the caller holds the lock."""
        self._cache.set(key, entry)
        self._snapshot = None

    # -- freshness -------------------------------------------------------------
    def _sync(self) -> None:
        with self._lock:
            self._check_open()
            self._sync_locked()

    def _sync_locked(self) -> None:
        seen = self._signal_read()
        changed, token = self._backend.changes_since(self._token)
        self._syncs += 1
        if changed is None:
            self._load_all()
            self._seen = seen
            return
        for raw in changed:
            canon = self._canonical_or_none(raw)
            if canon is not None:
                self._reload_key(canon, raw)
        self._token = token
        self._seen = seen
        self._next_check = time.monotonic() + self.check_interval

    def _reload_key(self, canon: str, raw: str, *, admit: bool = False) -> None:
        """Re-read one canonical key from every raw row that maps to it.

        A key that is not cached stays out of a partial cache unless ``admit``.
        """
        cache = self._cache
        cache.note_alias(canon, raw)
        rows = {candidate: self._backend.read(candidate) for candidate in cache.candidates(canon)}
        aliases = cache.aliases.get(canon)
        if aliases is not None:
            aliases.difference_update(k for k, row in rows.items() if row is None)
            if not aliases:
                del cache.aliases[canon]
        best = freshest(rows.values())
        if best is None:
            self._set_cached(canon, None)
        elif cache.complete or admit or canon in cache.entries:
            self._set_cached(canon, best[1])

    def _in_memory(self) -> bool:
        """Whether a read now is served from the cache alone, touching no file or server
        (the async store runs such reads inline and the others on a worker thread)."""
        return (
            self._cache.complete
            and self._signal_read() == self._seen
            and time.monotonic() < self._next_check
        )

    def _fresh(self) -> None:
        if self._signal_read() != self._seen or time.monotonic() >= self._next_check:
            self._sync()

    # -- reads -----------------------------------------------------------------
    def get(self, key: str) -> SessionEntry | None:
        """The entry for ``key``, shared with every other reader; None if absent.

        ``key`` may be any alias of the canonical key (``main``, mixed case).
        Raises :class:`~flatstate.errors.InvalidSessionKey` for a key that can
        never be stored.
        """
        if self._signal_read() != self._seen or time.monotonic() >= self._next_check:
            self._sync()
        entry = self._index.get(key)
        if entry is not None:
            self._hits += 1
            if self._cache.lru is not None:
                with self._lock:
                    self._cache.touch(key)
            return entry
        return self._get_slow(key)

    def _get_slow(self, key: str) -> SessionEntry | None:
        canon = self.canonical_key(key)
        cache = self._cache
        if canon != key:
            entry = cache.entries.get(canon)
            if entry is not None:
                self._hits += 1
                return entry
        if cache.complete:
            return None
        with self._lock:
            self._misses += 1
            entry = cache.entries.get(canon)
            if entry is None:
                self._reload_key(canon, canon, admit=True)
                entry = cache.entries.get(canon)
                if entry is None:
                    return self._lookup_uncached(canon)
            return entry

    def _lookup_uncached(self, canon: str) -> SessionEntry | None:
        """A read that bypasses the cache (an entry too large to keep, or absent)."""
        best = freshest(map(self._backend.read, self._cache.candidates(canon)))
        return best[1] if best else None

    def snapshot(self) -> Snapshot:
        """The whole store at one instant, as an immutable mapping shared by all callers.

        While the store fits the cache this costs nothing once built; beyond the
        cache bound it reads every row in one transaction (a full scan).
        """
        self._fresh()
        snap = self._snapshot
        if snap is not None:
            return snap
        with self._lock:
            if self._snapshot is None:
                cache = self._cache
                if cache.complete:
                    self._snapshot = Snapshot(cache.entries, cache.sorted_keys)
                else:
                    return self._scan_snapshot()
            return self._snapshot

    def _scan_snapshot(self) -> Snapshot:
        _, rows = self._backend.scan()
        building: dict[str, SessionEntry] = {}
        for raw, entry in rows:
            canon = self._canonical_or_none(raw)
            if canon is None:
                continue
            older = building.get(canon)
            if older is None or fresher(entry, older):
                building[canon] = self._cache.entries.get(canon) or entry
        return Snapshot(immutables.Map(building))

    def keys(self) -> tuple[str, ...]:
        """Every canonical key, sorted."""
        self._fresh()
        if self._cache.complete:
            if self._cache.sorted_keys is not None:
                return self._cache.sorted_keys
            with self._lock:
                return self._cache.keys()
        with self._lock:
            found = {self._canonical_or_none(raw) for raw in self._backend.scan_keys()}
            return tuple(sorted(k for k in found if k is not None))

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self) -> Iterator[tuple[str, SessionEntry]]:
        """(key, entry) pairs in key order; streams from the backend beyond the cache bound."""
        for key in self.keys():
            entry = self.get(key)
            if entry is not None:
                yield key, entry

    def __len__(self) -> int:
        self._fresh()
        if self._cache.complete:
            return len(self._cache.entries)
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            return self.get(key) is not None
        except InvalidSessionKey:
            return False

    # -- writes ----------------------------------------------------------------
    def upsert(self, key: str, entry: EntryInput) -> SessionEntry:
        """Store ``entry`` whole under ``key`` (replacing any existing one).

        A missing ``sessionId`` is generated and a missing ``updatedAt`` set to
        now. Returns the stored, frozen entry.
        """
        return self._write(self._upsert_fn(key, entry))

    def _upsert_fn(self, key: str, entry: EntryInput) -> Callable[[Draft], SessionEntry]:
        """The write function of :meth:`upsert` (shared with the async store)."""
        canon = self.canonical_key(key)
        built = build_entry(canon, entry, clock=self._clock, pool=self._backend.pool)
        return lambda draft: draft._set(canon, built)

    def patch(
        self,
        key: str,
        changes: EntryInput,
        *,
        preserve_activity: bool = False,
        create: bool = True,
    ) -> SessionEntry | None:
        """Merge ``changes`` into the entry for ``key`` with OpenClaw's rules.

        See :func:`flatstate.model.merge_patch`. Creates the entry when it is
        missing, unless ``create=False`` (then returns None and writes nothing).
        The read of the existing entry happens inside the write transaction, so
        concurrent patches from any number of processes never lose an update.
        """
        return self._write(self._patch_fn(key, changes, preserve_activity, create))

    def _patch_fn(
        self, key: str, changes: EntryInput, preserve_activity: bool, create: bool
    ) -> Callable[[Draft], SessionEntry | None]:
        """The write function of :meth:`patch` (shared with the async store)."""
        canon = self.canonical_key(key)
        if not isinstance(changes, Mapping):
            raise InvalidEntry(canon, f"a patch is a JSON object, not {type(changes).__name__}")

        def apply(draft: Draft) -> SessionEntry | None:
            if not create and canon not in draft:
                return None
            return draft.patch(canon, changes, preserve_activity=preserve_activity)

        return apply

    def delete(self, key: str, *, archive: bool = True) -> bool:
        """Remove ``key`` (and any legacy alias of it); whether anything was there.

        Its transcript is archived as ``<file>.deleted.<time>`` unless another
        session still uses it, or ``archive=False``.
        """
        canon = self.canonical_key(key)

        def apply(draft: Draft) -> SessionEntry | None:
            entry = draft.get(canon)
            if entry is not None:
                del draft[canon]
            return entry

        removed = self._write(apply)
        if removed is not None and archive:
            self._archive_transcript(canon, removed, "deleted", compress=False)
        return removed is not None

    # -- transcripts -----------------------------------------------------------
    def transcript(
        self, key: str, *, create: bool = True, reconcile: bool = True
    ) -> TranscriptLike:
        """The transcript of session ``key`` (see :mod:`flatstate.transcripts`).

        A missing session is created first unless ``create=False`` (then
        :class:`~flatstate.errors.SessionNotFound`, a ``KeyError``). Opening
        reconciles ``compactionCount`` with the transcript (see
        :mod:`flatstate.transcripts.reconcile`), except in a read-only store (OpenClaw
        2026.9's database). A backend that keeps transcripts itself (PostgreSQL) serves
        its own kind, with the same interface.
        """
        canon = self.canonical_key(key)
        entry = self.get(canon)
        if entry is None:
            if not create:
                raise SessionNotFound(canon)
            entry = self.patch(canon, {})
            assert entry is not None
        backend = self._backend
        served = backend.transcript(entry, canon)
        if served is not None:
            if reconcile and not backend.readonly:
                reconcile_count(self, canon, served)
            return served
        path = transcript_path(backend.transcripts_dir, entry, canon)
        with self._transcripts_lock:
            found = self._transcripts.get(path)
            if found is None:
                if not backend.readonly:  # a read makes no directory
                    os.makedirs(backend.transcripts_dir, mode=0o700, exist_ok=True)
                found = Transcript(
                    path,
                    session_id=entry.session_id,
                    fsync=self.transcript_fsync,
                    lock=backend.transcript_lock,
                )
                self._transcripts[path] = found
                while len(self._transcripts) > 256:
                    self._transcripts.popitem(last=False)
            self._transcripts.move_to_end(path)
        if reconcile:
            reconcile_count(self, canon, found)
        return found

    def reset(self, key: str, *, compress: bool = False) -> SessionEntry:
        """Start session ``key`` afresh, as OpenClaw's /new and /reset do: a new sessionId,
        the old transcript archived as ``<file>.reset.<time>`` (``.zst`` with ``compress``),
        the counters of the old run zeroed or dropped (:data:`RESET_CLEARS`), and the rest of
        the entry (route, labels, overrides, fields we do not know) kept."""
        if compress:
            zstd()  # a missing extra fails here, before the reset is committed
        canon = self.canonical_key(key)
        old = self.get(canon)
        cleared = dict.fromkeys(k for k in RESET_CLEARS if old is not None and k in old)
        entry = self.patch(canon, {**cleared, **RESET_SETS, "sessionId": str(uuid.uuid4())})
        assert entry is not None
        if old is not None:
            self._archive_transcript(canon, old, "reset", compress=compress)
        return entry

    def _archive_transcript(
        self, canon: str, entry: SessionEntry, reason: str, *, compress: bool
    ) -> None:
        directory = self._backend.transcripts_dir
        try:
            path = transcript_path(directory, entry, canon)
        except (StoreCorrupt, InvalidEntry) as exc:
            log.warning("%s: transcript of %r left where it is: %s", directory, canon, exc)
            return
        cache = self._cache
        others = cache.entries.values() if cache.complete else (e for _, e in self.items())
        in_use = any(other.session_id == entry.session_id for other in others)
        if in_use:
            return
        if self._backend.keeps_transcripts:
            self._backend.archive_transcript(entry, canon, reason, self._clock())
        else:
            archive(
                path, reason, self._clock(), compress=compress, lock=self._backend.transcript_lock
            )
            with self._transcripts_lock:  # the next transcript() of this path starts afresh
                self._transcripts.pop(path, None)

    def update(self, fn: Callable[[Draft], T]) -> T:
        """Run ``fn`` on a mutable draft of the whole store and commit what it changed.

        The draft reflects the latest committed state (re-read under the writer
        lock). All of ``fn``'s changes commit in one transaction; if ``fn``
        raises, nothing is written and the exception propagates. Readers never
        see the draft before it commits. ``fn`` is a plain function (TypeError for an
        async one, whose changes would come after the update ended).
        """
        return self._write(plain_update(fn))

    def _write(self, fn: Callable[[Draft], T]) -> T:
        """Hand ``fn`` to the writer and wait for the commit that holds it."""
        return cast(T, self._writer.run(Job(fn)))

    def _committed_batch(self, staged: Staged, token: Any, signal_before: int) -> None:
        """After the pipeline committed ``staged``: swap the new entries into the cache."""
        cache = self._cache
        for canon, entry in staged:
            cache.aliases.pop(canon, None)
            self._set_cached(canon, entry)
        self._token = token
        self.commits += 1
        # Our own commit bumped the signal exactly once; if nothing else
        # did meanwhile, this process is already up to date.
        if self._signal_read() == signal_before + 1:
            self._seen = signal_before + 1

    # -- what a draft reads through (snapshot.Committed) ------------------------------
    def _committed(self, canon: str) -> SessionEntry | None:
        entry = self._cache.entries.get(canon)
        if entry is None and not self._cache.complete:
            entry = self._lookup_uncached(canon)
        return entry

    def _committed_keys(self) -> set[str]:
        if self._cache.complete:
            return set(self._cache.entries.keys())
        return {k for k in map(self._canonical_or_none, self._backend.scan_keys()) if k}

    def _build(self, canon: str, value: EntryInput) -> SessionEntry:
        return build_entry(canon, value, clock=self._clock, pool=self._backend.pool)

    def _merge(
        self,
        canon: str,
        existing: SessionEntry | None,
        changes: EntryInput,
        preserve_activity: bool,
    ) -> SessionEntry:
        return merge_patch(
            canon,
            existing,
            changes,
            preserve_activity=preserve_activity,
            clock=self._clock,
            pool=self._backend.pool,
        )

    def preview_patch(
        self, key: str, changes: EntryInput, *, preserve_activity: bool = False
    ) -> SessionEntry:
        """The entry :meth:`patch` would store for these changes now, writing nothing
        (``flatstate sessions patch --dry-run``)."""
        canon = self.canonical_key(key)
        return self._merge(canon, self.get(canon), changes, preserve_activity)

    # -- maintenance -----------------------------------------------------------
    def maintain(
        self,
        config: MaintenanceConfig | None = None,
        *,
        active_key: str | None = None,
        dry_run: bool = False,
    ) -> MaintenanceReport:
        """Prune, cap, archive and keep the disk budget (see :mod:`flatstate.maintenance`).

        ``config`` defaults to the store's ``maintenance`` (OpenClaw's defaults,
        warn mode). ``active_key`` is never removed. With ``dry_run`` or in warn
        mode nothing changes and the report says what would. Entry removals
        commit in one transaction first; transcript archiving follows.
        """
        config = config or self.maintenance
        active = self.canonical_key(active_key) if active_key else None
        backend = self._backend
        enforce = config.mode == "enforce" and not dry_run

        def plan_on(view: Mapping[str, SessionEntry]) -> MaintenancePlan:
            store_bytes = backend.disk_bytes() if backend.store_file else 0
            return plan_maintenance(
                view,
                config,
                now_ms=self._clock(),
                active_key=active,
                directory=backend.transcripts_dir,
                store_file=backend.store_file,
                store_bytes=store_bytes,
            )

        if not enforce:
            plan = plan_on(self.snapshot())
        else:
            removed_entries: dict[str, SessionEntry] = {}

            def remove(draft: Draft) -> MaintenancePlan:
                found = plan_on({key: draft[key] for key in draft})
                removed_entries.clear()
                for key in found.removed_keys:
                    removed_entries[key] = draft[key]
                    del draft[key]
                return found

            plan = self.update(remove)
            for source, target in plan.archive:
                if os.path.exists(source) and not os.path.exists(target):
                    move_aside(source, target, lock=backend.transcript_lock)
            # Files first (a file left from before the database is moved aside as a file),
            # then the transcripts the database keeps.
            if backend.keeps_transcripts:
                for key, entry in removed_entries.items():
                    self._archive_transcript(key, entry, "deleted", compress=False)
            for path in [*plan.remove_archives, *plan.remove_files]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        removed = plan.removed_keys
        return MaintenanceReport(
            mode=config.mode,
            dry_run=dry_run,
            before_count=plan.before_count,
            after_count=plan.before_count - (len(removed) if enforce else 0),
            pruned=plan.pruned,
            capped=plan.capped,
            archived=[target for _, target in plan.archive],
            removed_archives=plan.remove_archives,
            disk_budget=plan.disk_budget,
            warnings=plan.warnings,
        )

    # -- lifecycle -------------------------------------------------------------
    def stats(self) -> StoreStats:
        """Sizes and counters: entries, cache bytes against the bound, pool, disk."""
        with self._lock:
            self._fresh()
            return StoreStats(
                backend=type(self._backend).__name__.removesuffix("Backend").lower(),
                location=self._backend.location,
                entries=len(self),
                cached_entries=len(self._cache.entries),
                cache_bytes=self._cache.account.bytes,
                cache_limit=self.cache_limit,
                cache_complete=self._cache.complete,
                pooled_strings=len(self._backend.pool),
                pooled_bytes=self._backend.pool.bytes,
                disk_bytes=self._backend.disk_bytes(),
                wal_bytes=self._backend.wal_bytes(),
                hits=self._hits,
                misses=self._misses,
                syncs=self._syncs,
                full_reloads=self._reloads,
                commits=self.commits,
                writes=self._writer.jobs,
            )

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def corruption(self) -> StoreCorrupt | None:
        """Why a damaged store opened read-only (None when it is sound)."""
        return self._backend.corruption

    @property
    def location(self) -> str:
        return self._backend.location

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self._backend.location)

    def _read_closed(self) -> int:
        raise StoreClosed(self._backend.location)

    def close(self) -> None:
        """Commit the writes queued, release the backend; every later read or write
        raises StoreClosed."""
        self._writer.close()
        with self._lock:
            if not self._closed:
                self._closed = True
                # Every read starts by reading the change signal: swapping it for one that
                # raises refuses all of them at no cost to the reads of an open store.
                self._signal_read = self._read_closed
                self._backend.close()

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SessionStore {self._backend.location}>"


def plain_update(fn: Callable[[Draft], T]) -> Callable[[Draft], T]:
    """``fn`` as an update runs it; TypeError, changing nothing, for an async function or
    one that returns an awaitable (its changes would reach a draft whose update ended)."""
    if inspect.iscoroutinefunction(fn):
        raise TypeError("update takes a plain function, not an async one: make its changes in it")

    def run(draft: Draft) -> T:
        result = fn(draft)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                "the update function returned an awaitable: update takes a plain function "
                "that makes its changes before it returns"
            )
        return result

    return run
