"""``flatstate bench seed``: the workload that grew OpenClaw's gateway by ~1 GB a minute.

A store of OpenClaw-shaped sessions is read round-robin, one session at a time
(``--read entry``) or whole (``--read store``, what ``loadSessionStore``
returned), with one patch (``updatedAt``, a counter + 1) every
``--write-every`` operations; every ``--compaction-every`` seconds a session's
transcript grows, is compacted with the built-in summarizer, and an
after-compaction hook recalls from a facts store of ``--facts`` facts.

The strategies run the same loop against different caches:

- ``snapshot``: flatstate, reads share frozen objects;
- ``deepcopy`` | ``json`` | ``orjson`` | ``pickle``: a cache that copies the
  whole store on every read and every write the named way, as OpenClaw's
  ``structuredClone`` cache did (its writes still go through flatstate, so
  that both sides do the same durable work).

Each strategy runs in fresh processes. Figures: operations, reads and writes a
second; latency percentiles of get, snapshot and patch (every 8th operation
(every 7th operation
is timed, into a fixed reservoir); RSS, the Python heap (allocated blocks) and
the cache's bytes every ``sample_every`` seconds; the RSS slope after warm-up.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import pickle
import random
import shutil
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from queue import Empty
from typing import Any

from flatstate.bench.measure import machine, rss_mib
from flatstate.bench.store import location

__all__ = ["COPYING", "SeedOptions", "run_seed", "slope_mib_per_min"]

COPYING = ("deepcopy", "json", "orjson", "pickle")
STRATEGIES = ("snapshot", *COPYING)
READS = ("entry", "store", "mixed")
COMPACTION_TARGETS = 16
COMPACTION_APPEND = 40
KEEP_RECENT_TOKENS = 2_000
RESERVOIR = 16_384
# The patch bumps a counter of the benchmark's own: compactionCount belongs to
# compaction (its transcript is the truth and the count only catches up), so a
# patch that raced a compaction on it could hide one increment in a max().
PATCH_COUNTER = "benchPatches"
SLOPE_WINDOW = 30.0
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
    sample_every: float = 0.5
    warmup_fraction: float = 0.25
    min_warmup: float = 10.0

    @property
    def warmup(self) -> float:
        """Seconds before the slope counts: the first caches and files fill in that time."""
        return max(self.seconds * self.warmup_fraction, min(self.min_warmup, self.seconds / 2))

    directory: str | None = None
    strategies: list[str] = field(default_factory=list)

    def chosen(self) -> list[str]:
        return list(STRATEGIES) if self.strategy == "all" else [self.strategy]


def _copier(name: str) -> Callable[[Any], Any]:
    if name == "deepcopy":
        return copy.deepcopy
    if name == "json":
        return lambda value: json.loads(json.dumps(value))
    if name == "pickle":
        return lambda value: pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    if name == "orjson":
        import orjson  # in the bench extra

        return lambda value: orjson.loads(orjson.dumps(value))
    raise ValueError(f"unknown strategy {name!r}")


class CopyingCache:
    """OpenClaw's structuredClone-era cache with a pluggable copy: the whole store, every time."""

    def __init__(self, store: Any, copier: Callable[[Any], Any]) -> None:
        self.real = store
        self.copy = copier
        self.data = {key: entry.to_dict() for key, entry in store.items()}

    def get(self, key: str) -> Any:
        return self.copy(self.data)[key]  # loadSessionStore() then store[key]

    def snapshot(self) -> Any:
        return self.copy(self.data)

    def written(self, key: str) -> None:
        """After a durable write, the cache stores a copy of the whole new store."""
        entry = self.real.get(key)
        fresh = self.copy(self.data)
        fresh[key] = entry.to_dict()
        self.data = fresh


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

    def percentiles(self) -> dict[str, float] | None:
        if not self.values:
            return None
        ordered = sorted(self.values)

        def at(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 4)

        return {"p50_ms": at(0.5), "p99_ms": at(0.99), "p999_ms": at(0.999), "samples": self.seen}


