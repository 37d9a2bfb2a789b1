"""How the database backends lay an entry out: small fields inline, large objects by content.

An object field whose JSON is at least ``BLOB_MIN_BYTES`` long (the skills
snapshot, the system-prompt report) is stored once, by its sha256, and the
row refers to it; nine sessions sharing a prompt share one blob, and a patch
of a token counter rewrites ~1 KiB instead of the whole entry. Smaller maps
stay in the row, re-emitted from the JSON they memoized (``json_digest``) so
that a patch does not encode them again.

Blobs nobody refers to any more are deleted by a scan of every row, so the
backends run it only when enough writes may have left one behind, or rarely
for garbage other processes left (:class:`Collector`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from itertools import repeat
from typing import Any, NamedTuple

import msgspec

from flatstate.frozen import SMALL_JSON, FrozenMap, StringPool, decode_json, freeze
from flatstate.model import SessionEntry

__all__ = [
    "BLOB_CACHE_BYTES",
    "BLOB_MIN_BYTES",
    "CHANGE_LOG_KEEP",
    "COLLECT_AFTER",
    "COLLECT_BATCH",
    "MAX_REPLAY",
    "PRUNE_EVERY",
    "SWEEP_AFTER_COMMITS",
    "BlobCache",
    "Collector",
    "Layout",
    "load_blob",
    "replayable",
    "split_entry",
    "updated_at_column",
]

BLOB_MIN_BYTES = SMALL_JSON  # 256
# Decoded blobs kept for reuse across rows (bytes of their JSON).
BLOB_CACHE_BYTES = 32 << 20
# The change log keeps this many recent positions, pruned every PRUNE_EVERY commits; a
# reader further behind than MAX_REPLAY positions reloads everything instead of replaying.
CHANGE_LOG_KEEP = 10_000
PRUNE_EVERY = 1024
MAX_REPLAY = 5_000
# Unreferenced blobs a commit deletes at most (the rest wait for the next commits).
COLLECT_BATCH = 200
# Writes that may orphan a blob before the first look at whether a scan is worth it.
COLLECT_AFTER = 4096
# Commits of any kind before the first look at whether a sweep for others' garbage is due.
SWEEP_AFTER_COMMITS = 65536


class Layout(NamedTuple):
    light: dict[str, Any]
    """The row's JSON: blob fields replaced by their digest."""
    refs: dict[str, str]
    """field -> digest of every blob field."""
    new_blobs: list[tuple[str, FrozenMap]]
    """(digest, value) of blob values not shared with the entry being replaced."""
    blob_bytes: int
    """What the blob fields add to the entry's JSON size beyond their digests."""
    may_orphan: bool
    """Whether the write may leave a stored blob without a referrer."""


def split_entry(entry: SessionEntry, previous: SessionEntry | None) -> Layout:
    """Lay ``entry`` out for a row; ``previous`` is the entry it replaces (None if unknown).

    A value shared by identity with ``previous`` is already stored: the store
    re-read that row inside the writer's transaction, so it cannot have gone.
    One pass over the fields: this runs for every write.
    """
    keys = entry._shape.keys
    light = dict(zip(keys, entry._values, strict=True))
    refs: dict[str, str] = {}
    new_blobs: list[tuple[str, FrozenMap]] = []
    blob_bytes = 0
    if previous is not None and previous._shape is entry._shape:
        olds: Any = previous._values
        may_orphan = False
    else:
        olds = [previous.get(field, _MISSING) for field in keys] if previous else repeat(None)
        may_orphan = previous is None or any(
            _is_blob(old) for field, old in previous.pairs() if field not in light
        )
    for field, value, old in zip(keys, entry._values, olds, strict=False):
        if value is not old and not may_orphan and _is_blob(old):
            may_orphan = True
        if not isinstance(value, FrozenMap):
            continue
        size, digest, small = value.json_digest()
        if small is not None:
            light[field] = msgspec.Raw(small)
            continue
        if value is not old:
            new_blobs.append((digest, value))
            may_orphan = True
        light[field] = refs[field] = digest
        blob_bytes += size - len(digest) - 2
    return Layout(light, refs, new_blobs, blob_bytes, may_orphan)


