"""The sessions CLI, doctor, stats, and moving OpenClaw state to SQLite and back."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flatstate
from flatstate.cli import app
from flatstate.doctor import diagnose, repair, salvage
from flatstate.store import Draft
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
    assert code == 0 and json.loads(out)["count"] == 5
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
    assert code == 2 and "FIELD=VALUE" in out
    code, out = cli("sessions", "show", "main", "--store", str(tmp_path / "none"))
    assert code == 1 and "no session store here" in out
    assert not (tmp_path / "s").exists()  # the refused patches created no store
    assert cli("sessions", "patch", "other", "--set", "a=1", "--store", str(tmp_path / "s"))[0] == 0
    code, out = cli("sessions", "show", "agent:main:nope", "--store", str(tmp_path / "s"))
    assert code == 1 and "no session 'agent:main:nope'" in out


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


def old_store(tmp_path: Path, sessions: int, transcripts: int) -> str:
    """A state directory of ``sessions`` sessions idle for 60 days, main first among them,
    the first ``transcripts`` of them with a transcript file."""
    state = tmp_path / "state"
    old = int(time.time() * 1000) - 60 * 86_400_000
    keys = ["agent:main:main", *(f"agent:main:cron:job:run:{i}" for i in range(sessions - 1))]

    def fill(draft: Draft) -> None:
        for i, key in enumerate(keys):
            draft[key] = {"sessionId": f"s{i:05}", "updatedAt": old + i}

    with flatstate.open_store(state) as store:
        store.update(fill)
    (state / "transcripts").mkdir(mode=0o700, exist_ok=True)
    for i in range(transcripts):
        (state / "transcripts" / f"s{i:05}.jsonl").write_text("{}\n")
    return str(state)


def test_prune_in_warn_mode_says_would_and_sums_up(tmp_path: Path) -> None:
    """Warn mode names nothing it did not do, and on a large store prints a summary, not a
    line a session; --verbose lists them. The main session is kept unless told otherwise."""
    store = old_store(tmp_path, sessions=2_000, transcripts=41)  # main's is kept
    code, out = cli("sessions", "prune", "--store", store)
    lines = out.splitlines()
    assert code == 0 and len(lines) <= 10, out
    assert lines[0].startswith(f"2,000 sessions in {store}: would remove 1,999 by age")
    assert "would archive 40 transcripts" in out and "archived" not in out.replace("would", "")
    assert "nothing was changed" in lines[0] and "--verbose" in out
    assert "the active session agent:main:main is older than pruneAfter; kept" in out
    code, out = cli("sessions", "prune", "--store", store, "--verbose")
    assert code == 0 and "would remove agent:main:main" not in out
    assert out.count("\n  would remove agent:main:cron:") == 1_999  # and as many warnings
    assert out.count("\n  /") == 40
    code, out = cli("sessions", "prune", "--store", store, "--json")
    report = json.loads(out)
    assert "agent:main:main" not in report["pruned"] and report["after_count"] == 2_000
    code, out = cli("sessions", "prune", "--store", store, "--enforce")
    assert code == 0 and "removed 1,999 by age" in out and "archived 40 transcripts" in out
    with flatstate.open_store(store) as opened:
        assert list(opened.keys()) == ["agent:main:main"]


def test_prune_can_protect_another_session(tmp_path: Path) -> None:
    store = old_store(tmp_path, sessions=3, transcripts=0)
    report = json.loads(
        cli("sessions", "prune", "--store", store, "--active-key", "cron:job:run:1", "--json")[1]
    )
    assert sorted(report["pruned"]) == ["agent:main:cron:job:run:0", "agent:main:main"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sessions", "patch", "main", "--patch", "{model: 1}"], "not valid JSON"),
        (["sessions", "patch", "main", "--patch", "[1]"], "takes a JSON object"),
        (["sessions", "prune", "--prune-after", "soon"], "cannot read 'soon' as a duration"),
        (["sessions", "prune", "--max-disk", "lots"], "cannot read 'lots' as a size"),
    ],
)
def test_bad_values_are_usage_errors_not_tracebacks(
    tmp_path: Path, args: list[str], says: str
) -> None:
    store = old_store(tmp_path, sessions=1, transcripts=0)
    result = runner.invoke(app, [*args, "--store", store])
    assert result.exit_code == 2 and says in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    result = runner.invoke(app, [*args, "--store", store, "--json"])
    error = json.loads(result.stdout)["error"]
    assert result.exit_code == 2 and error["type"] == "UsageError" and says in error["message"]


def test_people_get_text_and_programs_json(openclaw_dir: Path) -> None:
    """Without --json nothing is JSON; listings say how many of how many; counts agree with
    their nouns; times are ISO 8601 (UTC) with their age; keys print as they are."""
    store = str(sessions_json(openclaw_dir))
    code, out = cli("sessions", "show", "main", "--store", store)
    assert code == 0 and "sessionId" in out and not out.lstrip().startswith("{")
    assert re.search(r"updatedAt +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+[smhd] ago\)", out)
    code, out = cli("sessions", "patch", "main", "--set", "label=ops", "--store", store)
    assert code == 0 and out == "patched agent:main:main: label\n"
    code, out = cli("sessions", "list", "--limit", "3", "--store", store)
    assert code == 0 and out.startswith(f"3 of 5 sessions in {store}")
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+[smhd] ago\)", out)
    code, out = cli("sessions", "patch", "[bold]odd[/bold]", "--set", "a=1", "--store", store)
    assert code == 0 and "agent:main:[bold]odd[/bold]" in out
    assert "agent:main:[bold]odd[/bold]" in cli("sessions", "list", "--store", store)[1]
    for key in list(json.loads(Path(store).read_text()))[1:]:
        cli("sessions", "delete", key, "--store", store)
    code, out = cli("sessions", "list", "--store", store)
    assert out.startswith(f"1 session in {store}")


def test_a_missing_session_is_exit_1_for_every_command(openclaw_dir: Path) -> None:
    store = str(sessions_json(openclaw_dir))
    before = sessions_json(openclaw_dir).read_bytes()
    for command in (
        ["sessions", "show"],
        ["sessions", "delete"],
        ["sessions", "delete", "--dry-run"],
        ["sessions", "reset"],
        ["transcript", "tail"],
        ["transcript", "compact"],
    ):
        code, out = cli(*command, "agent:main:nobody", "--store", store)
        assert code == 1, command
        assert out == (
            f"error: no session 'agent:main:nobody' in {store}; create it first, or list the "
            f"keys with: flatstate sessions list --store {store}\n"
        )
        result = runner.invoke(app, [*command, "agent:main:nobody", "--store", store, "--json"])
        assert json.loads(result.stdout)["error"]["type"] == "SessionNotFound"
    assert sessions_json(openclaw_dir).read_bytes() == before


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


def test_doctor_reports_auth_files_open_to_others_and_repair_narrows_them(
    openclaw_dir: Path,
) -> None:
    agent = openclaw_dir / "agents" / "main" / "agent"
    agent.chmod(0o755)
    (agent / "auth-profiles.json").chmod(0o644)
    code, out = cli("doctor", "--store", str(openclaw_dir), "--json")
    findings = json.loads(out)["findings"]
    assert code == 1 and [(f["kind"], f["subject"]) for f in findings] == [
        ("permissions", str(agent)),
        ("permissions", str(agent / "auth-profiles.json")),
    ]
    assert "flatstate doctor --repair --store" in findings[0]["detail"]
    assert oct(agent.stat().st_mode & 0o777) == "0o755"  # diagnosing changes nothing
    code, out = cli("doctor", "--store", str(openclaw_dir), "--repair", "--json")
    report = json.loads(out)
    assert code == 0 and report["findings"] == [] and len(report["modes_fixed"]) == 2
    assert oct(agent.stat().st_mode & 0o777) == "0o700"
    assert oct((agent / "auth-profiles.json").stat().st_mode & 0o777) == "0o600"


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
