"""Decay on a fake clock: class TTLs, halving past 75% of the TTL, the 0.1 floor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flatstate.facts import DECAY_TTL_MS, DecayReport, FactStore
from tests.conftest import FakeClock
from tests.facts_support import DAY, HOUR, OpenFacts, facts_location, stores


@pytest.fixture
def open_at(tmp_path: Path, clock: FakeClock, facts_backend: str) -> Iterator[OpenFacts]:
    yield from stores(facts_location(facts_backend, tmp_path), clock)


@pytest.fixture
def facts(open_at: OpenFacts) -> FactStore:
    return open_at()


def test_the_class_ttls() -> None:
    assert DECAY_TTL_MS == {
        "permanent": None,
        "stable": 90 * DAY,
        "normal": 14 * DAY,
        "short": 2 * DAY,
        "session": 24 * HOUR,
        "ephemeral": 4 * HOUR,
    }


@pytest.mark.parametrize("decay_class", ["stable", "normal", "short", "session", "ephemeral"])
def test_the_schedule_of_each_class(facts: FactStore, clock: FakeClock, decay_class: str) -> None:
    ttl = DECAY_TTL_MS[decay_class]
    assert ttl is not None
    start = clock.now
    fact = facts.add(f"a {decay_class} fact", decay_class=decay_class)
    assert fact.expires_at == start + ttl

    clock.now = start + ttl * 3 // 4 - 1  # just before 75%: untouched
    assert facts.decay() == DecayReport(expired=0, halved=0, dropped=0)
    assert facts.get(fact.id).confidence == 1.0  # type: ignore[union-attr]

    clock.now = start + ttl * 3 // 4  # at 75%: halved once
    assert facts.decay() == DecayReport(expired=0, halved=1, dropped=0)
    assert facts.get(fact.id).confidence == 0.5  # type: ignore[union-attr]
    clock.now = start + ttl - 1  # however often decay runs, once per window
    assert facts.decay() == DecayReport(expired=0, halved=0, dropped=0)
    assert facts.get(fact.id).confidence == 0.5  # type: ignore[union-attr]
    assert facts.count() == 1

    clock.now = start + ttl  # expired: deleted
    assert facts.decay() == DecayReport(expired=1, halved=0, dropped=0)
    assert facts.get(fact.id) is None and facts.count() == 0


def test_permanent_facts_never_decay(facts: FactStore, clock: FakeClock) -> None:
    fact = facts.add("The company was founded in 2019", decay_class="permanent")
    assert fact.expires_at is None
    clock.advance(10 * 365 * DAY)
    assert facts.decay() == DecayReport(expired=0, halved=0, dropped=0)
    assert facts.get(fact.id) == fact


def test_confidence_below_the_floor_is_dropped(facts: FactStore, clock: FakeClock) -> None:
    weak = facts.add("Maybe the VPN is flaky", decay_class="normal", confidence=0.15)
    firm = facts.add("The VPN needs 2FA", decay_class="normal", confidence=0.3)
    faint = facts.add("Someone mentioned a hackathon", decay_class="permanent", confidence=0.05)
    assert facts.decay() == DecayReport(expired=0, halved=0, dropped=1)
    assert facts.get(faint.id) is None
    clock.advance(11 * DAY)  # past 75% of 14 days: 0.15 -> 0.075 (dropped), 0.3 -> 0.15
    assert facts.decay() == DecayReport(expired=0, halved=2, dropped=1)
    assert facts.get(weak.id) is None
    assert facts.get(firm.id).confidence == pytest.approx(0.15)  # type: ignore[union-attr]


def test_a_restatement_starts_a_new_window(facts: FactStore, clock: FakeClock) -> None:
    start = clock.now
    fact = facts.add("The standup moved to 10:00", decay_class="normal")
    clock.now = start + 11 * DAY
    facts.decay()
    assert facts.get(fact.id).confidence == 0.5  # type: ignore[union-attr]
    confirmed = facts.add("the standup moved to 10:00")
    assert confirmed.id == fact.id
    assert confirmed.confidence == 1.0 and confirmed.expires_at == clock.now + 14 * DAY
    clock.now = start + 14 * DAY  # the old expiry has passed: nothing happens
    assert facts.decay() == DecayReport(expired=0, halved=0, dropped=0)
    clock.now = start + 11 * DAY + 11 * DAY  # 75% of the new window
    assert facts.decay().halved == 1
    clock.now = start + 11 * DAY + 14 * DAY
    assert facts.decay().expired == 1


def test_recall_does_not_extend_a_life(facts: FactStore, clock: FakeClock) -> None:
    fact = facts.add("Deploy freeze until the audit ends", decay_class="short")
    for _ in range(8):
        clock.advance(5 * HOUR)
        assert [f.id for f in facts.recall("deploy freeze")] == [fact.id]
    clock.advance(8 * HOUR)  # 48 h after it was added
    assert facts.recall("deploy freeze") == ()
    assert facts.decay().expired == 1


def test_the_outcome_does_not_depend_on_how_often_decay_runs(
    tmp_path: Path, facts_backend: str
) -> None:
    from flatstate.facts import open_facts

    def run(every: int) -> list[tuple[str, float]]:
        clock = FakeClock()
        location = facts_location(facts_backend, tmp_path / f"every-{every}")
        with open_facts(location, clock=clock) as facts:
            for i, decay_class in enumerate(["stable", "normal", "short", "session", "ephemeral"]):
                facts.add(f"fact {i}", decay_class=decay_class, confidence=0.25 + 0.15 * i)
                clock.advance(HOUR)
            for _ in range(0, 20 * DAY, every):
                clock.advance(every)
                facts.decay()
            return sorted((f.text, f.confidence) for f in facts.list(100))

    hourly = run(HOUR)
    assert hourly == run(6 * HOUR) == run(DAY)
    assert hourly == [("fact 0", 0.25)]  # only the stable fact is left, not yet at 75%
