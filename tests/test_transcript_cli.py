"""The transcript commands and sessions reset, on the real OpenClaw fixture."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flatstate.cli import app

runner = CliRunner()


def store_of(openclaw_dir: Path) -> str:
    return str(openclaw_dir / "agents" / "main" / "sessions" / "sessions.json")


def test_tail_context_and_show(openclaw_dir: Path) -> None:
    store = store_of(openclaw_dir)
    result = runner.invoke(
        app, ["transcript", "tail", "main", "-n", "3", "--store", store, "--json"]
    )
    assert result.exit_code == 0
    entries = json.loads(result.stdout)["items"]
    assert [e["type"] for e in entries] == ["message", "custom", "session_info"]
    result = runner.invoke(app, ["transcript", "context", "main", "--store", store])
    assert result.exit_code == 0 and result.output.startswith("[summary] Summary of the first half")
    result = runner.invoke(app, ["transcript", "show", "main", "--store", store, "--json"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)["items"]) == 31


def test_compact_and_reset(openclaw_dir: Path) -> None:
    store = store_of(openclaw_dir)
    result = runner.invoke(
        app, ["transcript", "compact", "main", "--keep-recent-tokens", "60", "--store", store]
    )
    assert result.exit_code == 0 and "compactionCount is now 2" in result.output
    old = json.loads(Path(store).read_text())["agent:main:main"]["sessionId"]
    result = runner.invoke(app, ["sessions", "reset", "main", "--store", store, "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["sessionId"] != old
    archived = [p.name for p in Path(store).parent.iterdir() if f"{old}.jsonl.reset." in p.name]
    assert len(archived) == 1


def test_counts_below_their_least_are_usage_errors(openclaw_dir: Path) -> None:
    store = store_of(openclaw_dir)
    before = Path(store).read_bytes()
    for args in (
        ["transcript", "tail", "main", "-n", "-1"],
        ["transcript", "compact", "main", "--keep-recent-tokens", "0"],
        ["sessions", "list", "--limit", "-1"],
    ):
        result = runner.invoke(app, [*args, "--store", store])
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
    assert Path(store).read_bytes() == before


def test_a_missing_session_is_a_clear_error(openclaw_dir: Path) -> None:
    result = runner.invoke(
        app, ["transcript", "tail", "agent:main:nobody", "--store", store_of(openclaw_dir)]
    )
    assert result.exit_code == 1 and "no session" in result.output
