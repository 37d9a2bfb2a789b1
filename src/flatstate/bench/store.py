"""``flatstate bench store``: the session store's speed and memory, beside a copy-per-read cache.

Each phase runs in a fresh process so that one phase's garbage cannot flatter
or hurt the next:

1. populate a store of ``entries`` OpenClaw-shaped sessions (and one of
   ``small_entries`` and one of ``scale_entries`` for the scaling figures);
2. memory: RSS of a process before and after it opens (loads) the store,
   against the size of the same store as OpenClaw's sessions.json;
3. rates: cached ``get`` (the cross-process freshness check included),
   ``snapshot`` of an unchanged store, and ``patch``, at each size; beside
   ``get``, the same loop over a plain dict of the same entries, the floor
   that shows what a larger working set costs CPython and the CPU's caches;
4. baseline: a cache that deep-copies the whole store on every read, as
   OpenClaw's ``structuredClone`` cache did, on the same data;
5. soak: ``soak_seconds`` of 90% get / 10% patch after a warm-up, RSS before
   and after;
6. group commit: 100 threads patch at once through the store's writer, and the
   number of commits (file replaces, for JSON) is counted;
7. freshness: how long after one process's write another serves the new
   value, for writes by flatstate and by another program (``sqlite3`` for
   SQLite, a plain rewrite of the file for JSON).

``backend`` picks where the store lives: ``sqlite`` (a state directory),
``jsonfile`` (an OpenClaw sessions.json) or ``postgres`` (a namespace of its
own per store size in the database at ``dsn``, removed afterwards unless
``keep``; "another program" there is plain SQL through psycopg).
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode

from flatstate.bench.measure import in_fresh_process, machine, rate, rss_mib, settled_rss_mib
from flatstate.bench.workload import PROFILES, make_entry, make_key

__all__ = ["StoreBenchOptions", "run_store_bench", "sessions_json_size"]

BIG_CACHE = 64 << 30  # "when they fit the cache bound": the scale runs lift the bound
POPULATE_BATCH = 500


BACKENDS = ("sqlite", "jsonfile", "postgres")
# A JSON store rewrites the whole file per commit; 100,000 sessions would take an hour to build.
# PostgreSQL ships every row over a socket at load: 20,000 keeps a run to a few minutes.
DEFAULT_SCALE = {"sqlite": 100_000, "jsonfile": 10_000, "postgres": 20_000}
DSN_ENV = "FLATSTATE_BENCH_POSTGRES_DSN"
COALESCE_WRITERS = 100
# A p99 needs a few hundred rounds; another program's writes are seen by the periodic
# check (~0.25 s each), so it gets fewer.
LAG_ROUNDS = 400
OUTSIDE_LAG_ROUNDS = 40


@dataclass
class StoreBenchOptions:
    entries: int = 2000
    small_entries: int = 1000
    scale_entries: int | None = None
    profile: str = "small"
    backend: str = "sqlite"
    seconds: float = 2.0
    soak_seconds: float = 60.0
    soak_warmup_seconds: float = 5.0
    directory: str | None = None
    keep: bool = False
    dsn: str | None = None
    synchronous: str = "normal"


def _open(path: str, **options: Any) -> Any:
    from flatstate import open_store

    return open_store(path, **options)


def _populate(path: str, entries: int, profile: str) -> dict[str, int]:
    """Write ``entries`` sessions; return the sizes of the same store as JSON."""
    prof = PROFILES[profile]
    prompts: dict[int, str] = {}
    pretty = 2  # the braces of the top-level object
    compact = 2
    with _open(path, cache_bytes=BIG_CACHE) as store:
        for start in range(0, entries, POPULATE_BATCH):
            batch = {
                make_key(i): make_entry(i, prof, prompts)
                for i in range(start, min(entries, start + POPULATE_BATCH))
            }
            for key, entry in batch.items():
                # What this entry adds to the whole document: its member text
                # without the braces of a one-member object, plus a separator.
                pretty += len(json.dumps({key: entry}, indent=2)) - 2
                compact += len(json.dumps({key: entry}, separators=(",", ":"))) - 1

            def write(draft: Any, batch: dict[str, Any] = batch) -> None:
                for key, entry in batch.items():
                    draft[key] = entry

            store.update(write)
    return {"sessions_json_bytes": pretty, "compact_json_bytes": compact}


def sessions_json_size(path: str, sizes: dict[str, int]) -> tuple[int, bool]:
    """The store's size as OpenClaw's sessions.json, and whether it is derived: a JSON
    store's file is measured; any other store has none, so its size is the sum that
    ``_populate`` computed of what ``json.dumps(indent=2)`` would write."""
    if path.endswith(".json"):
        return os.path.getsize(path), False
    return sizes["sessions_json_bytes"], True


def _memory(path: str, sizes: dict[str, int]) -> dict[str, Any]:
    if path.startswith(("postgresql://", "postgres://")):
        # The driver's code is not the store's data: load it before the first figure.
        import flatstate.backends.postgres  # noqa: F401
    before = settled_rss_mib()
    store = _open(path, cache_bytes=BIG_CACHE)
    store.snapshot()
    after = settled_rss_mib()
    stats = store.stats()
    store.close()
    loaded = (after - before) * (1 << 20)
    json_bytes, derived = sessions_json_size(path, sizes)
    return {
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "loaded_mib": round(loaded / (1 << 20), 1),
        "sessions_json_mib": round(json_bytes / (1 << 20), 1),
        "ratio_to_sessions_json": round(loaded / json_bytes, 3),
        "ratio_to_compact_json": round(loaded / sizes["compact_json_bytes"], 3),
        "estimated_cache_mib": round(stats.cache_bytes / (1 << 20), 1),
        "pooled_strings": stats.pooled_strings,
        # Computed, not measured: no compact JSON file is ever written, nor a
        # sessions.json for a store on another backend.
        "derived": [
            *(("sessions_json_mib", "ratio_to_sessions_json") if derived else ()),
            "ratio_to_compact_json",
        ],
    }


def location(root: str, entries: int, backend: str, dsn: str | None = None) -> str:
    """Where the benchmark keeps its store of ``entries`` sessions on ``backend``."""
    if backend == "jsonfile":
        return os.path.join(root, f"store-{entries}", "agents", "main", "sessions", "sessions.json")
    if backend == "postgres":
        if not dsn:
            raise ValueError(f"the postgres backend needs a DSN (--dsn or {DSN_ENV})")
        run = os.path.basename(root.rstrip(os.sep))
        query = urlencode(
            {
                "namespace": f"bench-{run}-{entries}",
                "state_dir": os.path.join(root, f"store-{entries}"),
            },
            quote_via=quote,
        )
        return f"{dsn}{'&' if '?' in dsn else '?'}{query}"
    return os.path.join(root, f"store-{entries}")


def _rates(path: str, seconds: float, synchronous: str = "normal") -> dict[str, Any]:
    store = _open(path, cache_bytes=BIG_CACHE, synchronous=synchronous)
    keys = list(store.keys())
    n = len(keys)
    get = store.get
    get_rate, _ = rate(lambda i: get(keys[i % n]), seconds, batch=5000)
    plain_get = dict(store.items()).get
    dict_rate, _ = rate(lambda i: plain_get(keys[i % n]), seconds, batch=5000)
    snapshot = store.snapshot
    snap_rate, _ = rate(lambda i: snapshot(), seconds, batch=5000)
    patch = store.patch
    base = 1_795_100_000_000
    patch_rate, _ = rate(
        lambda i: patch(keys[(i * 7919) % n], {"compactionCount": i, "updatedAt": base + i}),
        seconds,
        batch=100,
    )
    disk = store.backend.disk_bytes()
    store.close()
    is_json = path.endswith(".json")
    return {
        "entries": n,
        "get_per_s": round(get_rate),
        "dict_get_per_s": round(dict_rate),
        "snapshot_per_s": round(snap_rate),
        "patch_per_s": round(patch_rate),
        # For JSON every patch rewrites the file: the bytes a second that costs,
        # the rate times the file's size rather than bytes counted as written.
        "patch_mib_per_s": round(patch_rate * disk / (1 << 20), 1) if is_json else None,
        "derived": ["patch_mib_per_s"] if is_json else [],
    }


def _coalesce(path: str, synchronous: str = "normal") -> dict[str, Any]:
    """Commits that 100 concurrent patches cost through the writer's group commit."""
    store = _open(path, cache_bytes=BIG_CACHE, synchronous=synchronous)
    keys = list(store.keys())[:COALESCE_WRITERS]
    before = store.commits
    barrier = threading.Barrier(len(keys))

    def patch(key: str) -> None:
        barrier.wait()
        store.patch(key, {"label": "coalesced"})

    threads = [threading.Thread(target=patch, args=(key,)) for key in keys]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    commits = store.commits - before
    store.close()
    return {
        "patches": len(keys),
        "commits": commits,
        "seconds": round(elapsed, 3),
    }


