"""Helpers for the auth tests: the fixture's paths and secrets, and the secret scanner.

The scanner collects everything a test shows the world (captured stdout and
stderr, every log record, CLI output, exception messages and reprs) and fails
the test if any secret it used appears in any of it.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURE_SECRETS = (
    "sk-ant-FIXTURE-not-a-real-key-0001",
    "FIXTURE-access-token-0002",
    "FIXTURE-refresh-token-0003",
    "FIXTURE-openai-token-0004",
)
OAUTH_ID = "anthropic:work@example.com"
# OpenClaw's markAuthProfileFailure set this rate_limit cooldown in the fixture.
FIXTURE_COOLDOWN_UNTIL = 1795608330418
FIXTURE_FAILURE_AT = 1795608270418
FIXTURE_OAUTH_EXPIRES = 1795611870415


def agent_dir_of(openclaw_dir: Path) -> Path:
    return openclaw_dir / "agents" / "main" / "agent"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)


class SecretGuard:
    """Collects what a test shows and checks that no secret is in it."""

    def __init__(self) -> None:
        self.secrets: set[str] = set(FIXTURE_SECRETS)
        self.texts: list[tuple[str, str]] = []

    def secret(self, *values: str) -> str:
        """Register secrets the test uses; returns the first for convenience."""
        self.secrets.update(values)
        return values[0]

    def watch(self, *values: Any, where: str = "value") -> None:
        """Remember what ``values`` look like as text (exceptions with their traceback)."""
        for value in values:
            if isinstance(value, BaseException):
                self.texts.append((f"{where}: str", str(value)))
                self.texts.append((f"{where}: repr", repr(value)))
                self.texts.append(
                    (f"{where}: traceback", "".join(traceback.format_exception(value)))
                )
            else:
                self.texts.append((f"{where}: str", str(value)))
                self.texts.append((f"{where}: repr", repr(value)))

    def check(self) -> None:
        for where, text in self.texts:
            for i, secret in enumerate(sorted(self.secrets)):
                if secret in text:
                    # Do not put the secret in the failure message either.
                    pytest.fail(f"secret #{i} leaked into {where}", pytrace=False)


def secret_guard(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[SecretGuard]:
    """Body of each test module's ``guard`` fixture: scan outputs and logs at teardown."""
    caplog.set_level(logging.DEBUG, logger="flatstate")
    guard = SecretGuard()
    yield guard
    out, err = capsys.readouterr()
    guard.texts.append(("stdout", out))
    guard.texts.append(("stderr", err))
    for record in caplog.records:
        guard.texts.append((f"log record {record.name}", record.getMessage()))
        if record.exc_info:
            guard.texts.append(
                ("log traceback", logging.Formatter().formatException(record.exc_info))
            )
    guard.check()


def catch(guard: SecretGuard, exc_type: type[BaseException], fn: Any, *args: Any, **kw: Any) -> Any:
    """Call ``fn`` expecting ``exc_type``; the exception goes through the scanner."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    guard.watch(info.value, where=exc_type.__name__)
    return info.value
