"""``flatstate facts`` and ``flatstate bench facts``, in-process with Typer's runner."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from flatstate.cli import app
from tests.conftest import POSTGRES_DSN
from tests.facts_support import facts_location

runner = CliRunner()
POSTGRES_PASSWORD = urlsplit(POSTGRES_DSN).password if POSTGRES_DSN else None
COMMANDS = ["add", "search", "list", "show", "forget", "decay", "stats"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "facts.md"


@pytest.fixture
def state(tmp_path: Path, facts_backend: str) -> str:
    """A state directory, or a postgresql:// URL (the facts then live in the database)."""
    return facts_location(facts_backend, tmp_path)


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
        assert code == 0 and "--json" in help_text and "--store" in help_text
        assert f"flatstate facts {command}" in documented
    assert "flatstate bench facts" in documented


def test_add_list_show_search_forget(state: str) -> None:
    added = run_json(
        "facts", "add", "Alice prefers dark mode", "--category", "preference",
        "--entity", "alice", "--key", "theme", "--tag", "ui", "--store", state,
    )  # fmt: skip
    assert isinstance(added, dict)
    assert added["text"] == "Alice prefers dark mode" and added["tags"] == ["ui"]
    again = run_json("facts", "add", "alice prefers DARK mode.", "--store", state)
    assert isinstance(again, dict) and again["id"] == added["id"]
    run_json("facts", "add", "Deploys go to fly.io", "--store", state)

    listed = run_json("facts", "list", "-n", "5", "--store", state)
    assert isinstance(listed, dict)
    texts = [f["text"] for f in listed["items"]]
    assert texts == ["Deploys go to fly.io", "Alice prefers dark mode"]

    shown = run_json("facts", "show", added["id"][:8], "--store", state)
    assert shown == again  # the fact as its restatement confirmed it

    found = run_json("facts", "search", "dark theme", "--store", state)
    assert isinstance(found, dict)
    hits = found["items"]
    assert [h["fact"]["id"] for h in hits] == [added["id"]] and hits[0]["score"] > 0

    assert run_json("facts", "forget", added["id"], "--store", state) == {"forgotten": added["id"]}
    code, output = run("facts", "show", added["id"], "--store", state)
    assert code == 1 and "no fact with id" in output


def test_tables_for_people(state: str) -> None:
    run("facts", "add", "Bob is on call this week", "--store", state)
    for command in (["list"], ["search", "on call"], ["stats"], ["decay"]):
        code, output = run("facts", *command, "--store", state)
        assert code == 0, output
    code, output = run("facts", "list", "--store", state)
    assert "Bob is on call this week" in output
    code, output = run("facts", "stats", "--store", state)
    assert re.search(r"live\s.*\b1\b", output)


def test_stats_and_decay_as_json(state: str) -> None:
    run_json("facts", "add", "A note", "--decay-class", "ephemeral", "--store", state)
    stats = run_json("facts", "stats", "--store", state)
    assert (
        isinstance(stats, dict) and stats["live"] == 1 and stats["by_class"] == [["ephemeral", 1]]
    )
    assert run_json("facts", "decay", "--store", state) == {
        "expired": 0,
        "halved": 0,
        "dropped": 0,
    }


def test_errors_are_one_line_and_exit_1(tmp_path: Path, facts_backend: str, pg_schema: str) -> None:
    # A schema of its own on PostgreSQL, where no facts table exists yet.
    state = facts_location(facts_backend, tmp_path, schema=pg_schema)
    code, output = run("facts", "list", "--store", state)
    assert code == 1 and "Traceback" not in output
    assert re.search("no facts (database here|in this database)", output)
    assert POSTGRES_PASSWORD is None or POSTGRES_PASSWORD not in output
    code, output = run("facts", "add", "x", "--decay-class", "forever", "--store", state)
    assert code == 1 and "unknown decay class" in output
    code, output = run("facts", "add", "x", "--importance", "2", "--store", state)
    assert code != 0


def test_the_store_comes_from_flatstate_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLATSTATE_STORE", str(tmp_path / "home"))
    run_json("facts", "add", "Found through the environment")
    assert (tmp_path / "home" / "facts.sqlite").exists()
    listed = run_json("facts", "list")
    assert (
        isinstance(listed, dict) and listed["items"][0]["text"] == "Found through the environment"
    )


def test_the_short_id_facts_list_shows_works_everywhere(state: str) -> None:
    old = run_json("facts", "add", "Deploys go to fly.io", "--store", state)
    assert isinstance(old, dict)
    code, listing = run("facts", "list", "--store", state)
    short = old["id"][:8]
    assert code == 0 and f" {short} " in listing and old["id"] not in listing
    new = run_json("facts", "add", "Deploys go to render", "--supersedes", short, "--store", state)
    assert isinstance(new, dict)
    shown = run_json("facts", "show", short, "--store", state)
    assert isinstance(shown, dict) and shown["superseded_by"] == new["id"]
    assert run_json("facts", "forget", short, "--store", state) == {"forgotten": old["id"]}


def test_a_new_value_for_an_entity_and_key_supersedes_the_old(state: str) -> None:
    dark = run_json(
        "facts", "add", "Alice prefers dark mode", "--entity", "alice", "--key", "theme",
        "--value", "dark", "--store", state,
    )  # fmt: skip
    editor = run_json(
        "facts", "add", "Alice uses vim", "--entity", "alice", "--key", "editor", "--store", state
    )
    light = run_json(
        "facts", "add", "Alice switched to light mode", "--entity", "Alice", "--key", "Theme",
        "--value", "light", "--store", state,
    )  # fmt: skip
    assert isinstance(dark, dict) and isinstance(editor, dict) and isinstance(light, dict)
    listed = run_json("facts", "list", "--store", state)
    assert isinstance(listed, dict)
    assert [f["id"] for f in listed["items"]] == [light["id"], editor["id"]]
    shown = run_json("facts", "show", dark["id"], "--store", state)
    assert isinstance(shown, dict) and shown["superseded_by"] == light["id"]


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


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_facts_on_postgres_prints_both_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    if POSTGRES_DSN is None:
        pytest.skip("no PostgreSQL server (FLATSTATE_TEST_POSTGRES_DSN)")
    figures = run_json(
        "bench", "facts", "--backend", "postgres", "--dsn", POSTGRES_DSN,
        "--sizes", "200", "--recalls", "30", "--adds", "40",
        "--soak-recalls", "0", "--vector-recalls", "0",
    )  # fmt: skip
    assert isinstance(figures, dict)
    for side in (figures, figures["postgres"]):
        r = side["recall"]["200"]
        assert r["facts"] == 200 and 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert side["add"]["new_facts"] == 40 and side["add"]["per_s"] > 0
    assert POSTGRES_PASSWORD not in json.dumps(figures)
    assert figures["machine"]["versions"]["postgresql"]
    monkeypatch.delenv("FLATSTATE_BENCH_POSTGRES_DSN", raising=False)
    code, output = run("bench", "facts", "--backend", "postgres", "--dsn", "")
    assert code != 0 and "needs --dsn" in output
