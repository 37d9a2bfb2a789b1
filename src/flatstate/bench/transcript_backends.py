"""``flatstate bench transcript --backend postgres``: transcripts as files beside transcripts
as PostgreSQL rows, in the same run, each phase in a fresh process.

- appends/s from 1 task and from 64 concurrent asyncio tasks (``AsyncTranscript``), every
  append durable when it returns (a file: fsync per append; PostgreSQL: its commit, with
  the server's ``synchronous_commit``);
- ``tail(20)`` and ``context()`` latency on a transcript of ``entries`` lines, median and
  p99: warm (the same object, nothing changed) and cold (a new reader each call).

The file contender is a flatstate state directory (sessions in SQLite, transcripts in
``transcripts/``); the PostgreSQL one a namespace of its own, removed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from flatstate.bench.measure import in_fresh_process, machine

__all__ = ["run_backend_comparison"]

CONTENDERS = ("file", "postgres")


def _message(i: int) -> dict[str, Any]:
    role = "user" if i % 2 == 0 else "assistant"
    text = f"{role} {i} " + "lorem ipsum " * 16
    return {
        "type": "message",
        "message": {"role": role, "content": [{"type": "text", "text": text}]},
    }


def _location(kind: str, root: str, dsn: str, name: str) -> str:
    if kind == "file":
        return os.path.join(root, name)
    query = urlencode(
        {
            "namespace": f"bench-tx-{name}-{uuid.uuid4().hex[:8]}",
            "state_dir": os.path.join(root, name),
        },
        quote_via=quote,
    )
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


def _appends(location: str, tasks: int, seconds: float) -> dict[str, Any]:
    """Appends/s from ``tasks`` asyncio tasks to one transcript for about ``seconds``."""
    from flatstate import open_async_store

    entries = [_message(i) for i in range(64)]

    async def main() -> dict[str, Any]:
        async with open_async_store(location) as store:
            transcript = store.transcript("main")
            await transcript.append(entries[0])  # opens it: the session, the table, the file
            done = 0
            stop = time.perf_counter() + seconds

            async def one(t: int) -> None:
                nonlocal done
                i = t
                while time.perf_counter() < stop:
                    await transcript.append(entries[i % 64])
                    done += 1
                    i += tasks

            started = time.perf_counter()
            await asyncio.gather(*(one(t) for t in range(tasks)))
            elapsed = time.perf_counter() - started
            commits = getattr(getattr(store.sync.backend, "transcripts", None), "appender", None)
            return {
                "tasks": tasks,
                "appends": done,
                "per_s": round(done / elapsed),
                "commits": commits.commits if commits is not None else None,
            }

    return asyncio.run(main())


def _timed(fn: Callable[[], Any], rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
    }


def _reads(location: str, entries: int, rounds: int) -> dict[str, Any]:
    """tail(20) and context() of a transcript of ``entries`` lines with a compaction near
    its end (the kept part: 20 entries, then 10 more)."""
    import flatstate
    from flatstate.transcripts import file as files

    with flatstate.open_store(location) as store:
        transcript = store.transcript("main")
        batch: list[dict[str, Any]] = []
        for i in range(entries - 11):
            batch.append({**_message(i), "id": f"e{i}"})
            if len(batch) == 1000:
                transcript.append_many(batch)
                batch = []
        transcript.append_many(batch)
        kept = f"e{entries - 31}"
        transcript.append(
            {
                "type": "compaction",
                "summary": "earlier",
                "firstKeptEntryId": kept,
                "tokensBefore": 1,
            }
        )
        transcript.append_many([_message(i) for i in range(10)])
        context = transcript.context()
        fresh: Callable[[], Any]
        backend = store.backend
        if hasattr(backend, "transcripts"):
            name = transcript.path.rsplit("#", 1)[1]

            def fresh() -> Any:
                return backend.transcripts.named(name, transcript.session_id)

            def cold() -> Any:
                backend.transcripts._objects.clear()
                return fresh()
        else:

            def fresh() -> Any:
                return files.Transcript(transcript.path)

            def cold() -> Any:
                files._index.clear()
                return fresh()

        return {
            "entries": entries,
            "context_messages": len(context.messages),
            "tail20_warm": _timed(lambda: transcript.tail(20), rounds),
            "tail20_cold": _timed(lambda: fresh().tail(20), rounds),
            "context_warm": _timed(transcript.context, rounds),
            "context_cold": _timed(lambda: cold().context(), rounds),
        }


def _drop(location: str) -> None:
    import psycopg

    from flatstate.backends.postgres import split_dsn

    dsn, ours = split_dsn(location)
    schema = ours.get("schema", "flatstate")
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        ns = ours["namespace"]
        conn.execute(f'DELETE FROM "{schema}".transcripts WHERE ns = %s', (ns,))
        for table in ("sessions", "blobs", "changes", "namespaces"):
            conn.execute(f'DELETE FROM "{schema}".{table} WHERE ns = %s', (ns,))


def run_backend_comparison(
    dsn: str,
    *,
    seconds: float = 3.0,
    entries: int = 20_000,
    rounds: int = 200,
    progress: Callable[[str], None] = lambda phase: None,
) -> dict[str, Any]:
    """Every phase on both contenders, each in a fresh process; removed afterwards."""
    from flatstate.backends.postgres import redact_dsn

    root = tempfile.mkdtemp(prefix="flatstate-transcript-backends-")
    made: list[str] = []
    result: dict[str, Any] = {
        "machine": machine(root, dsn),
        "options": {"dsn": redact_dsn(dsn), "seconds": seconds, "entries": entries},
        "contenders": {},
    }
    try:
        for kind in CONTENDERS:
            figures: dict[str, Any] = {"appends": []}
            for tasks in (1, 64):
                progress(f"{kind}: appends from {tasks} task{'s' if tasks > 1 else ''}")
                location = _location(kind, root, dsn, f"append{tasks}")
                made.append(location)
                figures["appends"].append(in_fresh_process(_appends, location, tasks, seconds))
            progress(f"{kind}: tail and context of {entries:,} lines")
            location = _location(kind, root, dsn, "reads")
            made.append(location)
            figures["reads"] = in_fresh_process(_reads, location, entries, rounds)
            result["contenders"][kind] = figures
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for location in made:
            if location.startswith("postgres"):
                _drop(location)
