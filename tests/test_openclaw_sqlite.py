"""OpenClaw 2026.9's own databases, read in place: the read-only store and doctor.

Every expectation comes from the fixture's raw rows (tests/openclaw_support.py),
read with sqlite3 and zstandard as the fixture's README describes them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import flatstate
from flatstate.cli import app
from flatstate.doctor import diagnose_openclaw
from flatstate.errors import (
    ExtraMissing,
    ReadOnlyStore,
    StoreClosed,
    StoreCorrupt,
    StoreInUse,
)
from tests.openclaw_support import (
    ADD_LEASE,
    AGENT_DB,
    COOLDOWN_UNTIL,
    FAILURE_AT,
    LABEL_MAIN,
    SECRETS,
    STATE_DB,
    add_lease,
    change,
    compressed_count,
    copy_fixture,
    crash_after,
    hold_open,
    raw_entries,
    raw_events,
    tree,
)

runner = CliRunner()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_fixture(tmp_path / "openclaw")


def _kept_messages(events: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str]]:
    """The latest compaction and the ids of the message entries the model sees after it,
    worked out from the raw events (the transcripts here have no branches)."""
    entries = [e for e in events if e["type"] != "session"]
    at = max((i for i, e in enumerate(entries) if e["type"] == "compaction"), default=None)
    if at is None:
        return None, [e["id"] for e in entries if e["type"] == "message"]
    compaction = entries[at]
    first = next(i for i, e in enumerate(entries) if e["id"] == compaction["firstKeptEntryId"])
    kept = entries[first:at] + entries[at + 1 :]
    return compaction, [e["id"] for e in kept if e["type"] == "message"]


# -- the store -------------------------------------------------------------------------


def test_every_entry_and_field_is_what_openclaw_stored(root: Path) -> None:
    expected = raw_entries(root)
    assert len(expected) == 5 and all("delivery" in e for e in expected.values())
    with flatstate.open_store(root / AGENT_DB) as by_file:
        assert {key: entry.to_dict() for key, entry in by_file.items()} == expected
        assert by_file.keys() == tuple(sorted(expected))
        snapshot = by_file.snapshot()
        assert by_file.get("main") is snapshot["agent:main:main"]  # shared, not copied
        with pytest.raises(TypeError):
            snapshot["agent:main:main"]["model"] = "x"  # type: ignore[index]
        assert by_file.stats().backend == "openclaw"
    with flatstate.open_store(root, agent_id="main") as by_root:
        assert {key: entry.to_dict() for key, entry in by_root.items()} == expected


def test_a_root_without_the_agent_names_the_agents_it_has(root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"agent 'ops'.*agents: main"):
        flatstate.open_store(root, agent_id="ops")


def test_transcripts_are_openclaw_events_in_seq_order(root: Path) -> None:
    events = raw_events(root)
    assert compressed_count(root) == 2 and sum(map(len, events.values())) == 200
    with flatstate.open_store(root) as store:
        for key, entry in store.items():
            transcript = store.transcript(key)
            stored = events[entry.session_id]
            header = transcript.header()
            assert header is not None and header.to_dict() == stored[0]
            assert [e.to_dict() for e in transcript.iter_entries()] == stored[1:]
            assert [e.to_dict() for e in transcript.tail(3)] == stored[-3:]
            assert transcript.tail_plain(3) == stored[-3:]
            assert transcript.leaf_id == stored[-1]["id"] and not transcript.problems


def test_context_is_the_summary_then_the_kept_messages(root: Path) -> None:
    events = raw_events(root)
    compacted = 0
    with flatstate.open_store(root) as store:
        for key, entry in store.items():
            context = store.transcript(key).context()
            compaction, kept = _kept_messages(events[entry.session_id])
            if compaction is None:
                assert context.compaction is None
                assert [e.get("id") for e in context.entries] == kept
            else:
                compacted += 1
                summary = context.messages[0]
                assert summary["role"] == "compactionSummary"
                assert summary["summary"] == compaction["summary"]
                assert summary["tokensBefore"] == compaction["tokensBefore"]
                assert [e.get("id") for e in context.entries[1:]] == kept
            by_id = {e["id"]: e for e in events[entry.session_id][1:]}
            messages = context.messages[1:] if compaction else context.messages
            assert [m.to_dict() for m in messages] == [by_id[i]["message"] for i in kept]
    assert compacted == 3


def test_writes_are_refused(root: Path) -> None:
    with flatstate.open_store(root) as store:
        for write in (
            lambda: store.patch("main", {"label": "x"}),
            lambda: store.upsert("agent:main:new", {}),
            lambda: store.delete("main"),
            lambda: store.reset("main"),
            lambda: store.transcript("main").append({"type": "custom"}),
        ):
            with pytest.raises(ReadOnlyStore, match="import-openclaw"):
                write()
        with pytest.raises(ReadOnlyStore):
            store.transcript("agent:main:nobody")  # creating it would be a write
        assert store.get("main") is not None and "label" not in store.get("main")  # type: ignore[operator]


def test_reading_leaves_nothing_beside_the_databases(root: Path) -> None:
    before = tree(root)
    with flatstate.open_store(root) as store:
        for key in store:
            store.transcript(key).context()
    code = runner.invoke(app, ["doctor", "--store", str(root), "--json"]).exit_code
    assert code == 0
    assert tree(root) == before


def test_a_transcript_read_after_its_store_closed_says_so(root: Path) -> None:
    with flatstate.open_store(root) as store:
        transcript = store.transcript("main")
    with pytest.raises(StoreClosed):
        transcript.tail(1)


def test_a_store_sees_what_openclaw_writes_later(root: Path) -> None:
    with flatstate.open_store(root, check_interval=0) as store:
        assert "label" not in store.get("main")  # type: ignore[operator]
        change(
            root / AGENT_DB,
            (
                "UPDATE session_nodes SET entry_json = json_set(entry_json, '$.label', 'ops') "
                "WHERE session_key = 'agent:main:main'",
                (),
            ),
        )
        assert store.get("main")["label"] == "ops"  # type: ignore[index]


def test_a_wal_left_by_a_killed_gateway_is_read_through_a_private_copy(root: Path) -> None:
    crash_after(root / AGENT_DB, LABEL_MAIN, "after-crash")
    assert os.path.getsize(f"{root / AGENT_DB}-wal") > 0
    before = tree(root)
    with flatstate.open_store(root) as store:
        assert store.get("main")["label"] == "after-crash"  # type: ignore[index]
    report = diagnose_openclaw(str(root))
    assert report.agents[0].counts_exclude_wal and report.agents[0].database.wal_bytes > 0
    assert tree(root) == before  # the WAL and -shm were not replayed in place


def test_a_live_gateway_is_refused_unless_forced(root: Path) -> None:
    add_lease(root, os.getpid())
    with pytest.raises(StoreInUse, match=f"pid {os.getpid()}") as refused:
        flatstate.open_store(root)
    assert refused.value.path == str(root / AGENT_DB) and "--force" in str(refused.value)
    with flatstate.open_store(root, force=True) as store:
        assert len(store) == 5
    report = diagnose_openclaw(str(root))
    assert [f.kind for f in report.findings] == ["in-use"]
    assert report.agents[0].leases[0].live


def test_a_lease_still_in_the_state_wal_counts(root: Path) -> None:
    crash_after(root / STATE_DB, ADD_LEASE, str(AGENT_DB), os.getpid(), FAILURE_AT)
    assert os.path.getsize(f"{root / STATE_DB}-wal") > 0
    with pytest.raises(StoreInUse, match="lease"):
        flatstate.open_store(root)
    assert "in-use" in [f.kind for f in diagnose_openclaw(str(root)).findings]


def test_a_stale_lease_does_not_stop_a_read(root: Path) -> None:
    add_lease(root, 2**22 + 7)  # above any pid Linux hands out by default
    with flatstate.open_store(root) as store:
        assert len(store) == 5
    assert [f.kind for f in diagnose_openclaw(str(root)).findings] == ["stale-lease"]


def test_doctor_sees_who_holds_the_database_and_the_oldest_reader(root: Path) -> None:
    child = hold_open(root / AGENT_DB, "held")
    try:
        report = diagnose_openclaw(str(root))
        agent = report.agents[0]
        assert agent.open_by == child.pid
        reader = agent.oldest_reader
        assert reader is not None and reader.pid == child.pid and reader.behind >= 1
        assert agent.wal_frames is not None and agent.wal_frames > reader.frame
        assert "in-use" in [f.kind for f in report.findings]
        with pytest.raises(StoreInUse, match=f"pid {child.pid}"):
            flatstate.open_store(root)
        result = runner.invoke(app, ["doctor", "--store", str(root)])
        assert result.exit_code == 1 and f"oldest reader: pid {child.pid}" in result.output
    finally:
        child.kill()
        child.wait()


def test_doctor_says_what_an_import_would_bring(root: Path) -> None:
    report = diagnose_openclaw(str(root), now_ms=FAILURE_AT + 1000)
    assert report.findings == [] and report.state_database is not None
    (agent,) = report.agents
    assert (agent.schema_version, agent.app_version) == (23, "2026.9.6")
    assert agent.database.wal_mode and agent.database.page_size == 4096
    plan = agent.would_import
    assert plan is not None
    assert (plan.sessions, plan.transcripts, plan.events, plan.compressed_events) == (5, 5, 200, 2)
    assert plan.auth_profiles == [
        "anthropic:default",
        "anthropic:work@example.com",
        "openai:default",
    ]
    assert plan.auth_order == ["anthropic"] and plan.cooldowns == ["anthropic:default"]
    later = diagnose_openclaw(str(root), now_ms=COOLDOWN_UNTIL).agents[0].would_import
    assert later is not None and later.cooldowns == []

    result = runner.invoke(app, ["doctor", "--store", str(root), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["agents"][0]["would_import"]
    result = runner.invoke(app, ["doctor", "--store", str(root)])
    assert result.exit_code == 0 and "would import: 5 sessions, 5 transcripts" in result.output
    assert not any(secret in result.output for secret in SECRETS)
    result = runner.invoke(app, ["doctor", "--store", str(root), "--repair"])
    assert result.exit_code == 1 and "openclaw doctor" in result.output


def test_doctor_finds_a_registered_database_that_is_gone(root: Path) -> None:
    change(
        root / STATE_DB,
        (
            "INSERT INTO agent_databases (agent_id, path, schema_version, last_seen_at) "
            "VALUES ('ops', 'agents/ops/agent/openclaw-agent.sqlite', 23, 0)",
            (),
        ),
    )
    report = diagnose_openclaw(str(root))
    assert [a.agent_id for a in report.agents] == ["main", "ops"]
    assert [(f.kind, Path(f.subject).parts[-3]) for f in report.findings] == [("missing", "ops")]


def test_doctor_finds_a_leftover_sessions_json(root: Path) -> None:
    leftover = root / "agents" / "main" / "sessions" / "sessions.json"
    leftover.parent.mkdir()
    leftover.write_text("{}")
    kinds = [f.kind for f in diagnose_openclaw(str(root)).findings]
    assert kinds == ["leftover-sessions-json"]


# -- damage ------------------------------------------------------------------------------


def test_a_truncated_database_is_a_typed_error_naming_the_file(root: Path) -> None:
    database = root / AGENT_DB
    database.write_bytes(database.read_bytes()[: os.path.getsize(database) // 2])
    with pytest.raises(StoreCorrupt) as damaged:
        flatstate.open_store(database)
    assert damaged.value.path == str(database) and "malformed" in damaged.value.problem
    report = diagnose_openclaw(str(root))
    assert "corrupt" in [f.kind for f in report.findings]


def test_a_corrupt_event_row_is_a_problem_of_its_transcript_only(root: Path) -> None:
    session_id = raw_entries(root)["agent:main:main"]["sessionId"]
    count = len(raw_events(root)[session_id])
    change(
        root / AGENT_DB,
        (
            "UPDATE transcript_events SET event_json = '{\"type\": broken' "
            "WHERE session_id = ? AND seq = 5",
            (session_id,),
        ),
    )
    with flatstate.open_store(root) as store:
        transcript = store.transcript("main")
        entries = list(transcript.iter_entries())
        assert len(entries) == count - 2  # without the header and the bad row
        (problem,) = transcript.problems
        assert problem.line == 6 and "seq 5" in problem.problem
        assert len(store.transcript("agent:main:slack:group:c0ffee").tail(100)) == 41


def test_compressed_events_without_the_zstd_extra_name_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "zstandard", None)
    with flatstate.open_store(root) as store:
        assert len(store.transcript("main").tail(100)) == 35  # nothing of it is compressed
        with pytest.raises(ExtraMissing, match=r"flatstate\[zstd\]"):
            store.transcript("agent:main:discord:channel:987654").tail(100)