def slope_mib_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB a minute."""
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
    sizes = _populate(path, options.entries, options.profile)
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
    return {"store": path, "facts": facts_dir, "targets": targets, **sizes}


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

    store = open_store(setup["store"], transcript_fsync=FsyncPolicy.batched(), cache_bytes=1 << 30)
    facts = open_facts(setup["facts"])
    keys = list(store.keys())
    n = len(keys)
    cache = CopyingCache(store, _copier(strategy)) if strategy != "snapshot" else None
    get = cache.get if cache else store.get
    snapshot = cache.snapshot if cache else store.snapshot
    latencies = {"get": _Reservoir(), "snapshot": _Reservoir(), "patch": _Reservoir()}
    write_every, read = options.write_every, options.read
    counts = {"ops": 0, "reads": 0, "writes": 0, "compactions": 0}
    compaction_ms: list[float] = []
    samples: list[tuple[float, float, int, int]] = []  # (t, rss MiB, heap blocks, cache bytes)

    def patch(key: str) -> None:
        store.update(
            lambda draft: draft.patch(
                key, {PATCH_COUNTER: (draft[key].get(PATCH_COUNTER) or 0) + 1}
            )
        )
        if cache is not None:
            cache.written(key)

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
            if cache is not None:
                cache.written(key)

    barrier.wait(120)
    start = time.perf_counter()
    next_sample = start
    next_compaction = start + options.compaction_every
    next_report = start + 1.0
    i = worker  # workers start at different keys
    deadline = start + options.seconds
    while True:
        for _ in range(64):
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
            if cache is not None:
                break  # copying strategies are slow: check the clock after every op
        now = time.perf_counter()
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
        if now >= next_compaction:
            next_compaction = now + options.compaction_every
            compaction_event(counts["compactions"] + len(compaction_ms))
        if now >= next_report:
            next_report = now + 1.0
            progress.put(
                (strategy, worker, counts["ops"], now - start, samples[-1][1] if samples else 0.0)
            )
        if now >= deadline:
            break
    elapsed = time.perf_counter() - start
    facts.close()
    store.close()
    return {
        "worker": worker,
        "seconds": round(elapsed, 3),
        **counts,
        "latency": {kind: r.percentiles() for kind, r in latencies.items()},
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
    workers = options.processes if strategy == "snapshot" else 1
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


def _summarize(
    options: SeedOptions, strategy: str, results: list[dict[str, Any]], counted: tuple[int, int]
) -> dict[str, Any]:
    seconds = max(r["seconds"] for r in results)
    total = {k: sum(r[k] for r in results) for k in ("ops", "reads", "writes", "compactions")}
    first = min(results, key=lambda r: r["worker"])
    samples = first["samples"]
    warm = options.warmup
    after_warmup = [(t, rss) for t, rss, _, _ in samples if t >= warm]
    rss = [s[1] for s in samples] or [0.0]
    cache = [s[3] for s in samples if s[3]] or [0]
    compaction_ms = [ms for r in results for ms in r["compaction_ms"]]
    return {
        "strategy": strategy,
        "processes": len(results),
        "seconds": seconds,
        **total,
        "ops_per_s": round(total["ops"] / seconds, 1),
        "reads_per_s": round(total["reads"] / seconds, 1),
        "writes_per_s": round(total["writes"] / seconds, 1),
        "latency": first["latency"],
        "compaction_mean_ms": round(sum(compaction_ms) / len(compaction_ms), 2)
        if compaction_ms
        else None,
        "rss_start_mib": rss[0],
        "rss_end_mib": rss[-1],
        "rss_peak_mib": max(rss),
        "rss_slope_mib_per_min": slope_mib_per_min(after_warmup),
        "heap_blocks_start": samples[0][2] if samples else None,
        "heap_blocks_end": samples[-1][2] if samples else None,
        "cache_bytes_growth": max(cache) - min(cache),
        # Every patch adds one to a session's counter and every compaction one
        # to its compactionCount: the store's totals must have grown by exactly
        # their numbers, or an acknowledged write was lost.
        "counted_patches": counted[0],
        "counted_compactions": counted[1],
        "lost_writes": total["writes"] - counted[0] + total["compactions"] - counted[1],
        "samples": [[t, r, h] for t, r, h, _ in samples],
    }


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
    options.strategies = options.chosen()
    root = options.directory or tempfile.mkdtemp(prefix="flatstate-seed-")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    try:
        progress(("setup", 0, 0, 0.0, 0.0))
        setup = _setup(options, root)
        runs = [
            _run_with_progress(options, setup, strategy, queue, progress)
            for strategy in options.strategies
        ]
    finally:
        if options.directory is None:
            shutil.rmtree(root, ignore_errors=True)
    return _report(options, setup, runs)


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
    options: SeedOptions, setup: dict[str, Any], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    ours = next((r for r in runs if r["strategy"] == "snapshot"), None)
    copying = [r for r in runs if r["strategy"] in COPYING]
    best = max(copying, key=lambda r: r["ops_per_s"]) if copying else None
    json_mib = setup["sessions_json_bytes"] / (1 << 20)
    report: dict[str, Any] = {
        "machine": machine(),
        "options": {k: v for k, v in asdict(options).items() if k != "strategies"},
        "store": {
            "entries": options.entries,
            "sessions_json_mib": round(json_mib, 1),
            "profile": options.profile,
            "backend": options.backend,
        },
        "runs": runs,
    }
    if ours is not None and best is not None:
        report["ratios"] = {
            "best_copying_strategy": best["strategy"],
            "ops_vs_best_copying": round(ours["ops_per_s"] / max(best["ops_per_s"], 1e-9), 1),
        }
    if ours is not None:
        report["targets"] = {
            # A slope over less than half a minute says little; judge longer runs only.
            "rss_slope_ok": ours["rss_slope_mib_per_min"] <= 1.0
            if options.seconds - options.warmup >= SLOPE_WINDOW
            else None,
            "peak_rss_limit_mib": round(3 * json_mib + 60, 1),
            "peak_rss_ok": ours["rss_peak_mib"] <= 3 * json_mib + 60,
            "no_lost_writes": ours["lost_writes"] == 0,
        }
    return report


def soak_verdict(run: dict[str, Any]) -> dict[str, Any]:
    """Whether RSS has levelled off: its slope over the second half of the run."""
    samples = [(t, rss) for t, rss, _ in run["samples"]]
    half = samples[len(samples) // 2 :]
    slope = slope_mib_per_min(half)
    return {
        "last_half_slope_mib_per_min": slope,
        "levelled_off": slope <= 1.0,
        "cache_bytes_growth": run["cache_bytes_growth"],
        "rss_growth_after_warmup_mib": round(half[-1][1] - samples[len(samples) // 4][1], 2)
        if len(samples) >= 4
        else 0.0,
    }
