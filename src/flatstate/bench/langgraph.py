"""``flatstate bench langgraph``: LangGraph checkpointers side by side, each in a fresh process.

The workload is what a graph with a large, slowly changing state hands its checkpointer:
``threads`` threads take ``steps`` steps in all; the state is a dict of documents
(``state_kib`` in ``change_kib`` entries) and a step counter, and every step rewrites one
document. A step is what LangGraph's loop does: ``put_writes`` of the node's write (the
whole new dict, as a node without a reducer returns it) on the current checkpoint, then
``put`` of the next one. Then ``gets`` calls of ``get_tuple`` for the latest checkpoint of
the threads in turn (what every ``invoke`` starts with), in ``GET_ROUNDS`` rounds, the best
round counting.

Contenders: ``SqliteSaver`` and ``PostgresSaver`` called from one thread, step after step;
``AsyncSqliteSaver`` with one task per thread, all at once; ``FlatstateSaver`` both ways on
SQLite (``synchronous`` normal and, like SqliteSaver's default, full) and on PostgreSQL.
Figured: put, put_writes and get_tuple rates, bytes on disk at the end (files after the
saver closed; on PostgreSQL the tables with their indexes and TOAST), and RSS.

Every contender runs ``runs`` times, the whole list once per run, each time in a fresh
process: a rate counts its contender's best run, as timeit takes the best of its repeats.
This machine's speed drifts by up to 2x for seconds at a time (the same get_tuple loop in
one process: 8 us a call, then 15), so one run each compares a contender's good minute with
another's bad one. Every run's rates are in the JSON (``runs_each``).

PostgreSQL: the server at ``dsn``, else a throwaway one from ``scripts/postgres`` (in a
checkout with PostgreSQL's binaries installed), else those contenders are left out, saying
why. Each contender gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flatstate.bench.measure import in_fresh_process, machine, settled_rss_mib

__all__ = ["CONTENDERS", "LangGraphBenchOptions", "run_langgraph_bench"]

BASELINE = "SqliteSaver"
# get_tuple is timed in this many rounds of ``gets`` calls, the best one counting (as
# timeit does): a round of 2,000 calls of ~10 us is 20 ms, which one hiccup of the machine
# can double.
GET_ROUNDS = 5
CONTENDERS = (
    "SqliteSaver",
    "AsyncSqliteSaver",
    "PostgresSaver",
    "FlatstateSaver sqlite",
    "FlatstateSaver sqlite async",
    "FlatstateSaver sqlite full",
    "FlatstateSaver postgres",
    "FlatstateSaver postgres async",
)
POSTGRES = frozenset(c for c in CONTENDERS if "ostgres" in c)
ASYNC = frozenset(c for c in CONTENDERS if "Async" in c or c.endswith("async"))


@dataclass
class LangGraphBenchOptions:
    threads: int = 100
    steps: int = 1000
    state_kib: int = 64
    change_kib: int = 1
    gets: int = 2000
    runs: int = 3
    seed: int = 7
    dsn: str | None = None
    contenders: tuple[str, ...] = CONTENDERS


class Workload:
    """The checkpoints and writes of every step, the same in every process (seeded)."""

    def __init__(self, options: LangGraphBenchOptions) -> None:
        self.options = options
        self.entries = max(2, options.state_kib // max(1, options.change_kib))
        self.entry_bytes = options.change_kib * 1024
        self._random = random.Random(options.seed)

    def _text(self) -> str:
        return self._random.randbytes(self.entry_bytes // 2).hex()

    def threads(self) -> list[tuple[str, int]]:
        """(thread_id, steps) with the steps shared out over the threads."""
        count = max(1, self.options.threads)
        base, extra = divmod(self.options.steps, count)
        return [(f"thread-{t}", base + (1 if t < extra else 0)) for t in range(count)]

    def initial(self) -> dict[str, str]:
        return {f"doc{i}": self._text() for i in range(self.entries)}

    def step(self, docs: dict[str, str], n: int) -> dict[str, str]:
        new = dict(docs)
        new[f"doc{n % self.entries}"] = self._text()
        return new


def checkpoint(n: int, docs: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A checkpoint and its metadata as LangGraph's loop makes them at step ``n``."""
    from langgraph.checkpoint.base.id import uuid6

    versions = {"docs": n + 1, "step": n + 1, "branch:to:edit": n + 1}
    cp = {
        "v": 4,
        "id": str(uuid6(clock_seq=n)),
        "ts": datetime.now(UTC).isoformat(),
        "channel_values": {"docs": docs, "step": n, "branch:to:edit": None},
        "channel_versions": versions,
        "versions_seen": {"edit": {"branch:to:edit": n}, "__input__": {}},
        "updated_channels": ["docs", "step"],
    }
    return cp, {"source": "loop", "step": n, "parents": {}}


