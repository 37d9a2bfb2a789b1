"""OAuth refresh: one refresh wins, a stale writer fails, a rotated token is never reverted;
on every storage (``auth_place``: agent directories, then PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import pickle
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from flatstate.auth import AuthProfile, open_auth_store
from flatstate.errors import ConflictError, InvalidProfile
from tests.auth_support import (
    FIXTURE_OAUTH_EXPIRES,
    OAUTH_ID,
    AuthPlace,
    SecretGuard,
    catch,
    secret_guard,
)

EXPIRED = FIXTURE_OAUTH_EXPIRES + 1  # a time at which the fixture's access token has expired
NEW_EXPIRES = EXPIRED + 3_600_000
# Deadlines for the two-process test: generous, since the machine is shared.
START_TIMEOUT = 60.0
JOIN_TIMEOUT = 60.0


@pytest.fixture
def guard(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[SecretGuard]:
    yield from secret_guard(capsys, caplog)


@pytest.fixture
def place(auth_place: AuthPlace, openclaw_dir: Path) -> AuthPlace:
    """The OpenClaw fixture's profiles as the main agent's store."""
    auth_place.seed_fixture(openclaw_dir)
    return auth_place


def _tokens(tag: str) -> dict[str, Any]:
    return {"access": f"A-new-{tag}-000", "refresh": f"R-new-{tag}-000", "expires": NEW_EXPIRES}


def _stored(place: AuthPlace, agent: str = "main") -> dict[str, Any]:
    profile: dict[str, Any] = place.stored(agent)["profiles"][OAUTH_ID]
    return profile


# -- compare-and-swap --------------------------------------------------------------------


def test_commit_refresh_swaps_when_the_refresh_token_is_current(
    place: AuthPlace, guard: SecretGuard
) -> None:
    guard.secret("A-new-one-000", "R-new-one-000")
    store = place.open()
    old = store.get(OAUTH_ID)
    assert old is not None
    new = store.commit_refresh(OAUTH_ID, old.refresh, _tokens("one"))
    guard.watch(new)
    assert (new.access, new.refresh, new.expires) == ("A-new-one-000", "R-new-one-000", NEW_EXPIRES)
    assert new.email == "work@example.com"  # the other fields stay
    assert _stored(place)["refresh"] == "R-new-one-000"


def test_a_stale_writer_fails_and_the_rotated_token_survives(
    place: AuthPlace, guard: SecretGuard
) -> None:
    guard.secret("A-new-fresh-000", "R-new-fresh-000", "A-new-stale-000", "R-new-stale-000")
    stale = place.open(check_interval=3600)
    held = stale.get(OAUTH_ID)  # read before the rotation
    assert held is not None
    rotator = place.open()
    rotator.commit_refresh(OAUTH_ID, held.refresh, _tokens("fresh"))
    err = catch(
        guard, ConflictError, stale.commit_refresh, OAUTH_ID, held.refresh, _tokens("stale")
    )
    assert OAUTH_ID in str(err) and "rotated" in str(err)
    assert _stored(place)["refresh"] == "R-new-fresh-000"
    # A stale refresher asking to refresh ends with the rotated token, without refreshing.
    calls: list[str] = []

    def refresher(profile: AuthProfile) -> Mapping[str, Any]:
        calls.append(profile.id)
        return _tokens("stale")

    got = stale.refresh_oauth(OAUTH_ID, refresher, now=EXPIRED, force=True)
    assert calls == []
    assert got.refresh == "R-new-fresh-000"
    assert stale.get(OAUTH_ID).refresh == "R-new-fresh-000"  # type: ignore[union-attr]
    # The error crosses process boundaries intact and still without a token.
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err)
    guard.watch(again)


def test_other_writes_never_revert_a_rotation(place: AuthPlace, guard: SecretGuard) -> None:
    guard.secret("A-new-rot-000", "R-new-rot-000")
    slow = place.open(check_interval=3600)
    assert slow.get(OAUTH_ID) is not None  # cached before the rotation
    place.open().refresh_oauth(OAUTH_ID, lambda p: _tokens("rot"), now=EXPIRED)
    # Stats and order writes re-read the file inside the lock, so they keep the new tokens.
    slow.mark_failure(OAUTH_ID, "timeout", now=EXPIRED)
    slow.set_order("anthropic", [OAUTH_ID])
    assert _stored(place)["refresh"] == "R-new-rot-000"


# -- refresh_oauth -----------------------------------------------------------------------


def test_refresh_happens_only_when_due(place: AuthPlace, guard: SecretGuard) -> None:
    guard.secret("A-new-due-000", "R-new-due-000")
    store = place.open()
    calls: list[str] = []

    def refresher(profile: AuthProfile) -> Mapping[str, Any]:
        calls.append(profile.refresh or "")
        return _tokens("due")

    fresh = store.refresh_oauth(OAUTH_ID, refresher, now=FIXTURE_OAUTH_EXPIRES - 3_600_000)
    assert calls == [] and fresh.refresh == "FIXTURE-refresh-token-0003"
    # Within the margin (60 s) before expiry the token is refreshed.
    new = store.refresh_oauth(OAUTH_ID, refresher, now=FIXTURE_OAUTH_EXPIRES - 30_000)
    assert len(calls) == 1 and new.refresh == "R-new-due-000"
    assert store.refresh_oauth(OAUTH_ID, refresher, now=EXPIRED) is store.get(OAUTH_ID)
    assert len(calls) == 1


def test_a_failing_refresher_writes_nothing(place: AuthPlace, guard: SecretGuard) -> None:
    store = place.open()
    before = place.stored()

    def refresher(profile: AuthProfile) -> Mapping[str, Any]:
        raise RuntimeError("token endpoint said no")

    with pytest.raises(RuntimeError):
        store.refresh_oauth(OAUTH_ID, refresher, now=EXPIRED)
    assert place.stored() == before
    assert place.locks_left() == []  # lock (and claim) released
    other = place.open()  # and the next refresh goes ahead
    assert other.refresh_oauth(OAUTH_ID, lambda p: _tokens("next"), now=EXPIRED).refresh == (
        "R-new-next-000"
    )
    guard.secret("A-new-next-000", "R-new-next-000")
    place.seed(before)
    bad = catch(guard, InvalidProfile, store.refresh_oauth, OAUTH_ID, lambda p: {}, now=EXPIRED)
    assert "access" in str(bad)
    catch(guard, InvalidProfile, store.refresh_oauth, "openai:default", lambda p: {})
    assert place.stored() == before


def test_a_refresh_that_does_not_rotate_keeps_the_refresh_token(
    place: AuthPlace, guard: SecretGuard
) -> None:
    # Providers that do not rotate answer without a refresh token: `resp.get("refresh_token")`
    # is None. Writing that None would end the grant at the next expiry.
    guard.secret("A-new-keep-000")
    store = place.open()
    new = store.refresh_oauth(
        OAUTH_ID,
        lambda p: {"access": "A-new-keep-000", "refresh": None, "expires": NEW_EXPIRES},
        now=EXPIRED,
    )
    assert new.refresh == "FIXTURE-refresh-token-0003" and new.access == "A-new-keep-000"
    assert _stored(place)["refresh"] == "FIXTURE-refresh-token-0003"


def test_values_json_cannot_carry_are_refused_before_the_write(
    place: AuthPlace, guard: SecretGuard
) -> None:
    store = place.open()
    before = place.stored()
    for bad in (float("nan"), float("inf"), {1: "a"}, b"raw", {"x"}):
        with pytest.raises(InvalidProfile, match="Nothing was written"):
            store.add("openai:bad", {"type": "api_key", "provider": "openai", "key": "k", "w": bad})
        assert place.stored() == before
    with pytest.raises(InvalidProfile, match="'openai:default'"):
        store.mark_failure("openai:default", "rate_limit", now=float("nan"))
    with pytest.raises(InvalidProfile, match=OAUTH_ID):
        store.refresh_oauth(
            OAUTH_ID, lambda p: {"access": "A-x-000", "scope": float("nan")}, now=EXPIRED
        )
    assert place.stored() == before
    assert place.open().get("openai:default") is not None  # the store still reads


def test_expires_is_epoch_milliseconds(place: AuthPlace, guard: SecretGuard) -> None:
    store = place.open()
    for bad in (time.time() * 1000, "soon", True):
        with pytest.raises(InvalidProfile, match="epoch milliseconds"):
            store.add("x:o", {"type": "oauth", "provider": "x", "access": "a", "expires": bad})
    doc = place.stored()
    doc["profiles"][OAUTH_ID]["expires"] = FIXTURE_OAUTH_EXPIRES + 0.5  # another writer's
    place.seed(doc)
    assert place.open().get(OAUTH_ID).expires == FIXTURE_OAUTH_EXPIRES  # type: ignore[union-attr]


def test_an_inherited_profile_is_refreshed_where_it_lives(
    place: AuthPlace, guard: SecretGuard
) -> None:
    guard.secret("A-new-main-000", "R-new-main-000")
    place.seed({"version": 1, "profiles": {}}, agent="coder")
    store = place.open("coder", inherit_from="main")
    store.refresh_oauth(OAUTH_ID, lambda p: _tokens("main"), now=EXPIRED)
    # The main agent's store holds the rotation, so every agent sharing it sees the new token.
    assert _stored(place)["refresh"] == "R-new-main-000"
    assert OAUTH_ID not in place.stored("coder")["profiles"]
    assert store.get(OAUTH_ID).refresh == "R-new-main-000"  # type: ignore[union-attr]
    assert place.locks_left("coder") == [] and place.locks_left() == []


# -- two processes -----------------------------------------------------------------------


def _refresh_worker(location: str, tag: str, barrier: Any, calls_path: str, results: Any) -> None:
    """Waits at the barrier, then refreshes the fixture's OAuth profile once."""
    store = open_auth_store(location)

    def refresher(profile: AuthProfile) -> Mapping[str, Any]:
        with open(calls_path, "a", encoding="utf-8") as f:
            f.write(tag + "\n")
        time.sleep(0.3)  # a slow token endpoint: the other process must wait for us
        return _tokens(tag)

    try:
        barrier.wait(START_TIMEOUT)
        profile = store.refresh_oauth(OAUTH_ID, refresher, now=EXPIRED)
        results.put((tag, profile.refresh, profile.access))
    except BaseException as exc:  # reported to the test rather than lost in the child
        results.put((tag, "error", repr(exc)))
    finally:
        store.close()


