"""``flatstate bench seed``: the workload that grew OpenClaw's gateway by ~1 GB a minute.

A store of OpenClaw-shaped sessions is read round-robin, one session at a time
(``--read entry``) or whole (``--read store``, what ``loadSessionStore``
returned), with one patch (``updatedAt``, a counter + 1) every
``--write-every`` operations; every ``--compaction-every`` seconds a session's
transcript grows, is compacted with the built-in summarizer, and an
after-compaction hook recalls from a facts store of ``--facts`` facts.

The strategies run the same loop: ``flatstate`` (reads share frozen objects)
and the contenders of :mod:`flatstate.bench.contenders` (a plain dict, a
cache that copies the entry read, caches that copy the whole store). Every
write goes through flatstate, so that each side does the same durable work;
which contenders' stores keep a cache, and why, is said there.

Each strategy runs in fresh processes (``processes`` of them for flatstate,
one for a contender). Figures: operations, reads and writes a second summed
over the workers; latency percentiles of get, snapshot and patch (every 7th
operation is timed, into a fixed reservoir per worker, merged); RSS (summed
and of the largest worker), the Python heap (allocated blocks) and the
cache's bytes every ``sample_every`` seconds; the RSS slope after warm-up.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import accumulate
from queue import Empty
from typing import Any

from flatstate.bench.contenders import (
    CACHED_ENGINE,
    CONTENDERS,
    ISOLATING,
    WHOLE_STORE,
    open_contender,
)
from flatstate.bench.measure import machine, rss_mib
from flatstate.bench.store import location, sessions_json_size

__all__ = [
    "OURS",
    "STRATEGIES",
    "SeedOptions",
    "merged_percentiles",
    "run_seed",
    "slope_per_min",
    "soak_verdict",
]

OURS = "flatstate"
STRATEGIES = (OURS, *CONTENDERS)
READS = ("entry", "store", "mixed")
KINDS = ("get", "snapshot", "patch")
COMPACTION_TARGETS = 16
COMPACTION_APPEND = 40
KEEP_RECENT_TOKENS = 2_000
RESERVOIR = 16_384
OUR_CACHE_BYTES = 1 << 30  # the whole store stays cached, as a gateway would configure it
# The patch bumps a counter of the benchmark's own: compactionCount belongs to
# compaction (its transcript is the truth and the count only catches up), so a
# patch that raced a compaction on it could hide one increment in a max().
PATCH_COUNTER = "benchPatches"
SLOPE_WINDOW = 30.0
LEAK_GOAL_MIB_PER_MIN = 1.0
TIME_EVERY = 7  # coprime with the default write interval, so patches are timed too


@dataclass
class SeedOptions:
    entries: int = 2000
    read: str = "entry"
    write_every: int = 10
    compaction_every: float = 5.0
    facts: int = 8467
    strategy: str = "all"
    profile: str = "small"
    seconds: float = 10.0
    backend: str = "sqlite"
    processes: int = 1
    tasks: int = 0
    """asyncio tasks per flatstate process running the loop on the async API (0: the plain
    synchronous loop, one caller)."""
    sample_every: float = 0.5
    warmup_fraction: float = 0.25
    min_warmup: float = 10.0
    directory: str | None = None
    strategies: list[str] = field(default_factory=list)

    @property
    def warmup(self) -> float:
        """Seconds before the slope counts: the first caches and files fill in that time."""
        return max(self.seconds * self.warmup_fraction, min(self.min_warmup, self.seconds / 2))

    @property
    def judged(self) -> bool:
        """Whether the run is long enough for its RSS slope to mean anything."""
        return self.seconds - self.warmup >= SLOPE_WINDOW

    def chosen(self) -> list[str]:
        return list(STRATEGIES) if self.strategy == "all" else [self.strategy]


class _Reservoir:
    """A fixed-size uniform sample of latencies: memory never grows with the run."""

    def __init__(self, size: int = RESERVOIR) -> None:
        self.values = array("d")
        self.size = size
        self.seen = 0
        self.rng = random.Random(7)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            slot = self.rng.randrange(self.seen)
            if slot < self.size:
                self.values[slot] = value


def merged_percentiles(parts: list[tuple[list[float], int]]) -> dict[str, float] | None:
    """p50, p99 and p99.9 in ms over the reservoirs of every worker, with the number timed.

    Each value stands for ``seen / len(values)`` timings of its worker, so a
    worker that timed more operations weighs more, as in one pooled sample.
    """
    weighted = sorted((v, seen / len(values)) for values, seen in parts if values for v in values)
    if not weighted:
        return None
    cumulative = list(accumulate(w for _, w in weighted))

    def at(q: float) -> float:
        index = min(len(weighted) - 1, bisect_right(cumulative, q * cumulative[-1]))
        return round(weighted[index][0] * 1000, 4)

    return {
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "samples": sum(seen for _, seen in parts),
    }


def slope_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return round(cov / var * 60, 3)


def _message(i: int, key: str) -> dict[str, Any]:
    role = "user" if i % 2 == 0 else "assistant"
    text = f"{role} turn {i} in {key}: " + "notes about the deploy, the tests and the plan. " * 10
    return {
        "type": "message",
        "message": {"role": role, "content": [{"type": "text", "text": text}]},
    }


def _setup(options: SeedOptions, root: str) -> dict[str, Any]:
    """Build the store, the compaction targets' transcripts and the facts once."""
    from flatstate import open_store
    from flatstate.bench.facts import make_facts
    from flatstate.bench.store import _populate
    from flatstate.facts import NewFact, open_facts
    from flatstate.transcripts import FsyncPolicy

    path = location(root, options.entries, options.backend)
    json_bytes, derived = sessions_json_size(
        path, _populate(path, options.entries, options.profile)
    )
    with open_store(path, transcript_fsync=FsyncPolicy.batched()) as store:
        targets = list(store.keys())[:COMPACTION_TARGETS]
        for key in targets:
            transcript = store.transcript(key)
            transcript.append_many([_message(i, key) for i in range(60)])
            transcript.flush()
    facts_dir = os.path.join(root, "facts")
    with open_facts(facts_dir) as facts:
        batch: list[NewFact] = []
        for fact in make_facts(options.facts, seed=8467):
            batch.append(NewFact(**fact))
            if len(batch) == 1000:
                facts.add_many(batch)
                batch = []
        if batch:
            facts.add_many(batch)
    return {
        "store": path,
        "facts": facts_dir,
        "targets": targets,
        "sessions_json_bytes": json_bytes,
        "sessions_json_derived": derived,
    }


