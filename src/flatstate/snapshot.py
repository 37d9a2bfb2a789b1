"""The store's two views: a :class:`Snapshot` of everything at one instant, shared and
immutable, and the mutable :class:`Draft` an update function works on before its changes
commit together."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Protocol

import immutables

from flatstate.errors import InvalidSessionKey
from flatstate.model import SessionEntry

__all__ = ["Committed", "Draft", "EntryInput", "Snapshot"]

EntryInput = Mapping[str, Any]


class Snapshot(Mapping[str, SessionEntry]):
    """The whole store at one instant: immutable, shared, iterated in key order."""

    __slots__ = ("_keys", "_map")
    _map: immutables.Map[str, SessionEntry]
    _keys: tuple[str, ...] | None

    def __init__(
        self, entries: immutables.Map[str, SessionEntry], keys: tuple[str, ...] | None = None
    ):
        object.__setattr__(self, "_map", entries)
        object.__setattr__(self, "_keys", keys)

    def __getitem__(self, key: str) -> SessionEntry:
        return self._map[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._map.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[str]:
        return iter(self.sorted_keys())

    def sorted_keys(self) -> tuple[str, ...]:
        keys = self._keys
        if keys is None:
            keys = tuple(sorted(self._map.keys()))
            object.__setattr__(self, "_keys", keys)
        return keys

    def __repr__(self) -> str:
        return f"<Snapshot of {len(self._map)} sessions>"

    def _immutable(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a Snapshot is immutable; write through the store instead")

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _immutable
    pop = popitem = clear = update = setdefault = _immutable


class Committed(Protocol):
    """What a draft reads through: the store's committed state and its entry rules."""

    def canonical_key(self, key: str) -> str: ...
    def _committed(self, canon: str) -> SessionEntry | None: ...
    def _committed_keys(self) -> set[str]: ...
    def _build(self, canon: str, value: EntryInput) -> SessionEntry: ...
    def _merge(
        self,
        canon: str,
        existing: SessionEntry | None,
        changes: EntryInput,
        preserve_activity: bool,
    ) -> SessionEntry: ...


class Draft(MutableMapping[str, SessionEntry]):
    """A mutable view of the store inside :meth:`SessionStore.update`.

    Reads see committed state plus this draft's own changes; assignments take
    plain dicts or entries and are validated at once. Nothing reaches storage
    until the update function returns.
    """

    def __init__(self, store: Committed) -> None:
        self._store = store
        self._changes: dict[str, SessionEntry | None] = {}
        self._sealed = False

    def seal(self) -> None:
        """End the draft's update: a change through it now raises instead of being lost."""
        self._sealed = True

    def _writable(self) -> None:
        if self._sealed:
            raise RuntimeError(
                "this draft's update has ended, so a change through it would be lost: "
                "make every change inside the update function"
            )

    def _key(self, key: str) -> str:
        return self._store.canonical_key(key)

    def _set(self, canon: str, entry: SessionEntry) -> SessionEntry:
        self._writable()
        self._changes[canon] = entry
        return entry

    def __getitem__(self, key: str) -> SessionEntry:
        entry = self._lookup(self._key(key))
        if entry is None:
            raise KeyError(key)
        return entry

    def _lookup(self, canon: str) -> SessionEntry | None:
        if canon in self._changes:
            return self._changes[canon]
        return self._store._committed(canon)

    def __setitem__(self, key: str, value: EntryInput) -> None:
        canon = self._key(key)
        self._set(canon, self._store._build(canon, value))

    def __delitem__(self, key: str) -> None:
        self._writable()
        canon = self._key(key)
        if canon not in self:
            raise KeyError(key)
        self._changes[canon] = None

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            self[key]
        except (KeyError, InvalidSessionKey):
            return False
        return True

    def _keys(self) -> list[str]:
        base = self._store._committed_keys()
        for canon, entry in self._changes.items():
            if entry is None:
                base.discard(canon)
            else:
                base.add(canon)
        return sorted(base)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def patch(
        self, key: str, changes: EntryInput, *, preserve_activity: bool = False
    ) -> SessionEntry:
        """Merge ``changes`` into ``key`` with the same rules as :meth:`SessionStore.patch`."""
        canon = self._key(key)
        return self._set(
            canon, self._store._merge(canon, self._lookup(canon), changes, preserve_activity)
        )