def test_two_processes_refreshing_at_once_refresh_once(
    place: AuthPlace, tmp_path: Path, guard: SecretGuard
) -> None:
    """Two hosts: each process has a local state directory of its own (on PostgreSQL they
    share only the database); the token endpoint is called once, and both end with its
    tokens."""
    for tag in ("a", "b"):
        guard.secret(f"A-new-{tag}-000", f"R-new-{tag}-000")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    calls_path = str(tmp_path / "refresh-calls.txt")
    workers = [
        ctx.Process(
            target=_refresh_worker,
            args=(
                place.location(state_dir=str(tmp_path / f"host-{tag}")),
                tag,
                barrier,
                calls_path,
                results,
            ),
        )
        for tag in ("a", "b")
    ]
    try:
        for w in workers:
            w.start()
        got = sorted(results.get(timeout=JOIN_TIMEOUT) for _ in workers)
        for w in workers:
            w.join(JOIN_TIMEOUT)
            assert w.exitcode == 0
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
                w.join()
    with open(calls_path, encoding="utf-8") as f:
        winners = f.read().split()
    assert len(winners) == 1, f"the token endpoint was called {len(winners)} times"
    winner = winners[0]
    expected = (f"R-new-{winner}-000", f"A-new-{winner}-000")
    assert [(refresh, access) for _, refresh, access in got] == [expected, expected]
    assert _stored(place)["refresh"] == expected[0]
    assert place.locks_left() == []
