"""``flatstate bench auth``: auth-profile reads, selection and writes, and the RSS left behind.

OpenClaw's ``cloneAuthProfileStore`` handed every caller a deep copy of the
whole auth store; flatstate hands out the cached frozen profile. Each phase
runs in a fresh process on the same ``auth-profiles.json``:

1. ``select_profile(provider)`` ``calls`` times (the default clock included),
   providers taken in turn, some of each provider's profiles in cooldown;
2. ``get(profile_id)`` ``calls`` times;
3. ``get`` with ``check_interval=0`` (a stat of the file on every read), to
   show what the stat throttle buys;
4. ``mark_failure`` ``write_calls`` times (a locked read-modify-write each);
5. ``refresh_oauth(force=True)`` ``refresh_calls`` times with a refresher that
   answers at once: the cost of the refresh lock, the re-read and the
   compare-and-swap commit, without a token endpoint;
6. baseline: ``copy.deepcopy`` of the store per read, as OpenClaw did.

With ``backend="postgres"`` the same profiles are also put in a namespace of
their own on the server at ``dsn`` (removed afterwards) and phases 1-5 run
there too, in the same run, so each figure stands beside the file's. Phase
3 then asks the server for the store's version on every read (``check_calls``
times: a round trip each).

RSS is measured after a garbage collection before and after the timed calls
(after a warm-up), so growth means memory the calls kept.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from flatstate.bench.measure import in_fresh_process, machine, settled_rss_mib

__all__ = ["BACKENDS", "DSN_ENV", "AuthBenchOptions", "build_auth_dir", "run_auth_bench"]

PROVIDERS = ("anthropic", "openai", "google")
NOW_MS = 1_795_000_000_000
WARMUP_CALLS = 20_000
BACKENDS = ("file", "postgres")
DSN_ENV = "FLATSTATE_BENCH_POSTGRES_DSN"  # as flatstate bench store
PG_WARMUP = 20  # round-trip phases: a few calls to open the connections


@dataclass
class AuthBenchOptions:
    calls: int = 1_000_000
    profiles: int = 12
    stat_calls: int = 200_000
    baseline_calls: int = 20_000
    write_calls: int = 500
    refresh_calls: int = 100
    check_calls: int = 5_000
    backend: str = "file"
    dsn: str | None = None


def build_auth_dir(directory: str, profiles: int) -> str:
    """Write an ``auth-profiles.json`` of ``profiles`` fake profiles; return the agent dir."""
    agent_dir = os.path.join(directory, "agents", "main", "agent")
    os.makedirs(agent_dir, mode=0o700, exist_ok=True)
    doc: dict[str, Any] = {"version": 1, "profiles": {}, "usageStats": {}}
    for i in range(profiles):
        provider = PROVIDERS[i % len(PROVIDERS)]
        profile_id = f"{provider}:user{i}@example.com"
        kind = ("api_key", "oauth", "token")[(i // len(PROVIDERS)) % 3]
        secret = f"BENCH-{provider}-{i:04d}-not-a-real-secret"
        if kind == "api_key":
            value: dict[str, Any] = {"type": kind, "provider": provider, "key": secret}
        elif kind == "token":
            value = {"type": kind, "provider": provider, "token": secret}
        else:
            value = {
                "type": kind,
                "provider": provider,
                "access": secret,
                "refresh": secret + "-refresh",
                "expires": NOW_MS + 3_600_000,
                "email": f"user{i}@example.com",
            }
        doc["profiles"][profile_id] = value
        stats: dict[str, Any] = {"lastUsed": NOW_MS - 1000 * i, "errorCount": 0}
        if (i // len(PROVIDERS)) % 3 == 0:  # some of every provider's profiles
            stats.update(
                errorCount=1,
                failureCounts={"rate_limit": 1},
                lastFailureAt=NOW_MS,
                cooldownUntil=NOW_MS + 10 * 365 * 86_400_000,
            )
        doc["usageStats"][profile_id] = stats
    with open(os.path.join(agent_dir, "auth-profiles.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
    os.chmod(os.path.join(agent_dir, "auth-profiles.json"), 0o600)
    return agent_dir


def _timed(op: Callable[[int], Any], calls: int, warmup: int) -> dict[str, Any]:
    for i in range(warmup):
        op(i)
    before = settled_rss_mib()
    start = time.perf_counter()
    for i in range(calls):
        op(i)
    elapsed = time.perf_counter() - start
    after = settled_rss_mib()
    return {
        "calls": calls,
        "seconds": round(elapsed, 3),
        "per_s": round(calls / elapsed),
        "rss_before_mib": round(before, 2),
        "rss_after_mib": round(after, 2),
        "rss_growth_mib": round(after - before, 2),
    }


def _phase(location: str, phase: str, calls: int, warmup: int = WARMUP_CALLS) -> dict[str, Any]:
    from flatstate.auth import open_auth_store

    if phase == "baseline":
        with open(os.path.join(location, "auth-profiles.json"), encoding="utf-8") as f:
            cached = json.load(f)
        ids = list(cached["profiles"])
        n = len(ids)
        return _timed(lambda i: copy.deepcopy(cached)["profiles"][ids[i % n]], calls, warmup // 10)
    interval = 0.0 if phase == "get_stat_every_call" else 0.25
    with open_auth_store(location, check_interval=interval) as store:
        ids = [p.id for p in store.profiles()]
        n = len(ids)
        if phase == "select_profile":
            providers = PROVIDERS
            k = len(providers)
            select = store.select_profile
            if any(select(p) is None for p in providers):
                raise RuntimeError("the workload leaves a provider with no usable profile")
            return _timed(lambda i: select(providers[i % k]), calls, warmup)
        if phase == "mark_failure":
            mark = store.mark_failure
            return _timed(lambda i: mark(ids[i % n], "timeout", now=NOW_MS), calls, warmup)
        if phase == "refresh_oauth":
            oauth = [p.id for p in store.profiles() if p.type == "oauth"]
            refresh = store.refresh_oauth

            def tokens(profile: Any) -> dict[str, Any]:
                return {"access": f"{profile.access[:40]}-{time.perf_counter_ns()}"}

            return _timed(
                lambda i: refresh(oauth[i % len(oauth)], tokens, force=True), calls, warmup
            )
        get = store.get
        return _timed(lambda i: get(ids[i % n]), calls, warmup)


def _seed_postgres(dsn: str, agent_dir: str) -> str:
    """The bench's profiles in a namespace of their own on ``dsn``; returns its location."""
    from flatstate.auth import open_auth_store

    with open(os.path.join(agent_dir, "auth-profiles.json"), encoding="utf-8") as f:
        doc = json.load(f)
    namespace = f"bench-auth-{uuid.uuid4().hex[:8]}"
    location = f"{dsn}{'&' if '?' in dsn else '?'}namespace={namespace}"

    def replace(plain: dict[str, Any]) -> bool:
        plain.clear()
        plain.update(doc)
        return True

    with open_auth_store(location) as store:
        store.update(replace)
    return location


