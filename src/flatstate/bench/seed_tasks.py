"""The seed loop run by many asyncio tasks in one process (``bench seed --tasks N``).

A gateway serves many sessions from one event loop: here each of ``tasks``
tasks runs the seed loop's operations (reads, one durable patch every
``write_every``) through :func:`flatstate.open_async_store`'s API on one store,
so that their patches share the writer's group commits. A read the cache
answers runs inline and never suspends the task; a patch awaits its commit.

The housekeeping of the synchronous loop (RSS samples, progress, compactions)
runs between operations as there, from a task of its own that wakes every
``TICK`` seconds; the compaction itself runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flatstate.aio import AsyncSessionStore
from flatstate.store import SessionStore

__all__ = ["TaskLoop", "run_tasks"]

TICK = 0.05
CHECK_CLOCK_EVERY = 16


@dataclass
class TaskLoop:
    """How the tasks share out the seed loop, and where its figures go.

    Task ``t`` takes operation numbers ``first + t``, then every ``stride``-th, so the
    workers and tasks of a run share out one sequence of keys; each task patches once
    in every ``write_every`` of its own operations, the tasks out of step, and stops
    at ``deadline`` (a perf_counter time). ``housekeeping(now)`` runs on the loop every
    tick and may return a blocking job (a compaction) to run on a worker thread.
    """

    tasks: int
    first: int
    stride: int
    write_every: int
    deadline: float
    time_every: int
    counter: str
    record: Callable[[str, float], None]
    counts: dict[str, int]
    housekeeping: Callable[[float], Callable[[], None] | None]


def run_tasks(store: SessionStore, keys: list[str], loop: TaskLoop) -> None:
    """Run the loop (see :class:`TaskLoop`) on its tasks until its deadline."""
    asyncio.run(_main(AsyncSessionStore(store), keys, loop))


async def _main(store: AsyncSessionStore, keys: list[str], loop: TaskLoop) -> None:
    # As locals: the tasks read them on every operation.
    first, stride, write_every, deadline = loop.first, loop.stride, loop.write_every, loop.deadline
    time_every, counter, record, counts = loop.time_every, loop.counter, loop.record, loop.counts
    n = len(keys)
    clock = time.perf_counter

    def bump(key: str) -> Callable[[Any], Any]:
        return lambda draft: draft.patch(key, {counter: (draft[key].get(counter) or 0) + 1})

    async def task(number: int) -> None:
        i = first + number
        step = stride
        ops = reads = writes = 0
        beat = number  # one patch in every write_every of this task's operations
        while True:
            for _ in range(CHECK_CLOCK_EVERY):
                timed = i % time_every == 0
                t0 = clock() if timed else 0.0
                beat += 1
                if beat % write_every == 0:
                    await store.update(bump(keys[(i * 7919) % n]))
                    kind = "patch"
                    writes += 1
                else:
                    await store.get(keys[i % n])
                    kind = "get"
                    reads += 1
                if timed:
                    record(kind, clock() - t0)
                i += step
                ops += 1
            if clock() >= deadline:
                break
        counts["ops"] += ops
        counts["reads"] += reads
        counts["writes"] += writes

    async def keeper() -> None:
        while clock() < deadline:
            await asyncio.sleep(TICK)
            job = loop.housekeeping(clock())
            if job is not None:
                await asyncio.to_thread(job)

    await asyncio.gather(keeper(), *(task(t) for t in range(loop.tasks)))
