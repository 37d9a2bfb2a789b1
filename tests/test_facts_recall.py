"""Recall: ranking on a fixed corpus, the token budget, access counters, the compaction helper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flatstate.facts import (
    Fact,
    FactStore,
    after_compaction_context,
    estimate_tokens,
    render_fact,
)
from flatstate.facts.query import plan_terms
from flatstate.facts.ranking import fill_budget, freshness, keyword_scores, relevance
from tests.conftest import FakeClock
from tests.facts_support import (
    CORPUS,
    DAY,
    OpenFacts,
    facts_location,
    is_postgres,
    raw_execute,
    stores,
)


@pytest.fixture
def open_at(tmp_path: Path, clock: FakeClock, facts_backend: str) -> Iterator[OpenFacts]:
    yield from stores(facts_location(facts_backend, tmp_path), clock)


@pytest.fixture
def facts(open_at: OpenFacts) -> FactStore:
    return open_at()


@pytest.fixture
def corpus(facts: FactStore, clock: FakeClock) -> dict[str, Fact]:
    """CORPUS, added one hour apart; keyed by the first word of each text."""
    out = {}
    for fields in CORPUS:
        fields = dict(fields)
        fact = facts.add(fields.pop("text"), decay_class="permanent", **fields)
        out[fact.text.split()[0].lower()] = fact
        clock.advance(3_600_000)
    return out


# -- ranking on a fixed corpus --------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "first"),
    [
        ("What theme does Alice like?", "alice"),
        ("where does billing deploy?", "the"),  # "The billing service deploys..."
        ("who is on call for search?", "bob"),
        ("when are invoices generated", "invoices"),
        ("which database for analytics, postgres or duckdb?", "use"),
        ("How should release notes be written?", "carol"),
    ],
)
def test_the_best_match_comes_first(
    facts: FactStore, corpus: dict[str, Fact], query: str, first: str
) -> None:
    recalled = facts.recall(query)
    assert recalled and recalled[0].id == corpus[first].id


def test_only_facts_sharing_a_word_are_recalled(facts: FactStore, corpus: dict[str, Fact]) -> None:
    recalled = facts.recall("dark")
    assert {f.id for f in recalled} == {corpus["alice"].id, corpus["dark"].id}
    assert facts.recall("kubernetes helm charts") == ()


def test_stemming_matches_other_forms(facts: FactStore, corpus: dict[str, Fact]) -> None:
    assert [f.id for f in facts.recall("deploying")] == [corpus["the"].id]
    assert [f.id for f in facts.recall("generate invoice")] == [corpus["invoices"].id]


def test_an_entity_match_outranks_a_passing_mention(
    facts: FactStore, corpus: dict[str, Fact]
) -> None:
    # Both mention "dark"; only the first is *about* a dark theme (value = dark).
    assert facts.recall("dark")[0].id == corpus["alice"].id


def test_fresher_and_surer_facts_win_a_tie(facts: FactStore, clock: FakeClock) -> None:
    old = facts.add("The office wifi password rotates monthly", decay_class="permanent")
    clock.advance(60 * DAY)
    new = facts.add("The guest wifi password rotates weekly", decay_class="permanent")
    assert [f.id for f in facts.recall("wifi password")] == [new.id, old.id]
    unsure = facts.add("The lab wifi password rotates daily", confidence=0.2)
    # Of two new facts the sure one wins; the unsure new one still beats the sure one 60 days
    # old (freshness weighs 0.20 and falls by 0.75, confidence 0.15 and falls by 0.8).
    assert [f.id for f in facts.recall("wifi password")] == [new.id, unsure.id, old.id]
    hits = facts.search("wifi password")
    assert [h.fact.id for h in hits] == [new.id, unsure.id, old.id]
    assert [h.keyword for h in hits] == [1.0, 1.0, 1.0]  # a tie on the words
    assert [h.freshness for h in hits] == pytest.approx([1.0, 1.0, 0.25])
    assert hits[0].score > hits[1].score > hits[2].score


def test_expired_and_superseded_facts_are_skipped(facts: FactStore, clock: FakeClock) -> None:
    brief = facts.add("The printer on floor two is jammed", decay_class="ephemeral")
    old = facts.add("The printer lives on floor three", decay_class="permanent")
    new = facts.add("The printer lives on floor four", decay_class="permanent", supersedes=old.id)
    assert {f.id for f in facts.recall("printer floor")} == {brief.id, new.id}
    clock.advance(4 * 3_600_000)
    assert [f.id for f in facts.recall("printer floor")] == [new.id]


def test_search_is_a_read_and_reports_its_scores(facts: FactStore, corpus: dict[str, Fact]) -> None:
    hits = facts.search("dark mode editor", limit=1)
    assert len(hits) == 1 and hits[0].fact.id == corpus["alice"].id
    assert hits[0].keyword == 1.0 and hits[0].vector == 0.0 and 0 < hits[0].score <= 1
    assert facts.get(corpus["alice"].id).recall_count == 0  # type: ignore[union-attr]


# -- the budget ---------------------------------------------------------------------------------


def test_recall_stays_within_the_token_budget(facts: FactStore) -> None:
    for i in range(40):
        facts.add(f"Fact {i} about the deployment pipeline: " + "detail " * (i % 7 * 5))
    for budget in (20, 100, 300, 800):
        recalled = facts.recall("deployment pipeline", budget_tokens=budget)
        cost = sum(estimate_tokens(render_fact(f)) + 1 for f in recalled)
        assert 0 < cost <= budget
    assert len(facts.recall("deployment pipeline", limit=3)) == 3
    assert facts.recall("deployment pipeline", budget_tokens=2) == ()


def test_a_fact_too_long_for_the_budget_lets_shorter_ones_in(facts: FactStore) -> None:
    long = facts.add("Kettle rules: " + "always descale it " * 40)
    short = facts.add("The kettle is broken")
    recalled = facts.recall("kettle", budget_tokens=40)
    assert [f.id for f in recalled] == [short.id]
    assert long.id in {f.id for f in facts.recall("kettle", budget_tokens=800)}


def test_long_facts_cost_their_preview_not_their_length(facts: FactStore) -> None:
    facts.add("Kettle rules: " + "always descale it " * 40)
    assert len(facts.recall("kettle", budget_tokens=90)) == 1  # 300-char preview fits


# -- access counters --------------------------------------------------------------------------


def test_recall_bumps_access_counters(open_at: OpenFacts, clock: FakeClock) -> None:
    facts = open_at()
    fact = facts.add("The deploy key is in the vault")
    other = facts.add("Unrelated note about lunch")
    clock.advance(1000)
    first = facts.recall("deploy key")
    assert [(f.id, f.recall_count, f.last_accessed_at) for f in first] == [(fact.id, 1, clock.now)]
    clock.advance(1000)
    assert facts.recall("deploy key")[0].recall_count == 2
    # This process sees its own recalls at once...
    seen = facts.get(fact.id)
    assert seen is not None and (seen.recall_count, seen.last_accessed_at) == (2, clock.now)
    assert facts.get(other.id).recall_count == 0  # type: ignore[union-attr]
    # ...another sees them once they are written (within a second, or at flush/close).
    facts.flush()
    elsewhere = open_at().get(fact.id)
    assert elsewhere is not None and (elsewhere.recall_count, elsewhere.last_accessed_at) == (
        2,
        clock.now,
    )


def test_counts_of_a_forgotten_fact_are_dropped(open_at: OpenFacts) -> None:
    facts = open_at()
    fact = facts.add("Soon forgotten")
    facts.recall("forgotten")
    facts.forget(fact.id)
    facts.flush()
    gone = "SELECT count(*) FROM fact_access WHERE seq NOT IN (SELECT seq FROM facts)"
    assert raw_execute(facts, gone) == [(0,)]
    assert raw_execute(facts, "SELECT count(*) FROM fact_access")[0][0] == 0 or is_postgres(facts)


# -- pure parts -------------------------------------------------------------------------------


def test_keyword_scores_and_relevance() -> None:
    assert keyword_scores([]) == []
    assert keyword_scores([-2.0, -1.0, 0.0]) == [1.0, 0.5, 0.0]
    assert relevance(0.7, None) == 0.7  # vectors off: keyword alone
    assert relevance(1.0, 0.0) == relevance(0.0, 1.0) == 0.5
    assert relevance(0.9, 0.6) > relevance(1.0, 0.4)


def test_freshness_halves_every_thirty_days(facts: FactStore, clock: FakeClock) -> None:
    fact = facts.add("fresh")
    assert freshness(fact, clock.now) == 1.0
    assert freshness(fact, clock.now + 30 * DAY) == pytest.approx(0.5)
    assert freshness(fact, clock.now + 60 * DAY) == pytest.approx(0.25)


def test_fill_budget_skips_what_does_not_fit() -> None:
    assert fill_budget([5, 9, 3, 2], lambda n: n, 10) == [5, 3, 2]
    assert fill_budget([5, 9, 3, 2], lambda n: n, 10, limit=2) == [5, 3]


def test_plan_terms_keeps_the_rarest_within_the_budget() -> None:
    counts = {"common": 900, "rare": 3, "mid": 200, "absent": 0}
    assert plan_terms(["common", "rare", "mid", "absent"], counts.__getitem__, 250) == [
        "rare",
        "mid",
    ]
    assert plan_terms(["common"], counts.__getitem__, 250) == ["common"]
    assert plan_terms(["absent"], counts.__getitem__, 250) == []


def test_a_large_store_scores_only_its_rarest_terms(open_at: OpenFacts) -> None:
    facts = open_at()
    facts.add_many([f"routine status report number {i}" for i in range(1200)])
    needle = facts.add("status of the zeppelin hangar")
    recalled = facts.recall("zeppelin status", limit=1)
    assert [f.id for f in recalled] == [needle.id]
    # A query of one very common word still answers, from the newest matches.
    newest = facts.search("routine", limit=5)
    assert len(newest) == 5
    assert [h.fact.text.rsplit(" ", 1)[1] for h in newest] == [
        "1199",
        "1198",
        "1197",
        "1196",
        "1195",
    ]


# -- after compaction -------------------------------------------------------------------------


def test_after_compaction_recalls_then_lists_newest(
    facts: FactStore, corpus: dict[str, Fact]
) -> None:
    ctx = after_compaction_context(facts, "which database does analytics use?", newest=3)
    assert ctx.facts[0].id == corpus["use"].id
    assert ctx.total_facts == len(CORPUS)
    newest = [f.id for f in facts.list(3)]
    assert [f.id for f in ctx.facts[ctx.recalled :]] == [
        i for i in newest if i not in {f.id for f in ctx.facts[: ctx.recalled]}
    ]
    assert len({f.id for f in ctx.facts}) == len(ctx.facts)
    assert ctx.text.startswith("<memory-context>\n") and ctx.text.endswith("</memory-context>")
    assert ctx.text.count("\n- [") == len(ctx.facts)


def test_after_compaction_respects_its_budget(facts: FactStore, corpus: dict[str, Fact]) -> None:
    for budget in (15, 40, 80, 800):
        ctx = after_compaction_context(facts, "dark mode billing invoices", budget_tokens=budget)
        assert ctx.tokens <= budget
        assert ctx.tokens == estimate_tokens(ctx.text)
    empty = after_compaction_context(facts, "anything", budget_tokens=5)
    assert (empty.facts, empty.text, empty.tokens) == ((), "", 0)


def test_after_compaction_without_a_prompt_lists_newest(
    facts: FactStore, corpus: dict[str, Fact]
) -> None:
    ctx = after_compaction_context(facts, None, newest=2)
    assert ctx.recalled == 0 and [f.id for f in ctx.facts] == [f.id for f in facts.list(2)]


def test_after_compaction_on_an_empty_store(facts: FactStore) -> None:
    ctx = after_compaction_context(facts, "hello")
    assert (ctx.facts, ctx.text, ctx.total_facts) == ((), "", 0)
