"""``flatstate facts`` and ``flatstate bench facts``, in-process with Typer's runner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flatstate.cli import app

runner = CliRunner()
COMMANDS = ["add", "search", "list", "show", "forget", "decay", "stats"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "facts.md"


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "state")


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def run_json(*args: str) -> object:
    code, output = run(*args, "--json")
    assert code == 0, output
    return json.loads(output)


def test_every_command_has_help_and_docs() -> None:
    code, output = run("facts", "--help")
    assert code == 0
    documented = DOCS.read_text()
    for command in COMMANDS:
        assert command in output
        code, help_text = run("facts", command, "--help")
        assert code == 0 and "--json" in help_text and "--state-dir" in help_text
        assert f"flatstate facts {command}" in documented
    assert "flatstate bench facts" in documented


def test_add_list_show_search_forget(state: str) -> None:
    added = run_json(
        "facts", "add", "Alice prefers dark mode", "--category", "preference",
        "--entity", "alice", "--key", "theme", "--tag", "ui", "--state-dir", state,
    )  # fmt: skip
    assert isinstance(added, dict)
    assert added["text"] == "Alice prefers dark mode" and added["tags"] == ["ui"]
    again = run_json("facts", "add", "alice prefers DARK mode.", "--state-dir", state)
    assert isinstance(again, dict) and again["id"] == added["id"]
    run_json("facts", "add", "Deploys go to fly.io", "--state-dir", state)

    listed = run_json("facts", "list", "-n", "5", "--state-dir", state)
    assert isinstance(listed, list)
    assert [f["text"] for f in listed] == ["Deploys go to fly.io", "Alice prefers dark mode"]

    shown = run_json("facts", "show", added["id"][:8], "--state-dir", state)
    assert shown == again  # the fact as its restatement confirmed it

    hits = run_json("facts", "search", "dark theme", "--state-dir", state)
    assert isinstance(hits, list) and [h["fact"]["id"] for h in hits] == [added["id"]]
    assert hits[0]["score"] > 0

    assert run_json("facts", "forget", added["id"], "--state-dir", state) == {
        "forgotten": added["id"]
    }
    code, output = run("facts", "show", added["id"], "--state-dir", state)
    assert code == 1 and "no fact with id" in output


def test_tables_for_people(state: str) -> None:
    run("facts", "add", "Bob is on call this week", "--state-dir", state)
    for command in (["list"], ["search", "on call"], ["stats"], ["decay"]):
        code, output = run("facts", *command, "--state-dir", state)
        assert code == 0, output
    code, output = run("facts", "list", "--state-dir", state)
    assert "Bob is on call this week" in output
    code, output = run("facts", "stats", "--state-dir", state)
    assert re.search(r"live\s.*\b1\b", output)


def test_stats_and_decay_as_json(state: str) -> None:
    run_json("facts", "add", "A note", "--decay-class", "ephemeral", "--state-dir", state)
    stats = run_json("facts", "stats", "--state-dir", state)
    assert (
        isinstance(stats, dict) and stats["live"] == 1 and stats["by_class"] == [["ephemeral", 1]]
    )
    assert run_json("facts", "decay", "--state-dir", state) == {
        "expired": 0,
        "halved": 0,
        "dropped": 0,
    }


def test_errors_are_one_line_and_exit_1(state: str) -> None:
    code, output = run("facts", "list", "--state-dir", state)
    assert code == 1 and "no facts database" in output and "Traceback" not in output
    code, output = run("facts", "add", "x", "--decay-class", "forever", "--state-dir", state)
    assert code == 1 and "unknown decay class" in output
    code, output = run("facts", "add", "x", "--importance", "2", "--state-dir", state)
    assert code != 0


def test_state_dir_defaults_to_flatstate_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLATSTATE_HOME", str(tmp_path / "home"))
    run_json("facts", "add", "Found through the environment")
    assert (tmp_path / "home" / "facts.sqlite").exists()
    listed = run_json("facts", "list")
    assert isinstance(listed, list) and listed[0]["text"] == "Found through the environment"


@pytest.mark.slow
def test_bench_facts_prints_figures(tmp_path: Path) -> None:
    figures = run_json(
        "bench", "facts", "--sizes", "300,600", "--recalls", "50", "--adds", "60",
        "--soak-recalls", "300", "--soak-size", "300", "--vector-recalls", "20",
    )  # fmt: skip
    assert isinstance(figures, dict)
    assert set(figures["recall"]) == {"300", "600"}
    for size in ("300", "600"):
        r = figures["recall"][size]
        assert r["facts"] == int(size) and 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["mean_facts"] > 0
    assert figures["add"]["per_s"] > 0 and figures["add"]["new_facts"] == 60
    assert figures["soak"]["recalls"] == 300 and figures["soak"]["rss_after_mib"] > 0
    assert figures["vector_recall"]["embedded"] == 300