def _is_blob(value: Any) -> bool:
    return isinstance(value, FrozenMap) and value.json_digest()[2] is None


_MISSING: Any = object()


class Collector:
    """When to scan for unreferenced blobs.

    Mostly once the writes that may have orphaned one (a blob field replaced or
    dropped, a session written blind or removed) reach a quarter of the
    sessions, so each scan's cost, spread over those writes, does not grow with
    the store. The counts are this process's, and other processes (a CLI run,
    the ``sqlite3`` shell) leave garbage it never counted: so a busy process
    also scans after commits of any kind reach four times the sessions, which
    spreads a scan thinly over every commit (~3 us each at 100,000 sessions).
    """

    def __init__(self) -> None:
        self.pending = 0
        self.commits = 0
        self._due = COLLECT_AFTER
        self._due_commits = SWEEP_AFTER_COMMITS

    def wrote(self, may_orphan: bool) -> None:
        if may_orphan:
            self.pending += 1

    def due(self, count_sessions: Callable[[], int]) -> bool:
        """Whether to collect in the commit under way; counts it, and asks for the
        session count only now and then."""
        self.commits += 1
        if self.pending < self._due and self.commits < self._due_commits:
            return False
        sessions = count_sessions()
        self._due = max(COLLECT_AFTER, sessions // 4)
        self._due_commits = max(SWEEP_AFTER_COMMITS, sessions * 4)
        if self.pending < self._due and self.commits < self._due_commits:
            return False
        self.pending = self.commits = 0
        return True


class BlobCache:
    """Decoded blobs by digest, least recently used first out, bounded by their JSON's bytes:
    one frozen object for every row that shares a blob."""

    def __init__(self, limit: int = BLOB_CACHE_BYTES) -> None:
        self.limit = limit
        self.bytes = 0
        self._values: OrderedDict[str, FrozenMap] = OrderedDict()

    def get(self, digest: str) -> FrozenMap | None:
        value = self._values.get(digest)
        if value is not None:
            self._values.move_to_end(digest)
        return value

    def add(self, digest: str, value: FrozenMap) -> None:
        if digest not in self._values:
            self._values[digest] = value
            self.bytes += value.json_digest()[0]

    def trim(self, keep: int = 0) -> None:
        """Drop the oldest blobs past the bound, but never the ``keep`` newest (the rows
        being built need them)."""
        values = self._values
        while self.bytes > self.limit and len(values) > keep:
            _, old = values.popitem(last=False)
            self.bytes -= old.json_digest()[0]

    def clear(self) -> None:
        self._values.clear()
        self.bytes = 0


def replayable(positions: list[int], token: int) -> bool:
    """Whether log ``positions`` read after ``token`` (at most MAX_REPLAY + 1 of them) can
    be replayed: committed positions are gap-free, so a gap means the log was pruned past
    this reader, and a full page means it is far behind."""
    return positions[0] == token + 1 and len(positions) <= MAX_REPLAY


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def updated_at_column(entry: SessionEntry) -> int | None:
    """The value of the indexed ``updated_at`` column: the entry's updatedAt when it is an
    integer a 64-bit column holds, else NULL. The column only orders rows; the entry itself
    keeps the exact value, so every backend reads back what was written."""
    updated = entry.get("updatedAt")
    if type(updated) is int and _INT64_MIN <= updated <= _INT64_MAX:
        return updated
    return None


def load_blob(text: str, digest: str, pool: StringPool) -> FrozenMap:
    """A stored blob as a frozen value that already knows its digest (no re-hashing)."""
    value: FrozenMap = freeze(decode_json(text), pool, decoded=True)
    object.__setattr__(value, "_digest", (len(text.encode()), digest, None))
    return value
