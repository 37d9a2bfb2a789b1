"""The CLI, in-process with Typer's runner and once as a real subprocess.

The first tests walk the real command tree, so a command added later is held to the same
rules: `--help`, a mention in the docs, and `--json` output that parses and holds its items.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from flatstate.cli import app
from flatstate.facts import open_facts
from flatstate.transfer import import_openclaw
from tests.test_docs import PAGES

runner = CliRunner()


def command_tree() -> dict[str, Any]:
    """Every command and group of the real Click tree, by path ("sessions list"); root is ""."""
    tree: dict[str, Any] = {}

    def walk(command: Any, path: str) -> None:
        tree[path] = command
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())

    walk(typer.main.get_command(app), "")
    return tree


TREE = command_tree()
COMMANDS = [path for path, command in TREE.items() if not isinstance(command, TyperGroup)]
# `flatstate` then command words; `a|b|c` (`a\|b\|c` in a Markdown table) names several.
MENTION = re.compile(r"\bflatstate((?:\s+[a-z][\w-]*(?:\\?\|[a-z][\w-]*)*)+)")


def documented_paths() -> set[str]:
    """The command paths README.md and docs/*.md name: the words after the word `flatstate`,
    any of them `a|b|c` alternatives, and every prefix of them. So "flatstate sessions
    list|show KEY" documents "sessions", "sessions list" and "sessions show"."""
    paths: set[str] = set()
    for page in PAGES:
        for mention in MENTION.finditer(page.read_text(encoding="utf-8")):
            level = [""]
            for word in mention[1].replace("\\|", "|").split():
                level = [f"{p} {name}".strip() for p in level for name in word.split("|")]
                paths.update(level)
    return paths


DOCUMENTED = documented_paths()


@pytest.mark.parametrize("path", TREE, ids=lambda path: path or "flatstate")
def test_every_command_has_help_and_docs(path: str) -> None:
    """`--help` works and shows the command's own help text, and the command is documented:
    its path appears as `flatstate <path>` in README.md or docs/*.md (see documented_paths)."""
    result = runner.invoke(app, [*path.split(), "--help"])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert f"Usage: {f'flatstate {path}'.strip()} [OPTIONS]" in shown
    assert (TREE[path].help or "").strip(), f"flatstate {path} has no help text"
    documented = not path or path in DOCUMENTED
    assert documented, f"`flatstate {path}` is not in README.md or docs/"


# How to run each command on a copy of the OpenClaw fixture, and what its JSON must hold.
# Placeholders: {sessions} its sessions.json, {agent} its agent dir, {openclaw} the state dir,
# {facts} a facts dir holding FACTS, {fact} the id of the first, {imported} the state dir
# imported into SQLite, {out} a fresh destination.
MAIN_ID = "162cb05f-a456-44f7-a1f5-a4d48d64ea75"
PROFILES = ["anthropic:default", "anthropic:work@example.com", "openai:default"]
FACTS = ["Alice prefers dark mode", "Deploys go to fly.io"]
Check = Callable[[Any], object]
RUNS: dict[str, tuple[str, Check]] = {
    "doctor": ("--store {sessions}", lambda out: out["entries"] == 5 and out["findings"] == []),
    "stats": ("--store {sessions}", lambda out: out["entries"] == 5),
    "import-openclaw": ("{openclaw} {out}", lambda out: out["agents"][0]["sessions"] == 5),
    "export-openclaw": ("{imported} {out}", lambda out: out["agents"][0]["sessions"] == 5),
    "sessions list": ("--store {sessions}", lambda out: len(out) == 5 and "agent:main:main" in out),
    "sessions show": ("main --store {sessions}", lambda out: out["sessionId"] == MAIN_ID),
    "sessions patch": (
        "main --set label=ops --store {sessions}",
        lambda out: out["label"] == "ops",
    ),
    "sessions delete": ("main --store {sessions}", lambda out: out["deleted"] is True),
    "sessions prune": ("--max-entries 2 --store {sessions}", lambda out: len(out["capped"]) == 3),
    "sessions reset": ("main --store {sessions}", lambda out: out["sessionId"] != MAIN_ID),
    "transcript show": ("main --store {sessions}", lambda out: len(out) == 31),
    "transcript tail": (
        "main -n 2 --store {sessions}",
        lambda out: [e["type"] for e in out] == ["custom", "session_info"],
    ),
    "transcript context": (
        "main --store {sessions}",
        lambda out: out[0]["role"] == "compactionSummary",
    ),
    "transcript compact": (
        "main --keep-recent-tokens 60 --store {sessions}",
        lambda out: out["compaction_count"] == 2,
    ),
    "auth list": ("--agent-dir {agent}", lambda out: [p["id"] for p in out] == PROFILES),
    "auth show": ("openai:default --agent-dir {agent}", lambda out: out["id"] == "openai:default"),
    "auth add": (
        "openai:backup --ref env:OPENAI_API_KEY --agent-dir {agent}",
        lambda out: out["id"] == "openai:backup",
    ),
    "auth remove": ("openai:default --agent-dir {agent}", lambda out: out["removed"] is True),
    "auth order": (
        "anthropic anthropic:default --agent-dir {agent}",
        lambda out: out["order"] == ["anthropic:default"],
    ),
    "auth status": ("--agent-dir {agent}", lambda out: [p["id"] for p in out] == PROFILES),
    "facts add": (
        "'Bob is on call' --state-dir {facts}",
        lambda out: out["text"] == "Bob is on call",
    ),
    "facts search": (
        "'dark mode' --state-dir {facts}",
        lambda out: [hit["fact"]["text"] for hit in out] == FACTS[:1],
    ),
    "facts list": ("--state-dir {facts}", lambda out: sorted(f["text"] for f in out) == FACTS),
    "facts show": ("{fact} --state-dir {facts}", lambda out: out["text"] == FACTS[0]),
    "facts forget": ("{fact} --state-dir {facts}", lambda out: len(out["forgotten"]) == 36),
    "facts decay": ("--state-dir {facts}", lambda out: out["expired"] == 0),
    "facts stats": ("--state-dir {facts}", lambda out: out["live"] == 2),
}


@pytest.fixture
def places(tmp_path: Path, openclaw_dir: Path) -> dict[str, str]:
    with open_facts(tmp_path / "facts") as facts:
        first = facts.add(FACTS[0])
        facts.add(FACTS[1])
    import_openclaw(str(openclaw_dir), str(tmp_path / "imported"))
    sessions = openclaw_dir / "agents" / "main" / "sessions" / "sessions.json"
    found = {
        "sessions": sessions,
        "agent": openclaw_dir / "agents" / "main" / "agent",
        "openclaw": openclaw_dir,
        "facts": tmp_path / "facts",
        "fact": first.id,
        "imported": tmp_path / "imported",
        "out": tmp_path / "out",
    }
    return {name: str(value) for name, value in found.items()}


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_prints_json(path: str, places: dict[str, str]) -> None:
    """Every command takes `--json`: listings are not told apart by name (list, show, ...)
    but are all the commands, so a new listing is covered whatever it is called. Each command
    outside `bench` runs for real with `--json` (RUNS says how) and its stdout must be JSON
    holding what it listed or changed. The benchmarks spawn processes and run for seconds to
    minutes, so here they are only held to having the option; their JSON is tested with them
    (test_bench_store_prints_figures_as_json, test_facts_cli, test_seed)."""
    options = [opt for param in TREE[path].params for opt in param.opts]
    assert "--json" in options, f"flatstate {path} has no --json"
    if path.startswith("bench "):
        return
    known = path in RUNS
    assert known, f"flatstate {path} is new: add how to run it to RUNS"
    args, holds = RUNS[path]
    result = runner.invoke(app, [*path.split(), *shlex.split(args.format(**places)), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert holds(out), result.stdout


def test_runs_name_only_real_commands() -> None:
    assert set(RUNS) <= set(COMMANDS)


def test_bench_store_prints_figures_as_json() -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "store",
            "--entries",
            "60",
            "--small-entries",
            "30",
            "--scale-entries",
            "0",
            "--seconds",
            "0.05",
            "--soak-seconds",
            "0.5",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert set(figures["rates"]) == {"30", "60"}
    assert figures["rates"]["60"]["get_per_s"] > 0 and figures["baseline"]["get_per_s"] > 0
    assert figures["rates"]["60"]["dict_get_per_s"] > 0
    assert figures["memory"]["sessions_json_mib"] > 0
    assert figures["memory"]["derived"][0] == "sessions_json_mib"  # SQLite has no sessions.json
    assert figures["soak"]["ops"] > 0 and figures["ratios"]["get_vs_deepcopy"] > 1


def test_bench_write_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "write.json"
    args = ["bench", "write", "--entries", "30", "--tasks", "4", "--synchronous", "normal",
            "--seconds", "0.2", "--json-out", str(out), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert {"machine", "fsync_ms", "runs"} <= set(figures)
    assert {run["design"] for run in figures["runs"]} == {
        "flatstate", "one-commit", "to_thread+lock", "aiosqlite+lock"
    }  # fmt: skip
    for run in figures["runs"]:
        assert run["tasks"] == 4 and run["synchronous"] == "normal"
        assert run["writes_per_s"] > 0 and run["p99_ms"] >= run["p50_ms"] > 0
        assert run["mean_batch"] >= 1 and run["loop_lag_p99_ms"] >= 0


def test_unknown_profile_is_a_clear_error() -> None:
    result = runner.invoke(app, ["bench", "store", "--profile", "giant"])
    assert result.exit_code != 0 and "giant" in result.output


def test_the_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flatstate", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "sessions" in result.stdout.lower()


def test_tables_sent_to_a_pipe_are_not_cut_to_80_columns(tmp_path: Path) -> None:
    import flatstate

    key = "agent:main:" + "a-long-channel-name-" * 4
    with flatstate.open_store(tmp_path / "state") as store:
        store.upsert(key, {"model": "some-model"})
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flatstate",
            "sessions",
            "list",
            "--store",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert any(key in line for line in result.stdout.splitlines())
