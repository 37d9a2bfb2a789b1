"""Helpers for the auth tests: the fixture's paths and secrets, and the secret scanner.

The scanner collects everything a test shows the world (captured stdout and
stderr, every log record, CLI output, exception messages and reprs) and fails
the test if any secret it used appears in any of it.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlencode

import pytest

from flatstate.auth import AUTH_FILE, AuthStore, open_auth_store
from flatstate.frozen import thaw
from tests.conftest import POSTGRES_DSN

try:
    import psycopg
except ImportError:  # the postgres extra: without it, AUTH_BACKENDS has no "postgres"
    psycopg = None  # type: ignore[assignment]

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
    if POSTGRES_DSN and psycopg is not None:  # the test server's password is a secret too
        password = psycopg.conninfo.conninfo_to_dict(POSTGRES_DSN).get("password")
        if password:
            guard.secret(str(password))
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


# -- one store, on either storage -------------------------------------------------------


class AuthPlace:
    """Where a test's auth stores are: agent directories under ``root``, or namespaces of
    their own on the test server (a fresh prefix per test, so tests never meet).

    ``agent`` names an agent of the test ("main", "coder"); ``seed`` writes a whole
    document as the store's content; ``stored`` reads it back as stored, from a new store.
    """

    def __init__(self, backend: str, root: Path) -> None:
        self.backend = backend
        self.root = root
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self.opened: list[AuthStore] = []

    @property
    def postgres(self) -> bool:
        return self.backend == "postgres"

    def location(self, agent: str = "main", state_dir: str | None = None) -> str:
        if not self.postgres:
            return str(self.root / "agents" / agent / "agent")
        assert POSTGRES_DSN is not None
        query = urlencode(
            {"namespace": self.ref(agent), "state_dir": state_dir or str(self.root / agent)},
            quote_via=quote,
        )
        return f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}{query}"

    def ref(self, agent: str = "main") -> str:
        """What ``inherit_from`` takes to name ``agent``: its directory, or its agent id."""
        return f"{self.prefix}-{agent}" if self.postgres else self.location(agent)

    def open(self, agent: str = "main", **options: Any) -> AuthStore:
        if "inherit_from" in options and isinstance(options["inherit_from"], str):
            options["inherit_from"] = self.ref(options["inherit_from"])
        store = open_auth_store(self.location(agent), **options)
        self.opened.append(store)
        return store

    def seed(self, doc: dict[str, Any], agent: str = "main") -> None:
        if not self.postgres:
            write_json(Path(self.location(agent)) / "auth-profiles.json", doc)
            return

        def replace(plain: dict[str, Any]) -> bool:
            plain.clear()
            plain.update(json.loads(json.dumps(doc)))
            return True

        with open_auth_store(self.location(agent), migrate=False) as store:
            store.update(replace)

    def seed_fixture(self, openclaw_dir: Path, agent: str = "main") -> None:
        """The OpenClaw fixture's auth-profiles.json as ``agent``'s store."""
        self.seed(read_json(agent_dir_of(openclaw_dir) / "auth-profiles.json"), agent)

    def stored(self, agent: str = "main") -> dict[str, Any]:
        if not self.postgres:
            return cast("dict[str, Any]", read_json(Path(self.location(agent)) / AUTH_FILE))
        with open_auth_store(self.location(agent), readonly=True) as store:
            return cast("dict[str, Any]", thaw(store.snapshot().agent.raw))

    def locks_left(self, agent: str = "main") -> list[str]:
        """Refresh locks or claims still held: lock files, or advisory locks and claim rows."""
        if not self.postgres:
            directory = Path(self.location(agent))
            return [n for n in os.listdir(directory) if n.endswith(".lock")]
        assert POSTGRES_DSN is not None
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            locks = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid <> "
                "pg_backend_pid()"
            ).fetchone()
            claims = conn.execute(
                "SELECT profile_id FROM flatstate.auth_refresh_claims WHERE ns = %s",
                (self.ref(agent),),
            ).fetchall()
        return [f"{locks[0] if locks else 0} advisory locks"] * bool(locks and locks[0]) + [
            f"claim {row[0]}" for row in claims
        ]

    def close(self) -> None:
        for store in self.opened:
            store.close()
