"""import-openclaw from both eras: 2026.3 files and 2026.9 databases, into one layout.

What each 2026.9 import should bring over is read from the fixture's raw rows
(tests/openclaw_support.py); the source is checked path by path, byte by byte
and mode by mode afterwards.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flatstate
from flatstate.auth import open_auth_store
from flatstate.cli import app
from flatstate.errors import DestinationExists, ExtraMissing, StoreInUse
from flatstate.transfer import export_openclaw, import_openclaw
from tests.auth_support import SecretGuard, secret_guard
from tests.conftest import FakeClock
from tests.openclaw_support import (
    AGENT_DB,
    COOLDOWN_UNTIL,
    FAILURE_AT,
    LABEL_MAIN,
    SECRETS,
    add_lease,
    change,
    copy_fixture,
    crash_after,
    raw_entries,
    raw_lines,
    tree,
)

runner = CliRunner()
OAUTH_ID = "anthropic:work@example.com"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return copy_fixture(tmp_path / "openclaw")


@pytest.fixture
def guard(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[SecretGuard]:
    for scanner in secret_guard(capsys, caplog):
        scanner.secret(*SECRETS)
        yield scanner


@pytest.fixture(params=["2026.3", "2026.9"])
def source(request: pytest.FixtureRequest, tmp_path: Path, openclaw_dir: Path) -> Path:
    """An OpenClaw root of either era (a private copy)."""
    return openclaw_dir if request.param == "2026.3" else copy_fixture(tmp_path / "openclaw-9")


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


# -- 2026.9 -----------------------------------------------------------------------------


def test_a_2026_9_root_imports_every_entry_event_and_profile(
    root: Path, tmp_path: Path, guard: SecretGuard
) -> None:
    seen: list[tuple[str, int, int]] = []
    report = import_openclaw(str(root), str(tmp_path / "dest"), progress=lambda *a: seen.append(a))
    guard.watch(report, where="report")
    (agent,) = report.agents
    assert (agent.agent_id, agent.sessions, agent.transcripts) == ("main", 5, 5)
    assert agent.auth_profiles and not report.damaged and seen[-1] == ("main", 10, 10)
    state_dir = tmp_path / "dest" / "main"
    with flatstate.open_store(state_dir) as store:
        assert {k: e.to_dict() for k, e in store.items()} == raw_entries(root)
        assert store.stats().backend == "sqlite"
    for session_id, lines in raw_lines(root).items():
        written = (state_dir / "transcripts" / f"{session_id}.jsonl").read_bytes()
        assert written == b"".join(line + b"\n" for line in lines)
        assert (state_dir / "transcripts" / f"{session_id}.jsonl").stat().st_mode & 0o777 == 0o600
    with flatstate.open_store(state_dir) as store:
        context = store.transcript("main").context()
        assert context.messages[0]["role"] == "compactionSummary"


def test_auth_profiles_order_and_cooldown_survive_the_import(
    root: Path, tmp_path: Path, guard: SecretGuard
) -> None:
    import_openclaw(str(root), str(tmp_path / "dest"))
    clock = FakeClock(FAILURE_AT + 1000)
    auth = open_auth_store(tmp_path / "dest" / "main", clock=clock)
    assert sorted(p.id for p in auth.profiles()) == [
        "anthropic:default",
        OAUTH_ID,
        "openai:default",
    ]
    assert auth.snapshot().order["anthropic"] == (OAUTH_ID, "anthropic:default")
    usage = auth.usage("anthropic:default")
    assert usage is not None and usage.cooldown_until == COOLDOWN_UNTIL
    assert auth.resolve_secret("openai:default") == SECRETS[3]
    status = {s.id: s for s in auth.status()}
    assert status["anthropic:default"].state == "cooldown"
    assert status["anthropic:default"].until == COOLDOWN_UNTIL
    auth.set_order("anthropic", ["anthropic:default"])
    assert auth.select_profile("anthropic") is None  # resting until OpenClaw's cooldown ends
    clock.now = COOLDOWN_UNTIL
    assert auth.select_profile("anthropic").id == "anthropic:default"  # type: ignore[union-attr]
    for line in json.dumps([s.secret for s in status.values()]):
        assert all(secret not in line for secret in SECRETS)


def test_the_import_command_reports_and_shows_no_secret(
    root: Path, tmp_path: Path, guard: SecretGuard
) -> None:
    code, out = cli("import-openclaw", str(root), str(tmp_path / "dest"))
    assert code == 0 and "main: 5 sessions, 5 transcript files, auth profiles" in out
    code, out = cli("import-openclaw", str(root), str(tmp_path / "dest"), "--merge", "--json")
    assert code == 0 and json.loads(out)["agents"][0]["sessions"] == 5
    assert not any(secret in out for secret in SECRETS)


def test_a_live_gateway_stops_the_import_before_anything_is_written(
    root: Path, tmp_path: Path
) -> None:
    add_lease(root, os.getpid())
    with pytest.raises(StoreInUse):
        import_openclaw(str(root), str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()
    code, out = cli("import-openclaw", str(root), str(tmp_path / "dest"))
    assert code == 1 and "in use" in out and "--force" in out
    assert import_openclaw(str(root), str(tmp_path / "dest"), force=True).sessions == 5


def test_a_wal_left_behind_is_imported_and_left_as_it_was(root: Path, tmp_path: Path) -> None:
    crash_after(root / AGENT_DB, LABEL_MAIN, "only-in-the-wal")
    before = tree(root)
    report = import_openclaw(str(root), str(tmp_path / "dest"))
    assert any("WAL" in note for note in report.agents[0].notes)
    with flatstate.open_store(tmp_path / "dest" / "main") as store:
        assert store.get("main")["label"] == "only-in-the-wal"  # type: ignore[index]
    assert tree(root) == before


def test_one_agent_database_imports_into_dest_itself(root: Path, tmp_path: Path) -> None:
    report = import_openclaw(str(root / AGENT_DB), str(tmp_path / "one"))
    assert report.agents[0].destination == str(tmp_path / "one")
    auth = json.loads((tmp_path / "one" / "auth-profiles.json").read_text())
    assert len(auth["profiles"]) == 3 and auth["order"]["anthropic"][0] == OAUTH_ID


def test_without_the_zstd_extra_the_import_names_it_and_writes_nothing(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(ExtraMissing, match=r"pip install 'flatstate\[zstd\]'"):
        import_openclaw(str(root), str(tmp_path / "dest"))
    assert not (tmp_path / "dest").exists()


def test_a_truncated_database_is_reported_and_the_rest_imported(
    root: Path, tmp_path: Path, guard: SecretGuard
) -> None:
    database = root / AGENT_DB
    database.write_bytes(database.read_bytes()[: os.path.getsize(database) // 2])
    report = import_openclaw(str(root), str(tmp_path / "dest"))
    guard.watch(report, where="report")
    (agent,) = report.agents
    assert report.damaged and [d.path for d in agent.damage] == [str(database)]
    assert agent.sessions == 0
    # The shared store lives in the state database, which is sound: the profiles come over.
    auth = json.loads((tmp_path / "dest" / "main" / "auth-profiles.json").read_text())
    assert len(auth["profiles"]) == 3 and auth["usageStats"]["anthropic:default"]
    code, out = cli("import-openclaw", str(root), str(tmp_path / "again"))
    assert code == 1 and f"damaged: {database}" in out


def test_corrupt_rows_are_reported_and_everything_else_imported(root: Path, tmp_path: Path) -> None:
    entries = raw_entries(root)
    lines = raw_lines(root)
    main_id = entries["agent:main:main"]["sessionId"]
    slack_id = entries["agent:main:slack:group:c0ffee"]["sessionId"]
    change(
        root / AGENT_DB,
        (
            "UPDATE transcript_events SET event_json = '[1, 2' WHERE session_id = ? AND seq = 4",
            (main_id,),
        ),
        # Flip bytes inside the zstd frame: its checksum no longer matches.
        (
            "UPDATE transcript_events SET event_zstd = "
            "CAST(substr(event_zstd, 1, 40) || zeroblob(8) || substr(event_zstd, 49) AS BLOB) "
            "WHERE session_id = ? AND event_json IS NULL",
            (slack_id,),
        ),
        (
            "UPDATE session_nodes SET entry_json = '{\"sessionId\": ' "
            "WHERE session_key = 'agent:main:whatsapp:dm:+15550001111'",
            (),
        ),
    )
    report = import_openclaw(str(root), str(tmp_path / "dest"))
    (agent,) = report.agents
    problems = [d.problem for d in agent.damage]
    assert all(d.path == str(root / AGENT_DB) for d in agent.damage) and len(problems) == 3
    assert any("whatsapp" in p for p in problems)
    assert any(f"{main_id} event seq 4" in p for p in problems)
    assert any(f"{slack_id} event seq 15" in p and "zstd" in p for p in problems)
    assert agent.sessions == 4 and agent.transcripts == 5
    transcripts = tmp_path / "dest" / "main" / "transcripts"
    written = (transcripts / f"{main_id}.jsonl").read_bytes().splitlines()
    assert written == lines[main_id][:4] + lines[main_id][5:]
    assert len((transcripts / f"{slack_id}.jsonl").read_bytes().splitlines()) == 41


def test_an_ended_transcript_generation_becomes_its_reset_archive(
    root: Path, tmp_path: Path
) -> None:
    old = "0ld5e55i-0000-4000-8000-000000000001"
    header = json.dumps({"type": "session", "version": 4, "id": old, "timestamp": "t", "cwd": "/"})
    change(
        root / AGENT_DB,
        (
            "INSERT INTO session_windows (session_id, session_key, created_at, updated_at) "
            "VALUES (?, 'agent:main:main', 0, ?)",
            (old, FAILURE_AT),
        ),
        (
            "INSERT INTO transcript_events (session_id, seq, event_json, created_at) "
            "VALUES (?, 0, ?, 0)",
            (old, header),
        ),
    )
    report = import_openclaw(str(root), str(tmp_path / "dest"))
    assert report.agents[0].transcripts == 6
    archive = (
        tmp_path / "dest" / "main" / "transcripts" / (f"{old}.jsonl.reset.2026-12-01T06-33-39.494Z")
    )
    assert archive.read_text() == header + "\n"


def test_export_writes_the_2026_3_layout_back(root: Path, tmp_path: Path) -> None:
    import_openclaw(str(root), str(tmp_path / "dest"))
    exported = export_openclaw(str(tmp_path / "dest"), str(tmp_path / "back"))
    assert exported.sessions == 5
    sessions = tmp_path / "back" / "agents" / "main" / "sessions"
    assert json.loads((sessions / "sessions.json").read_text()) == raw_entries(root)
    for session_id, lines in raw_lines(root).items():
        assert (sessions / f"{session_id}.jsonl").read_bytes().splitlines() == lines


def test_an_export_over_an_openclaw_directory_holding_state_is_refused(
    root: Path, tmp_path: Path
) -> None:
    """A line OpenClaw appended there since the last export was overwritten, exit 0."""
    from flatstate.errors import DestinationExists

    import_openclaw(str(root), str(tmp_path / "dest"))
    export_openclaw(str(tmp_path / "dest"), str(tmp_path / "back"))
    sessions = tmp_path / "back" / "agents" / "main" / "sessions"
    transcript = next(sessions.glob("*.jsonl"))
    with transcript.open("ab") as f:
        f.write(b'{"type":"custom","id":"late0001","parentId":null}\n')
    before = {p.name: p.read_bytes() for p in sessions.iterdir()}
    with pytest.raises(DestinationExists, match="5 sessions, transcripts, auth profiles"):
        export_openclaw(str(tmp_path / "dest"), str(tmp_path / "back"))
    assert {p.name: p.read_bytes() for p in sessions.iterdir()} == before
    assert export_openclaw(str(tmp_path / "dest"), str(tmp_path / "back"), force=True).sessions == 5
    assert b"late0001" not in transcript.read_bytes()  # --force: the source wins


# -- both eras ----------------------------------------------------------------------------


def _main_entry(dest: Path) -> dict[str, object]:
    with flatstate.open_store(dest / "main") as store:
        entry = store.get("main")
        assert entry is not None
        return entry.to_dict()


def _contents(dest: Path) -> dict[str, tuple[int, bytes | None]]:
    """The destination's files, without the -wal and -shm that SQLite makes for any reader."""
    return {k: v for k, v in tree(dest).items() if not k.endswith(("-wal", "-shm"))}