def _outside_write(path: str, key: str, value: int) -> None:
    """Change ``key`` the way another program would: raw SQL, or rewriting the JSON."""
    if path.startswith(("postgresql://", "postgres://")):
        _outside_sql(path, key, f"outside-{value}")
        return
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        data[key]["label"] = f"outside-{value}"
        with open(path + ".outside.tmp", "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)  # then renamed into place, as OpenClaw writes
        os.replace(path + ".outside.tmp", path)
        return
    conn = sqlite3.connect(os.path.join(path, "sessions.sqlite"), timeout=30)
    with conn:
        row = conn.execute("SELECT entry FROM sessions WHERE key = ?", (key,)).fetchone()
        entry = json.loads(row[0])
        entry["label"] = f"outside-{value}"
        conn.execute("UPDATE sessions SET entry = ? WHERE key = ?", (json.dumps(entry), key))
    conn.close()


def _outside_sql(path: str, key: str, label: str) -> None:
    """An UPDATE by a program that knows nothing of flatstate (the trigger logs it)."""
    import psycopg

    from flatstate.backends.postgres import split_dsn

    dsn, ours = split_dsn(path)
    schema = ours.get("schema", "flatstate")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f'UPDATE "{schema}".sessions SET entry = jsonb_set(entry::jsonb, %s, '
            "to_jsonb(%s::text))::json "
            "WHERE ns = %s AND key = %s",
            (["label"], label, ours["namespace"], key),
        )


