"""``flatstate bench auth``: auth-profile reads and selection, and the RSS they leave behind.

OpenClaw's ``cloneAuthProfileStore`` handed every caller a deep copy of the
whole auth store; flatstate hands out the cached frozen profile. Each phase
runs in a fresh process on the same ``auth-profiles.json``:

1. ``select_profile(provider)`` ``calls`` times (the default clock included),
   providers taken in turn, some of each provider's profiles in cooldown;
2. ``get(profile_id)`` ``calls`` times;
3. ``get`` with ``check_interval=0`` (a stat of the file on every read), to
   show what the stat throttle buys;
4. baseline: ``copy.deepcopy`` of the store per read, as OpenClaw did.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from flatstate.bench.measure import in_fresh_process, machine, settled_rss_mib

__all__ = ["AuthBenchOptions", "build_auth_dir", "run_auth_bench"]

PROVIDERS = ("anthropic", "openai", "google")
NOW_MS = 1_795_000_000_000
WARMUP_CALLS = 20_000


@dataclass
class AuthBenchOptions:
    calls: int = 1_000_000
    profiles: int = 12
    stat_calls: int = 200_000
    baseline_calls: int = 20_000


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


def _phase(agent_dir: str, phase: str, calls: int, warmup: int = WARMUP_CALLS) -> dict[str, Any]:
    from flatstate.auth import open_auth_store

    if phase == "baseline":
        with open(os.path.join(agent_dir, "auth-profiles.json"), encoding="utf-8") as f:
            cached = json.load(f)
        ids = list(cached["profiles"])
        n = len(ids)
        return _timed(lambda i: copy.deepcopy(cached)["profiles"][ids[i % n]], calls, warmup // 10)
    interval = 0.0 if phase == "get_stat_every_call" else 0.25
    store = open_auth_store(agent_dir, check_interval=interval)
    ids = [p.id for p in store.profiles()]
    n = len(ids)
    if phase == "select_profile":
        providers = PROVIDERS
        k = len(providers)
        select = store.select_profile
        if any(select(p) is None for p in providers):
            raise RuntimeError("the workload leaves a provider with no usable profile")
        return _timed(lambda i: select(providers[i % k]), calls, warmup)
    get = store.get
    return _timed(lambda i: get(ids[i % n]), calls, warmup)


def run_auth_bench(
    options: AuthBenchOptions, progress: Callable[[str], None] = lambda phase: None
) -> dict[str, Any]:
    """Run every phase (see the module docstring) and return the figures."""
    root = tempfile.mkdtemp(prefix="flatstate-bench-auth-")
    result: dict[str, Any] = {"machine": machine(root), "options": asdict(options), "phases": {}}
    try:
        agent_dir = build_auth_dir(root, options.profiles)
        plan = (
            ("select_profile", options.calls),
            ("get", options.calls),
            ("get_stat_every_call", options.stat_calls),
            ("baseline", options.baseline_calls),
        )
        for phase, calls in plan:
            if calls <= 0:
                continue
            progress(f"{phase}: {calls:,} calls")
            result["phases"][phase] = in_fresh_process(_phase, agent_dir, phase, calls)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    phases = result["phases"]
    if "baseline" in phases and "get" in phases:
        result["get_vs_deepcopy"] = round(phases["get"]["per_s"] / phases["baseline"]["per_s"])
    return result