def test_the_source_stays_byte_and_mode_identical(source: Path, tmp_path: Path) -> None:
    before = tree(source)
    import_openclaw(str(source), str(tmp_path / "dest"))
    import_openclaw(str(source), str(tmp_path / "dest"), merge=True)
    store = (
        str(source / "agents" / "main" / "sessions" / "sessions.json")
        if (source / "agents" / "main" / "sessions").is_dir()
        else str(source)
    )
    for command in (
        ["sessions", "list", "--store", store],
        ["transcript", "tail", "main", "--store", store],
        ["doctor", "--store", store],
    ):
        assert runner.invoke(app, command).exit_code == 0, command
    assert tree(source) == before


def test_a_second_import_is_refused_and_writes_nothing(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    import_openclaw(str(source), str(dest))
    with flatstate.open_store(dest / "main") as store:
        store.patch("main", {"label": "changed since"})
    before = _contents(dest)
    with pytest.raises(DestinationExists, match="--merge") as refused:
        import_openclaw(str(source), str(dest))
    assert refused.value.path == str(dest / "main")
    assert _contents(dest) == before
    code, out = cli("import-openclaw", str(source), str(dest))
    assert code == 1 and "already holds 5 sessions" in out


def test_force_lets_the_source_win(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    import_openclaw(str(source), str(dest))
    original = _main_entry(dest)
    with flatstate.open_store(dest / "main") as store:
        store.patch("main", {"label": "changed since"})
    import_openclaw(str(source), str(dest), force=True)
    assert _main_entry(dest) == original


def test_merge_keeps_the_fresher_entry_and_its_transcript(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    import_openclaw(str(source), str(dest))
    with flatstate.open_store(dest / "main") as store:
        mine = store.get("main")
        theirs = store.get("agent:main:discord:channel:987654")
        assert mine is not None and theirs is not None
        # Changed in the destination after the import: fresher than the source.
        store.upsert("main", {**mine.to_dict(), "label": "dest", "updatedAt": mine.updated_at + 5})
        # Older in the destination than what the source will say.
        store.upsert(
            "agent:main:discord:channel:987654",
            {**theirs.to_dict(), "label": "stale", "updatedAt": (theirs.updated_at or 0) - 5},
        )
        kept_transcript = dest / "main" / "transcripts" / f"{mine.session_id}.jsonl"
    with kept_transcript.open("ab") as f:
        f.write(b'{"type":"custom","customType":"dest-only"}\n')
    report = import_openclaw(str(source), str(dest), merge=True)
    assert report.agents[0].kept_keys == ["agent:main:main"]
    with flatstate.open_store(dest / "main") as store:
        assert store.get("main")["label"] == "dest"  # type: ignore[index]
        assert "label" not in store.get("agent:main:discord:channel:987654")  # type: ignore[operator]
    assert kept_transcript.read_bytes().endswith(b'"dest-only"}\n')
    code, out = cli("import-openclaw", str(source), str(dest), "--merge")
    assert code == 0 and "kept 1 sessions of the destination" in out


def test_merge_keeps_the_auth_changes_of_the_destination(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    import_openclaw(str(source), str(dest))
    auth = open_auth_store(dest / "main", clock=FakeClock(COOLDOWN_UNTIL + 10_000))
    auth.mark_success(OAUTH_ID)
    used = auth.usage(OAUTH_ID)
    assert used is not None and used.last_used == COOLDOWN_UNTIL + 10_000
    import_openclaw(str(source), str(dest), merge=True)
    again = open_auth_store(dest / "main")
    assert again.usage(OAUTH_ID).last_used == COOLDOWN_UNTIL + 10_000  # type: ignore[union-attr]
    assert len(again.profiles()) == 3
