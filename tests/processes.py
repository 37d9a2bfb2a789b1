"""Helpers for tests that race real processes: a start barrier, deadlines, and reaping."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.context import SpawnProcess
from typing import Any

# Named deadlines: generous, because CI machines have two cores and neighbours.
START_TIMEOUT = 60.0
RUN_TIMEOUT = 180.0

ctx = multiprocessing.get_context("spawn")


@contextmanager
def running(
    target: Callable[..., Any], args_list: Sequence[tuple[Any, ...]]
) -> Iterator[list[SpawnProcess]]:
    """Start one process per args tuple; always kill and reap them when the block ends,
    even when starting one of them fails."""
    procs = [ctx.Process(target=target, args=args) for args in args_list]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join(10)


def wait_for_content(path: str, timeout: float = START_TIMEOUT) -> None:
    """Block until ``path`` exists and is not empty (a worker's first acknowledgement)."""
    deadline = time.monotonic() + timeout
    while not (os.path.exists(path) and os.path.getsize(path) > 0):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no acknowledgement in {path} after {timeout:g} s")
        time.sleep(0.01)


def join_all(procs: Sequence[SpawnProcess], timeout: float = RUN_TIMEOUT) -> list[int | None]:
    """Wait for every process; return their exit codes."""
    for proc in procs:
        proc.join(timeout)
    return [proc.exitcode for proc in procs]
