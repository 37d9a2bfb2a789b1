"""The CLI, in-process with Typer's runner and once as a real subprocess.

The first tests walk the real command tree, so a command added later is held to the same
rules: `--help`, a mention in the docs, and `--json` output that parses and holds its items.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

import flatstate
from flatstate.auth import open_auth_store
from flatstate.bench.langgraph import CONTENDERS, POSTGRES
from flatstate.cli import app
from flatstate.cli._where import resolve
from flatstate.facts import open_facts
from flatstate.snapshot import Draft
from flatstate.transfer import import_openclaw
from tests.conftest import POSTGRES_DSN, postgres_location, require_extra
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
# Placeholders: {store} the OpenClaw root (its main agent also holds the facts FACTS), {fact}
# the id of the first fact, {openclaw} the root again, {imported} the root imported into SQLite
# state directories, {out} a fresh destination. Every command but import and export finds its
# part of the state through the one --store.
MAIN_ID = "162cb05f-a456-44f7-a1f5-a4d48d64ea75"
PROFILES = ["anthropic:default", "anthropic:work@example.com", "openai:default"]
FACTS = ["Alice prefers dark mode", "Deploys go to fly.io"]
Check = Callable[[Any], object]


def keys(out: Any) -> list[str]:
    return [item["key"] for item in out["items"]]


RUNS: dict[str, tuple[str, Check]] = {
    "doctor": ("--store {store}", lambda out: out["entries"] == 5 and out["findings"] == []),
    "stats": ("--store {store}", lambda out: out["entries"] == 5),
    "import-openclaw": ("{openclaw} {out}", lambda out: out["agents"][0]["sessions"] == 5),
    "export-openclaw": ("{imported} {out}", lambda out: out["agents"][0]["sessions"] == 5),
    "copy": (
        "{imported} {out}",
        lambda out: out["agents"][0]["sessions"]["count"] == 5 and out["agents"][0]["verified"],
    ),
    "sessions list": (
        "--store {store}",
        lambda out: out["count"] == out["total"] == 5 and "agent:main:main" in keys(out),
    ),
    "sessions show": ("main --store {store}", lambda out: out["sessionId"] == MAIN_ID),
    "sessions patch": ("main --set label=ops --store {store}", lambda out: out["label"] == "ops"),
    "sessions delete": ("main --store {store}", lambda out: out["deleted"] is True),
    "sessions prune": ("--max-entries 2 --store {store}", lambda out: len(out["capped"]) == 3),
    "sessions reset": ("main --store {store}", lambda out: out["sessionId"] != MAIN_ID),
    "transcript show": ("main --store {store}", lambda out: len(out["items"]) == 31),
    "transcript tail": (
        "main -n 2 --store {store}",
        lambda out: [e["type"] for e in out["items"]] == ["custom", "session_info"],
    ),
    "transcript context": (
        "main --store {store}",
        lambda out: out["items"][0]["role"] == "compactionSummary",
    ),
    "transcript compact": (
        "main --keep-recent-tokens 60 --store {store}",
        lambda out: out["compaction_count"] == 2,
    ),
    "transcript export": ("main {out}.jsonl --store {store}", lambda out: out["lines"] == 32),
    "transcript import": (
        "agent:main:copy {jsonl} --store {store}",
        lambda out: out["lines"] == 32,
    ),
    "auth list": ("--store {store}", lambda out: [p["id"] for p in out["items"]] == PROFILES),
    "auth show": ("openai:default --store {store}", lambda out: out["id"] == "openai:default"),
    "auth add": (
        "openai:backup --ref env:OPENAI_API_KEY --store {store}",
        lambda out: out["id"] == "openai:backup",
    ),
    "auth remove": ("openai:default --store {store}", lambda out: out["removed"] is True),
    "auth order": (
        "anthropic anthropic:default --store {store}",
        lambda out: out["order"] == ["anthropic:default"],
    ),
    "auth status": ("--store {store}", lambda out: [p["id"] for p in out["items"]] == PROFILES),
    "facts add": ("'Bob is on call' --store {store}", lambda out: out["text"] == "Bob is on call"),
    "facts search": (
        "'dark mode' --store {store}",
        lambda out: [hit["fact"]["text"] for hit in out["items"]] == FACTS[:1],
    ),
    "facts list": (
        "--store {store}",
        lambda out: sorted(f["text"] for f in out["items"]) == FACTS,
    ),
    "facts show": ("{fact} --store {store}", lambda out: out["text"] == FACTS[0]),
    "facts forget": ("{fact} --store {store}", lambda out: len(out["forgotten"]) == 36),
    "facts decay": ("--store {store}", lambda out: out["expired"] == 0),
    "facts stats": ("--store {store}", lambda out: out["live"] == 2),
}


def add_facts(location: Path | str) -> str:
    """FACTS in the facts of ``location`` (a state directory or a URL); the id of the first."""
    with open_facts(location) as facts:
        first = facts.add(FACTS[0])
        facts.add(FACTS[1])
    return first.id


@pytest.fixture
def places(tmp_path: Path, openclaw_dir: Path) -> dict[str, str]:
    fact = add_facts(openclaw_dir / "agents" / "main" / "agent")
    import_openclaw(str(openclaw_dir), str(tmp_path / "imported"))
    found = {
        "store": openclaw_dir,
        "openclaw": openclaw_dir,
        "fact": fact,
        "imported": tmp_path / "imported",
        "out": tmp_path / "out",
        "jsonl": openclaw_dir / "agents" / "main" / "sessions" / f"{MAIN_ID}.jsonl",
    }
    return {name: str(value) for name, value in found.items()}


def invoke(path: str, args: str, places: dict[str, str], *extra: str) -> Any:
    return runner.invoke(app, [*path.split(), *shlex.split(args.format(**places)), *extra])


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
    result = invoke(path, args, places, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert holds(out), result.stdout


def test_runs_name_only_real_commands() -> None:
    assert set(RUNS) <= set(COMMANDS)


STORE_COMMANDS = [path for path, (args, _) in RUNS.items() if "{store}" in args]


def copy_into_postgres(openclaw_dir: Path, location: str, state_dir: Path) -> None:
    """The fixture's main agent as a PostgreSQL store: its sessions, transcripts and auth
    profiles in the database (the facts FACTS go there too, see pg_places)."""
    agent = openclaw_dir / "agents" / "main"
    with flatstate.open_store(agent / "sessions" / "sessions.json", readonly=True) as source:
        entries = {key: entry.to_dict() for key, entry in source.items()}

    def copy(draft: Draft) -> None:
        for key, entry in entries.items():
            draft[key] = entry

    with flatstate.open_store(location) as target:
        target.update(copy)
        for transcript in (agent / "sessions").glob("*.jsonl"):
            with open(transcript, "rb") as f:
                target.backend.transcripts.named(transcript.name).import_lines(f)  # type: ignore[attr-defined]
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    profiles = json.loads((agent / "agent" / "auth-profiles.json").read_text())

    def replace(doc: dict[str, Any]) -> bool:
        doc.clear()
        doc.update(profiles)
        return True

    with open_auth_store(location) as auth:  # the auth profiles live in the database
        auth.update(replace)


@pytest.fixture
def pg_places(tmp_path: Path, openclaw_dir: Path) -> dict[str, str]:
    location = postgres_location(tmp_path)  # its state_dir is tmp_path / "state"
    copy_into_postgres(openclaw_dir, location, tmp_path / "state")
    jsonl = openclaw_dir / "agents" / "main" / "sessions" / f"{MAIN_ID}.jsonl"
    return {
        "store": location,
        "fact": add_facts(location),  # facts live in the database
        "out": str(tmp_path / "out"),
        "jsonl": str(jsonl),
    }


def test_the_test_database_url_carries_a_password() -> None:
    if POSTGRES_DSN is None:
        pytest.skip("no PostgreSQL server")
    assert password_of(POSTGRES_DSN)


def password_of(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(dsn).get("password") or "")


def shown_by(result: Any, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Everything a command run showed: stdout, stderr, its exception, every log record."""
    texts = [result.stdout, result.stderr]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        texts += [str(result.exception), repr(result.exception)]
    texts += [record.getMessage() for record in caplog.records]
    return texts


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["--json", "text"])
@pytest.mark.parametrize("path", STORE_COMMANDS)
def test_no_command_shows_a_database_password(
    path: str, mode: str, pg_places: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Every command, given a postgresql:// URL with a password on --store, works (on the
    fixture copied into the database: RUNS's checks hold) and shows the password nowhere."""
    caplog.set_level(logging.DEBUG, logger="flatstate")
    args, holds = RUNS[path]
    result = invoke(path, args, pg_places, *([mode] if mode == "--json" else []))
    assert result.exit_code == 0, result.output
    if mode == "--json":
        assert holds(json.loads(result.stdout)), result.stdout
    password = password_of(str(POSTGRES_DSN))
    leaked = any(password in text for text in shown_by(result, caplog))
    assert password and not leaked, f"flatstate {path} showed the password"  # not shown here


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["--json", "text"])
def test_errors_never_show_a_database_password(
    mode: str, pg_places: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flatstate")
    location = pg_places["store"]
    password = password_of(str(POSTGRES_DSN))
    place = resolve(location)
    assert password not in repr(place) and password not in place.shown, "a Place shows it"
    unreachable = re.sub(r"@([^/:]+):\d+/", r"@\1:1/", location)
    failing = [
        ["sessions", "show", "agent:main:nobody", "--store", location],
        ["transcript", "tail", "agent:main:nobody", "--store", location],
        ["sessions", "list", "--store", unreachable],
        ["doctor", "--store", unreachable],
        ["sessions", "prune", "--prune-after", "soon", "--store", location],
        ["sessions", "list", "--all-agents", "--store", location],
    ]
    for args in failing:
        result = runner.invoke(app, [*args, *([mode] if mode == "--json" else [])])
        assert result.exit_code != 0, args
        assert "Traceback" not in result.output, args
        leaked = any(password in text for text in shown_by(result, caplog))
        assert not leaked, f"flatstate {' '.join(args[:2])} showed the password"
        if mode == "--json":
            assert set(json.loads(result.stdout)["error"]) == {"type", "message"}


def tree_state(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` with its mode and, for a file, its bytes."""
    return {
        str(path.relative_to(root)): (
            path.lstat().st_mode,
            path.read_bytes() if path.is_file() else None,
        )
        for path in [root, *root.rglob("*")]
    }


# The commands that only read, and dry runs, with how to run them on the fixture.
READ_ONLY = {
    **{path: RUNS[path][0] for path in STORE_COMMANDS if path.split()[-1] in {
        "doctor", "stats", "list", "show", "tail", "context", "status", "search",
    }},
    "sessions prune": "--max-entries 2 --store {store}",  # warn mode: says, does not do
    "sessions patch": "main --set label=x --dry-run --store {store}",
    "sessions delete": "main --dry-run --store {store}",
    "auth order": "anthropic --store {store}",
}  # fmt: skip


@pytest.mark.parametrize("mode", ["--json", "text"])
@pytest.mark.parametrize("path", sorted(READ_ONLY))
def test_reading_leaves_openclaw_state_as_it_was(
    path: str, mode: str, places: dict[str, str], openclaw_dir: Path
) -> None:
    """A command that only reads leaves OpenClaw's directory byte- and mode-identical: no
    signal or lock file, no mode narrowed (it warns about a loose one instead)."""
    agent = openclaw_dir / "agents" / "main"
    (agent / "agent").chmod(0o755)  # as a umask of 022 leaves them
    (agent / "agent" / "auth-profiles.json").chmod(0o644)
    (agent / "sessions" / "sessions.json").chmod(0o644)
    before = tree_state(openclaw_dir)
    result = invoke(path, READ_ONLY[path], places, *([mode] if mode == "--json" else []))
    assert result.exit_code in (0, 1), result.output  # doctor finds the loose modes
    assert tree_state(openclaw_dir) == before
    ours = [p.name for p in openclaw_dir.rglob("*") if "flatstate" in p.name or ".lock" in p.name]
    assert not ours  # not even from the fixture's import, which reads this directory too
    if path.startswith("auth "):
        assert "doctor --repair" in result.stderr


@pytest.mark.parametrize("bare", [False, True], ids=["whole", "bare"])
@pytest.mark.parametrize("path", sorted(READ_ONLY))
def test_reading_leaves_a_state_directory_as_it_was(
    path: str, bare: bool, places: dict[str, str]
) -> None:
    """The same of flatstate's own SQLite files: a read opens them so that SQLite's -wal and
    -shm go again when it closes, and nothing else is touched; in a bare directory (only the
    databases, as a plain copy of them leaves it) a read makes neither the change counter nor
    the transcripts directory."""
    state_dir = Path(places["imported"])
    add_facts(state_dir)
    if bare:
        agent = next(p.parent for p in state_dir.rglob("sessions.sqlite"))
        shutil.rmtree(agent / "transcripts")
        (agent / "sessions.sqlite.signal").unlink()
    before = tree_state(state_dir)
    result = invoke(path, READ_ONLY[path], {**places, "store": str(state_dir)}, "--json")
    assert result.exit_code in (0, 1), result.output
    assert tree_state(state_dir) == before


def corrupt(openclaw_dir: Path) -> None:
    """Damage the fixture's sessions.json, auth-profiles.json and facts database."""
    agent = openclaw_dir / "agents" / "main"
    (agent / "sessions" / "sessions.json").write_text('{"agent:main:main": {"sessionId": ')
    (agent / "agent" / "auth-profiles.json").write_text('{"profiles": [')
    (agent / "agent" / "facts.sqlite").write_bytes(b"not a database" * 100)


@pytest.mark.parametrize("mode", ["--json", "text"])
@pytest.mark.parametrize("path", STORE_COMMANDS)
def test_a_corrupt_store_is_an_error_for_every_command(
    path: str, mode: str, places: dict[str, str], openclaw_dir: Path
) -> None:
    """No command takes a damaged store for an empty one: each exits 1 with one line saying
    which file and how to repair it, or with --json an error object (doctor: its report)."""
    corrupt(openclaw_dir)
    result = invoke(path, RUNS[path][0], places, *([mode] if mode == "--json" else []))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    if path == "doctor":
        report = json.loads(result.stdout) if mode == "--json" else None
        assert report is None or report["findings"][0]["kind"] == "corrupt"
        assert "doctor --repair" in result.stdout
        return
    if mode == "--json":
        error = json.loads(result.stdout)["error"]
        assert error["type"] == "StoreCorrupt"
        message = error["message"]
    else:
        assert result.stdout == "" and result.stderr.startswith("error: ")
        assert result.stderr.count("\n") == 1
        message = result.stderr
    assert str(openclaw_dir) in message
    if path.split()[0] in ("sessions", "transcript", "stats"):  # the repair is a command
        assert f"flatstate doctor --repair --store {openclaw_dir}" in message


PYTHON_TYPES = re.compile(r"<(str|int|float|bool|path)>|list\[|\{[a-z_]+\}|NoneType|float range")


@pytest.mark.parametrize("path", TREE, ids=lambda path: path or "flatstate")
def test_help_shows_no_python_types(path: str) -> None:
    result = runner.invoke(app, [*path.split(), "--help"])
    found = PYTHON_TYPES.findall(result.output)
    assert result.exit_code == 0 and not found, result.output
    assert not any("\u2500" <= ch <= "\u257f" for ch in result.output), "box drawing"


LISTINGS = [
    "sessions list", "transcript show", "transcript tail", "transcript context",
    "auth list", "auth status", "facts list", "facts search",
]  # fmt: skip


@pytest.mark.parametrize("path", LISTINGS)
def test_listings_have_one_shape(path: str, places: dict[str, str]) -> None:
    """Every listing prints where it read, how many it shows and holds, and the items."""
    result = invoke(path, RUNS[path][0], places, "--json")
    out = json.loads(result.stdout)
    assert set(out) == {"stores", "count", "total", "items"}
    assert out["count"] == len(out["items"]) and out["total"] in (None, len(out["items"]))
    assert [set(store) >= {"agentId", "store"} for store in out["stores"]] == [True]


def listed(*args: str | Path) -> Any:
    result = runner.invoke(app, [*map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_one_store_option_finds_every_part_of_an_agents_state(openclaw_dir: Path) -> None:
    """--store takes an OpenClaw root (with --agent or not), an agent directory, its agent/
    directory or its sessions.json: each names the same sessions, profiles and facts."""
    main = openclaw_dir / "agents" / "main"
    add_facts(main / "agent")
    for store in (
        [openclaw_dir],
        [openclaw_dir, "--agent", "main"],
        [main],
        [main / "agent"],
        [main / "sessions" / "sessions.json"],
    ):
        sessions = listed("sessions", "list", "--store", *store)
        assert sessions["stores"] == [
            {"agentId": "main", "store": str(main / "sessions" / "sessions.json")}
        ]
        assert sessions["count"] == 5
        profiles = listed("auth", "list", "--store", *store)
        assert [p["id"] for p in profiles["items"]] == PROFILES
        assert profiles["stores"][0]["store"] == str(main / "agent" / "auth-profiles.json")
        facts = listed("facts", "list", "--store", *store)
        assert sorted(f["text"] for f in facts["items"]) == FACTS


def test_after_an_import_every_command_finds_the_imported_state(
    openclaw_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "imported"
    assert runner.invoke(app, ["import-openclaw", str(openclaw_dir), str(dest)]).exit_code == 0
    for store in ([dest], [dest, "--agent", "main"], [dest / "main"]):
        profiles = listed("auth", "list", "--store", *store)
        assert [p["id"] for p in profiles["items"]] == PROFILES
        assert profiles["stores"][0]["store"] == str(dest / "main" / "auth-profiles.json")
        assert listed("sessions", "list", "--store", *store)["count"] == 5
        assert listed("transcript", "tail", "main", "-n", "1", "--store", *store)["count"] == 1


def test_all_agents_lists_every_agent_of_a_root(openclaw_dir: Path, tmp_path: Path) -> None:
    root = str(openclaw_dir)
    made = runner.invoke(
        app, ["sessions", "patch", "main", "--set", "a=1", "-s", root, "--agent", "coder"]
    )
    assert made.exit_code == 0, made.output
    assert (openclaw_dir / "agents" / "coder" / "sessions" / "sessions.json").is_file()
    (openclaw_dir / "agents" / "Not an agent").mkdir()  # skipped, not an error
    out = listed("sessions", "list", "--store", root, "--all-agents")
    assert [store["agentId"] for store in out["stores"]] == ["coder", "main"]
    assert out["count"] == 6 and {item["agentId"] for item in out["items"]} == {"coder", "main"}
    assert "agent:coder:main" in keys(out)
    text = runner.invoke(app, ["sessions", "list", "--store", root, "--all-agents"]).output
    assert text.startswith(f"6 sessions in 2 agents of {root}")
    import_openclaw(root, str(tmp_path / "imported"))
    out = listed("sessions", "list", "--store", tmp_path / "imported", "--all-agents")
    assert [store["agentId"] for store in out["stores"]] == ["coder", "main"] and out["count"] == 6
    alone = runner.invoke(app, ["sessions", "list", "--all-agents", "--store", str(tmp_path)])
    assert alone.exit_code == 2 and "--all-agents takes an OpenClaw root" in alone.output
    both = runner.invoke(app, ["sessions", "list", "--all-agents", "--agent", "main", "-s", root])
    assert both.exit_code == 2 and "takes no --agent" in both.output


def test_flatstate_store_and_the_default_are_one_place_for_every_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FLATSTATE_STORE", raising=False)
    for place in (tmp_path / "home" / ".flatstate" / "main", tmp_path / "elsewhere"):
        if place.name == "elsewhere":
            monkeypatch.setenv("FLATSTATE_STORE", str(place))
        for args in (
            ["sessions", "patch", "main", "--set", "model=m"],
            ["auth", "add", "openai:ref", "--ref", "env:OPENAI_API_KEY"],
            ["facts", "add", "Deploys go to fly.io"],
        ):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
        names = {"sessions.sqlite", "auth-profiles.json", "facts.sqlite"}
        assert names <= {path.name for path in place.iterdir()}
        assert listed("sessions", "list")["stores"][0]["store"] == str(place)


@pytest.mark.parametrize("old", [["facts", "list", "--state-dir"], ["auth", "list", "--agent-dir"]])
def test_the_old_location_options_are_gone(old: list[str], tmp_path: Path) -> None:
    result = runner.invoke(app, [*old, str(tmp_path)])
    assert result.exit_code == 2 and "No such option" in result.output


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


def test_bench_frameworks_writes_its_figures(tmp_path: Path) -> None:
    require_extra("agents", "openai-agents")
    out = tmp_path / "frameworks.json"
    args = ["bench", "frameworks", "--sessions", "6", "--turns", "2", "--concurrency", "1,3",
            "--contender", "sdk-sqlite,flatstate,flatstate-adk", "--json-out", str(out),
            "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert json.loads(result.stdout) == figures
    assert {"machine", "fsync_ms", "runs", "ratios", "skipped"} <= set(figures)
    ran = {(run["contender"], run["concurrency"]) for run in figures["runs"]}
    slot = (
        {("flatstate-adk", n) for n in (1, 3)}
        if "flatstate-adk" not in figures["skipped"]
        else set()
    )
    assert ran == {(c, n) for c in ("sdk-sqlite", "flatstate") for n in (1, 3)} | slot
    for run in figures["runs"]:
        assert run["turns"] == 12 and run["failed_turns"] == 0
        assert run["turns_per_s"] > 0 and run["p99_ms"] >= run["p50_ms"] > 0
        assert run["rss_peak_mib"] >= run["rss_start_mib"] > 0
    assert set(figures["ratios"]) == {"1", "3"}
    assert figures["machine"]["versions"]["openai-agents"].startswith("0.24")


def test_bench_frameworks_refuses_an_unknown_contender() -> None:
    result = runner.invoke(app, ["bench", "frameworks", "--contender", "redis"])
    assert result.exit_code == 2 and "redis" in result.output


def test_unknown_profile_is_a_clear_error() -> None:
    result = runner.invoke(app, ["bench", "store", "--profile", "giant"])
    assert result.exit_code != 0 and "giant" in result.output


def test_the_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flatstate", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "sessions" in result.stdout.lower()


def test_tables_sent_to_a_pipe_are_plain_and_not_cut_to_80_columns(tmp_path: Path) -> None:
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
    assert not [ch for ch in result.stdout if "\u2500" <= ch <= "\u257f"], "box drawing"


def test_bench_langgraph_writes_its_figures(tmp_path: Path) -> None:
    require_extra("langgraph.checkpoint.sqlite", "bench")
    out = tmp_path / "langgraph.json"
    dsn = ["--dsn", POSTGRES_DSN] if POSTGRES_DSN else []
    args = ["bench", "langgraph", "--threads", "3", "--steps", "12", "--state-kib", "8",
            "--gets", "30", "--runs", "2", *dsn, "--json-out", str(out), "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures == json.loads(result.stdout)
    # Without a server the bench starts a throwaway one, or skips the PostgreSQL contenders
    # saying why; with one given, nothing is skipped.
    skipped = set(figures["skipped"])
    assert skipped <= POSTGRES and not (POSTGRES_DSN and skipped), figures["skipped"]
    assert set(figures["runs"]) == set(CONTENDERS) - skipped
    for name, run in figures["runs"].items():
        assert run["puts"] == 15 and run["writes"] == 12, name
        assert run["put_per_s"] > 0 and run["get_tuple_per_s"] > 0 and run["disk_bytes"] > 0
        assert run["rss_end_mib"] > 0
        assert len(run["runs_each"]) == 2, name  # every contender ran twice
        for rate in ("put_per_s", "put_writes_per_s", "get_tuple_per_s"):
            assert run[rate] == max(each[rate] for each in run["runs_each"]), (name, rate)
    ours = figures["runs"]["FlatstateSaver sqlite"]["vs_sqlite_saver"]
    assert ours["disk"] < 1  # content addressing: less than SqliteSaver's full copies
    if POSTGRES_DSN:
        assert POSTGRES_DSN.split("@")[0].split(":")[-1] not in out.read_text()  # no password
    help_text = runner.invoke(app, ["bench", "langgraph", "--help"]).output
    assert "--json-out" in help_text


def test_bench_langgraph_refuses_an_unknown_contender() -> None:
    result = runner.invoke(app, ["bench", "langgraph", "--contenders", "RedisSaver"])
    assert result.exit_code != 0 and "RedisSaver" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["sessions", "delete", "typo"],
        ["sessions", "reset", "typo"],
        ["sessions", "prune", "--enforce"],
        ["transcript", "compact", "typo"],
        ["sessions", "patch", "main", "--set", "sessionId=5"],  # refused: nothing to create
        ["transcript", "import", "newkey", "/nonexistent/lines.jsonl"],
    ],
)
def test_a_failing_write_to_a_missing_store_creates_nothing(
    tmp_path: Path, args: list[str]
) -> None:
    place = tmp_path / "nowhere"
    result = runner.invoke(app, [*args, "--store", str(place)])
    assert result.exit_code == 1, result.output
    assert not place.exists()


def test_a_store_of_the_wrong_kind_is_named_as_such(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a store")
    adir = tmp_path / "sessions.json"
    adir.mkdir()
    for store, says in ((afile, "is a file, where the store needs a directory"),
                        (adir, "is a directory, where the store needs a file")):  # fmt: skip
        for args in (["sessions", "list"], ["doctor"]):
            result = runner.invoke(app, [*args, "--store", str(store)])
            assert result.exit_code == 1 and says in result.output, (args, result.output)
            assert "Errno" not in result.output
    assert afile.read_text() == "not a store" and list(adir.iterdir()) == []