def _worker(
    options: SeedOptions,
    setup: dict[str, Any],
    strategy: str,
    worker: int,
    barrier: Any,
    progress: Any,
) -> dict[str, Any]:
    from flatstate import open_store
    from flatstate.compaction import compact
    from flatstate.facts import after_compaction_context, open_facts
    from flatstate.transcripts import FsyncPolicy

    ours = strategy == OURS
    store = open_store(
        setup["store"],
        transcript_fsync=FsyncPolicy.batched(),
        cache_bytes=OUR_CACHE_BYTES if ours or strategy in CACHED_ENGINE else 0,
    )
    facts = open_facts(setup["facts"])
    keys = list(store.keys())
    n = len(keys)
    cache = None if ours else open_contender(strategy, dict(store.items()))
    get = store.get if cache is None else cache.get
    snapshot = store.snapshot if cache is None else cache.snapshot
    # A whole-store copy takes up to a second: check the clock after every operation.
    batch = 1 if strategy in WHOLE_STORE else 64
    latencies = {kind: _Reservoir() for kind in KINDS}
    write_every, read = options.write_every, options.read
    counts = {"ops": 0, "reads": 0, "writes": 0, "compactions": 0}
    compaction_ms: list[float] = []
    samples: list[tuple[float, float, int, int]] = []  # (t, rss MiB, heap blocks, cache bytes)

    def patch(key: str) -> None:
        entry = store.update(
            lambda draft: draft.patch(
                key, {PATCH_COUNTER: (draft[key].get(PATCH_COUNTER) or 0) + 1}
            )
        )
        if cache is not None:
            cache.written(key, entry)

    def compaction_event(number: int) -> None:
        key = setup["targets"][(number + worker) % len(setup["targets"])]
        transcript = store.transcript(key)
        transcript.append_many([_message(i, key) for i in range(COMPACTION_APPEND)])
        prompt = f"what was decided about the deploy in {key}?"

        def recall(payload: dict[str, Any]) -> None:
            after_compaction_context(facts, prompt, budget_tokens=800)

        started = time.perf_counter()
        result = compact(store, key, keep_recent_tokens=KEEP_RECENT_TOKENS, after=[recall])
        compaction_ms.append((time.perf_counter() - started) * 1000)
        if result is not None:
            counts["compactions"] += 1
            if cache is not None and (entry := store.get(key)) is not None:
                cache.written(key, entry)

    barrier.wait(120)
    start = time.perf_counter()
    next_sample = start
    next_compaction = start + options.compaction_every
    next_report = start + 1.0
    deadline = start + options.seconds

    def housekeeping(now: float) -> Callable[[], None] | None:
        """Sample, report progress; the compaction due, if one is (for the caller to run)."""
        nonlocal next_sample, next_compaction, next_report
        if now >= next_sample:
            next_sample += options.sample_every
            stats = store.stats()
            samples.append(
                (
                    round(now - start, 3),
                    round(rss_mib(), 2),
                    sys.getallocatedblocks(),
                    stats.cache_bytes,
                )
            )
        if now >= next_report:
            next_report = now + 1.0
            progress.put(
                (strategy, worker, counts["ops"], now - start, samples[-1][1] if samples else 0.0)
            )
        if now >= next_compaction:
            next_compaction = now + options.compaction_every
            number = counts["compactions"] + len(compaction_ms)
            return lambda: compaction_event(number)
        return None

    if ours and options.tasks:
        from flatstate.bench.seed_tasks import TaskLoop, run_tasks

        loop = TaskLoop(
            tasks=options.tasks, first=worker * options.tasks,
            stride=options.processes * options.tasks, write_every=write_every,
            deadline=deadline, time_every=TIME_EVERY, counter=PATCH_COUNTER,
            record=lambda kind, took: latencies[kind].add(took), counts=counts,
            housekeeping=housekeeping,
        )  # fmt: skip
        run_tasks(store, keys, loop)
    else:
        i = worker  # workers start at different keys
        while True:
            for _ in range(batch):
                timed = i % TIME_EVERY == 0
                t0 = time.perf_counter() if timed else 0.0
                if i % write_every == write_every - 1:
                    patch(keys[(i * 7919) % n])
                    kind = "patch"
                    counts["writes"] += 1
                else:
                    use_store = read == "store" or (read == "mixed" and i % 2)
                    if use_store:
                        snapshot()[keys[i % n]]
                        kind = "snapshot"
                    else:
                        get(keys[i % n])
                        kind = "get"
                    counts["reads"] += 1
                if timed:
                    latencies[kind].add(time.perf_counter() - t0)
                i += 1
                counts["ops"] += 1
            now = time.perf_counter()
            due = housekeeping(now)
            if due is not None:
                due()
            if now >= deadline:
                break
    elapsed = time.perf_counter() - start
    facts.close()
    store.close()
    return {
        "worker": worker,
        "seconds": round(elapsed, 3),
        **counts,
        "latency": {kind: (r.values.tolist(), r.seen) for kind, r in latencies.items()},
        "compaction_ms": compaction_ms,
        "samples": samples,
    }