def _drop_postgres(location: str) -> None:
    from flatstate.auth.postgres import PostgresAuthStorage

    storage = PostgresAuthStorage(
        location, agent_id=None, readonly=False, lock_timeout=10, refresh_lock_timeout=10
    )
    try:
        storage.drop()
    finally:
        storage.close()


def run_auth_bench(
    options: AuthBenchOptions, progress: Callable[[str], None] = lambda phase: None
) -> dict[str, Any]:
    """Run every phase (see the module docstring) and return the figures."""
    if options.backend not in BACKENDS:
        raise ValueError(f"unknown backend {options.backend!r}; choose from {', '.join(BACKENDS)}")
    dsn = options.dsn or os.environ.get(DSN_ENV) if options.backend == "postgres" else None
    if options.backend == "postgres" and not dsn:
        raise ValueError(f"the postgres backend needs a DSN (--dsn or {DSN_ENV})")
    root = tempfile.mkdtemp(prefix="flatstate-bench-auth-")
    shown = asdict(options)
    if dsn:
        from flatstate.backends.postgres import redact_dsn

        shown["dsn"] = redact_dsn(dsn)
    result: dict[str, Any] = {"machine": machine(root, dsn), "options": shown, "phases": {}}
    pg_location = None
    try:
        agent_dir = build_auth_dir(root, options.profiles)
        plan = (
            ("select_profile", options.calls),
            ("get", options.calls),
            ("get_stat_every_call", options.stat_calls),
            ("mark_failure", options.write_calls),
            ("refresh_oauth", options.refresh_calls),
            ("baseline", options.baseline_calls),
        )
        for phase, calls in plan:
            if calls <= 0:
                continue
            progress(f"file, {phase}: {calls:,} calls")
            warmup = WARMUP_CALLS if calls >= WARMUP_CALLS else PG_WARMUP
            result["phases"][phase] = in_fresh_process(_phase, agent_dir, phase, calls, warmup)
        if dsn:
            pg_location = _seed_postgres(dsn, agent_dir)
            result["postgres"] = {}
            for phase, calls in plan:
                if phase == "baseline" or calls <= 0:
                    continue
                if phase == "get_stat_every_call":
                    calls = options.check_calls
                warmup = WARMUP_CALLS if calls >= WARMUP_CALLS else PG_WARMUP
                progress(f"postgres, {phase}: {calls:,} calls")
                result["postgres"][phase] = in_fresh_process(
                    _phase, pg_location, phase, calls, warmup
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if pg_location is not None:
            _drop_postgres(pg_location)
    phases = result["phases"]
    if "baseline" in phases and "get" in phases:
        result["get_vs_deepcopy"] = round(phases["get"]["per_s"] / phases["baseline"]["per_s"])
    return result
