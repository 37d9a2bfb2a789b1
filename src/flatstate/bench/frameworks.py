"""``flatstate bench frameworks``: agent-framework session backends, side by side.

A *turn* is what a framework's runner does to its session around one model call: read the
recent history, then store the turn's two new items (~1 KiB each). For the OpenAI Agents
SDK that is ``get_items(limit=20)`` then ``add_items([user, assistant])``; for Google ADK,
``get_session(config=GetSessionConfig(num_recent_events=20))`` then ``append_event`` twice.
``sessions`` conversations get ``turns`` turns each, in order, from ``concurrency`` asyncio
tasks (a conversation belongs to one task, as a conversation has one turn at a time).
Every contender runs in a fresh process, on an empty database of its own, durable:

- ``sdk-sqlite``: the SDK's ``SQLiteSession`` (SQLite in WAL mode; its default
  ``synchronous=FULL``: an fsync per commit);
- ``sdk-async-sqlite``: the SDK's ``AsyncSQLiteSession`` (aiosqlite; same durability);
- ``adk-sqlite``: ADK's ``SqliteSessionService`` (aiosqlite, a connection per call);
- ``adk-database``: ADK's ``DatabaseSessionService`` on ``sqlite+aiosqlite`` (SQLAlchemy);
- ``flatstate``: :class:`~flatstate.integrations.openai_agents.FlatstateSession` on one
  shared store (every append fsynced; the store opened with ``synchronous="full"``);
- ``flatstate-adk``: flatstate through its ADK session service, run when
  ``flatstate.integrations.adk`` is installed (listed as skipped otherwise).

Session objects (and ADK's service) are made once per contender before the clock starts
and kept, as a server keeps its open conversations; ADK's sessions are created then too
(the SDK's are created by their first append). RSS is sampled every 50 ms: its start,
peak and slope (MiB per 1,000 turns, a least-squares fit) say whether memory stays flat.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from flatstate.bench.measure import in_fresh_process, machine, rss_mib
from flatstate.bench.write import fsync_ms

__all__ = ["CONTENDERS", "OURS", "run_frameworks_bench"]

OURS = "flatstate"
ADK_SLOT = "flatstate-adk"
CONTENDERS = ("sdk-sqlite", "sdk-async-sqlite", "adk-sqlite", "adk-database", OURS, ADK_SLOT)
HISTORY_LIMIT = 20
ITEM_TEXT = 1000  # characters of text in each item: ~1 KiB stored
SAMPLE_SECONDS = 0.05
APP, USER = "bench", "user"

Turn = Callable[[int, int], Awaitable[None]]  # (session number, turn number)


def _text(session: int, turn: int, who: str) -> str:
    stem = f"{who} {session}:{turn} "
    return (stem * (ITEM_TEXT // len(stem) + 1))[:ITEM_TEXT]


def _sdk_items(session: int, turn: int) -> list[Any]:
    """A user message and an assistant reply as the SDK's Runner stores them."""
    return [
        {"role": "user", "content": _text(session, turn, "user")},
        {
            "id": f"msg_{session}_{turn}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {
                    "type": "output_text",
                    "text": _text(session, turn, "assistant"),
                    "annotations": [],
                    "logprobs": [],
                }
            ],
        },
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class _RssSampler:
    """RSS every :data:`SAMPLE_SECONDS` on a daemon thread, with the turns done by then."""

    def __init__(self, turns_done: Callable[[], int]) -> None:
        self.samples: list[tuple[int, float]] = []
        self._turns_done = turns_done
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.samples.append((self._turns_done(), rss_mib()))

    def __enter__(self) -> _RssSampler:
        self.samples.append((0, rss_mib()))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((self._turns_done(), rss_mib()))

    def figures(self) -> dict[str, float]:
        turns = [float(t) for t, _ in self.samples]
        rss = [r for _, r in self.samples]
        mean_t, mean_r = sum(turns) / len(turns), sum(rss) / len(rss)
        spread = sum((t - mean_t) ** 2 for t in turns)
        slope = sum((t - mean_t) * (r - mean_r) for t, r in self.samples) / spread if spread else 0
        return {
            "rss_start_mib": round(rss[0], 1),
            "rss_peak_mib": round(max(rss), 1),
            "rss_end_mib": round(rss[-1], 1),
            "rss_slope_mib_per_1k_turns": round(slope * 1000, 3),
        }