def _run_worker(args: tuple[Any, ...], out: Any) -> None:
    try:
        out.put((True, _worker(*args)))
    except BaseException as exc:
        out.put((False, f"{type(exc).__name__}: {exc}"))


def _run_strategy(
    options: SeedOptions, setup: dict[str, Any], strategy: str, progress: Any
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    workers = options.processes if strategy == OURS else 1
    barrier = ctx.Barrier(workers)
    out = ctx.Queue()
    before = _counters(setup["store"])
    procs = [
        ctx.Process(
            target=_run_worker, args=((options, setup, strategy, w, barrier, progress), out)
        )
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    results = []
    try:
        for _ in procs:
            ok, value = out.get(timeout=options.seconds + 600)
            if not ok:
                raise RuntimeError(f"{strategy} worker failed: {value}")
            results.append(value)
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
    after = _counters(setup["store"])
    counted = (after[0] - before[0], after[1] - before[1])
    return _summarize(options, strategy, results, counted)


def _counters(path: str) -> tuple[int, int]:
    """(patches, compactions) the store has recorded over all sessions."""
    from flatstate import open_store

    with open_store(path, readonly=True) as store:
        entries = [entry for _, entry in store.items()]
    return (
        sum(entry.get(PATCH_COUNTER) or 0 for entry in entries),
        sum(entry.compaction_count for entry in entries),
    )


def _combined(results: list[dict[str, Any]]) -> list[list[float]]:
    """The workers' samples side by side: [seconds, summed RSS, largest RSS, summed heap blocks].

    Workers start together at the barrier and sample on the same clock, so the
    k-th samples of all of them belong together; the run ends at the shortest.
    """
    rows = []
    for taken in zip(*(r["samples"] for r in results), strict=False):
        rss = [s[1] for s in taken]
        rows.append([taken[0][0], round(sum(rss), 2), max(rss), sum(s[2] for s in taken)])
    return rows


def _summarize(
    options: SeedOptions, strategy: str, results: list[dict[str, Any]], counted: tuple[int, int]
) -> dict[str, Any]:
    results.sort(key=lambda r: r["worker"])
    seconds = max(r["seconds"] for r in results)
    total = {k: sum(r[k] for r in results) for k in ("ops", "reads", "writes", "compactions")}
    samples = _combined(results)
    rss = [s[1] for s in samples] or [0.0]
    after_warmup = [(s[0], s[1]) for s in samples if s[0] >= options.warmup]
    compaction_ms = [ms for r in results for ms in r["compaction_ms"]]
    workers = [
        {
            "worker": r["worker"],
            "ops": r["ops"],
            "rss_start_mib": r["samples"][0][1] if r["samples"] else None,
            "rss_peak_mib": max((s[1] for s in r["samples"]), default=None),
            "rss_end_mib": r["samples"][-1][1] if r["samples"] else None,
            "cache_bytes_growth": _spread([s[3] for s in r["samples"] if s[3]]),
        }
        for r in results
    ]
    return {
        "strategy": strategy,
        "processes": len(results),
        "tasks": options.tasks if strategy == OURS else 0,
        "seconds": seconds,
        **total,
        "ops_per_s": round(total["ops"] / seconds, 1),
        "reads_per_s": round(total["reads"] / seconds, 1),
        "writes_per_s": round(total["writes"] / seconds, 1),
        "latency": {
            kind: merged_percentiles([r["latency"][kind] for r in results]) for kind in KINDS
        },
        "compaction_mean_ms": round(sum(compaction_ms) / len(compaction_ms), 2)
        if compaction_ms
        else None,
        "rss_start_mib": rss[0],
        "rss_end_mib": rss[-1],
        "rss_peak_mib": max(rss),
        "rss_process_peak_mib": max((w["rss_peak_mib"] or 0.0 for w in workers), default=0.0),
        "rss_slope_mib_per_min": slope_per_min(after_warmup) if options.judged else None,
        "heap_blocks_start": samples[0][3] if samples else None,
        "heap_blocks_end": samples[-1][3] if samples else None,
        "cache_bytes_growth": max(w["cache_bytes_growth"] for w in workers),
        # Every patch adds one to a session's counter and every compaction one
        # to its compactionCount: the store's totals must have grown by exactly
        # their numbers, or an acknowledged write was lost.
        "counted_patches": counted[0],
        "counted_compactions": counted[1],
        "lost_writes": total["writes"] - counted[0] + total["compactions"] - counted[1],
        "workers": workers,
        "samples": samples,
    }


def _spread(values: list[int]) -> int:
    return max(values) - min(values) if values else 0


def run_seed(
    options: SeedOptions, progress: Callable[[tuple[Any, ...]], None] = lambda m: None
) -> dict[str, Any]:
    """Set up once, run every chosen strategy in fresh processes, and compare them."""
    for name, value, allowed in (
        ("strategy", options.strategy, (*STRATEGIES, "all")),
        ("read", options.read, READS),
    ):
        if value not in allowed:
            raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")
    if options.tasks < 0 or (options.tasks and options.read != "entry"):
        raise ValueError(
            f"--tasks {options.tasks}: the tasks' loop reads one entry at a time; "
            "give a count >= 1 with --read entry, or 0 for the synchronous loop"
        )
    options.strategies = options.chosen()
    root = options.directory or tempfile.mkdtemp(prefix="flatstate-seed-")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    try:
        context = machine(root)
        progress(("setup", 0, 0, 0.0, 0.0))
        setup = _setup(options, root)
        runs = [
            _run_with_progress(options, setup, strategy, queue, progress)
            for strategy in options.strategies
        ]
    finally:
        if options.directory is None:
            shutil.rmtree(root, ignore_errors=True)
    return _report(options, context, setup, runs)


def _run_with_progress(
    options: SeedOptions,
    setup: dict[str, Any],
    strategy: str,
    queue: Any,
    progress: Callable[[tuple[Any, ...]], None],
) -> dict[str, Any]:
    done = threading.Event()

    def pump() -> None:
        """Hand the workers' progress messages to the caller (the live view)."""
        while not done.is_set():
            try:
                message = queue.get(timeout=0.2)
            except Empty:
                continue
            progress(message)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        return _run_strategy(options, setup, strategy, queue)
    finally:
        done.set()
        thread.join(2)


def _report(
    options: SeedOptions,
    context: dict[str, Any],
    setup: dict[str, Any],
    runs: list[dict[str, Any]],
) -> dict[str, Any]:
    ours = next((r for r in runs if r["strategy"] == OURS), None)
    json_mib = setup["sessions_json_bytes"] / (1 << 20)
    report: dict[str, Any] = {
        "machine": context,
        "options": {k: v for k, v in asdict(options).items() if k != "strategies"},
        "store": {
            "entries": options.entries,
            "sessions_json_mib": round(json_mib, 1),
            "profile": options.profile,
            "backend": options.backend,
            # A SQLite store has no sessions.json: its size is what json.dumps would write.
            "derived": ["sessions_json_mib"] if setup["sessions_json_derived"] else [],
        },
        "runs": runs,
    }
    if ours is None:
        return report
    ratios: dict[str, Any] = {}
    isolating = [r for r in runs if r["strategy"] in ISOLATING]
    if isolating:
        best = max(isolating, key=lambda r: r["ops_per_s"])
        ratios["best_isolating"] = best["strategy"]
        ratios["ops_vs_best_isolating"] = _ratio(ours, best)
    floor = next((r for r in runs if r["strategy"] == "dict"), None)
    if floor is not None:
        ratios["ops_vs_dict"] = _ratio(ours, floor)
    if ratios:
        report["ratios"] = ratios
    limit = 3 * json_mib + 60
    report["targets"] = {
        # A slope over less than half a minute says little; judge longer runs only.
        "rss_slope_ok": ours["rss_slope_mib_per_min"] <= LEAK_GOAL_MIB_PER_MIN
        if options.judged
        else None,
        "peak_rss_limit_mib": round(limit, 1),
        "peak_rss_ok": ours["rss_process_peak_mib"] <= limit,
        "no_lost_writes": ours["lost_writes"] == 0,
    }
    return report


def _ratio(ours: dict[str, Any], other: dict[str, Any]) -> float:
    """How many times the operations a second of ``other`` flatstate served."""
    ratio: float = ours["ops_per_s"] / max(other["ops_per_s"], 1e-9)
    return round(ratio, 2)


def soak_verdict(run: dict[str, Any], warmup: float) -> dict[str, Any]:
    """Whether memory has levelled off after ``warmup`` seconds.

    RSS: the slope over each half of what follows the warm-up, of which the
    smaller counts: a leak raises both, a one-time step (a cache filling up)
    only one. The Python heap: the slope of its allocated blocks over all of
    it, which a leak of small objects raises even while memory freed earlier
    keeps it out of RSS.
    """
    after = [s for s in run["samples"] if s[0] >= warmup]
    middle = len(after) // 2
    halves = [
        slope_per_min([(s[0], s[1]) for s in part]) for part in (after[:middle], after[middle:])
    ]
    sustained = min(halves)
    return {
        "rss_half_slopes_mib_per_min": halves,
        "rss_sustained_slope_mib_per_min": sustained,
        "levelled_off": sustained <= LEAK_GOAL_MIB_PER_MIN,
        "heap_blocks_slope_per_min": round(slope_per_min([(s[0], s[3]) for s in after])),
        "cache_bytes_growth": run["cache_bytes_growth"],
    }
