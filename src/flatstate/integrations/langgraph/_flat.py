"""Flat values: an immutable leaf (str, int, float, bool, bytes, None), or a dict or list
of such leaves, which is what a state of documents decodes to.

Python can tell at C speed whether such a value is still what it was (the same leaf
objects, in the same places) and copy it shallowly, so the saver may skip serializing it
again (:class:`._pieces.RecentEncodings`) and hand out a copy instead of decoding it
(:class:`._cache.Entry`). Anything else (a message object, a set, a datetime, nested
containers) is serialized and decoded afresh.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from operator import is_
from typing import Any

__all__ = ["Copier", "copier", "unchanged_check"]

Copier = Callable[[], Any]

# Values no node can change in place: a read may hand out the same object again.
_IMMUTABLE = frozenset({str, int, float, bool, bytes, type(None)})


def _immutable(values: Iterable[Any]) -> bool:
    return all(type(v) in _IMMUTABLE for v in values)


def copier(value: Any) -> Copier | None:
    """A function that returns a fresh copy of ``value`` at C speed, or None.

    Every copy is a new container that a node may change in place without changing what
    another read gets; the leaves are shared. Copying a dict of large strings costs a
    fraction of decoding it again; nested containers msgpack decodes faster than Python
    could copy them, so they get None.
    """
    kind = type(value)
    if kind in _IMMUTABLE:
        return lambda: value
    if kind is dict:
        if _immutable(value) and _immutable(value.values()):
            # Interned keys are one object for every checkpoint: a copy touches fewer lines.
            return {(sys.intern(k) if type(k) is str else k): v for k, v in value.items()}.copy
    elif kind is list and _immutable(value):
        return value.copy  # type: ignore[no-any-return]
    return None


def unchanged_check(value: Any) -> Callable[[], bool] | None:
    """A function that tells whether ``value`` still holds the very leaves it holds now
    (so it would serialize to the same bytes), or None if ``value`` is not flat.

    Leaves are compared by identity, never by ``==``: ``1``, ``1.0`` and ``True`` are
    equal but serialize differently. A leaf replaced by an equal object reads as changed,
    which costs a serialization, never a wrong answer.
    """
    kind = type(value)
    if kind in _IMMUTABLE:
        return lambda: True
    if kind is dict:
        keys, leaves = tuple(value), tuple(value.values())
        if _immutable(keys) and _immutable(leaves):
            return lambda: (
                len(value) == len(keys)
                and all(map(is_, keys, value))
                and all(map(is_, leaves, value.values()))
            )
    elif kind is list:
        items = tuple(value)
        if _immutable(items):
            return lambda: len(value) == len(items) and all(map(is_, items, value))
    return None
