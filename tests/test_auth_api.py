"""The public surface of ``flatstate.auth``: exports, docstring examples, redaction, errors."""

from __future__ import annotations

import importlib
import pickle
import sys
from collections.abc import Iterator

import pytest
from _pytest.outcomes import Failed

import flatstate.auth
from flatstate.auth import AuthProfile, redact, secret_hint
from flatstate.errors import ExtraMissing, FlatstateError, InvalidProfile, SecretUnavailable
from tests.auth_support import SecretGuard, secret_guard
from tests.conftest import check_docstring_examples, require_extra

MODULES = [
    "profiles",
    "refs",
    "rotation",
    "document",
    "storage",
    "disk",
    "postgres_schema",
    "postgres",
    "store",
]


@pytest.fixture
def guard(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[SecretGuard]:
    yield from secret_guard(capsys, caplog)


def _isort_order(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_complete() -> None:
    names = flatstate.auth.__all__
    assert names == sorted(names, key=_isort_order)
    public = {n for n in dir(flatstate.auth) if not n.startswith("_")} - set(MODULES)
    assert public - {"annotations"} == set(names)
    for module in MODULES:
        if module.startswith("postgres"):
            require_extra("psycopg", "postgres")
        exported = importlib.import_module(f"flatstate.auth.{module}").__all__
        assert exported == sorted(exported, key=_isort_order), module


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module: str) -> None:
    if module.startswith("postgres"):
        require_extra("psycopg", "postgres")
    check_docstring_examples(f"flatstate.auth.{module}")


def test_a_profile_never_shows_its_secrets(guard: SecretGuard) -> None:
    secrets = {
        "key": guard.secret("sk-live-0123456789-key"),
        "access": guard.secret("at-0123456789-access"),
        "refresh": guard.secret("rt-0123456789-refresh"),
        "clientSecret": guard.secret("cs-0123456789-secret"),
        "extra": {"password": guard.secret("pw-0123456789-nested")},
        "idToken": guard.secret("id-0123456789-token"),
        # Secrets by other names: an HTTP header, short password names, cookies, JWTs.
        "headers": {"Authorization": guard.secret("Bearer hd-0123456789-authz")},
        "pwd": guard.secret("pw-0123456789-short"),
        "pass": guard.secret("pa-0123456789-short"),
        "cookie": guard.secret("ck-0123456789-cookie"),
        "jwt": guard.secret("jw-0123456789-jwt"),
        "creds": [guard.secret("cr-0123456789-creds")],
        "note": guard.secret("Basic bm8tMDEyMzQ1Njc4OS1zY2hlbWU="),  # by its scheme
    }
    profile = AuthProfile.of("x:y", {"type": "oauth", "provider": "x", **secrets})
    guard.watch(profile, profile.redacted(), [profile], {"p": profile}, profile.hint)
    assert profile.hint == "…cess"
    assert profile["access"] == "at-0123456789-access"  # the value itself is still there
    assert redact({"token": "short"}) == {"token": "…"}
    assert secret_hint(None) == "…"
    copy = pickle.loads(pickle.dumps(profile))
    assert copy.id == "x:y" and copy == profile


def test_the_scanner_catches_a_leak() -> None:
    guard = SecretGuard()
    guard.secret("S-leaky-12345")
    guard.watch(f"oops: {'S-leaky-12345'}")
    with pytest.raises(Failed) as info:
        guard.check()
    assert "S-leaky-12345" not in str(info.value)


def test_auth_errors_are_typed() -> None:
    """Auth errors are flatstate errors of the right builtin (test_public_api pickles them)."""
    for err in (InvalidProfile("a:b", "a problem"), SecretUnavailable("a:b", "a problem", "a fix")):
        assert isinstance(err, FlatstateError)
    assert isinstance(InvalidProfile(None, "x"), ValueError)
    assert isinstance(SecretUnavailable("a", "b", "c"), LookupError)


def test_a_database_url_without_the_postgres_extra_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefixes = ("flatstate.auth.postgres", "flatstate.backends.postgres", "psycopg")
    for name in [n for n in sys.modules if n.startswith(prefixes)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if it were not installed
    with pytest.raises(ExtraMissing) as info:
        flatstate.auth.open_auth_store("postgresql://gw@db.internal/agents")
    assert "flatstate[postgres]" in str(info.value)