def _steps(workload: Workload) -> Iterator[tuple[str, Iterator[tuple[int, dict[str, str]]]]]:
    for thread_id, count in workload.threads():
        docs = workload.initial()

        def run(docs: dict[str, str] = docs, count: int = count) -> Iterator[tuple[int, Any]]:
            for n in range(count + 1):
                if n:
                    docs = workload.step(docs, n)
                yield n, docs

        yield thread_id, run()


# -- one contender, in its own process ------------------------------------------------
def _sync_steps(saver: Any, workload: Workload) -> dict[str, float]:
    put = put_writes = 0.0
    puts = writes = 0
    for thread_id, steps in _steps(workload):
        config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        for n, docs in steps:
            cp, md = checkpoint(n, docs)
            if n:
                start = time.perf_counter()
                saver.put_writes(config, [("docs", docs), ("step", n)], f"task-{n}")
                put_writes += time.perf_counter() - start
                writes += 1
            start = time.perf_counter()
            config = saver.put(config, cp, md, cp["channel_versions"])
            put += time.perf_counter() - start
            puts += 1
    return {"puts": puts, "put_seconds": put, "writes": writes, "writes_seconds": put_writes}


async def _async_steps(saver: Any, workload: Workload) -> dict[str, float]:
    prepared = [(thread_id, list(steps)) for thread_id, steps in _steps(workload)]
    puts = sum(len(steps) for _, steps in prepared)

    async def thread(thread_id: str, steps: list[tuple[int, Any]]) -> None:
        config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        for n, docs in steps:
            cp, md = checkpoint(n, docs)
            if n:
                await saver.aput_writes(config, [("docs", docs), ("step", n)], f"task-{n}")
            config = await saver.aput(config, cp, md, cp["channel_versions"])

    start = time.perf_counter()
    await asyncio.gather(*(thread(t, s) for t, s in prepared))
    wall = time.perf_counter() - start
    # Puts and writes interleave on one clock: the wall time is shared between them.
    writes = puts - len(prepared)
    return {
        "puts": puts,
        "put_seconds": wall * puts / (puts + writes),
        "writes": writes,
        "writes_seconds": wall * writes / (puts + writes),
        "concurrent_threads": len(prepared),
    }


def _sync_gets(saver: Any, workload: Workload, gets: int) -> float:
    threads = [t for t, _ in workload.threads()]
    configs = [{"configurable": {"thread_id": t, "checkpoint_ns": ""}} for t in threads]
    for config in configs:  # every contender answers from its own warm state
        if saver.get_tuple(config) is None:
            raise RuntimeError(f"{config} has no checkpoint")
    best = float("inf")
    for _ in range(GET_ROUNDS):
        start = time.perf_counter()
        for i in range(gets):
            saver.get_tuple(configs[i % len(configs)])
        best = min(best, time.perf_counter() - start)
    return best


async def _async_gets(saver: Any, workload: Workload, gets: int) -> float:
    threads = [t for t, _ in workload.threads()]
    configs = [{"configurable": {"thread_id": t, "checkpoint_ns": ""}} for t in threads]
    for config in configs:
        if await saver.aget_tuple(config) is None:
            raise RuntimeError(f"{config} has no checkpoint")
    best = float("inf")
    for _ in range(GET_ROUNDS):
        start = time.perf_counter()
        for i in range(gets):
            await saver.aget_tuple(configs[i % len(configs)])
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def _open(name: str, place: str) -> Iterator[Any]:
    if name == "SqliteSaver":
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(os.path.join(place, "sqlite-saver.db"), check_same_thread=False)
        try:
            saver: Any = SqliteSaver(conn)
            saver.setup()
            yield saver
        finally:
            conn.close()
    elif name == "PostgresSaver":
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(place) as pg_saver:
            pg_saver.setup()
            yield pg_saver
    else:
        from flatstate.integrations.langgraph import FlatstateSaver

        durability = "full" if name.endswith("full") else "normal"
        options: dict[str, Any] = {"synchronous": durability} if "postgres" not in name else {}
        with FlatstateSaver(place, **options) as ours:
            yield ours


