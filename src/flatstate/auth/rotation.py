"""Which profile to use next, and what a failure or a success does to a profile's stats.

Pure functions over frozen values: the store calls them inside its locked
update and keeps the results. Times are epoch milliseconds, as OpenClaw keeps
``lastUsed``, ``cooldownUntil`` and the rest.

Selection (:func:`build_plans` once per load, :func:`pick` per call):

1. an explicit ``order[provider]`` ranks the profiles it lists, and only those;
2. otherwise ``lastGood[provider]`` comes first, then the rest by oldest
   ``lastUsed`` (never used counts as oldest; ties keep file order);
3. a profile in cooldown (``cooldownUntil``) or disabled (``disabledUntil``)
   is skipped until that time; if every candidate is, there is no profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flatstate.auth.profiles import FAILURE_REASONS, AuthProfile, ProfileStats

__all__ = [
    "CooldownPolicy",
    "Plan",
    "apply_failure",
    "apply_success",
    "build_plans",
    "pick",
    "provider_key",
]

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS

Plan = tuple[tuple[int, AuthProfile], ...]
"""A provider's candidates in rank order, each with the time (ms) it is usable from."""


@dataclass(frozen=True)
class CooldownPolicy:
    """How long a failing profile rests.

    - ``schedule_ms``: cooldown after the 1st, 2nd, 3rd... consecutive failure;
      the last step repeats (default 30 s, 1 min, 5 min). OpenClaw 2026.3.11
      used 1 min, 5 min, 25 min, 1 h: ``CooldownPolicy(schedule_ms=(60_000,
      300_000, 1_500_000, 3_600_000))`` reproduces it.
    - ``billing_base_ms`` / ``billing_max_ms``: a billing failure disables the
      profile for 5 h, doubling with each further billing failure, up to 24 h.
    - ``failure_window_ms``: failures older than this (24 h) no longer count
      towards the next step.

    >>> p = CooldownPolicy()
    >>> [p.cooldown_ms(n) // 1000 for n in (1, 2, 3, 4)]
    [30, 60, 300, 300]
    >>> [p.billing_ms(n) // HOUR_MS for n in (1, 2, 3, 4)]
    [5, 10, 20, 24]
    """

    schedule_ms: tuple[int, ...] = (30 * SECOND_MS, MINUTE_MS, 5 * MINUTE_MS)
    billing_base_ms: int = 5 * HOUR_MS
    billing_max_ms: int = 24 * HOUR_MS
    failure_window_ms: int = 24 * HOUR_MS

    def __post_init__(self) -> None:
        if not self.schedule_ms or min(self.schedule_ms) <= 0:
            raise ValueError("CooldownPolicy.schedule_ms needs at least one positive step")
        if self.billing_base_ms <= 0 or self.billing_max_ms < self.billing_base_ms:
            raise ValueError("CooldownPolicy needs 0 < billing_base_ms <= billing_max_ms")

    def cooldown_ms(self, failures: int) -> int:
        """Cooldown after the ``failures``-th consecutive failure (1-based)."""
        steps = self.schedule_ms
        return steps[min(max(failures, 1), len(steps)) - 1]

    def billing_ms(self, failures: int) -> int:
        """How long the ``failures``-th billing failure (1-based) disables a profile."""
        doublings = min(max(failures, 1) - 1, 32)
        return min(self.billing_base_ms << doublings, self.billing_max_ms)


def _number(value: Any) -> int | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    return None


def apply_failure(
    stats: Mapping[str, Any] | None, reason: str, now: int, policy: CooldownPolicy
) -> dict[str, Any]:
    """The stats after a failure for ``reason`` at ``now``: counters up, a cooldown or a disable.

    A failure never shortens a cooldown or a disable already in force.
    """
    if reason not in FAILURE_REASONS:
        raise ValueError(f"unknown failure reason {reason!r}")
    new = dict(stats or {})
    last = _number(new.get("lastFailureAt"))
    if last is not None and now - last > policy.failure_window_ms:
        new.pop("failureCounts", None)
        new["errorCount"] = 0
    count = (_number(new.get("errorCount")) or 0) + 1
    counts: dict[str, Any] = {}
    old_counts = new.get("failureCounts")
    if isinstance(old_counts, Mapping):
        counts.update(old_counts)
    counts[reason] = (_number(counts.get(reason)) or 0) + 1
    new["errorCount"] = count
    new["failureCounts"] = counts
    new["lastFailureAt"] = now
    if reason == "billing":
        until = now + policy.billing_ms(counts[reason])
        new["disabledUntil"] = max(until, _number(new.get("disabledUntil")) or 0)
        new["disabledReason"] = "billing"
    else:
        until = now + policy.cooldown_ms(count)
        new["cooldownUntil"] = max(until, _number(new.get("cooldownUntil")) or 0)
    return new


def apply_success(stats: Mapping[str, Any] | None, now: int) -> dict[str, Any]:
    """The stats after a successful call at ``now``: counters reset, cooldowns lifted."""
    new = dict(stats or {})
    for name in ("failureCounts", "cooldownUntil", "disabledUntil", "disabledReason"):
        new.pop(name, None)
    new["errorCount"] = 0
    new["lastUsed"] = now
    return new


def provider_key(provider: str) -> str:
    """Providers compare without case or surrounding blanks, as OpenClaw normalizes them."""
    return provider.strip().lower()


def build_plans(
    profiles: Mapping[str, AuthProfile],
    order: Mapping[str, Any],
    last_good: Mapping[str, Any],
    usage: Mapping[str, ProfileStats],
) -> dict[str, Plan]:
    """Every provider's ranked candidates, computed once per load so picking is a short loop."""
    by_provider: dict[str, list[AuthProfile]] = {}
    for profile in profiles.values():
        by_provider.setdefault(provider_key(profile.provider), []).append(profile)
    explicit = {provider_key(k): v for k, v in order.items() if isinstance(v, tuple | list)}
    good = {provider_key(k): v for k, v in last_good.items() if isinstance(v, str)}
    plans: dict[str, Plan] = {}
    for provider, members in by_provider.items():
        ranked = _explicit(explicit.get(provider), profiles, provider)
        if not ranked:
            # sorted() is stable: equal lastUsed keeps file order.
            ranked = sorted(members, key=lambda p: _last_used(usage.get(p.id)))
            preferred = profiles.get(good.get(provider, ""))
            if preferred is not None and provider_key(preferred.provider) == provider:
                # By id, not ==: two profiles may hold equal fields.
                ranked = [preferred, *(p for p in ranked if p.id != preferred.id)]
        plans[provider] = tuple((_usable_from(usage.get(p.id)), p) for p in ranked)
    return plans


def _explicit(ids: Any, profiles: Mapping[str, AuthProfile], provider: str) -> list[AuthProfile]:
    if not ids:
        return []
    ranked: list[AuthProfile] = []
    seen: set[str] = set()
    for profile_id in ids:
        profile = profiles.get(profile_id) if isinstance(profile_id, str) else None
        if profile is None or profile.id in seen or provider_key(profile.provider) != provider:
            continue
        seen.add(profile.id)
        ranked.append(profile)
    return ranked


def _last_used(stats: ProfileStats | None) -> int:
    return (stats.last_used or 0) if stats is not None else 0


def _usable_from(stats: ProfileStats | None) -> int:
    return stats.unusable_until if stats is not None else 0


def pick(plan: Plan, now: int) -> AuthProfile | None:
    """The first candidate not in cooldown or disabled at ``now``."""
    for usable_from, profile in plan:
        if usable_from <= now:
            return profile
    return None
