"""The caches ``bench seed`` measures flatstate against.

- ``dict``: our frozen entries in a plain dict, handed out as they are: no
  copy and no freshness check, and every reader shares the one mutable dict.
  The floor of a lookup in CPython, not a design to ship.
- ``entrycopy``: keeps each entry's JSON text and parses only the entry read,
  as OpenClaw's later fixes cloned from cached raw text instead of cloning the
  whole store. A whole-store read is a view that parses on lookup.
- ``deepcopy`` | ``json`` | ``orjson`` | ``pickle``: copy the whole store (as
  plain dicts) on every read and every write the named way, as OpenClaw's
  ``structuredClone`` cache did.

A contender is built from the store's entries and told of every entry a
durable write produced; the writes themselves go through flatstate, so that
every side does the same durable work.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from flatstate.frozen import decode_json, encode_json
from flatstate.model import SessionEntry

__all__ = ["CACHED_ENGINE", "CONTENDERS", "ISOLATING", "WHOLE_STORE", "open_contender"]

WHOLE_STORE = ("deepcopy", "json", "orjson", "pickle")
# The contenders whose readers cannot change what another reader sees: the fair comparison.
ISOLATING = ("entrycopy", *WHOLE_STORE)
CONTENDERS = ("dict", *ISOLATING)
# Those that read about as fast as we do, so that the durable write decides their rate:
# they write through a flatstate store with its cache, as we do (without it a write costs
# them several times what it costs us), and that cache is in their RSS. The whole-store copiers
# spend under 1% of their time in the commit (their writes are the copy that follows it):
# their store caches nothing, and their RSS holds only their own data.
CACHED_ENGINE = ("dict", "entrycopy")


class Contender(Protocol):
    def get(self, key: str) -> Any: ...

    def snapshot(self) -> Mapping[str, Any]: ...

    def written(self, key: str, entry: SessionEntry) -> None: ...


class PlainDict:
    """No copy at all: readers get the cached objects and share the dict that holds them."""

    def __init__(self, entries: dict[str, SessionEntry]) -> None:
        self.data = entries

    def get(self, key: str) -> Any:
        return self.data[key]

    def snapshot(self) -> Mapping[str, Any]:
        return self.data

    def written(self, key: str, entry: SessionEntry) -> None:
        self.data[key] = entry


class EntryCopy:
    """Each entry kept as JSON text; a read parses (copies) only the entry it asks for."""

    def __init__(self, entries: dict[str, SessionEntry]) -> None:
        self.raw = {key: encode_json(entry) for key, entry in entries.items()}

    def get(self, key: str) -> Any:
        return decode_json(self.raw[key])

    def snapshot(self) -> Mapping[str, Any]:
        # Over the live texts, not a point-in-time copy: a later write shows
        # through. That flatters this contender; it never costs it.
        return _ParsingView(self.raw)

    def written(self, key: str, entry: SessionEntry) -> None:
        self.raw[key] = encode_json(entry)


class _ParsingView(Mapping[str, Any]):
    """A whole store whose entries are parsed when they are looked up."""

    def __init__(self, raw: dict[str, bytes]) -> None:
        self.raw = raw

    def __getitem__(self, key: str) -> Any:
        return decode_json(self.raw[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


class WholeCopy:
    """OpenClaw's structuredClone-era cache with a pluggable copy: the whole store, every time."""

    def __init__(self, entries: dict[str, SessionEntry], copier: Callable[[Any], Any]) -> None:
        self.data = {key: entry.to_dict() for key, entry in entries.items()}
        self.copy = copier

    def get(self, key: str) -> Any:
        return self.copy(self.data)[key]  # loadSessionStore() then store[key]

    def snapshot(self) -> Mapping[str, Any]:
        copied: Mapping[str, Any] = self.copy(self.data)
        return copied

    def written(self, key: str, entry: SessionEntry) -> None:
        """After a durable write the cache keeps a copy of the whole new store."""
        fresh = self.copy(self.data)
        fresh[key] = entry.to_dict()
        self.data = fresh


def _copier(name: str) -> Callable[[Any], Any]:
    if name == "deepcopy":
        return copy.deepcopy
    if name == "json":
        return lambda value: json.loads(json.dumps(value))
    if name == "pickle":
        return lambda value: pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    import orjson  # in the bench extra

    return lambda value: orjson.loads(orjson.dumps(value))


def open_contender(name: str, entries: dict[str, SessionEntry]) -> Contender:
    """The contender called ``name`` (one of CONTENDERS), built from the store's ``entries``."""
    if name == "dict":
        return PlainDict(entries)
    if name == "entrycopy":
        return EntryCopy(entries)
    if name in WHOLE_STORE:
        return WholeCopy(entries, _copier(name))
    raise ValueError(f"unknown contender {name!r}; choose from {', '.join(CONTENDERS)}")