def _synchronous_of(name: str, place: str) -> str:
    if "postgres" in name.lower():
        return "server"
    if name == "SqliteSaver" or name == "AsyncSqliteSaver":
        # The saver leaves the driver's default; read it the same way.
        conn = sqlite3.connect(os.path.join(place, "sqlite-saver.db"))
        try:
            level = conn.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            conn.close()
        return {0: "off", 1: "normal", 2: "full", 3: "extra"}.get(level, str(level))
    return "full" if name.endswith("full") else "normal"


def _contender(name: str, place: str, options: dict[str, Any]) -> dict[str, Any]:
    opts = LangGraphBenchOptions(**options)
    workload = Workload(opts)
    rss_start = settled_rss_mib()
    if name == "AsyncSqliteSaver":
        figures, get_seconds = asyncio.run(_async_sqlite(place, workload, opts.gets))
    elif name in ASYNC:
        figures, get_seconds = asyncio.run(_async_flatstate(name, place, workload, opts.gets))
    else:
        with _open(name, place) as saver:
            figures = _sync_steps(saver, workload)
            get_seconds = _sync_gets(saver, workload, opts.gets)
            rss_end = settled_rss_mib()
    if name in ASYNC:
        rss_end = settled_rss_mib()
    return {
        **figures,
        "put_per_s": round(figures["puts"] / figures["put_seconds"]),
        "put_writes_per_s": round(figures["writes"] / figures["writes_seconds"])
        if figures["writes"]
        else 0,
        "gets": opts.gets,
        "get_tuple_per_s": round(opts.gets / get_seconds) if get_seconds else 0,
        "rss_start_mib": round(rss_start, 1),
        "rss_end_mib": round(rss_end, 1),
        "synchronous": _synchronous_of(name, place),
    }


async def _async_sqlite(place: str, workload: Workload, gets: int) -> tuple[Any, float]:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = os.path.join(place, "sqlite-saver.db")
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        await saver.setup()
        figures = await _async_steps(saver, workload)
        return figures, await _async_gets(saver, workload, gets)


async def _async_flatstate(
    name: str, place: str, workload: Workload, gets: int
) -> tuple[Any, float]:
    from flatstate.integrations.langgraph import FlatstateSaver

    async with FlatstateSaver.from_conn_string(place) as saver:
        figures = await _async_steps(saver, workload)
        return figures, await _async_gets(saver, workload, gets)


# -- disk -----------------------------------------------------------------------------
def _files_bytes(directory: str) -> int:
    return sum(
        p.stat().st_size
        for p in Path(directory).rglob("*")
        if p.is_file() and p.suffix != ".shm" and not p.name.endswith("-shm")
    )