def _drop_namespace(path: str) -> None:
    """Remove a benchmark store's rows from the database."""
    import psycopg

    from flatstate.backends.postgres import split_dsn

    dsn, ours = split_dsn(path)
    schema = ours.get("schema", "flatstate")
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        for table in ("sessions", "blobs", "changes", "namespaces"):
            conn.execute(f'DELETE FROM "{schema}".{table} WHERE ns = %s', (ours["namespace"],))


def _writer(
    path: str, key: str, outside: bool, go: Any, acks: Any, rounds: int, synchronous: str
) -> None:
    store = None if outside else _open(path, synchronous=synchronous)
    for i in range(rounds):
        go.wait(60)
        go.clear()
        if store is None:
            _outside_write(path, key, i)
        else:
            store.patch(key, {"label": f"outside-{i}"})
        acks.put(time.monotonic())
    if store is not None:
        store.close()


def _lag(path: str, outside: bool, synchronous: str = "normal") -> dict[str, Any]:
    """Milliseconds from a write's acknowledgement in one process to a read of it in another."""
    reader = _open(path, cache_bytes=BIG_CACHE)
    key = next(iter(reader.keys()))
    ctx = multiprocessing.get_context("spawn")
    go, acks = ctx.Event(), ctx.Queue()
    rounds = OUTSIDE_LAG_ROUNDS if outside else LAG_ROUNDS
    writer = ctx.Process(target=_writer, args=(path, key, outside, go, acks, rounds, synchronous))
    writer.start()
    lags = []
    try:
        for i in range(rounds):
            go.set()
            wanted = f"outside-{i}"
            while (entry := reader.get(key)) is None or entry.get("label") != wanted:
                if not writer.is_alive() and acks.empty():
                    raise RuntimeError(f"the writer process died (exit code {writer.exitcode})")
                # Yield the GIL between polls, as a gateway thread waiting on I/O does: a
                # loop that never lets go would add Python's 5 ms switch interval to the
                # lag of a backend whose news arrives on another thread (PostgreSQL's
                # listener), which is not what this measures. It costs the others ~1 µs.
                time.sleep(0)
            seen = time.monotonic()
            lags.append(max(0.0, seen - acks.get(timeout=60)) * 1000)
    finally:
        writer.join(60)
        if writer.is_alive():
            writer.kill()
        reader.close()
    lags.sort()
    return {
        "writer": "another program" if outside else "another flatstate process",
        "rounds": rounds,
        "p50_ms": round(lags[len(lags) // 2], 3),
        "p99_ms": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 3),
        "max_ms": round(lags[-1], 3),
    }


def _baseline(entries: int, profile: str, seconds: float) -> dict[str, Any]:
    """A cache that hands out ``copy.deepcopy`` of the whole store per read."""
    prof = PROFILES[profile]
    prompts: dict[int, str] = {}
    cached = {make_key(i): make_entry(i, prof, prompts) for i in range(entries)}
    keys = list(cached)
    n = len(keys)
    reads, _ = rate(lambda i: copy.deepcopy(cached)[keys[i % n]], seconds, batch=1)
    return {"entries": n, "get_per_s": round(reads, 2), "strategy": "deepcopy per read"}


def _soak(path: str, seconds: float, warmup: float, synchronous: str = "normal") -> dict[str, Any]:
    store = _open(path, cache_bytes=BIG_CACHE, synchronous=synchronous)
    keys = list(store.keys())
    n = len(keys)
    base = 1_795_200_000_000
    counter = [0]

    def op(i: int) -> None:
        counter[0] += 1
        if i % 10 == 9:
            store.patch(keys[(i * 7919) % n], {"compactionCount": i, "updatedAt": base + i})
        else:
            store.get(keys[i % n])

    rate(op, warmup, batch=1000)
    start_rss = settled_rss_mib()
    samples = []
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        _, count = rate(op, min(5.0, max(0.1, deadline - time.monotonic())), batch=1000)
        done += count
        samples.append(round(rss_mib(), 1))
    end_rss = settled_rss_mib()
    store.close()
    return {
        "seconds": seconds,
        "ops": done,
        "rss_start_mib": round(start_rss, 1),
        "rss_end_mib": round(end_rss, 1),
        "rss_growth_mib": round(end_rss - start_rss, 2),
        "rss_samples_mib": samples,
    }


def run_store_bench(
    options: StoreBenchOptions, progress: Callable[[str], None] = lambda phase: None
) -> dict[str, Any]:
    """Run every phase and return the figures (see the module docstring)."""
    if options.backend not in BACKENDS:
        raise ValueError(f"unknown backend {options.backend!r}; choose from {', '.join(BACKENDS)}")
    if options.scale_entries is None:
        options.scale_entries = DEFAULT_SCALE[options.backend]
    if options.backend == "postgres":
        options.dsn = options.dsn or os.environ.get(DSN_ENV)
        location(".", 0, options.backend, options.dsn)  # fails early without a DSN
    sync = options.synchronous
    root = options.directory or tempfile.mkdtemp(prefix="flatstate-bench-")
    sizes_run = sorted({options.small_entries, options.entries, options.scale_entries} - {0})
    shown = asdict(options)
    if options.dsn:
        from flatstate.backends.postgres import redact_dsn

        shown["dsn"] = redact_dsn(options.dsn)
    result: dict[str, Any] = {
        "machine": machine(root, options.dsn),
        "options": shown,
        "directory": root,
    }
    try:
        stores: dict[int, str] = {}
        sizes: dict[int, dict[str, int]] = {}
        for n in sizes_run:
            progress(f"populating {n:,} sessions")
            stores[n] = location(root, n, options.backend, options.dsn)
            sizes[n] = in_fresh_process(_populate, stores[n], n, options.profile)
        main = options.entries
        progress("measuring memory of the loaded store")
        result["memory"] = in_fresh_process(_memory, stores[main], sizes[main])
        result["rates"] = {}
        for n in sizes_run:
            progress(f"measuring get, snapshot and patch at {n:,} sessions")
            result["rates"][str(n)] = in_fresh_process(_rates, stores[n], options.seconds, sync)
        progress("measuring the deepcopy-per-read baseline")
        result["baseline"] = in_fresh_process(
            _baseline, main, options.profile, max(options.seconds, 3.0)
        )
        if options.soak_seconds > 0:
            progress(f"soak: {options.soak_seconds:g} s of 90% get / 10% patch")
            result["soak"] = in_fresh_process(
                _soak, stores[main], options.soak_seconds, options.soak_warmup_seconds, sync
            )
        progress(f"coalescing {COALESCE_WRITERS} concurrent patches")
        result["coalescing"] = in_fresh_process(_coalesce, stores[main], sync)
        progress("freshness across processes")
        result["freshness"] = [
            in_fresh_process(_lag, stores[main], False, sync),
            in_fresh_process(_lag, stores[main], True, sync),
        ]
    finally:
        if not options.keep and options.directory is None:
            shutil.rmtree(root, ignore_errors=True)
        if not options.keep and options.backend == "postgres":
            for path in stores.values():
                _drop_namespace(path)
    rates = result["rates"]
    ours = rates[str(main)]
    result["ratios"] = {
        "get_vs_deepcopy": round(ours["get_per_s"] / max(result["baseline"]["get_per_s"], 1e-9)),
        "get_scale": _ratio(rates, "get_per_s", main, options.scale_entries),
        "dict_get_scale": _ratio(rates, "dict_get_per_s", main, options.scale_entries),
        "patch_scale": _ratio(rates, "patch_per_s", options.small_entries, options.scale_entries),
    }
    return result


def _ratio(rates: dict[str, Any], field: str, small: int, large: int) -> float | None:
    """How many times slower ``field`` is at ``large`` entries than at ``small``."""
    if str(small) not in rates or str(large) not in rates:
        return None
    small_rate: float = rates[str(small)][field]
    large_rate: float = rates[str(large)][field]
    return round(small_rate / max(large_rate, 1.0), 3)
