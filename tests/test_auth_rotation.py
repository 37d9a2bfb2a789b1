"""Rotation with a fake clock: order, lastGood, oldest use, cooldowns and billing disables,
on every storage (``auth_place``: agent directories, then PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flatstate.auth import CooldownPolicy
from flatstate.auth.store import AuthStore
from flatstate.errors import InvalidProfile
from tests.auth_support import (
    FIXTURE_COOLDOWN_UNTIL,
    FIXTURE_FAILURE_AT,
    FIXTURE_OAUTH_EXPIRES,
    OAUTH_ID,
    AuthPlace,
    SecretGuard,
    catch,
    secret_guard,
)
from tests.conftest import FakeClock

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE


@pytest.fixture
def guard(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[SecretGuard]:
    for scanner in secret_guard(capsys, caplog):
        scanner.secret(*(f"K-rotation-{i:06d}" for i in range(3)), "T-rotation-q-0000")
        yield scanner


def _store(place: AuthPlace, clock: FakeClock, n: int = 3, **options: object) -> AuthStore:
    place.seed(
        {
            "version": 1,
            "profiles": {
                f"p:{i}": {"type": "api_key", "provider": "p", "key": f"K-rotation-{i:06d}"}
                for i in range(n)
            }
            | {"q:0": {"type": "token", "provider": "q", "token": "T-rotation-q-0000"}},
        },
    )
    return place.open(clock=clock, **options)


def _id(store: AuthStore, provider: str = "p", now: int | None = None) -> str | None:
    profile = store.select_profile(provider, now)
    return profile.id if profile is not None else None


# -- the fixture's cooldown --------------------------------------------------------------


def test_the_cooldown_openclaw_set_is_honoured(
    openclaw_dir: Path, auth_place: AuthPlace, guard: SecretGuard
) -> None:
    # 2026.3.11's first step was one minute: failure at T, cooldown until T + 60 s.
    assert FIXTURE_COOLDOWN_UNTIL - FIXTURE_FAILURE_AT == MINUTE
    clock = FakeClock(FIXTURE_FAILURE_AT + 10 * SECOND)
    auth_place.seed_fixture(openclaw_dir)
    store = auth_place.open(clock=clock)
    store.set_order("anthropic", ["anthropic:default"])
    assert store.select_profile("anthropic") is None  # the only ordered profile is resting
    clock.now = FIXTURE_COOLDOWN_UNTIL - 1
    assert store.select_profile("anthropic") is None
    clock.now = FIXTURE_COOLDOWN_UNTIL
    assert _id(store, "anthropic") == "anthropic:default"


def test_the_fixture_cooldown_sends_selection_to_the_other_profile(
    openclaw_dir: Path, auth_place: AuthPlace, guard: SecretGuard
) -> None:
    auth_place.seed_fixture(openclaw_dir)
    store = auth_place.open()
    assert _id(store, "anthropic", FIXTURE_FAILURE_AT + SECOND) == OAUTH_ID
    assert _id(store, "anthropic", FIXTURE_COOLDOWN_UNTIL) == "anthropic:default"  # file order
    assert _id(store, "openai", FIXTURE_FAILURE_AT) == "openai:default"
    assert _id(store, "Anthropic ", FIXTURE_FAILURE_AT + SECOND) == OAUTH_ID
    assert store.select_profile("nobody", FIXTURE_FAILURE_AT) is None


# -- selection order ---------------------------------------------------------------------


def test_explicit_order_ranks_only_the_listed_profiles(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    store = _store(auth_place, clock)
    assert store.set_order("p", ["p:2", "p:1"]) == ("p:2", "p:1")
    assert _id(store) == "p:2"
    store.mark_failure("p:2", "rate_limit")
    assert _id(store) == "p:1"
    store.mark_failure("p:1", "timeout")
    assert _id(store) is None  # p:0 is not in the order, so it is never used
    clock.advance(30 * SECOND)
    assert _id(store) == "p:2"
    assert store.set_order("p", None) == ()
    assert _id(store) == "p:0"


def test_order_ids_must_exist_and_match_the_provider(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    store = _store(auth_place, clock)
    catch(guard, InvalidProfile, store.set_order, "p", ["p:9"])
    catch(guard, InvalidProfile, store.set_order, "p", ["q:0"])


def test_last_good_comes_first_then_oldest_last_used(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    store = _store(auth_place, clock)
    assert _id(store) == "p:0"  # never used: file order
    store.mark_success("p:0")
    assert _id(store) == "p:0"  # lastGood sticks while it is healthy
    clock.advance(SECOND)
    store.mark_success("p:1")
    assert store.snapshot().last_good["p"] == "p:1"
    assert _id(store) == "p:1"
    store.mark_failure("p:1", "rate_limit")
    assert _id(store) == "p:2"  # never used is the oldest use
    clock.advance(SECOND)
    store.mark_success("p:2")
    store.mark_failure("p:2", "auth")
    assert _id(store) == "p:0"  # p:0 used longest ago among the usable
    assert _id(store, "q") == "q:0"


# -- cooldowns ---------------------------------------------------------------------------


def test_cooldown_schedule_is_30s_1min_5min(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    store = _store(auth_place, clock, n=1)
    steps = []
    for _ in range(4):
        stats = store.mark_failure("p:0", "rate_limit")
        steps.append((stats.cooldown_until or 0) - clock.now)
        assert _id(store) is None
        clock.now = stats.cooldown_until or 0
        assert _id(store) == "p:0"
    assert steps == [30 * SECOND, MINUTE, 5 * MINUTE, 5 * MINUTE]
    stats = store.usage("p:0")
    assert stats is not None and stats.error_count == 4
    assert stats.failure_counts["rate_limit"] == 4
    assert stats.last_failure_at == clock.now - 5 * MINUTE


@pytest.mark.parametrize("reason", ["auth", "format", "rate_limit", "timeout", "unknown"])
def test_every_non_billing_reason_starts_a_cooldown(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard, reason: str
) -> None:
    store = _store(auth_place, clock, n=1)
    stats = store.mark_failure("p:0", reason)
    assert stats.cooldown_until == clock.now + 30 * SECOND
    assert stats.disabled_until is None
    assert dict(stats.failure_counts.pairs()) == {reason: 1}


def test_the_schedule_is_configurable(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    # OpenClaw 2026.3.11's schedule, which wrote the fixture's one-minute cooldown.
    policy = CooldownPolicy(schedule_ms=(MINUTE, 5 * MINUTE, 25 * MINUTE, HOUR))
    store = _store(auth_place, clock, n=1, policy=policy)
    got = [store.mark_failure("p:0", "rate_limit").cooldown_until - clock.now for _ in range(5)]  # type: ignore[operator]
    assert got == [MINUTE, 5 * MINUTE, 25 * MINUTE, HOUR, HOUR]
    with pytest.raises(ValueError):
        CooldownPolicy(schedule_ms=())


def test_a_failure_never_shortens_a_rest(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    store = _store(auth_place, clock, n=1)
    for _ in range(3):
        store.mark_failure("p:0", "rate_limit")
    long_until = store.usage("p:0").cooldown_until  # type: ignore[union-attr]
    store.mark_success("p:0")
    assert store.usage("p:0").cooldown_until is None  # type: ignore[union-attr]
    store.mark_failure("p:0", "rate_limit")
    assert store.usage("p:0").cooldown_until == clock.now + 30 * SECOND  # type: ignore[union-attr]
    assert long_until == clock.now + 5 * MINUTE


def test_old_failures_stop_counting_after_the_window(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    store = _store(auth_place, clock, n=1)
    store.mark_failure("p:0", "rate_limit")
    store.mark_failure("p:0", "rate_limit")
    clock.advance(25 * HOUR)
    stats = store.mark_failure("p:0", "rate_limit")
    assert stats.error_count == 1
    assert stats.cooldown_until == clock.now + 30 * SECOND


# -- billing -----------------------------------------------------------------------------


def test_billing_disables_for_5h_doubling_to_24h(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    store = _store(auth_place, clock, n=2)
    got = []
    for _ in range(5):
        stats = store.mark_failure("p:0", "billing")
        assert stats.disabled_reason == "billing"
        assert stats.cooldown_until is None
        got.append((stats.disabled_until or 0) - clock.now)
        assert _id(store) == "p:1"
        clock.now = stats.disabled_until or 0
    assert got == [5 * HOUR, 10 * HOUR, 20 * HOUR, 24 * HOUR, 24 * HOUR]
    status = {s.id: s for s in store.status(clock.now - HOUR)}
    assert status["p:0"].state == "disabled"
    assert status["p:0"].remaining_ms == HOUR
    assert status["p:0"].reason == "billing"


def test_success_resets_the_counters(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    store = _store(auth_place, clock, n=1)
    store.mark_failure("p:0", "billing")
    store.mark_failure("p:0", "rate_limit")
    stats = store.mark_success("p:0")
    assert stats.error_count == 0
    assert stats.cooldown_until is None and stats.disabled_until is None
    assert stats.disabled_reason is None and len(stats.failure_counts) == 0
    assert stats.last_used == clock.now
    assert store.snapshot().last_good["p"] == "p:0"
    assert _id(store) == "p:0"


def test_status_shows_cooldowns_with_the_time_left(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    store = _store(auth_place, clock, n=2)
    store.mark_failure("p:1", "timeout")
    status = {s.id: s for s in store.status(clock.now + 10 * SECOND)}
    assert status["p:0"].state == "ok" and status["p:0"].remaining_ms is None
    assert status["p:1"].state == "cooldown"
    assert status["p:1"].remaining_ms == 20 * SECOND
    assert status["p:1"].reason == "timeout"
    assert status["p:1"].secret == "…0001"  # the key's last 4 characters, never the key


def test_bad_failure_requests_are_refused(
    auth_place: AuthPlace, clock: FakeClock, guard: SecretGuard
) -> None:
    store = _store(auth_place, clock, n=1)
    before = auth_place.stored()
    catch(guard, InvalidProfile, store.mark_failure, "p:0", "cosmic_rays")
    catch(guard, InvalidProfile, store.mark_failure, "p:404", "auth")
    catch(guard, InvalidProfile, store.mark_success, "p:404")
    assert auth_place.stored() == before


def test_status_calls_a_token_past_its_expiry_expired(
    openclaw_dir: Path, auth_place: AuthPlace, guard: SecretGuard
) -> None:
    auth_place.seed_fixture(openclaw_dir)
    store = auth_place.open(readonly=True)
    at = {s.id: s for s in store.status(FIXTURE_OAUTH_EXPIRES)}
    assert (at[OAUTH_ID].state, at[OAUTH_ID].expires) == ("expired", FIXTURE_OAUTH_EXPIRES)
    assert at["anthropic:default"].expires is None
    before = {s.id: s.state for s in store.status(FIXTURE_OAUTH_EXPIRES - 1)}
    assert before[OAUTH_ID] == "ok"
