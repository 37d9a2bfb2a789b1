"""``flatstate bench write``: durable patches from many asyncio tasks, four designs side by side.

A store of ``entries`` sessions of ~10 KiB each gets patches of ~1 KiB of
changes (a counter and a ~1 KiB field) from ``tasks`` concurrent tasks for
``seconds``, while a ticker task measures how late the event loop wakes it
(every 1 ms). Each run is one design at one concurrency and durability, in a
fresh process on a fresh copy of the store:

- ``flatstate``: ``await store.patch()`` on the async store; the writer thread
  commits every write waiting in one transaction (group commit).
- ``one-commit``: today's path before the writer: the sync ``store.patch()``
  called on the loop, one commit per write (the writer's batch capped at 1).
- ``to_thread+lock``: the OpenAI Agents SDK ``SQLiteSession`` pattern: one
  connection, a ``threading.Lock``, ``asyncio.to_thread`` and a commit per write.
- ``aiosqlite+lock``: aiosqlite with an ``asyncio.Lock`` and a commit per write.
- ``flatstate-postgres`` (with ``backend="postgres"`` and a DSN): the first
  design on a PostgreSQL namespace holding the same entries, so its figures
  sit beside SQLite's from the same run. The namespace is built once and shared
  by the runs (a server's database cannot be copied like a file), then dropped.

The contenders keep the same entries as rows of one table and merge the
changes in SQL (``json_patch``); flatstate stores large fields once, by content
(see :mod:`flatstate.backends.sqlite`). The disk's fsync latency is measured
before and after the runs, beside them: it varies many times over on shared
machines and bounds every ``synchronous="full"`` figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from flatstate.bench.measure import in_fresh_process, machine
from flatstate.bench.workload import make_store

__all__ = ["DESIGNS", "run_write_bench"]

DESIGNS = ("flatstate", "one-commit", "to_thread+lock", "aiosqlite+lock")
OURS = "flatstate"
ON_POSTGRES = "flatstate-postgres"
TICK = 0.001
FSYNC_SAMPLES = 200
CONTENDER_DB = "contender.sqlite"

Patch = Callable[[str, dict[str, Any]], Awaitable[Any]]


def _changes(i: int) -> dict[str, Any]:
    """~1 KiB of changes: a counter and a note that differs every time."""
    return {"benchPatches": i, "lastNote": f"{i:08d} " * 113}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def fsync_ms(directory: str, samples: int = FSYNC_SAMPLES) -> dict[str, float]:
    """p50/p99 of a 4 KiB write and fsync in ``directory`` (the disk under the stores)."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    took: list[float] = []
    try:
        for _ in range(samples):
            os.pwrite(fd, os.urandom(4096), 0)
            start = time.perf_counter()
            os.fsync(fd)
            took.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    return {"p50": round(_percentile(took, 0.5), 3), "p99": round(_percentile(took, 0.99), 3)}


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _put_all(chunk: list[tuple[str, dict[str, Any]]], draft: Any) -> None:
    for key, value in chunk:
        draft[key] = value


def _build(root: str, entries: int, postgres: str | None = None) -> tuple[str, str]:
    """The flatstate state directory and the contenders' database, same entries (and the
    same in the PostgreSQL location ``postgres``, if given)."""
    import flatstate

    data = make_store(entries)
    ours = os.path.join(root, "flatstate")
    for where in (ours, postgres) if postgres else (ours,):
        with flatstate.open_store(where, cache_bytes=1 << 30) as store:
            items = list(data.items())
            for start in range(0, len(items), 500):
                chunk = items[start : start + 500]
                store.update(partial(_put_all, chunk))
    theirs = os.path.join(root, CONTENDER_DB)
    conn = sqlite3.connect(theirs)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE sessions (key TEXT PRIMARY KEY, entry TEXT NOT NULL)")
    conn.executemany(
        "INSERT INTO sessions VALUES (?, ?)", [(k, json.dumps(v)) for k, v in data.items()]
    )
    conn.commit()
    conn.close()
    return ours, theirs


