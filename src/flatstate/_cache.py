"""The store's cache of entries: an immutable trie for snapshots, a dict beside it for lookups,
bounded in bytes.

The trie (``immutables.Map``) hands out snapshots that share every untouched entry; the
dict answers ``get`` in one hash probe (the trie takes a few levels). Both hold the same
frozen objects. Beyond ``limit`` bytes the least recently used entries go, and the store
reads misses from its backend. Legacy aliases of a canonical key (``main``, mixed case)
are remembered so that a write can fold them, and when several rows fold into one key the
freshest wins (:func:`fresher`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

import immutables

from flatstate.backends.base import Row
from flatstate.frozen import SizeAccount
from flatstate.model import SessionEntry

__all__ = ["EntryCache", "fresher", "freshest"]


def fresher(a: SessionEntry, b: SessionEntry) -> bool:
    """Whether ``a`` beats ``b`` when two legacy keys fold into one (newest updatedAt)."""
    ua, ub = a.get("updatedAt"), b.get("updatedAt")
    return isinstance(ua, int | float) and (not isinstance(ub, int | float) or ua > ub)


def freshest(rows: Iterable[Row | None]) -> Row | None:
    """The freshest of ``rows`` (the first on a tie), skipping missing ones."""
    best: Row | None = None
    for row in rows:
        if row is not None and (best is None or fresher(row[1], best[1])):
            best = row
    return best


class EntryCache:
    """Canonical key -> frozen entry, within a byte bound; the caller holds the store's lock
    for every change."""

    def __init__(self, limit: int, shared_min: int) -> None:
        self.limit = limit
        self.shared_min = shared_min
        # Kept as one object for the cache's life: the store reads it without a lock.
        self.index: dict[str, SessionEntry] = {}
        self.reset()

    def reset(self) -> None:
        self.entries: immutables.Map[str, SessionEntry] = immutables.Map()
        self.index.clear()
        self.account = SizeAccount(self.shared_min)
        self.aliases: dict[str, set[str]] = {}
        self.lru: OrderedDict[str, None] | None = None  # None: every entry is cached
        self.sorted_keys: tuple[str, ...] | None = None

    @property
    def complete(self) -> bool:
        return self.lru is None

    def candidates(self, canon: str) -> list[str]:
        """The raw keys that fold into ``canon``: itself first, then its aliases in order."""
        return [canon, *sorted(self.aliases.get(canon, ()))]

    def note_alias(self, canon: str, raw: str) -> None:
        if canon != raw:
            self.aliases.setdefault(canon, set()).add(raw)

    def fill(self, rows: Iterable[Row], canonical: Callable[[str], str | None]) -> bool:
        """Load ``rows`` afresh, folding aliases; whether all fit under the bound."""
        self.reset()
        building: dict[str, SessionEntry] = {}
        account = self.account
        complete = True
        for raw, entry in rows:
            canon = canonical(raw)
            if canon is None:
                continue
            self.note_alias(canon, raw)
            older = building.get(canon)
            if older is not None:
                if not fresher(entry, older):
                    continue
                account.remove(older)
            account.add(entry)
            if account.bytes > self.limit:
                account.remove(entry)
                complete = False
                break
            building[canon] = entry
        self.entries = immutables.Map(building)
        self.index.update(building)
        if not complete:
            self.lru = OrderedDict.fromkeys(building)
        return complete

    def set(self, key: str, entry: SessionEntry | None) -> None:
        """Put ``entry`` (or its absence) in the cache."""
        previous = self.entries.get(key)
        account = self.account
        if entry is None:
            if previous is not None:
                account.remove(previous)
                self.entries = self.entries.delete(key)
                self.index.pop(key, None)
                self.sorted_keys = None
                if self.lru is not None:
                    self.lru.pop(key, None)
        else:
            if previous is None:
                account.add(entry)
                self.sorted_keys = None
            else:
                account.replace(previous, entry)
            self.entries = self.entries.set(key, entry)
            self.index[key] = entry
            if self.lru is not None:
                self.lru[key] = None
                self.lru.move_to_end(key)
        if account.bytes > self.limit:
            self._evict()

    def _evict(self) -> None:
        if self.lru is None:
            # The store just outgrew the bound: from now on keep recent entries only.
            self.lru = OrderedDict.fromkeys(self.entries.keys())
        mutation = self.entries.mutate()
        account = self.account
        while account.bytes > self.limit and self.lru:
            key, _ = self.lru.popitem(last=False)
            account.remove(mutation[key])
            del mutation[key]
            self.index.pop(key, None)
        self.entries = mutation.finish()
        self.sorted_keys = None

    def touch(self, key: str) -> None:
        if self.lru is not None and key in self.lru:
            self.lru.move_to_end(key)

    def keys(self) -> tuple[str, ...]:
        """Every cached key, sorted (remembered until the key set changes)."""
        keys = self.sorted_keys
        if keys is None:
            keys = self.sorted_keys = tuple(sorted(self.entries.keys()))
        return keys