async def _drive(turn: Turn, sessions: int, turns: int, concurrency: int) -> dict[str, Any]:
    """Every session's turns in order; session ``s`` belongs to task ``s % concurrency``."""
    latencies: list[float] = []
    errors: list[str] = []

    async def worker(n: int) -> None:
        mine = range(n, sessions, concurrency)
        for t in range(turns):
            for s in mine:
                start = time.perf_counter()
                try:
                    await turn(s, t)
                except Exception as exc:  # a contender's failure is a figure, not a crash
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                latencies.append((time.perf_counter() - start) * 1000)

    with _RssSampler(lambda: len(latencies)) as rss:
        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "turns": len(latencies),
        "failed_turns": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(elapsed, 3),
        "turns_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(_percentile(latencies, 0.5), 3),
        "p99_ms": round(_percentile(latencies, 0.99), 3),
        **rss.figures(),
    }


# -- the OpenAI Agents SDK's sessions ----------------------------------------------------------


async def _sdk_run(
    make: Callable[[str], Any], sessions: int, turns: int, concurrency: int
) -> dict[str, Any]:
    objects = [make(f"conversation-{s}") for s in range(sessions)]

    async def turn(s: int, t: int) -> None:
        session = objects[s]
        await session.get_items(limit=HISTORY_LIMIT)
        await session.add_items(_sdk_items(s, t))

    try:
        return await _drive(turn, sessions, turns, concurrency)
    finally:
        for session in objects:
            closed = session.close()
            if asyncio.iscoroutine(closed):
                await closed


async def _sdk_sqlite(work: str, sessions: int, turns: int, concurrency: int) -> dict[str, Any]:
    from agents.memory import SQLiteSession

    path = os.path.join(work, "sdk.sqlite")
    return await _sdk_run(lambda sid: SQLiteSession(sid, path), sessions, turns, concurrency)


async def _sdk_async_sqlite(
    work: str, sessions: int, turns: int, concurrency: int
) -> dict[str, Any]:
    from agents.extensions.memory import AsyncSQLiteSession

    path = os.path.join(work, "sdk-async.sqlite")
    return await _sdk_run(lambda sid: AsyncSQLiteSession(sid, path), sessions, turns, concurrency)


async def _flatstate(work: str, sessions: int, turns: int, concurrency: int) -> dict[str, Any]:
    import flatstate
    from flatstate.integrations.openai_agents import FlatstateSession

    async with flatstate.open_async_store(os.path.join(work, "state"), synchronous="full") as store:
        return await _sdk_run(
            lambda sid: FlatstateSession(sid, store), sessions, turns, concurrency
        )


# -- Google ADK's session services --------------------------------------------------------------


def _adk_events(session: int, turn: int) -> list[Any]:
    from google.adk.events import Event
    from google.genai import types

    invocation = f"inv-{session}-{turn}"
    return [
        Event(
            author=who,
            invocation_id=invocation,
            content=types.Content(
                role="user" if who == "user" else "model",
                parts=[types.Part(text=_text(session, turn, who))],
            ),
        )
        for who in ("user", "assistant")
    ]


async def _adk_run(service: Any, sessions: int, turns: int, concurrency: int) -> dict[str, Any]:
    from google.adk.sessions.base_session_service import GetSessionConfig

    ids = [f"conversation-{s}" for s in range(sessions)]
    for session_id in ids:
        await service.create_session(app_name=APP, user_id=USER, session_id=session_id)
    config = GetSessionConfig(num_recent_events=HISTORY_LIMIT)

    async def turn(s: int, t: int) -> None:
        session = await service.get_session(
            app_name=APP, user_id=USER, session_id=ids[s], config=config
        )
        for event in _adk_events(s, t):
            await service.append_event(session, event)

    try:
        return await _drive(turn, sessions, turns, concurrency)
    finally:
        close = getattr(service, "close", None) or getattr(service, "aclose", None)
        if close is not None:
            closed = close()
            if asyncio.iscoroutine(closed):
                await closed


async def _adk_sqlite(work: str, sessions: int, turns: int, concurrency: int) -> dict[str, Any]:
    from google.adk.sessions.sqlite_session_service import SqliteSessionService

    service = SqliteSessionService(os.path.join(work, "adk.sqlite"))
    return await _adk_run(service, sessions, turns, concurrency)


