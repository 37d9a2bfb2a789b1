"""Session maintenance with OpenClaw's rules: prune by age, cap by count, archive, disk budget.

:func:`plan_maintenance` is a pure function of a snapshot, a directory listing
and a clock; it returns a :class:`MaintenancePlan` saying what would go and
why. :meth:`SessionStore.maintain <flatstate.store.SessionStore.maintain>`
applies a plan (entry removals in one transaction, then the file moves) and
returns a :class:`MaintenanceReport`. In ``warn`` mode nothing is removed and
the report's warnings name what would have been.

OpenClaw ran this on every save, which cost a pass over the whole store per
write; here it runs when asked (``flatstate sessions prune`` from cron, or a
timer in the gateway).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from flatstate.frozen import encode_json
from flatstate.model import SessionEntry
from flatstate.transcripts.layout import archive_name, archive_time_ms, transcript_file

__all__ = [
    "DiskBudgetReport",
    "MaintenanceConfig",
    "MaintenancePlan",
    "MaintenanceReport",
    "parse_bytes",
    "parse_duration_ms",
    "plan_maintenance",
]

DAY_MS = 86_400_000
TEMP_STALE_MS = 5 * 60_000
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}
_UNITS_BYTES = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
                "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40, "k": 1 << 10,
                "m": 1 << 20, "g": 1 << 30}  # fmt: skip


def parse_duration_ms(text: str | int) -> int:
    """``30d``, ``12h``, ``90m``, ``45s`` or a bare number of days (OpenClaw's default unit)."""
    if isinstance(text, int):
        return text * DAY_MS
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    if not match or (match.group(2) or "d") not in _UNITS_MS:
        raise ValueError(f"cannot read {text!r} as a duration; write e.g. 30d, 12h or 90m")
    return int(float(match.group(1)) * _UNITS_MS[match.group(2) or "d"])


def parse_bytes(text: str | int) -> int:
    """``10GB``, ``512MiB``, ``1g`` or a bare number of bytes."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    if not match or (match.group(2) or "b") not in _UNITS_BYTES:
        raise ValueError(f"cannot read {text!r} as a size; write e.g. 10GB or 512MiB")
    return int(float(match.group(1)) * _UNITS_BYTES[match.group(2) or "b"])


@dataclass(frozen=True)
class MaintenanceConfig:
    """OpenClaw's ``session.maintenance`` settings, with its defaults.

    ``reset_archive_retention_ms`` None follows ``prune_after_ms``; False keeps
    reset archives forever. ``max_disk_bytes`` None turns the budget off.
    """

    mode: Literal["warn", "enforce"] = "warn"
    prune_after_ms: int | None = 30 * DAY_MS
    max_entries: int | None = 500
    reset_archive_retention_ms: int | Literal[False] | None = None
    max_disk_bytes: int | None = None
    high_water_ratio: float = 0.8

    def __post_init__(self) -> None:
        if self.mode not in ("warn", "enforce"):
            raise ValueError(f"maintenance mode is 'warn' or 'enforce', not {self.mode!r}")
        if not 0 < self.high_water_ratio <= 1:
            raise ValueError("high_water_ratio is a fraction in (0, 1]")
        # A negative cap or budget would remove every session but the active one.
        for name in ("prune_after_ms", "max_entries", "max_disk_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} is a number >= 0 or None, not {value!r}")
        retention = self.reset_archive_retention_ms
        if retention not in (None, False) and (retention is True or retention < 0):
            raise ValueError(
                f"reset_archive_retention_ms is a number >= 0, False or None, not {retention!r}"
            )

    @property
    def high_water_bytes(self) -> int | None:
        if self.max_disk_bytes is None:
            return None
        return int(self.max_disk_bytes * self.high_water_ratio)


class DiskBudgetReport(msgspec.Struct, frozen=True, kw_only=True):
    total_bytes_before: int
    total_bytes_after: int
    removed_files: list[str]
    removed_entries: list[str]
    freed_bytes: int
    max_bytes: int
    high_water_bytes: int
    over_budget: bool


class MaintenanceReport(msgspec.Struct, frozen=True, kw_only=True):
    """What maintenance did (or, in warn mode or a dry run, would have done)."""

    mode: str
    dry_run: bool
    before_count: int
    after_count: int
    pruned: list[str]
    capped: list[str]
    archived: list[str]
    removed_archives: list[str]
    disk_budget: DiskBudgetReport | None
    warnings: list[str]


@dataclass
class MaintenancePlan:
    """Everything maintenance would remove, and why; computed without side effects."""

    config: MaintenanceConfig
    now_ms: int
    before_count: int
    active_key: str | None = None
    pruned: list[str] = field(default_factory=list)
    capped: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    archive: list[tuple[str, str]] = field(default_factory=list)
    remove_archives: list[str] = field(default_factory=list)
    remove_files: list[str] = field(default_factory=list)
    disk_budget: DiskBudgetReport | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def removed_keys(self) -> list[str]:
        return [*self.pruned, *self.capped, *self.evicted]


def _chunk_bytes(key: str, entry: SessionEntry) -> int:
    """Bytes the entry takes in an indented sessions.json, separator included."""
    return len(msgspec.json.format(encode_json({key: entry}), indent=2)) - 4 + 2


def _updated(entry: SessionEntry) -> float | None:
    value = entry.get("updatedAt")
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def plan_maintenance(
    snapshot: Mapping[str, SessionEntry],
    config: MaintenanceConfig,
    *,
    now_ms: int,
    active_key: str | None = None,
    directory: str | None = None,
    store_file: str | None = None,
    store_bytes: int = 0,
) -> MaintenancePlan:
    """What maintenance would do to ``snapshot`` now, in OpenClaw's order.

    ``directory`` is where transcripts live (archives and the disk budget look
    only there); ``store_file`` and ``store_bytes`` let the budget project the
    store's own size after removals.
    """
    plan = MaintenancePlan(
        config=config, now_ms=now_ms, before_count=len(snapshot), active_key=active_key
    )
    remaining = dict(snapshot)

    if config.prune_after_ms is not None:
        cutoff = now_ms - config.prune_after_ms
        for key, entry in snapshot.items():
            updated = _updated(entry)
            if key != active_key and updated is not None and updated < cutoff:
                plan.pruned.append(key)
                del remaining[key]
        active = snapshot.get(active_key) if active_key is not None else None
        if active is not None and (_updated(active) or cutoff) < cutoff:
            plan.warnings.append(f"the active session {active_key} is older than pruneAfter; kept")

    if config.max_entries is not None and len(remaining) > config.max_entries:
        # Oldest first, entries without updatedAt before all; the active key stays.
        order = sorted(
            (k for k in remaining if k != active_key),
            key=lambda k: (_updated(remaining[k]) is not None, _updated(remaining[k]) or 0, k),
        )
        for key in order[: len(remaining) - config.max_entries]:
            plan.capped.append(key)
            del remaining[key]

    if directory is not None:
        _plan_files(plan, snapshot, remaining, directory, store_file, store_bytes)

    if config.mode == "warn":
        for key in plan.removed_keys:
            plan.warnings.append(f"would remove {key} (mode is warn; nothing removed)")
    return plan


def _plan_files(
    plan: MaintenancePlan,
    snapshot: Mapping[str, SessionEntry],
    remaining: dict[str, SessionEntry],
    directory: str,
    store_file: str | None,
    store_bytes: int,
) -> None:
    config, now = plan.config, plan.now_ms
    referenced = {p for e in remaining.values() if (p := transcript_file(e, directory))}
    for key in plan.removed_keys:
        path = transcript_file(snapshot[key], directory)
        if path and path not in referenced and os.path.exists(path):
            plan.archive.append((path, archive_name(path, "deleted", now)))

    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    retention = {
        "deleted": config.prune_after_ms,
        "reset": config.prune_after_ms
        if config.reset_archive_retention_ms is None
        else (
            None
            if config.reset_archive_retention_ms is False
            else config.reset_archive_retention_ms
        ),
    }
    for name in names:
        found = archive_time_ms(name)
        if found is None:
            continue
        reason, when = found
        keep_for = retention.get(reason)
        if keep_for is not None and when < now - keep_for:
            plan.remove_archives.append(os.path.join(directory, name))

    if config.max_disk_bytes is not None:
        projected_store = store_bytes - sum(
            _chunk_bytes(key, snapshot[key]) for key in plan.removed_keys
        )
        _plan_disk_budget(
            plan, remaining, directory, names, referenced, store_file, projected_store
        )


def _plan_disk_budget(
    plan: MaintenancePlan,
    remaining: dict[str, SessionEntry],
    directory: str,
    names: list[str],
    referenced: set[str],
    store_file: str | None,
    projected_store: int,
) -> None:
    """Free disk down to the high-water mark: removable files first, oldest first,
    then whole sessions, oldest ``updatedAt`` first (never the active one)."""
    config = plan.config
    assert config.max_disk_bytes is not None and config.high_water_bytes is not None
    going = {p for p, _ in plan.archive} | set(plan.remove_archives)
    files: list[tuple[float, str, int]] = []
    total = max(0, projected_store)
    for name in names:
        path = os.path.join(directory, name)
        if path == store_file or path in going or name.startswith("."):
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not os.path.isfile(path):
            continue
        total += st.st_size
        removable = (
            archive_time_ms(name) is not None
            or (name.endswith(".tmp") and st.st_mtime * 1000 < plan.now_ms - TEMP_STALE_MS)
            or (name.endswith(".jsonl") and path not in referenced)
        )
        if removable:
            files.append((st.st_mtime, path, st.st_size))
    before = total
    if total <= config.max_disk_bytes:
        plan.disk_budget = _budget(config, before, total, [], [], False)
        return
    removed_files: list[str] = []
    for _, path, size in sorted(files):
        if total <= config.high_water_bytes:
            break
        removed_files.append(path)
        total -= size
    evicted: list[str] = []
    if total > config.high_water_bytes:
        order = sorted(
            (k for k in remaining if k != plan.active_key),
            key=lambda k: (_updated(remaining[k]) or 0, k),
        )
        users = Counter(p for e in remaining.values() if (p := transcript_file(e, directory)))
        for key in order:
            if total <= config.high_water_bytes:
                break
            entry = remaining.pop(key)
            evicted.append(key)
            total -= _chunk_bytes(key, entry)
            transcript = transcript_file(entry, directory)
            if transcript is None:
                continue
            users[transcript] -= 1
            if users[transcript] <= 0 and os.path.exists(transcript):
                removed_files.append(transcript)
                total -= os.path.getsize(transcript)
    plan.remove_files = removed_files
    plan.evicted = evicted
    plan.disk_budget = _budget(
        config, before, total, removed_files, evicted, total > config.max_disk_bytes
    )


def _budget(
    config: MaintenanceConfig,
    before: int,
    after: int,
    removed_files: list[str],
    evicted: list[str],
    over: bool,
) -> DiskBudgetReport:
    assert config.max_disk_bytes is not None and config.high_water_bytes is not None
    return DiskBudgetReport(
        total_bytes_before=before,
        total_bytes_after=after,
        removed_files=removed_files,
        removed_entries=evicted,
        freed_bytes=before - after,
        max_bytes=config.max_disk_bytes,
        high_water_bytes=config.high_water_bytes,
        over_budget=over,
    )
