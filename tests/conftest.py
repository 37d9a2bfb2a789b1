"""Shared fixtures: stores on every backend, the OpenClaw fixture directory, a fake clock."""

from __future__ import annotations

import doctest
import importlib
import os
import platform
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, urlencode

import pytest

import flatstate
from flatstate import SessionStore

OPENCLAW_FIXTURE = Path(__file__).parent / "fixtures" / "openclaw-2026.3.11"

# PostgreSQL: a server given by DSN (scripts/test starts a throwaway one when the binaries
# are installed). Without one the postgres tests skip, except where they are required (CI).
POSTGRES_DSN = os.environ.get("FLATSTATE_TEST_POSTGRES_DSN") or None
POSTGRES_REQUIRED = (
    bool(os.environ.get("CI")) or os.environ.get("FLATSTATE_REQUIRE_POSTGRES") == "1"
)
NO_POSTGRES = (
    "no PostgreSQL server: set FLATSTATE_TEST_POSTGRES_DSN, or install PostgreSQL "
    "(apt-get install postgresql) and run bash scripts/test, which starts one"
)

# Vector search on PostgreSQL needs pgvector, which Debian's server packages here do not carry:
# a second server that has it (scripts/test starts one from the pgserver wheel's binaries).
PGVECTOR_DSN = os.environ.get("FLATSTATE_TEST_PGVECTOR_DSN") or None
NO_PGVECTOR = (
    "no PostgreSQL server with pgvector: set FLATSTATE_TEST_PGVECTOR_DSN, or run "
    "bash scripts/test, which starts one from the pgserver wheel's binaries (Linux x86_64)"
)

# Optional extras (vec, zstd, bench): their tests skip where the extra is missing, except where
# they are required (CI), so that a missing install step fails the run instead of hiding.
EXTRAS_REQUIRED = os.environ.get("FLATSTATE_REQUIRE_EXTRAS") == "1"


def require_extra(module: str, extra: str) -> ModuleType:
    """Import ``module`` from the ``flatstate[extra]`` extra, or skip (fail under CI) saying so."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        why = f"{module} is missing: pip install 'flatstate[{extra}]' ({exc})"
        if EXTRAS_REQUIRED:
            pytest.fail(f"FLATSTATE_REQUIRE_EXTRAS=1 but {why}", pytrace=False)
        pytest.skip(why, allow_module_level=True)  # also from a module's top level


def check_docstring_examples(module: str) -> None:
    """Run the docstring examples of ``module``: there must be some, and none may fail."""
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module} has no docstring examples"
    assert result.failed == 0


# Every backend the conformance suite runs against; later backends add themselves here.
BACKENDS = ["sqlite", "jsonfile", "memory", *(["postgres"] if POSTGRES_DSN else [])]


def pytest_configure(config: pytest.Config) -> None:
    if POSTGRES_REQUIRED and not POSTGRES_DSN:
        raise pytest.UsageError(f"PostgreSQL is required here (CI) but missing: {NO_POSTGRES}")


def postgres_location(root: Path, namespace: str | None = None, **params: str) -> str:
    """A DSN for the test server with a namespace of its own (tests never see each other's
    sessions) and a local state directory under ``root``."""
    if POSTGRES_DSN is None:
        pytest.skip(NO_POSTGRES)
    return _location(POSTGRES_DSN, root, namespace, params)


def pgvector_location(root: Path) -> str:
    """:func:`postgres_location` on the server that has pgvector; required where PostgreSQL
    is (CI), and on Linux x86_64, where the pgserver wheel provides it."""
    if PGVECTOR_DSN is None:
        if POSTGRES_REQUIRED and platform.system() == "Linux" and platform.machine() == "x86_64":
            pytest.fail(f"PostgreSQL is required here (CI) but {NO_PGVECTOR}", pytrace=False)
        pytest.skip(NO_PGVECTOR)
    return _location(PGVECTOR_DSN, root, None, {})


def _location(dsn: str, root: Path, namespace: str | None, params: dict[str, str]) -> str:
    namespace = namespace or f"test-{uuid.uuid4().hex[:12]}"
    query = urlencode(
        {"namespace": namespace, "state_dir": str(root / "state"), **params}, quote_via=quote
    )
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


class FakeClock:
    """Epoch milliseconds that only move when a test says so."""

    def __init__(self, start: int = 1_795_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def store_location(backend: str, root: Path) -> str:
    if backend == "sqlite":
        return str(root / "state")
    if backend == "jsonfile":
        return str(root / "agents" / "main" / "sessions" / "sessions.json")
    if backend == "postgres":
        return postgres_location(root)
    if backend == "memory":  # a database of its own, transcripts under the test's directory
        return f"memory://{uuid.uuid4().hex}?state_dir={quote(str(root / 'state'))}"
    raise ValueError(backend)


@pytest.fixture(
    params=[pytest.param(b, marks=pytest.mark.postgres) if b == "postgres" else b for b in BACKENDS]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def facts_backend(request: pytest.FixtureRequest) -> str:
    """The facts conformance tests run on both backends (postgres skips without a server)."""
    return str(request.param)


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A PostgreSQL schema of the test's own (for what a shared schema cannot show, such as
    its version), dropped after the test if it was created."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    if POSTGRES_DSN is not None:
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'.encode())


@pytest.fixture
def open_store(tmp_path: Path, backend: str) -> Iterator[Callable[..., SessionStore]]:
    """Opens stores at one location on the parametrized backend; closes them after the test."""
    opened: list[SessionStore] = []
    location = store_location(backend, tmp_path)

    def factory(**options: Any) -> SessionStore:
        store = flatstate.open_store(location, **options)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., SessionStore]) -> SessionStore:
    return open_store()


@pytest.fixture
def openclaw_dir(tmp_path: Path) -> Path:
    """A private, writable copy of the real OpenClaw 2026.3.11 state directory."""
    if not OPENCLAW_FIXTURE.is_dir():
        pytest.fail(f"the OpenClaw fixture is missing at {OPENCLAW_FIXTURE}")
    target = tmp_path / "openclaw"
    shutil.copytree(OPENCLAW_FIXTURE, target)
    for path in target.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    return target


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres) if b == "postgres" else b
        for b in ("file", *(["postgres"] if POSTGRES_DSN else []))
    ]
)
def auth_place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Where a test's auth stores live: in agent directories, then on PostgreSQL."""
    from tests.auth_support import AuthPlace

    place = AuthPlace(str(request.param), tmp_path)
    yield place
    place.close()
