"""``flatstate auth``: every command, in-process and once as a real process; never a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flatstate.cli import app
from tests.auth_support import (
    FIXTURE_FAILURE_AT,
    FIXTURE_OAUTH_EXPIRES,
    OAUTH_ID,
    SecretGuard,
    agent_dir_of,
    read_json,
    secret_guard,
)

runner = CliRunner()
CLI_MAIN = "from flatstate.cli import main; main()"


@pytest.fixture
def guard(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[SecretGuard]:
    yield from secret_guard(capsys, caplog)


@pytest.fixture
def agent_dir(openclaw_dir: Path) -> str:
    return str(agent_dir_of(openclaw_dir))


def run(guard: SecretGuard, *args: str, code: int = 0, **kw: object) -> str:
    result = runner.invoke(app, list(args), **kw)  # type: ignore[arg-type]
    guard.watch(result.output, where=f"flatstate {' '.join(args[:2])}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        guard.watch(result.exception)
    assert result.exit_code == code, result.output
    return result.output


def test_list_shows_provider_type_email_and_last_4(agent_dir: str, guard: SecretGuard) -> None:
    out = run(guard, "auth", "list", "--store", agent_dir)
    for text in ("anthropic:default", "api_key", "oauth", "token", "work@example.com", "…0001"):
        assert text in out
    rows = json.loads(run(guard, "auth", "list", "--store", agent_dir, "--json"))["items"]
    assert rows[1] == {
        "id": OAUTH_ID,
        "provider": "anthropic",
        "type": "oauth",
        "email": "work@example.com",
        "secret": "…0002",
    }
    listed = run(guard, "auth", "list", "--store", agent_dir, "--provider", "openai", "--json")
    assert [r["id"] for r in json.loads(listed)["items"]] == ["openai:default"]


def test_show_redacts_secrets(agent_dir: str, guard: SecretGuard) -> None:
    shown = json.loads(run(guard, "auth", "show", OAUTH_ID, "--store", agent_dir, "--json"))
    assert shown["profile"]["access"] == "…0002" and shown["profile"]["refresh"] == "…0003"
    assert shown["profile"]["expires"] == 1795611870415
    out = run(guard, "auth", "show", "anthropic:default", "--store", agent_dir)
    assert "usage.cooldownUntil  2026-11-25T12:05:30Z (" in out  # FIXTURE_COOLDOWN_UNTIL


def test_an_unknown_profile_is_one_line_and_exit_1(agent_dir: str, guard: SecretGuard) -> None:
    out = run(guard, "auth", "show", "nobody:none", "--store", agent_dir, code=1)
    assert "nobody:none" in out and "Traceback" not in out


def test_add_reads_the_secret_from_a_hidden_prompt(
    agent_dir: str, guard: SecretGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flatstate.cli.auth._interactive", lambda: True)  # as on a terminal
    secret = guard.secret("sk-prompted-secret-9876")
    out = run(guard, "auth", "add", "openai:prompted", "--store", agent_dir, input=secret + "\n")
    assert "…9876" in out
    doc = read_json(Path(agent_dir) / "auth-profiles.json")
    assert doc["profiles"]["openai:prompted"] == {
        "type": "api_key",
        "provider": "openai",
        "key": secret,
    }


def test_add_from_env_stdin_and_ref(
    agent_dir: str, guard: SecretGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_secret = guard.secret("tok-from-env-5555")
    stdin_secret = guard.secret("tok-from-stdin-6666")
    monkeypatch.setenv("FLATSTATE_T_SECRET", env_secret)
    run(
        guard,
        "auth",
        "add",
        "x:env",
        "--type",
        "token",
        "--secret-env",
        "FLATSTATE_T_SECRET",
        "--store",
        agent_dir,
    )
    run(
        guard,
        "auth",
        "add",
        "x:stdin",
        "--type",
        "token",
        "--secret-stdin",
        "--email",
        "me@example.com",
        "--store",
        agent_dir,
        input=stdin_secret + "\n",
    )
    added = json.loads(
        run(
            guard,
            "auth",
            "add",
            "x:ref",
            "--ref",
            "env:FLATSTATE_T_SECRET",
            "--store",
            agent_dir,
            "--json",
        )
    )
    assert added["secret"] == "ref env:FLATSTATE_T_SECRET"
    profiles = read_json(Path(agent_dir) / "auth-profiles.json")["profiles"]
    assert profiles["x:env"]["token"] == env_secret
    assert profiles["x:stdin"] == {
        "type": "token",
        "provider": "x",
        "email": "me@example.com",
        "token": stdin_secret,
    }
    assert profiles["x:ref"] == {
        "type": "api_key",
        "provider": "x",
        "keyRef": "env:FLATSTATE_T_SECRET",
    }
    run(
        guard,
        "auth",
        "add",
        "x:none",
        "--secret-env",
        "FLATSTATE_UNSET_VAR",
        "--store",
        agent_dir,
        code=2,
    )


def test_add_oauth_reads_json_tokens_from_stdin(agent_dir: str, guard: SecretGuard) -> None:
    tokens = {
        "access": guard.secret("acc-oauth-7777"),
        "refresh": guard.secret("ref-oauth-8888"),
        "expires": 1_900_000_000_000,
    }
    run(
        guard,
        "auth",
        "add",
        "google:me",
        "--type",
        "oauth",
        "--secret-stdin",
        "--store",
        agent_dir,
        input=json.dumps(tokens),
    )
    profile = read_json(Path(agent_dir) / "auth-profiles.json")["profiles"]["google:me"]
    assert profile == {"type": "oauth", "provider": "google"} | tokens
    run(guard, "auth", "add", "google:x", "--type", "oauth", "--store", agent_dir, code=2)


def test_remove_and_order(agent_dir: str, guard: SecretGuard) -> None:
    out = run(
        guard, "auth", "order", "anthropic", OAUTH_ID, "anthropic:default", "--store", agent_dir
    )
    assert f"{OAUTH_ID} -> anthropic:default" in out
    shown = json.loads(run(guard, "auth", "order", "anthropic", "--store", agent_dir, "--json"))
    assert shown == {"provider": "anthropic", "order": [OAUTH_ID, "anthropic:default"]}
    assert json.loads(run(guard, "auth", "remove", OAUTH_ID, "--store", agent_dir, "--json")) == {
        "id": OAUTH_ID,
        "removed": True,
    }
    shown = json.loads(run(guard, "auth", "order", "anthropic", "--store", agent_dir, "--json"))
    assert shown["order"] == ["anthropic:default"]
    run(guard, "auth", "order", "anthropic", "--clear", "--store", agent_dir)
    assert "no explicit order" in run(guard, "auth", "order", "anthropic", "--store", agent_dir)
    assert "no such profile" in run(guard, "auth", "remove", OAUTH_ID, "--store", agent_dir, code=1)
    run(guard, "auth", "order", "openai", "anthropic:default", "--store", agent_dir, code=1)


def test_status_shows_cooldowns_with_the_time_left(agent_dir: str, guard: SecretGuard) -> None:
    at = FIXTURE_FAILURE_AT + 15_000
    out = run(guard, "auth", "status", "--now", str(at), "--store", agent_dir)
    assert "cooldown" in out and "(in 45s)" in out and "rate_limit" in out
    rows = json.loads(
        run(
            guard,
            "auth",
            "status",
            "--now",
            str(at),
            "--json",
            "--store",
            agent_dir,
            "--provider",
            "anthropic",
        )
    )["items"]
    assert [(r["id"], r["state"], r["remaining_ms"]) for r in rows] == [
        ("anthropic:default", "cooldown", 45_000),
        (OAUTH_ID, "ok", None),
    ]


def test_readonly_environment_writes_nothing(
    agent_dir: str, guard: SecretGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLATSTATE_AUTH_READONLY", "1")
    before = (Path(agent_dir) / "auth-profiles.json").read_bytes()
    out = run(guard, "auth", "remove", "openai:default", "--store", agent_dir)
    assert "read-only" in out
    assert (Path(agent_dir) / "auth-profiles.json").read_bytes() == before


@pytest.mark.parametrize(
    "args",
    [
        ["add", "bad:x", "--ref", "nowhere"],
        ["remove", "openai:missing"],
        ["order", "openai", "openai:missing"],
    ],
    ids=["add", "remove", "order"],
)
def test_a_failing_write_leaves_files_and_modes_as_they_were(
    agent_dir: str, guard: SecretGuard, args: list[str]
) -> None:
    """A writable open narrows loose modes; a command whose change is refused must not."""
    file = Path(agent_dir) / "auth-profiles.json"
    Path(agent_dir).chmod(0o755)
    file.chmod(0o644)
    before = sorted((p.name, p.lstat().st_mode, p.read_bytes()) for p in Path(agent_dir).iterdir())
    run(guard, "auth", *args, "--store", agent_dir, code=1)
    after = sorted((p.name, p.lstat().st_mode, p.read_bytes()) for p in Path(agent_dir).iterdir())
    assert after == before
    assert Path(agent_dir).stat().st_mode & 0o777 == 0o755


def test_every_command_has_help(guard: SecretGuard) -> None:
    for command in ("list", "show", "add", "remove", "order", "status"):
        assert "--store" in run(guard, "auth", command, "--help")
    assert "auth" in run(guard, "bench", "--help")
    assert "--calls" in run(guard, "bench", "auth", "--help")


def test_every_command_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "auth.md").read_text()
    for command in ("list", "show", "add", "remove", "order", "status"):
        assert f"flatstate auth {command}" in docs
    assert "flatstate bench auth" in docs


def test_list_as_a_real_process(agent_dir: str, guard: SecretGuard) -> None:
    env = dict(os.environ, COLUMNS="200")
    done = subprocess.run(
        [sys.executable, "-c", CLI_MAIN, "auth", "list", "--json", "--store", agent_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    guard.watch(done.stdout, done.stderr, where="subprocess")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] == 3


def test_bench_phases_run_in_process(tmp_path: Path, guard: SecretGuard) -> None:
    from flatstate.bench.auth import _phase, build_auth_dir

    agent = build_auth_dir(str(tmp_path), 6)
    for phase in ("select_profile", "get", "baseline"):
        result = _phase(agent, phase, 1000, warmup=100)
        assert result["calls"] == 1000 and result["per_s"] > 0
    for phase in ("mark_failure", "refresh_oauth"):
        result = _phase(agent, phase, 5, warmup=1)
        assert result["calls"] == 5 and result["per_s"] > 0


def test_add_without_a_terminal_points_at_secret_stdin(agent_dir: str, guard: SecretGuard) -> None:
    """With no terminal to prompt on (a script, a pipe, cron), add says how to pass the
    secret instead of echoing a prompt and aborting."""
    done = subprocess.run(
        [sys.executable, "-c", CLI_MAIN, "auth", "add", "openai:cron", "--store", agent_dir],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    guard.watch(done.stdout, done.stderr, where="subprocess")
    assert done.returncode == 2 and "--secret-stdin" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr
    assert "openai:cron" not in read_json(Path(agent_dir) / "auth-profiles.json")["profiles"]


def test_status_shows_an_expired_token_as_expired(agent_dir: str, guard: SecretGuard) -> None:
    after = str(FIXTURE_OAUTH_EXPIRES + 60_000)
    out = json.loads(run(guard, "auth", "status", "--now", after, "--store", agent_dir, "--json"))
    states = {row["id"]: (row["state"], row["expires"]) for row in out["items"]}
    assert states[OAUTH_ID] == ("expired", FIXTURE_OAUTH_EXPIRES)
    assert states["anthropic:default"] == ("ok", None)
    before = str(FIXTURE_OAUTH_EXPIRES - 60_000)
    out = json.loads(run(guard, "auth", "status", "--now", before, "--store", agent_dir, "--json"))
    assert {row["id"]: row["state"] for row in out["items"]}[OAUTH_ID] == "ok"
    text = run(guard, "auth", "status", "--now", after, "--store", agent_dir)
    line = next(line for line in text.splitlines() if line.startswith(f" {OAUTH_ID}"))
    assert " expired " in line and "2026-11-25T13:04:30Z (1m ago)" in line
