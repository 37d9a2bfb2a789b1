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
    FIXTURE_COOLDOWN_UNTIL,
    FIXTURE_FAILURE_AT,
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
    out = run(guard, "auth", "list", "--agent-dir", agent_dir)
    for text in ("anthropic:default", "api_key", "oauth", "token", "work@example.com", "…0001"):
        assert text in out
    rows = json.loads(run(guard, "auth", "list", "--agent-dir", agent_dir, "--json"))
    assert rows[1] == {
        "id": OAUTH_ID,
        "provider": "anthropic",
        "type": "oauth",
        "email": "work@example.com",
        "secret": "…0002",
    }
    assert [
        r["id"]
        for r in json.loads(
            run(guard, "auth", "list", "--agent-dir", agent_dir, "--provider", "openai", "--json")
        )
    ] == ["openai:default"]


def test_show_redacts_secrets(agent_dir: str, guard: SecretGuard) -> None:
    shown = json.loads(run(guard, "auth", "show", OAUTH_ID, "--agent-dir", agent_dir, "--json"))
    assert shown["profile"]["access"] == "…0002" and shown["profile"]["refresh"] == "…0003"
    assert shown["profile"]["expires"] == 1795611870415
    out = run(guard, "auth", "show", "anthropic:default", "--agent-dir", agent_dir)
    assert "usage.cooldownUntil" in out and str(FIXTURE_COOLDOWN_UNTIL) in out


def test_an_unknown_profile_is_one_line_and_exit_1(agent_dir: str, guard: SecretGuard) -> None:
    out = run(guard, "auth", "show", "nobody:none", "--agent-dir", agent_dir, code=1)
    assert "nobody:none" in out and "Traceback" not in out


def test_add_reads_the_secret_from_a_hidden_prompt(agent_dir: str, guard: SecretGuard) -> None:
    secret = guard.secret("sk-prompted-secret-9876")
    out = run(
        guard, "auth", "add", "openai:prompted", "--agent-dir", agent_dir, input=secret + "\n"
    )
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
        "--agent-dir",
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
        "--agent-dir",
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
            "--agent-dir",
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
        "--agent-dir",
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
        "--agent-dir",
        agent_dir,
        input=json.dumps(tokens),
    )
    profile = read_json(Path(agent_dir) / "auth-profiles.json")["profiles"]["google:me"]
    assert profile == {"type": "oauth", "provider": "google"} | tokens
    run(guard, "auth", "add", "google:x", "--type", "oauth", "--agent-dir", agent_dir, code=2)


def test_remove_and_order(agent_dir: str, guard: SecretGuard) -> None:
    out = run(
        guard, "auth", "order", "anthropic", OAUTH_ID, "anthropic:default", "--agent-dir", agent_dir
    )
    assert f"{OAUTH_ID} -> anthropic:default" in out
    shown = json.loads(run(guard, "auth", "order", "anthropic", "--agent-dir", agent_dir, "--json"))
    assert shown == {"provider": "anthropic", "order": [OAUTH_ID, "anthropic:default"]}
    assert json.loads(
        run(guard, "auth", "remove", OAUTH_ID, "--agent-dir", agent_dir, "--json")
    ) == {
        "id": OAUTH_ID,
        "removed": True,
    }
    shown = json.loads(run(guard, "auth", "order", "anthropic", "--agent-dir", agent_dir, "--json"))
    assert shown["order"] == ["anthropic:default"]
    run(guard, "auth", "order", "anthropic", "--clear", "--agent-dir", agent_dir)
    assert "no explicit order" in run(guard, "auth", "order", "anthropic", "--agent-dir", agent_dir)
    assert "no profile" in run(guard, "auth", "remove", OAUTH_ID, "--agent-dir", agent_dir)
    run(guard, "auth", "order", "openai", "anthropic:default", "--agent-dir", agent_dir, code=1)


def test_status_shows_cooldowns_with_the_time_left(agent_dir: str, guard: SecretGuard) -> None:
    at = FIXTURE_FAILURE_AT + 15_000
    out = run(guard, "auth", "status", "--now", str(at), "--agent-dir", agent_dir)
    assert "cooldown" in out and "45s" in out and "rate_limit" in out
    rows = json.loads(
        run(
            guard,
            "auth",
            "status",
            "--now",
            str(at),
            "--json",
            "--agent-dir",
            agent_dir,
            "--provider",
            "anthropic",
        )
    )
    assert [(r["id"], r["state"], r["remaining_ms"]) for r in rows] == [
        ("anthropic:default", "cooldown", 45_000),
        (OAUTH_ID, "ok", None),
    ]


def test_readonly_environment_writes_nothing(
    agent_dir: str, guard: SecretGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLATSTATE_AUTH_READONLY", "1")
    before = (Path(agent_dir) / "auth-profiles.json").read_bytes()
    out = run(guard, "auth", "remove", "openai:default", "--agent-dir", agent_dir)
    assert "read-only" in out
    assert (Path(agent_dir) / "auth-profiles.json").read_bytes() == before


def test_every_command_has_help(guard: SecretGuard) -> None:
    for command in ("list", "show", "add", "remove", "order", "status"):
        assert "--agent-dir" in run(guard, "auth", command, "--help")
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
        [sys.executable, "-c", CLI_MAIN, "auth", "list", "--json", "--agent-dir", agent_dir],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    guard.watch(done.stdout, done.stderr, where="subprocess")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3


def test_bench_phases_run_in_process(tmp_path: Path, guard: SecretGuard) -> None:
    from flatstate.bench.auth import _phase, build_auth_dir

    agent = build_auth_dir(str(tmp_path), 6)
    for phase in ("select_profile", "get", "baseline"):
        result = _phase(agent, phase, 1000, warmup=100)
        assert result["calls"] == 1000 and result["per_s"] > 0
