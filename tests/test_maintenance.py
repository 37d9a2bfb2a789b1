"""Maintenance with OpenClaw's rules, on every backend."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import flatstate
from flatstate import SessionStore
from flatstate.maintenance import (
    DAY_MS,
    MaintenanceConfig,
    parse_bytes,
    parse_duration_ms,
    plan_maintenance,
)
from flatstate.model import build_entry
from flatstate.transcripts import archive_name
from tests.conftest import FakeClock

StoreFactory = Callable[..., SessionStore]
ENFORCE = MaintenanceConfig(mode="enforce")


@pytest.fixture
def clocked(open_store: StoreFactory, clock: FakeClock) -> SessionStore:
    return open_store(clock=clock)


def add(
    store: SessionStore, key: str, age_days: float, clock: FakeClock, *, transcript: bool = True
) -> str:
    session_id = key.rsplit(":", 1)[-1] + "-sid"
    store.upsert(key, {"sessionId": session_id, "updatedAt": clock.now - int(age_days * DAY_MS)})
    if transcript:
        directory = Path(store.backend.transcripts_dir)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{session_id}.jsonl").write_text('{"type":"session"}\n')
    return session_id


def test_prune_by_age_archives_transcripts_as_openclaw_names_them(
    clocked: SessionStore, clock: FakeClock
) -> None:
    add(clocked, "agent:main:old", 40, clock)
    add(clocked, "agent:main:fresh", 1, clock)
    report = clocked.maintain(ENFORCE)
    assert report.pruned == ["agent:main:old"] and report.after_count == 1
    assert list(clocked.keys()) == ["agent:main:fresh"]
    directory = Path(clocked.backend.transcripts_dir)
    expected = archive_name(str(directory / "old-sid.jsonl"), "deleted", clock.now)
    assert report.archived == [expected]
    assert os.path.exists(expected) and not (directory / "old-sid.jsonl").exists()
    assert (
        Path(expected).name.startswith("old-sid.jsonl.deleted.") and ":" not in Path(expected).name
    )


def test_cap_evicts_the_oldest_first(clocked: SessionStore, clock: FakeClock) -> None:
    for i in range(5):
        add(clocked, f"agent:main:k{i}", i / 10, clock, transcript=False)
    report = clocked.maintain(MaintenanceConfig(mode="enforce", max_entries=3))
    assert report.capped == ["agent:main:k4", "agent:main:k3"]
    assert sorted(clocked.keys()) == ["agent:main:k0", "agent:main:k1", "agent:main:k2"]


def test_entries_without_updated_at_are_capped_before_all_and_never_pruned() -> None:
    snapshot = {
        "agent:main:undated": build_entry("agent:main:undated", {"sessionId": "u"}, on_load=True),
        "agent:main:old": build_entry(
            "agent:main:old", {"sessionId": "o", "updatedAt": 1}, on_load=True
        ),
        "agent:main:new": build_entry(
            "agent:main:new", {"sessionId": "n", "updatedAt": 9}, on_load=True
        ),
    }
    pruning = plan_maintenance(snapshot, MaintenanceConfig(prune_after_ms=5), now_ms=10)
    assert pruning.pruned == ["agent:main:old"]
    capping = plan_maintenance(
        snapshot, MaintenanceConfig(prune_after_ms=None, max_entries=1), now_ms=10
    )
    assert capping.capped == ["agent:main:undated", "agent:main:old"]


def test_the_active_key_is_never_removed(clocked: SessionStore, clock: FakeClock) -> None:
    add(clocked, "agent:main:active", 90, clock)
    add(clocked, "agent:main:other", 90, clock)
    report = clocked.maintain(ENFORCE, active_key="agent:main:active")
    assert report.pruned == ["agent:main:other"]
    assert "agent:main:active" in clocked
    assert any("active session" in w for w in report.warnings)


def test_warn_mode_removes_nothing_and_names_what_would_go(
    clocked: SessionStore, clock: FakeClock
) -> None:
    add(clocked, "agent:main:old", 40, clock)
    report = clocked.maintain(MaintenanceConfig(mode="warn"))
    assert report.pruned == ["agent:main:old"] and report.after_count == 1
    assert "agent:main:old" in clocked
    assert (Path(clocked.backend.transcripts_dir) / "old-sid.jsonl").exists()
    assert any("would remove agent:main:old" in w for w in report.warnings)


def test_dry_run_in_enforce_mode_changes_nothing(clocked: SessionStore, clock: FakeClock) -> None:
    add(clocked, "agent:main:old", 40, clock)
    report = clocked.maintain(ENFORCE, dry_run=True)
    assert report.pruned == ["agent:main:old"] and report.dry_run
    assert "agent:main:old" in clocked


def test_a_transcript_still_used_by_a_survivor_is_not_archived(
    clocked: SessionStore, clock: FakeClock
) -> None:
    add(clocked, "agent:main:old", 40, clock)
    clocked.upsert("agent:main:twin", {"sessionId": "old-sid", "updatedAt": clock.now})
    report = clocked.maintain(ENFORCE)
    assert report.pruned == ["agent:main:old"] and report.archived == []
    assert (Path(clocked.backend.transcripts_dir) / "old-sid.jsonl").exists()


def test_transcripts_outside_the_directory_are_never_touched(
    clocked: SessionStore, clock: FakeClock, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_text("{}\n")
    clocked.upsert(
        "agent:main:old", {"sessionId": "x", "sessionFile": str(outside), "updatedAt": 1}
    )
    report = clocked.maintain(ENFORCE)
    assert report.pruned == ["agent:main:old"] and report.archived == []
    assert outside.exists()


def test_old_archives_go_after_their_retention_and_bak_files_stay(
    clocked: SessionStore, clock: FakeClock
) -> None:
    directory = Path(clocked.backend.transcripts_dir)
    directory.mkdir(parents=True, exist_ok=True)
    old = archive_name(str(directory / "a.jsonl"), "deleted", clock.now - 31 * DAY_MS)
    recent = archive_name(str(directory / "b.jsonl"), "deleted", clock.now - 2 * DAY_MS)
    old_reset = archive_name(str(directory / "c.jsonl"), "reset", clock.now - 31 * DAY_MS)
    bak = directory / "sessions.json.bak.1700000000000"
    for path in (old, recent, old_reset, bak):
        Path(path).write_text("x")
    report = clocked.maintain(ENFORCE)
    assert sorted(report.removed_archives) == sorted([old, old_reset])
    assert os.path.exists(recent) and bak.exists() and not os.path.exists(old)
    kept = clocked.maintain(MaintenanceConfig(mode="enforce", reset_archive_retention_ms=False))
    assert kept.removed_archives == []


def test_disk_budget_removes_archives_first_then_the_oldest_sessions(
    clocked: SessionStore, clock: FakeClock
) -> None:
    directory = Path(clocked.backend.transcripts_dir)
    for i in range(6):
        sid = add(clocked, f"agent:main:s{i}", 6 - i, clock)
        (directory / f"{sid}.jsonl").write_text("x" * 10_000)
    archive = Path(archive_name(str(directory / "gone.jsonl"), "deleted", clock.now))
    archive.write_text("y" * 10_000)
    os.utime(archive, (time.time() - 1000, time.time() - 1000))
    store_bytes = clocked.backend.disk_bytes() if clocked.backend.store_file else 0
    config = MaintenanceConfig(mode="enforce", max_disk_bytes=50_000 + store_bytes)
    report = clocked.maintain(config, active_key="agent:main:s0")
    budget = report.disk_budget
    assert budget is not None and not budget.over_budget
    assert budget.removed_files[0] == str(archive)
    assert budget.removed_entries[:2] == [
        "agent:main:s1",
        "agent:main:s2",
    ]  # oldest, not the active
    assert "agent:main:s0" in clocked and "agent:main:s5" in clocked
    assert budget.total_bytes_after <= budget.high_water_bytes
    assert not archive.exists()


def test_plan_is_pure(tmp_path: Path) -> None:
    """A plan that prunes, caps, archives and frees disk changes neither the snapshot nor a
    file, and planning again gives the same plan."""
    now = 100 * DAY_MS
    snapshot = {}
    for i, age_days in enumerate([40, 20, 10, 5, 1]):
        key = f"agent:main:s{i}"
        entry = {"sessionId": f"s{i}", "updatedAt": now - age_days * DAY_MS}
        snapshot[key] = build_entry(key, entry, on_load=True)
        (tmp_path / f"s{i}.jsonl").write_text("x" * 1000)
    Path(archive_name(str(tmp_path / "gone.jsonl"), "deleted", now - 40 * DAY_MS)).write_text("y")
    config = MaintenanceConfig(mode="enforce", max_entries=3, max_disk_bytes=2000)
    entries_before = dict(snapshot)
    files_before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    plan = plan_maintenance(snapshot, config, now_ms=now, directory=str(tmp_path))
    assert plan.pruned == ["agent:main:s0"] and plan.capped == ["agent:main:s1"]
    assert plan.archive and plan.remove_archives
    assert plan.disk_budget is not None and plan.disk_budget.removed_entries
    assert snapshot == entries_before
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files_before
    assert plan_maintenance(snapshot, config, now_ms=now, directory=str(tmp_path)) == plan


def test_parsing_durations_and_sizes() -> None:
    assert parse_duration_ms("30d") == 30 * DAY_MS and parse_duration_ms(7) == 7 * DAY_MS
    assert parse_duration_ms("12h") == 12 * 3_600_000 and parse_duration_ms("90") == 90 * DAY_MS
    assert parse_bytes("10GB") == 10 * 1000**3 and parse_bytes("512MiB") == 512 << 20
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms("soon")
    with pytest.raises(ValueError, match="size"):
        parse_bytes("big")
    with pytest.raises(ValueError, match="mode"):
        MaintenanceConfig(mode="sometimes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "option",
    [
        {"max_entries": -1},
        {"prune_after_ms": -1},
        {"max_disk_bytes": -1},
        {"reset_archive_retention_ms": -1},
    ],
)
def test_a_negative_limit_is_refused(option: dict[str, int]) -> None:
    """A cap of -1 removed every session but the active one."""
    with pytest.raises(ValueError, match=f"{next(iter(option))} is a number >= 0"):
        MaintenanceConfig(**option)  # type: ignore[arg-type]


def test_the_cli_refuses_a_negative_cap(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flatstate.cli import app

    with flatstate.open_store(str(tmp_path)) as store:
        for n in range(3):
            store.patch(f"s{n}", {})
    args = ["sessions", "prune", "--max-entries", "-1", "--enforce", "--store", str(tmp_path)]
    assert CliRunner().invoke(app, args).exit_code == 2
    with flatstate.open_store(str(tmp_path), readonly=True) as store:
        assert len(store) == 3