def _schema_bytes(dsn: str, schema: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


def _drop_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _create_schema(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


# -- PostgreSQL server ----------------------------------------------------------------
def _scripts_postgres() -> Path | None:
    script = Path(__file__).resolve().parents[3] / "scripts" / "postgres"
    return script if script.is_file() else None


@contextlib.contextmanager
def postgres_server(dsn: str | None) -> Iterator[tuple[str | None, str]]:
    """(dsn, where it came from): the one given, a throwaway one, or (None, why not)."""
    if dsn:
        yield dsn, "given"
        return
    script = _scripts_postgres()
    if script is None:
        yield None, "no --dsn and no scripts/postgres (run from a checkout, or pass --dsn)"
        return
    home = tempfile.mkdtemp(prefix="flatstate-bench-pg-")
    started = subprocess.run(
        ["bash", str(script), "start", home], capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        why = started.stderr.strip().splitlines()[-1] if started.stderr.strip() else "failed"
        yield None, f"no throwaway PostgreSQL server: {why}"
        return
    try:
        yield started.stdout.strip(), "throwaway (scripts/postgres)"
    finally:
        subprocess.run(["bash", str(script), "stop", home], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _with_query(dsn: str, query: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


# -- the run --------------------------------------------------------------------------
def run_langgraph_bench(
    options: LangGraphBenchOptions, progress: Callable[[str], None] = lambda phase: None
) -> dict[str, Any]:
    """Run every contender (see the module docstring) and return the figures."""
    from flatstate.backends.postgres.dsn import redact_dsn

    unknown = sorted(set(options.contenders) - set(CONTENDERS))
    if unknown:
        raise ValueError(f"unknown contender {unknown[0]!r}; choose from {', '.join(CONTENDERS)}")
    root = tempfile.mkdtemp(prefix="flatstate-bench-langgraph-")
    plain = {**asdict(options), "dsn": None, "contenders": list(options.contenders)}
    wanted_pg = any(c in POSTGRES for c in options.contenders)
    result: dict[str, Any] = {"options": plain, "runs": {}, "skipped": {}}
    try:
        with postgres_server(options.dsn if wanted_pg else None) as (dsn, source):
            result["machine"] = machine(root, dsn if wanted_pg else None)
            result["machine"]["versions"].update(_langgraph_versions())
            result["postgres"] = (
                {"server": source, "dsn": redact_dsn(dsn) if dsn else None} if wanted_pg else None
            )
            each: dict[str, list[dict[str, Any]]] = {}
            for run in range(1, options.runs + 1):
                for name in options.contenders:
                    if name in POSTGRES and dsn is None:
                        result["skipped"][name] = source
                        continue
                    progress(
                        f"run {run}/{options.runs}, {name}: {options.steps:,} steps over "
                        f"{options.threads} threads"
                    )
                    each.setdefault(name, []).append(_run_one(name, root, dsn, plain))
            result["runs"] = {name: _best(runs) for name, runs in each.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _ratios(result)
    return result


RATES = ("put_per_s", "put_writes_per_s", "get_tuple_per_s")


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's figures over its runs: each rate its best run's, RSS and disk the
    largest seen; the other figures those of the run with the best put rate."""
    best = dict(max(runs, key=lambda r: r["put_per_s"]))
    for rate in RATES:
        best[rate] = max(r[rate] for r in runs)
    for figure in ("rss_start_mib", "rss_end_mib", "disk_bytes"):
        best[figure] = max(r[figure] for r in runs)
    best["runs_each"] = [{rate: r[rate] for rate in RATES} for r in runs]
    return best


def _run_one(name: str, root: str, dsn: str | None, options: dict[str, Any]) -> dict[str, Any]:
    slug = name.replace(" ", "-").lower()
    if name in POSTGRES:
        assert dsn is not None
        schema = f"bench_{slug.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        if name == "PostgresSaver":
            _create_schema(dsn, schema)
            place = _with_query(dsn, f"options=-csearch_path%3D{schema}")
        else:
            place = _with_query(dsn, f"schema={schema}")
        try:
            figures = in_fresh_process(_contender, name, place, options)
            figures["disk_bytes"] = _schema_bytes(dsn, schema)
        finally:
            _drop_schema(dsn, schema)
        return figures
    place = os.path.join(root, slug)
    os.makedirs(place, mode=0o700)
    figures = in_fresh_process(_contender, name, place, options)
    figures["disk_bytes"] = _files_bytes(place)
    shutil.rmtree(place, ignore_errors=True)
    return figures


def _ratios(result: dict[str, Any]) -> None:
    runs = result["runs"]
    base = runs.get(BASELINE)
    if not base:
        return
    for name, run in runs.items():
        if name == BASELINE:
            continue
        run["vs_sqlite_saver"] = {
            "put": _ratio(run["put_per_s"], base["put_per_s"]),
            "get_tuple": _ratio(run["get_tuple_per_s"], base["get_tuple_per_s"]),
            "disk": _ratio(run["disk_bytes"], base["disk_bytes"]),
        }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _langgraph_versions() -> dict[str, str | None]:
    import importlib.metadata

    found: dict[str, str | None] = {}
    for package in (
        "langgraph",
        "langgraph-checkpoint",
        "langgraph-checkpoint-sqlite",
        "langgraph-checkpoint-postgres",
        "aiosqlite",
    ):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found
