"""Forking while flatstate's own threads work: the child must not inherit a held lock.

A child of ``fork()`` has only the thread that forked. Had another thread been
committing or checkpointing at that moment, the child would inherit SQLite's locks
(and the store's) held by a thread that no longer exists, and hang on its first
open or write. So every commit (on the writer thread, or inline in the caller's)
and every checkpoint holds a :func:`fork_guard`, and a fork first takes every guard:
it waits for the commits and checkpoints in progress, and forks with none running.
Reads in the caller's other threads are the caller's to quiesce before forking.
"""

from __future__ import annotations

import os
import threading
import weakref

__all__ = ["fork_guard"]

_guards: weakref.WeakSet[threading.RLock] = weakref.WeakSet()
_registry = threading.Lock()
_held: list[threading.RLock] = []


def fork_guard() -> threading.RLock:
    """A lock to hold while working in SQLite; ``fork()`` waits for it. Re-entrant, so a
    thread that forks while holding one (from inside a write function) still forks."""
    guard = threading.RLock()
    with _registry:
        _guards.add(guard)
    return guard


def _before_fork() -> None:
    _registry.acquire()
    for guard in list(_guards):
        guard.acquire()
        _held.append(guard)


def _after_fork() -> None:
    """In the parent and the child alike: the threads may work again."""
    while _held:
        _held.pop().release()
    _registry.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)
