"""Hostile queries: FTS5 syntax in user text never raises and never changes what is searched."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flatstate.facts import FactStore, fts_query, query_terms
from tests.conftest import FakeClock
from tests.facts_support import OpenFacts, facts_location, stores

# Words that porter stemming leaves alone, so a plain word comparison is the oracle.
WORDS = ["alpha", "bravo", "delta", "kilo", "lima", "papa", "romeo", "tango", "zulu", "near"]
FACTS = [
    "alpha bravo",
    "bravo delta kilo",
    "kilo lima",
    "papa romeo tango",
    "zulu",
    "near the tango",
    "alpha near zulu",
    "lima papa",
]
SYNTAX = [
    '"',
    '""',
    "'",
    "NEAR",
    "NEAR(",
    "*",
    "-",
    "+",
    "(",
    ")",
    "AND",
    "OR",
    "NOT",
    "^",
    ":",
    "{",
    "}",
    ",",
    "\\",
    "\x00",
    "日本",
    "🙂",
    "\u200b",
]


@pytest.fixture
def open_at(tmp_path: Path, clock: FakeClock, facts_backend: str) -> Iterator[OpenFacts]:
    yield from stores(facts_location(facts_backend, tmp_path), clock)


@pytest.fixture
def loaded(open_at: OpenFacts) -> FactStore:
    facts = open_at()
    facts.add_many(FACTS)
    return facts


def _fold(term: str) -> str:
    """A term as the index's tokenizer (unicode61) compares it: diacritics removed."""
    decomposed = unicodedata.normalize("NFKD", term)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def _expected(query: str) -> set[str]:
    """The facts sharing a word with the query: the meaning of any text as a query."""
    terms = {_fold(term) for term in query_terms(query)}
    return {text for text in FACTS if terms & set(text.split())}


def _found(facts: FactStore, query: str) -> set[str]:
    return {hit.fact.text for hit in facts.search(query, limit=100)}


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        '"',
        '"alpha',
        'alpha"',
        '"alpha" "bravo',
        "alpha*",
        "alp*",
        "*",
        "-alpha",
        "alpha -bravo",
        "alpha - bravo",
        "(alpha",
        "alpha)",
        "((alpha OR bravo)",
        "alpha AND bravo",
        "alpha OR",
        "OR alpha",
        "NOT alpha",
        "alpha NOT bravo",
        "AND OR NOT",
        "NEAR(alpha zulu)",
        "NEAR(alpha zulu, 0)",
        "near",
        "^alpha",
        "text:alpha",
        "category:alpha",
        "{text category}: alpha",
        "alpha + bravo",
        "alpha\x00bravo",
        "ÄLPHA",
        "alphа",  # a Cyrillic "а": another word, not "alpha"
        "日本語 🙂 zulu",
        "'; DROP TABLE facts; --",
        "alpha" * 200,
        " ".join(["zulu"] * 500),
    ],
)
def test_hostile_queries_neither_raise_nor_change_meaning(loaded: FactStore, query: str) -> None:
    assert _found(loaded, query) == _expected(query)
    loaded.recall(query)  # the budgeted path too


def test_syntax_words_are_plain_words(loaded: FactStore) -> None:
    # As FTS5 syntax "NOT bravo" would exclude bravo and "alpha*" would be a prefix.
    assert _found(loaded, "NOT bravo") == {"alpha bravo", "bravo delta kilo"}
    assert _found(loaded, "alp*") == set()
    assert _found(loaded, "near") == {"near the tango", "alpha near zulu"}
    # As syntax this is "alpha in the category column": here it is two words.
    assert _found(loaded, "category:alpha") == {"alpha bravo", "alpha near zulu"}


def test_unicode_folds_like_the_index(open_at: OpenFacts) -> None:
    facts = open_at()
    cafe = facts.add("Meet at the café")
    naive = facts.add("A naive approach")
    nihon = facts.add("日本語のテキスト")
    assert {h.fact.id for h in facts.search("CAFE")} == {cafe.id}
    assert {h.fact.id for h in facts.search("cafe\u0301")} == {cafe.id}  # decomposed accent
    assert {h.fact.id for h in facts.search("naïve")} == {naive.id}
    assert {h.fact.id for h in facts.search("日本語のテキスト")} == {nihon.id}


def test_empty_and_wordless_queries_find_nothing(loaded: FactStore) -> None:
    for query in ("", " ", "?!", "***", '""', "()"):
        assert loaded.search(query) == ()
        assert loaded.recall(query) == ()


def test_fts_query_quotes_every_term() -> None:
    assert fts_query('alpha "bravo" NEAR(zulu)') == '"alpha" OR "bravo" OR "near" OR "zulu"'
    assert fts_query("") is None
    for term in query_terms('x"y NOT (z)* ^w:v'):
        assert re.fullmatch(r"[^\W_]+", term)


# Random parts carry no letters: a letter glued to a corpus word could make a
# form that porter stems back to it ("bravoe" -> "bravo"), which is stemming,
# not a change of meaning. Unicode letters are covered by their own test.
NOT_LETTERS = st.characters(blacklist_categories=("L", "Mn", "Mc", "Me"))
hostile_text = st.lists(
    st.one_of(
        st.sampled_from(WORDS),
        st.sampled_from(SYNTAX),
        st.text(alphabet=NOT_LETTERS, max_size=6),
    ),
    max_size=12,
).flatmap(
    lambda parts: st.lists(
        st.sampled_from([" ", "", "-", ":", '"', "(", ")", "*"]),
        min_size=len(parts),
        max_size=len(parts),
    ).map(lambda seps: "".join(p + s for p, s in zip(parts, seps, strict=True)))
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=hostile_text)
def test_any_text_is_a_safe_query(loaded: FactStore, query: str) -> None:
    assert _found(loaded, query) == _expected(query)


def test_huge_queries_are_safe(loaded: FactStore) -> None:
    # One word longer than any index keeps (PostgreSQL drops words over 2,047 bytes), and
    # a prompt of a hundred thousand words: a clean answer, never an SQL error.
    assert loaded.search("é" * 300_000) == ()
    assert loaded.recall("zulu " + "ü" * 5000) != ()
    many = " ".join(f"w{i}" for i in range(100_000)) + " zulu"
    assert loaded.search(many) == ()  # only the first 32 words of a prompt are searched
    assert {h.fact.text for h in loaded.search("zulu " + many)} == {"zulu", "alpha near zulu"}
