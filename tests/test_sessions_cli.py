"""The sessions CLI, doctor, stats, and moving OpenClaw state to SQLite and back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flatstate
from flatstate.cli import app
from flatstate.doctor import diagnose, repair, salvage
from flatstate.transfer import export_openclaw, import_openclaw

runner = CliRunner()


def sessions_json(openclaw_dir: Path) -> Path:
    return openclaw_dir / "agents" / "main" / "sessions" / "sessions.json"


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


# -- sessions --------------------------------------------------------------------


def test_list_show_patch_delete(openclaw_dir: Path) -> None:
    store = str(sessions_json(openclaw_dir))
    code, out = cli("sessions", "list", "--store", store, "--json")
    assert code == 0 and len(json.loads(out)) == 5
    code, out = cli("sessions", "list", "--store", store)
    assert code == 0 and "agent:main:main" in out and "5 sessions" in out

    code, out = cli("sessions", "show", "agent:main:main", "--store", store, "--json")
    assert code == 0 and json.loads(out)["sessionId"] == "162cb05f-a456-44f7-a1f5-a4d48d64ea75"

    code, out = cli(
        "sessions",
        "patch",
        "main",
        "--set",
        "label=ops",
        "--set",
        "totalTokens=7",
        "--store",
        store,
        "--dry-run",
        "--json",
    )
    assert code == 0 and json.loads(out)["label"] == "ops"
    assert "label" not in json.loads(sessions_json(openclaw_dir).read_text())["agent:main:main"]

    code, out = cli(
        "sessions", "patch", "main", "--patch", '{"label": "ops"}', "--store", store, "--json"
    )
    assert (
        code == 0
        and json.loads(sessions_json(openclaw_dir).read_text())["agent:main:main"]["label"] == "ops"
    )

    code, out = cli(
        "sessions", "delete", "agent:main:whatsapp:dm:+15550001111", "--store", store, "--dry-run"
    )
    assert code == 0 and "would delete" in out
    code, out = cli(
        "sessions", "delete", "agent:main:whatsapp:dm:+15550001111", "--store", store, "--json"
    )
    assert code == 0 and json.loads(out)["deleted"] is True
    assert len(json.loads(sessions_json(openclaw_dir).read_text())) == 4


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    code, out = cli("sessions", "patch", "agent:", "--set", "a=1", "--store", str(tmp_path / "s"))
    assert code == 1 and "invalid session key" in out and "Traceback" not in out
    code, out = cli(
        "sessions", "patch", "main", "--set", "nonsense", "--store", str(tmp_path / "s")
    )
    assert code == 1 and "FIELD=VALUE" in out
    code, out = cli("sessions", "show", "agent:main:nope", "--store", str(tmp_path / "s"))
    assert code == 1 and "no session" in out


def test_prune_warns_by_default_and_enforces_when_asked(openclaw_dir: Path) -> None:
    store = str(sessions_json(openclaw_dir))
    code, out = cli("sessions", "prune", "--store", store, "--max-entries", "2", "--json")
    report = json.loads(out)
    assert code == 0 and len(report["capped"]) == 3 and report["after_count"] == 5
    assert len(json.loads(sessions_json(openclaw_dir).read_text())) == 5
    code, out = cli(
        "sessions",
        "prune",
        "--store",
        store,
        "--max-entries",
        "2",
        "--enforce",
        "--active-key",
        "main",
    )
    assert code == 0 and "2 remain" in out
    remaining = json.loads(sessions_json(openclaw_dir).read_text())
    assert "agent:main:main" in remaining and len(remaining) == 2
    archived = [
        p.name for p in sessions_json(openclaw_dir).parent.iterdir() if ".jsonl.deleted." in p.name
    ]
    assert len(archived) == 3


# -- doctor and stats -------------------------------------------------------------


def test_doctor_reports_a_healthy_store(openclaw_dir: Path) -> None:
    code, out = cli("doctor", "--store", str(sessions_json(openclaw_dir)), "--json")
    report = json.loads(out)
    assert code == 0 and report["entries"] == 5 and report["findings"] == []
    assert report["transcript_files"] == 5


def test_doctor_finds_stale_locks_temp_files_and_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    path.write_text(
        json.dumps({"agent:main:a": {"sessionId": "../evil"}, "agent:": {"sessionId": "x"}})
    )
    (tmp_path / "sessions.json.lock").write_text(
        json.dumps({"pid": 2**22 + 9, "createdAt": "2026-01-01T00:00:00Z"})
    )
    temp = tmp_path / "sessions.json.1.abc.tmp"
    temp.write_text("x")
    os.utime(temp, (0, 0))
    report = diagnose(str(path))
    kinds = sorted(f.kind for f in report.findings)
    assert kinds == ["invalid-key", "stale-lock", "stale-temp", "unsafe-session-id"]
    code, _ = cli("doctor", "--store", str(path))
    assert code == 1


def test_doctor_repair_moves_the_file_aside_and_salvages_entries(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    good = {f"agent:main:k{i}": {"sessionId": f"s{i}", "updatedAt": i} for i in range(4)}
    text = json.dumps(good, indent=2)
    damaged = text.replace('"sessionId": "s1"', '"sessionId": s1"')  # one entry broken
    path.write_text(damaged)
    code, out = cli("doctor", "--store", str(path), "--repair", "--json")
    report = json.loads(out)
    assert code == 0
    repaired = report["repaired"]
    assert sorted(repaired["kept"]) == ["agent:main:k0", "agent:main:k2", "agent:main:k3"]
    assert repaired["lost"] and "k1" in repaired["lost"][0]
    assert Path(repaired["moved_to"]).read_text() == damaged
    assert Path(repaired["moved_to"]).name.startswith("sessions.json.corrupt.")
    with flatstate.open_store(path) as store:
        assert store.corruption is None and len(store) == 3


@pytest.mark.parametrize(
    ("data", "kept", "lost"),
    [
        (b'{\n  "agent:main:a": {"x": 1},\n  "agent:main:b": {"y"', ["agent:main:a"], "file ends"),
        (b'{"agent:main:a": 1, "agent:main:b": {}}', ["agent:main:b"], "not an object"),
        (b"[1, 2]", [], "not a JSON object"),
        (b"", [], "empty"),
    ],
)
def test_salvage(data: bytes, kept: list[str], lost: str) -> None:
    found, missing = salvage(data)
    assert list(found) == kept and lost in " ".join(missing)


def test_repair_refuses_sqlite_with_the_recover_command(tmp_path: Path) -> None:
    with pytest.raises(flatstate.errors.StoreCorrupt, match="recover"):
        repair(str(tmp_path / "state"))


def test_stats(tmp_path: Path) -> None:
    with flatstate.open_store(tmp_path / "s") as store:
        store.patch("main", {"model": "m"})
    code, out = cli("stats", "--store", str(tmp_path / "s"), "--json")
    figures = json.loads(out)
    assert code == 0 and figures["entries"] == 1 and figures["process_rss_bytes"] > 0
    assert figures["disk_bytes"] > 0 and figures["cache_bytes"] > 0


# -- import and export --------------------------------------------------------------


def test_openclaw_round_trip_keeps_every_entry_and_field(
    openclaw_dir: Path, tmp_path: Path
) -> None:
    original = json.loads(sessions_json(openclaw_dir).read_text())
    imported = import_openclaw(str(openclaw_dir), str(tmp_path / "flatstate"))
    assert [a.agent_id for a in imported.agents] == ["main"]
    agent = imported.agents[0]
    assert agent.sessions == 5 and agent.transcripts == 5 and agent.auth_profiles
    state_dir = tmp_path / "flatstate" / "main"
    assert (state_dir / "sessions.sqlite").exists() and (state_dir / "auth-profiles.json").exists()
    assert sorted(p.name for p in (state_dir / "transcripts").iterdir()) == sorted(
        p.name for p in sessions_json(openclaw_dir).parent.glob("*.jsonl")
    )
    with flatstate.open_store(state_dir) as store:
        assert {k: e.to_dict() for k, e in store.items()} == original

    exported = export_openclaw(str(tmp_path / "flatstate"), str(tmp_path / "back"))
    assert exported.sessions == 5
    back = tmp_path / "back" / "agents" / "main"
    assert json.loads((back / "sessions" / "sessions.json").read_text()) == original
    for transcript in sessions_json(openclaw_dir).parent.glob("*.jsonl"):
        assert (back / "sessions" / transcript.name).read_bytes() == transcript.read_bytes()
    auth = openclaw_dir / "agents" / "main" / "agent" / "auth-profiles.json"
    assert (back / "agent" / "auth-profiles.json").read_bytes() == auth.read_bytes()


def test_import_and_export_commands(openclaw_dir: Path, tmp_path: Path) -> None:
    code, out = cli(
        "import-openclaw", str(sessions_json(openclaw_dir)), str(tmp_path / "one"), "--json"
    )
    assert code == 0 and json.loads(out)["agents"][0]["sessions"] == 5
    code, out = cli(
        "export-openclaw", str(tmp_path / "one"), str(tmp_path / "out" / "sessions.json")
    )
    assert code == 0 and "5 sessions" in out
    assert len(json.loads((tmp_path / "out" / "sessions.json").read_text())) == 5


def test_import_refuses_a_damaged_store(tmp_path: Path) -> None:
    source = tmp_path / "agents" / "main" / "sessions"
    source.mkdir(parents=True)
    (source / "sessions.json").write_text("{broken")
    code, out = cli("import-openclaw", str(tmp_path), str(tmp_path / "dest"))
    assert code == 1 and "doctor --repair" in out