async def _adk_database(work: str, sessions: int, turns: int, concurrency: int) -> dict[str, Any]:
    from google.adk.sessions.database_session_service import DatabaseSessionService

    service = DatabaseSessionService(f"sqlite+aiosqlite:///{os.path.join(work, 'adk-db.sqlite')}")
    return await _adk_run(service, sessions, turns, concurrency)


async def _flatstate_adk(work: str, sessions: int, turns: int, concurrency: int) -> dict[str, Any]:
    # THE SLOT for flatstate through its ADK adapter (flatstate.integrations.adk, written
    # apart from this benchmark): the same ADK turn as the contenders above. Imported by
    # name so that this module does not depend on the adapter being there.
    adk = importlib.import_module("flatstate.integrations.adk")
    service = adk.FlatstateSessionService(os.path.join(work, "state"), synchronous="full")
    return await _adk_run(service, sessions, turns, concurrency)


RUNS: dict[str, Callable[[str, int, int, int], Coroutine[Any, Any, dict[str, Any]]]] = {
    "sdk-sqlite": _sdk_sqlite,
    "sdk-async-sqlite": _sdk_async_sqlite,
    "adk-sqlite": _adk_sqlite,
    "adk-database": _adk_database,
    OURS: _flatstate,
    ADK_SLOT: _flatstate_adk,
}
NEEDS = {
    "sdk-sqlite": ("agents", "openai-agents"),
    "sdk-async-sqlite": ("aiosqlite", "openai-agents"),
    "adk-sqlite": ("google.adk", "google-adk"),
    "adk-database": ("sqlalchemy", "google-adk[db]"),
    OURS: ("agents", "openai-agents"),
    ADK_SLOT: ("flatstate.integrations.adk", "flatstate's ADK adapter"),
}


def missing(contender: str) -> str | None:
    """Why ``contender`` cannot run here (a package not installed), or None."""
    import importlib.util

    needed = [NEEDS[contender][0], *(("google.adk",) if contender.startswith("adk") else ())]
    for module in needed:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            return f"{module} is not installed ({NEEDS[contender][1]})"
    return None


def _one_run(
    contender: str, root: str, sessions: int, turns: int, concurrency: int
) -> dict[str, Any]:
    """One contender at one concurrency in this (fresh) process, on an empty database."""
    work = tempfile.mkdtemp(prefix=f"{contender}-", dir=root)
    try:
        result = asyncio.run(RUNS[contender](work, sessions, turns, concurrency))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"contender": contender, "concurrency": concurrency, **result}


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for package in ("openai-agents", "google-adk", "sqlalchemy", "aiosqlite"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def run_frameworks_bench(
    *,
    sessions: int = 1_000,
    turns: int = 4,
    concurrency: tuple[int, ...] = (1, 64),
    contenders: tuple[str, ...] = CONTENDERS,
    directory: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Every contender at every concurrency, each run in a fresh process."""
    root = tempfile.mkdtemp(prefix="flatstate-bench-frameworks-", dir=directory)
    try:
        runs, skipped = [], {}
        fsync = {"before": fsync_ms(root)}
        for contender in contenders:
            why = missing(contender)
            if why is not None:
                skipped[contender] = why
        for count in concurrency:
            for contender in contenders:
                if contender in skipped:
                    continue
                progress(f"{contender}, {count} concurrent sessions")
                runs.append(in_fresh_process(_one_run, contender, root, sessions, turns, count))
        fsync["after"] = fsync_ms(root)
        found = machine(root)
        found["versions"].update(_versions())
        return {
            "machine": found,
            "fsync_ms": fsync,
            "sessions": sessions,
            "turns_per_session": turns,
            "history_limit": HISTORY_LIMIT,
            "item_chars": ITEM_TEXT,
            "runs": runs,
            "skipped": skipped,
            "ratios": _ratios(runs),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _ratios(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per concurrency: flatstate's turns/s over the best contender's (not flatstate's)."""
    out: dict[str, dict[str, Any]] = {}
    for count in sorted({run["concurrency"] for run in runs}):
        here = [run for run in runs if run["concurrency"] == count]
        ours = next((r for r in here if r["contender"] == OURS), None)
        theirs = [r for r in here if not r["contender"].startswith(OURS)]
        best = max(theirs, key=lambda r: r["turns_per_s"], default=None)
        if ours is None or best is None or not best["turns_per_s"]:
            continue
        out[str(count)] = {
            "best_contender": best["contender"],
            "flatstate_vs_best": round(ours["turns_per_s"] / best["turns_per_s"], 2),
        }
    return out
