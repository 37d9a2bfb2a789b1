"""Measuring helpers shared by the benchmarks: rates, RSS, and machine context."""

from __future__ import annotations

import gc
import importlib.metadata
import multiprocessing
import os
import platform
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import psutil

__all__ = ["in_fresh_process", "machine", "rate", "rss_mib", "settled_rss_mib"]


def rss_mib() -> float:
    """This process's resident set size in MiB."""
    return psutil.Process().memory_info().rss / (1 << 20)


def settled_rss_mib() -> float:
    """RSS after a full garbage collection, so that only live data counts."""
    gc.collect()
    return rss_mib()


def rate(op: Callable[[int], Any], seconds: float, batch: int = 1000) -> tuple[float, int]:
    """Call ``op(i)`` for i = 0, 1, ... for about ``seconds``; return (ops per second, ops).

    The clock is read once per ``batch`` calls so that timing costs nothing
    measurable; the loop and call overhead are included in the figure.
    """
    done = 0
    start = time.perf_counter()
    while True:
        for i in range(done, done + batch):
            op(i)
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed, done


def machine(directory: str | None = None, dsn: str | None = None) -> dict[str, Any]:
    """The context a figure needs to mean anything: cores, memory, versions, the file system.

    ``directory`` is where the benchmark keeps its store; ``dsn`` the PostgreSQL
    server it used, if any (then psycopg's and the server's versions count too).
    """
    import flatstate

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "flatstate": flatstate.__version__,
        "versions": _versions(dsn),
        "filesystem": _filesystem(directory) if directory else None,
    }


def _versions(dsn: str | None) -> dict[str, str | None]:
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    for package in ("msgspec", "immutables", "orjson", *(("psycopg",) if dsn else ())):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None  # an extra that is not installed
    if dsn:
        found["postgresql"] = _server_version(dsn)
    return found


def _server_version(dsn: str) -> str:
    import psycopg

    from flatstate.backends.postgres import split_dsn

    with psycopg.connect(split_dsn(dsn)[0]) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def _filesystem(path: str) -> str | None:
    """The type of the file system ``path`` is on (ext4, xfs, tmpfs, overlay...): fsync and
    rename costs, and so every durable write, depend on it."""
    real = os.path.realpath(path)
    mount, kind = "", None
    for part in psutil.disk_partitions(all=True):
        inside = real == part.mountpoint or real.startswith(part.mountpoint.rstrip(os.sep) + os.sep)
        # The longest mount point holding the path wins; of equals, the later mount (it hides
        # the earlier one).
        if inside and len(part.mountpoint) >= len(mount):
            mount, kind = part.mountpoint, part.fstype
    return kind


def _run_child(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], out: Any) -> None:
    try:
        out.send((True, fn(*args)))
    except BaseException as exc:
        out.send((False, f"{type(exc).__name__}: {exc}"))


def in_fresh_process(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run one phase in a new interpreter (not a pool worker: phases start processes too)."""
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_run_child, args=(fn, args, send))
    child.start()
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:
        ok, value = False, f"the benchmark process died (exit code {child.exitcode})"
    child.join()
    if not ok:
        raise RuntimeError(f"benchmark phase {fn.__name__} failed: {value}")
    result: dict[str, Any] = value
    return result