async def _drive(patch: Patch, keys: list[str], tasks: int, seconds: float) -> dict[str, Any]:
    """``tasks`` tasks patching round-robin for ``seconds``; latencies and the loop's lag."""
    latencies: list[float] = []
    lags: list[float] = []
    stop = time.perf_counter() + seconds
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append((time.perf_counter() - start - TICK) * 1000)

    async def task(n: int) -> None:
        i = n
        while time.perf_counter() < stop:
            key = keys[i % len(keys)]
            start = time.perf_counter()
            await patch(key, _changes(i))
            latencies.append((time.perf_counter() - start) * 1000)
            i += tasks

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    cpu = time.process_time()
    await asyncio.gather(*(task(n) for n in range(tasks)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    done.set()
    await tick
    return {
        "writes": len(latencies),
        "writes_per_s": round(len(latencies) / elapsed),
        "p50_ms": round(_percentile(latencies, 0.5), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
        "loop_lag_p50_ms": round(_percentile(lags, 0.5), 3),
        "loop_lag_p99_ms": round(_percentile(lags, 0.99), 3),
        # The CPU time of the whole process (every thread) per write: what bounds the rate
        # once group commit has taken the fsync out of it.
        "cpu_us_per_write": round(cpu / len(latencies) * 1e6, 1) if latencies else None,
    }


async def _flatstate(
    path: str, tasks: int, synchronous: str, seconds: float, one_commit: bool
) -> dict[str, Any]:
    import flatstate

    async with flatstate.open_async_store(
        path, synchronous=synchronous, cache_bytes=1 << 30
    ) as store:
        keys = list(await store.keys())
        writer = store.sync._writer
        if one_commit:
            writer.max_batch = 1

        async def patch(key: str, changes: dict[str, Any]) -> Any:
            if one_commit:
                return store.sync.patch(key, changes)  # blocks the loop, as before the writer
            return await store.patch(key, changes)

        before_jobs, before_batches = writer.jobs, writer.batches
        before_busy = writer.busy_seconds
        result = await _drive(patch, keys, tasks, seconds)
        batches = writer.batches - before_batches
        result["mean_batch"] = round((writer.jobs - before_jobs) / batches, 2) if batches else 0
        # How much of the run the writer spent committing (1.0: it was the bottleneck).
        result["writer_busy"] = round((writer.busy_seconds - before_busy) / seconds, 2)
    return result


_UPDATE = "UPDATE sessions SET entry = json_patch(entry, ?) WHERE key = ?"


async def _to_thread_lock(
    path: str, tasks: int, synchronous: str, seconds: float
) -> dict[str, Any]:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    keys = [k for (k,) in conn.execute("SELECT key FROM sessions")]
    lock = threading.Lock()

    def patch_sync(key: str, changes: dict[str, Any]) -> None:
        with lock:
            conn.execute(_UPDATE, (json.dumps(changes), key))
            conn.commit()

    async def patch(key: str, changes: dict[str, Any]) -> None:
        await asyncio.to_thread(patch_sync, key, changes)

    try:
        return {**await _drive(patch, keys, tasks, seconds), "mean_batch": 1.0}
    finally:
        conn.close()


async def _aiosqlite_lock(
    path: str, tasks: int, synchronous: str, seconds: float
) -> dict[str, Any]:
    import aiosqlite

    async with aiosqlite.connect(path) as db:
        await db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        async with db.execute("SELECT key FROM sessions") as cursor:
            keys = [row[0] async for row in cursor]
        lock = asyncio.Lock()

        async def patch(key: str, changes: dict[str, Any]) -> None:
            async with lock:
                await db.execute(_UPDATE, (json.dumps(changes), key))
                await db.commit()

        return {**await _drive(patch, keys, tasks, seconds), "mean_batch": 1.0}


def _one_run(
    design: str, source: str, tasks: int, synchronous: str, seconds: float
) -> dict[str, Any]:
    """One design in this (fresh) process, on a fresh copy of its store."""
    if design == ON_POSTGRES:
        result = asyncio.run(_flatstate(source, tasks, synchronous, seconds, False))
        return {"design": design, "tasks": tasks, "synchronous": synchronous, **result}
    work = tempfile.mkdtemp(prefix="flatstate-bench-write-", dir=os.path.dirname(source))
    try:
        if design in (OURS, "one-commit"):
            path = os.path.join(work, "state")
            shutil.copytree(source, path)
            run = _flatstate(path, tasks, synchronous, seconds, design == "one-commit")
        else:
            path = os.path.join(work, CONTENDER_DB)
            shutil.copyfile(source, path)
            contender = _to_thread_lock if design == "to_thread+lock" else _aiosqlite_lock
            run = contender(path, tasks, synchronous, seconds)
        result = asyncio.run(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"design": design, "tasks": tasks, "synchronous": synchronous, **result}


def run_write_bench(
    *,
    entries: int = 2_000,
    tasks: tuple[int, ...] = (1, 16, 64, 256),
    synchronous: tuple[str, ...] = ("normal", "full"),
    designs: tuple[str, ...] = DESIGNS,
    seconds: float = 3.0,
    directory: str | None = None,
    dsn: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Every design at every concurrency and durability, each in a fresh process; with a
    ``dsn``, flatstate on PostgreSQL too (the ``flatstate-postgres`` design)."""
    from flatstate.bench.store import _drop_namespace, location

    if dsn and ON_POSTGRES not in designs:
        designs = (*designs, ON_POSTGRES)
    if ON_POSTGRES in designs and not dsn:
        raise ValueError(f"the {ON_POSTGRES} design needs a DSN (--dsn)")
    root = tempfile.mkdtemp(prefix="flatstate-bench-write-", dir=directory)
    postgres = location(root, entries, "postgres", dsn) if dsn else None
    try:
        progress(f"building a store of {entries:,} sessions")
        ours, theirs = _build(root, entries, postgres)
        fsync = {"before": fsync_ms(root)}
        runs = []
        for sync in synchronous:
            for count in tasks:
                for design in designs:
                    progress(f"{design}, {count} tasks, synchronous={sync}")
                    source = ours if design in (OURS, "one-commit") else theirs
                    if design == ON_POSTGRES:
                        assert postgres is not None
                        source = postgres
                    runs.append(in_fresh_process(_one_run, design, source, count, sync, seconds))
        fsync["after"] = fsync_ms(root)
        found = machine(root, dsn)
        found["versions"]["aiosqlite"] = _version("aiosqlite")
        return {
            "machine": found,
            "fsync_ms": fsync,
            "entries": entries,
            "seconds": seconds,
            "runs": runs,
        }
    finally:
        if postgres is not None:
            _drop_namespace(postgres)
        shutil.rmtree(root, ignore_errors=True)
