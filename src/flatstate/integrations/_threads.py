"""Blocking file work for the integrations, on daemon threads of their own.

A turn's durable append waits on an fsync. asyncio's default executor has ``cpus + 4``
threads (6 on two cores), so 64 sessions appending at once queue for them while the disk
could take their fsyncs together (the file system commits concurrent ones in one journal
transaction): measured on two cores, 32 threads served 64 sessions about twice as fast.
The threads are daemons, so a program that never closes its sessions still exits; they
start on demand, up to :data:`SIZE`, and wait idle on a queue afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["SIZE", "run_blocking"]

T = TypeVar("T")
SIZE = 32

_jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
_lock = threading.Lock()
_threads = 0
_idle = 0


def _work() -> None:
    global _idle
    while True:
        future, fn = _jobs.get()
        with _lock:
            _idle -= 1
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the awaiting task, as an executor does
                future.set_exception(exc)
        del future, fn
        with _lock:
            _idle += 1


def _submit(fn: Callable[[], T]) -> Future[T]:
    global _threads, _idle
    future: Future[T] = Future()
    with _lock:
        if _idle == 0 and _threads < SIZE:
            _threads += 1
            _idle += 1
            threading.Thread(target=_work, name=f"flatstate-io-{_threads}", daemon=True).start()
    _jobs.put((future, fn))
    return future


async def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on one of the daemon threads, awaited without blocking the loop."""
    return await asyncio.wrap_future(_submit(functools.partial(fn, *args)))
