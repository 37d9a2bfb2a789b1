"""FlatstateStore against LangGraph's own InMemoryStore: the same operations, the same answers
where InMemoryStore defines them; then TTL on a fake clock, hostile queries, paging, reopening,
errors and two processes on one store. Each test runs on a state directory (SQLite) and on a
namespace of its own on the test PostgreSQL server (``where``); what only one of them has
(sqlite-vec, a damaged file) runs there alone. PostgreSQL's own matters (namespaces, pgvector,
the URL's password) are in test_langgraph_store_postgres.py."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from flatstate.errors import InvalidStoreItem, StoreClosed, StoreCorrupt
from flatstate.facts.query import query_terms
from flatstate.facts.vectors import HashingEmbedder
from tests.conftest import (
    NO_POSTGRES,
    POSTGRES_DSN,
    FakeClock,
    pgvector_location,
    postgres_location,
    require_extra,
)
from tests.processes import START_TIMEOUT, ctx, join_all, running

memory = require_extra("langgraph.store.memory", "langgraph")
base = require_extra("langgraph.store.base", "langgraph")
lg = require_extra("flatstate.integrations.langgraph", "langgraph")

FlatstateStore = lg.FlatstateStore
InMemoryStore = memory.InMemoryStore
GetOp, PutOp, SearchOp = base.GetOp, base.PutOp, base.SearchOp
BaseStore = base.BaseStore
ListNamespacesOp, MatchCondition = base.ListNamespacesOp, base.MatchCondition
InvalidNamespaceError = base.InvalidNamespaceError

MINUTE = 60_000
EVERYTHING = 10_000


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store's location: a state directory, or a fresh namespace on the test server."""
    if request.param == "postgres":
        require_extra("psycopg", "postgres")
        return postgres_location(tmp_path)
    return str(tmp_path / "state")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def vec_where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """``where`` for semantic search: sqlite-vec, or the test server with pgvector (without
    it the store's error is tested in test_langgraph_store_postgres.py)."""
    if request.param == "sqlite":
        require_extra("sqlite_vec", "vec")
        return str(tmp_path / "state")
    require_extra("psycopg", "postgres")
    return pgvector_location(tmp_path)


# Words whose porter stems differ and are themselves: a keyword query for one matches
# exactly the items whose text holds it, so the model below can say which those are.
VOCAB = ["apple", "kiwi", "mango", "plum", "grape", "lemon"]
LABEL = st.one_of(
    st.sampled_from(["users", "u1", "u2", "docs", "a", "a-", "é"]),
    st.text(st.characters(exclude_characters=".\x00", codec="utf-8"), min_size=1, max_size=3),
)
NAMESPACE = st.lists(LABEL, min_size=1, max_size=3).map(tuple)
KEY = st.one_of(st.sampled_from(["k1", "k2", "k3"]), st.text(max_size=4))
WORDS = st.lists(st.sampled_from(VOCAB), max_size=3).map(" ".join)
NUMBER = st.one_of(st.integers(-5, 5), st.sampled_from([-1.5, 0.5, 2.25]))
VALUE = st.fixed_dictionaries(
    {"n": NUMBER, "b": st.booleans(), "text": WORDS},
    optional={
        "s": st.sampled_from(VOCAB),
        "tags": st.lists(st.sampled_from(VOCAB), max_size=2),
        "meta": st.fixed_dictionaries({"k": st.sampled_from(VOCAB)}, optional={"j": NUMBER}),
    },
)
CLAUSE = st.one_of(
    st.tuples(st.just("n"), NUMBER),
    st.tuples(
        st.just("n"),
        st.dictionaries(
            st.sampled_from(["$gt", "$gte", "$lt", "$lte", "$eq", "$ne"]),
            NUMBER,
            min_size=1,
            max_size=2,
        ),
    ),
    st.tuples(st.just("b"), st.booleans()),
    st.tuples(st.just("s"), st.one_of(st.sampled_from(VOCAB), st.none())),
    st.tuples(
        st.just("s"),
        st.dictionaries(st.sampled_from(["$eq", "$ne"]), st.sampled_from(VOCAB), min_size=1),
    ),
    st.tuples(st.just("tags"), st.lists(st.sampled_from(VOCAB), max_size=2)),
    st.tuples(st.just("meta"), st.fixed_dictionaries({"k": st.sampled_from(VOCAB)})),
)
FILTER = st.one_of(st.none(), st.lists(CLAUSE, max_size=3).map(dict))
HOSTILE = st.sampled_from(
    [
        '"',
        "*",
        "AND OR NOT",
        "NEAR(apple kiwi)",
        "apple*",
        "-kiwi",
        "^mango",
        "plum:grape",
        "(lemon",
        "'",
        "\\",
        "kiwi\x00",
        "",
        "   ",
        "?!",
    ]
)
QUERY = st.lists(st.one_of(st.sampled_from(VOCAB), HOSTILE), min_size=1, max_size=3).map(" ".join)


def view(items: list[Any]) -> set[tuple[Any, ...]]:
    """What both stores must agree on: where an item is and what it holds (InMemoryStore
    resets created_at on every put, so the times are not compared)."""
    return {(i.namespace, i.key, json.dumps(i.value, sort_keys=True)) for i in items}


def words_of(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(query_terms(value)) | {w.casefold() for w in value.split()}
    if isinstance(value, dict):
        return set().union(*map(words_of, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(words_of, value)) if value else set()
    return set()


class Differential(RuleBasedStateMachine):
    """Random puts, deletes and reads, run on both stores."""

    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="flatstate-lgstore-")
        self.ours = self.open_store()
        self.ref = InMemoryStore()

    def open_store(self) -> Any:
        return FlatstateStore(self.root)

    def teardown(self) -> None:
        self.ours.close()
        shutil.rmtree(self.root, ignore_errors=True)

    @rule(namespace=NAMESPACE, key=KEY, value=VALUE)
    def put(self, namespace: tuple[str, ...], key: str, value: dict[str, Any]) -> None:
        self.ours.put(namespace, key, value)
        self.ref.put(namespace, key, value)

    @rule(namespace=NAMESPACE, key=KEY)
    def delete(self, namespace: tuple[str, ...], key: str) -> None:
        self.ours.delete(namespace, key)
        self.ref.delete(namespace, key)

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        known = self.all_ref()
        if known and data.draw(st.booleans()):
            item = data.draw(st.sampled_from(known))
            namespace, key = item.namespace, item.key
        else:
            namespace, key = data.draw(NAMESPACE), data.draw(KEY)
        ours, ref = self.ours.get(namespace, key), self.ref.get(namespace, key)
        assert (ours is None) == (ref is None)
        if ours is not None:
            assert view([ours]) == view([ref])

    def all_ref(self) -> list[Any]:
        return list(self.ref.search((), limit=EVERYTHING))

    def prefix_of(self, data: st.DataObject) -> tuple[str, ...]:
        known = self.all_ref()
        if known and data.draw(st.booleans()):
            namespace = data.draw(st.sampled_from(known)).namespace
            return tuple(namespace[: data.draw(st.integers(0, len(namespace)))])
        return tuple(data.draw(st.lists(LABEL, max_size=2)))

    @rule(data=st.data(), spec=FILTER)
    def search(self, data: st.DataObject, spec: dict[str, Any] | None) -> None:
        prefix = self.prefix_of(data)
        ours = self.ours.search(prefix, filter=spec, limit=EVERYTHING)
        ref = self.ref.search(prefix, filter=spec, limit=EVERYTHING)
        assert view(ours) == view(ref)
        # A page is the same slice of the one order, however it is cut.
        limit, offset = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 6))
        page = self.ours.search(prefix, filter=spec, limit=limit, offset=offset)
        assert [(i.namespace, i.key) for i in page] == [
            (i.namespace, i.key) for i in ours[offset : offset + limit]
        ]

    @rule(data=st.data(), spec=FILTER, query=QUERY)
    def keyword_search(self, data: st.DataObject, spec: dict[str, Any] | None, query: str) -> None:
        """InMemoryStore ignores ``query`` without an index; ours keeps the items whose text
        holds one of its words (and every item when it has none)."""
        prefix = self.prefix_of(data)
        ours = self.ours.search(prefix, query=query, filter=spec, limit=EVERYTHING)
        terms = set(query_terms(query))
        ref = [
            item
            for item in self.ref.search(prefix, filter=spec, limit=EVERYTHING)
            if not terms or terms & words_of(item.value)
        ]
        assert view(ours) == view(ref)
        if terms:
            assert all(item.score is not None for item in ours)
            assert [i.score for i in ours] == sorted((i.score for i in ours), reverse=True)

    @rule(
        data=st.data(),
        max_depth=st.one_of(st.none(), st.integers(1, 3)),
        limit=st.integers(0, 5),
        offset=st.integers(0, 5),
    )
    def list_namespaces(
        self, data: st.DataObject, max_depth: int | None, limit: int, offset: int
    ) -> None:
        prefix = self.prefix_of(data) or None
        if prefix and data.draw(st.booleans()):
            prefix = tuple("*" if data.draw(st.booleans()) else label for label in prefix)
        suffix = data.draw(st.one_of(st.none(), st.lists(LABEL, min_size=1, max_size=1)))
        suffix = tuple(suffix) if suffix else None
        # InMemoryStore keeps listing a namespace after its last item is deleted (and after a
        # get of one that never had any): the reference is a fresh one holding the live items.
        fresh = InMemoryStore()
        for item in self.all_ref():
            fresh.put(item.namespace, item.key, item.value)
        options = {"prefix": prefix, "suffix": suffix, "max_depth": max_depth}
        assert self.ours.list_namespaces(**options, limit=limit, offset=offset) == (
            fresh.list_namespaces(**options, limit=limit, offset=offset)
        )


Differential.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDifferential = Differential.TestCase


class PostgresDifferential(Differential):
    """The same, on a fresh namespace of the test server each run."""

    def open_store(self) -> Any:
        return FlatstateStore(postgres_location(Path(self.root)))


PostgresDifferential.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPostgresDifferential = pytest.mark.postgres(
    pytest.mark.skipif(POSTGRES_DSN is None, reason=NO_POSTGRES)(PostgresDifferential.TestCase)
)


# -- semantic search ---------------------------------------------------------------------


def hashing_embed(dims: int = 32) -> Any:
    """A plain sync LangGraph embedding function: a list of texts to a list of vectors."""
    embedder = HashingEmbedder(dims)
    return lambda texts: [embedder(text) for text in texts]


DOCS = {
    "d1": {"text": "apple kiwi mango", "kind": "fruit"},
    "d2": {"text": "apple apple plum", "kind": "fruit"},
    "d3": {"text": "lemon grape", "kind": "citrus", "extra": "unrelated words"},
    "d4": {"text": "kiwi", "kind": "fruit"},
    "d5": {"kind": "empty"},
}


@pytest.mark.parametrize("fields", [None, ["text"], ["text", "kind"]])
def test_semantic_search_ranks_as_in_memory_store(vec_where: str, fields: Any) -> None:
    index: dict[str, Any] = {"dims": 32, "embed": hashing_embed()}
    if fields is not None:
        index["fields"] = fields
    ref = InMemoryStore(index=index)
    with FlatstateStore(vec_where, index=index) as ours:
        for key, value in DOCS.items():
            ours.put(("docs",), key, value)
            ref.put(("docs",), key, value)
        ours.put(("docs",), "hidden", {"text": "apple"}, index=False)
        ref.put(("docs",), "hidden", {"text": "apple"}, index=False)
        for query in ["apple", "kiwi mango", "lemon", "nothing here"]:
            got = ours.search(("docs",), query=query, limit=EVERYTHING)
            want = ref.search(("docs",), query=query, limit=EVERYTHING)
            assert view(got) == view(want)
            scored = {(i.key): i.score for i in want if i.score is not None}
            assert {i.key for i in got if i.score is not None} == set(scored)
            for item in got:
                if item.score is not None:
                    assert item.score == pytest.approx(scored[item.key], abs=1e-5)
            # Scored items first, best first; the unscored (index=False) after them.
            scores = [i.score for i in got]
            known = [s for s in scores if s is not None]
            assert known == sorted(known, reverse=True)
            assert scores[: len(known)] == known
        best = ours.search(("docs",), query="kiwi", filter={"kind": "fruit"}, limit=1)
        assert [i.key for i in best] == ["d4"]


def test_semantic_search_with_an_async_embedding_function(vec_where: str) -> None:
    sync = hashing_embed()

    async def embed(texts: list[str]) -> list[list[float]]:
        return list(sync(texts))

    async def main() -> list[str]:
        async with FlatstateStore(vec_where, index={"dims": 32, "embed": embed}) as s:
            for key, value in DOCS.items():
                await s.aput(("docs",), key, value)
            return [i.key for i in await s.asearch(("docs",), query="lemon grape", limit=1)]

    assert asyncio.run(main()) == ["d3"]


def test_vectors_of_the_wrong_length_are_refused(vec_where: str) -> None:
    with FlatstateStore(vec_where, index={"dims": 8, "embed": hashing_embed(4)}) as s:
        with pytest.raises(InvalidStoreItem, match="dims=8"):
            s.put(("docs",), "a", {"text": "apple"})
        assert s.get(("docs",), "a") is None


def test_a_zero_vector_is_unscored_not_an_error(vec_where: str) -> None:

    def embed(texts: list[str]) -> list[list[float]]:
        return [[0.0] * 4 if text == "zero" else [1.0, 0.0, 0.0, 0.0] for text in texts]

    index = {"dims": 4, "embed": embed, "fields": ["text"]}
    with FlatstateStore(vec_where, index=index) as store:
        store.put(("d",), "one", {"text": "x"})
        store.put(("d",), "zero", {"text": "zero"})
        assert [(i.key, i.score) for i in store.search(("d",), query="x")] == [
            ("one", pytest.approx(1.0)),
            ("zero", None),
        ]
        assert {(i.key, i.score) for i in store.search(("d",), query="zero")} == {
            ("one", None),
            ("zero", None),
        }


# -- keyword search ----------------------------------------------------------------------


@given(query=st.text(max_size=40))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_text_is_a_safe_query(keyword_store: Any, query: str) -> None:
    found = keyword_store.search((), query=query, limit=5)
    assert isinstance(found, list) and len(found) <= 5


@pytest.fixture
def keyword_store(where: str) -> Any:
    with FlatstateStore(where) as store:
        store.put(("m",), "1", {"text": 'quotes " and stars * and NEAR(x) AND OR NOT'})
        store.put(("m",), "2", {"text": "The deploy target is fly.io", "n": 1})
        store.put(("m",), "3", {"nested": {"deep": ["café naïve", "日本語"]}})
        yield store


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ("deploy", {"2"}),
        ("DEPLOYING targets", {"2"}),  # stemmed, case folded
        ('"NEAR(x)" *', {"1"}),
        ("café", {"3"}),
        ("日本語", {"3"}),
        ("nothing matches", set()),
        ("?!", {"1", "2", "3"}),  # no words: as if there were no query
        ("text", set()),  # field names are not indexed, only values
    ],
)
def test_keyword_query(keyword_store: Any, query: str, keys: set[str]) -> None:
    assert {i.key for i in keyword_store.search(("m",), query=query)} == keys


def test_index_false_and_index_fields_decide_what_a_keyword_finds(where: str) -> None:
    with FlatstateStore(where) as store:
        store.put(("m",), "off", {"text": "apple"}, index=False)
        store.put(("m",), "title", {"title": "kiwi", "body": "apple"}, index=["title"])
        assert {i.key for i in store.search(("m",), query="apple")} == set()
        assert {i.key for i in store.search(("m",), query="kiwi")} == {"title"}
        assert {i.key for i in store.search(("m",))} == {"off", "title"}


# -- filters: what InMemoryStore leaves undefined ----------------------------------------


def test_filter_semantics_where_in_memory_store_is_undefined(where: str) -> None:
    with FlatstateStore(where) as store:
        store.put(("f",), "true", {"x": True})
        store.put(("f",), "one", {"x": 1})
        store.put(("f",), "onef", {"x": 1.0})
        store.put(("f",), "str", {"x": "b"})
        store.put(("f",), "none", {"y": 1})
        store.put(("f",), "null", {"x": None})
        store.put(("f",), "odd key", {'we"ird': 2, "sp ace": 3})

        def keys(spec: dict[str, Any]) -> set[str]:
            return {i.key for i in store.search(("f",), filter=spec, limit=50)}

        assert keys({"x": 1}) == {"one", "onef"}  # booleans are not numbers
        assert keys({"x": True}) == {"true"}
        assert keys({"x": {"$gt": 0}}) == {"one", "onef"}  # only numbers compare with numbers
        assert keys({"x": {"$gte": "a"}}) == {"str"}  # and strings with strings
        assert keys({"x": None}) == {"none", "null", "odd key"}  # missing or null
        assert keys({"x": {"$ne": 1}}) == {"true", "str", "none", "null", "odd key"}
        assert keys({'we"ird': 2}) == {"odd key"}  # matched in Python, not SQL
        assert keys({"sp ace": {"$lt": 4}}) == {"odd key"}
        for bad, says in [
            ({"x": {"$regex": "a"}}, "unknown operator"),
            ({"x": {"$gt": None}}, "compares with a number or a string"),
            ({"x": {"$gt": [1]}}, "compares with a number or a string"),
            ({1: 2}, "field names are strings"),
        ]:
            with pytest.raises(InvalidStoreItem, match=says):
                store.search(("f",), filter=bad)


def test_integers_of_any_size_compare_exactly(where: str) -> None:
    """SQLite's json_extract gives an integer beyond 64 bits as a double: 2**64 + 1 would
    equal 2.0**64 there. Such a row passes SQL and its clause is decided in Python."""
    big = 2**64 + 1
    with FlatstateStore(where) as store:
        store.put(("n",), "big", {"n": big})
        store.put(("n",), "neg", {"n": -big})
        store.put(("n",), "edge", {"n": 2**63 - 1})
        store.put(("n",), "float", {"n": 2.0**64})

        def keys(spec: dict[str, Any]) -> set[str]:
            return {i.key for i in store.search(("n",), filter=spec, limit=50)}

        assert keys({"n": 2.0**64}) == {"float"}
        assert keys({"n": {"$eq": 2.0**64}}) == {"float"}
        assert keys({"n": {"$ne": 2.0**64}}) == {"big", "neg", "edge"}
        assert keys({"n": {"$gt": 2.0**64}}) == {"big"}
        assert keys({"n": {"$gte": 2.0**64, "$lt": 2**65}}) == {"big", "float"}
        assert keys({"n": {"$lt": -(2.0**64)}}) == {"neg"}
        assert keys({"n": big}) == {"big"}  # beyond int64: matched in Python alone
        assert keys({"n": 2**63 - 1}) == {"edge"}
        page = store.search(("n",), filter={"n": {"$gt": 0}}, limit=1, offset=1)
        assert len(page) == 1  # the Python check keeps paging right


def test_ttls_and_pages_past_64_bits(where: str) -> None:
    """A TTL whose expiry would not fit the 64-bit column is refused as a bad TTL (it was a
    raw OverflowError on every put); a page past 2**63 answers as InMemoryStore does."""
    with pytest.raises(InvalidStoreItem, match="minutes up to"):
        FlatstateStore(where, ttl={"default_ttl": 1e300})
    with FlatstateStore(where) as store:
        with pytest.raises(InvalidStoreItem, match="minutes up to"):
            store.put(("t",), "k", {"a": 1}, ttl=1e15)
        store.put(("t",), "k", {"a": 1}, ttl=10**9)
        assert [i.key for i in store.search(("t",), limit=2**63)] == ["k"]
        assert store.search(("t",), offset=2**64) == []
        assert store.list_namespaces(limit=2**64) == [("t",)]


# -- paging ------------------------------------------------------------------------------


def test_paging_is_stable_across_offsets(where: str, clock: FakeClock) -> None:
    with FlatstateStore(where, clock=clock) as store:
        for i in range(23):
            store.put(
                ("p", f"u{i % 4}"), f"k{i}", {"text": "apple kiwi", "i": i, "m": {"v": i % 2}}
            )
            if i % 5 == 0:
                clock.advance(1)  # some equal times, some not

        def pages(**options: Any) -> list[tuple[Any, ...]]:
            seen: list[tuple[Any, ...]] = []
            for offset in range(0, 30, 4):
                page = store.search(("p",), limit=4, offset=offset, **options)
                seen += [(i.namespace, i.key) for i in page]
            return seen

        for options in [
            {},
            {"query": "apple"},
            {"filter": {"m": {"v": 1}}},
            {"filter": {"i": {"$lt": 9}}},
        ]:
            whole = [(i.namespace, i.key) for i in store.search(("p",), limit=50, **options)]
            assert pages(**options) == whole
            assert len(set(whole)) == len(whole)
        assert len(pages()) == 23
        listed = [store.list_namespaces(limit=2, offset=o) for o in range(0, 6, 2)]
        assert list(itertools.chain(*listed)) == [
            ("p", "u0"),
            ("p", "u1"),
            ("p", "u2"),
            ("p", "u3"),
        ]
        assert store.list_namespaces(max_depth=1) == [("p",)]


# -- TTL ---------------------------------------------------------------------------------


def test_an_expired_item_is_never_read_even_before_a_sweep(where: str, clock: FakeClock) -> None:
    with FlatstateStore(where, clock=clock) as store:
        assert store.supports_ttl
        store.put(("t",), "short", {"text": "apple"}, ttl=1)
        store.put(("t", "sub"), "forever", {"text": "apple"})
        clock.advance(MINUTE - 1)
        assert store.get(("t",), "short", refresh_ttl=False) is not None
        clock.advance(1)
        assert store.get(("t",), "short") is None
        assert [i.key for i in store.search(("t",))] == ["forever"]
        assert [i.key for i in store.search(("t",), query="apple")] == ["forever"]
        assert store.list_namespaces() == [("t", "sub")]
        assert store.batch([GetOp(("t",), "short")]) == [None]
        assert store.sweep_ttl() == 1
        assert store.sweep_ttl() == 0
        store.put(("t",), "short", {"v": 2})  # no TTL now
        clock.advance(10 * MINUTE)
        assert store.get(("t",), "short").value == {"v": 2}


def test_reads_refresh_the_ttl_unless_told_not_to(where: str, clock: FakeClock) -> None:
    with FlatstateStore(where, clock=clock) as store:
        for key in ["get", "search", "kept"]:
            store.put(("t",), key, {"k": key}, ttl=1)
        clock.advance(50_000)
        assert store.get(("t",), "get") is not None
        assert [i.key for i in store.search(("t",), filter={"k": "search"})] == ["search"]
        assert store.get(("t",), "kept", refresh_ttl=False) is not None
        assert store.search(("t",), filter={"k": "kept"}, refresh_ttl=False)
        clock.advance(50_000)  # 100 s after the puts, 50 s after the refreshing reads
        assert {i.key for i in store.search(("t",), refresh_ttl=False)} == {"get", "search"}


def test_ttl_config_gives_the_default_ttl_and_the_refresh_default(
    where: str, clock: FakeClock
) -> None:
    ttl = {"default_ttl": 2, "refresh_on_read": False}
    with FlatstateStore(where, ttl=ttl, clock=clock) as store:
        assert store.ttl_config == ttl
        store.put(("t",), "default", {})
        store.put(("t",), "never", {}, ttl=None)
        store.put(("t",), "longer", {}, ttl=10)
        clock.advance(MINUTE)
        assert store.get(("t",), "default") is not None  # read, but not refreshed
        clock.advance(MINUTE)
        assert store.get(("t",), "default") is None
        assert store.get(("t",), "default", refresh_ttl=True) is None
        assert {i.key for i in store.search(("t",))} == {"never", "longer"}


def test_a_put_over_an_expired_item_makes_a_new_one(where: str, clock: FakeClock) -> None:
    with FlatstateStore(where, clock=clock) as store:
        store.put(("t",), "k", {"v": 1}, ttl=1)
        first = store.get(("t",), "k").created_at
        clock.advance(30_000)
        store.put(("t",), "k", {"v": 2}, ttl=1)
        assert store.get(("t",), "k").created_at == first  # alive: an update
        clock.advance(2 * MINUTE)
        store.put(("t",), "k", {"v": 3}, ttl=1)
        assert store.get(("t",), "k").created_at > first  # expired: a new item


def test_the_sweeper_thread_sweeps(where: str, clock: FakeClock) -> None:
    ttl = {"sweep_interval_minutes": 0.002}  # every 0.12 s
    with FlatstateStore(where, ttl=ttl, clock=clock) as store:
        store.put(("t",), "k", {}, ttl=1)
        clock.advance(2 * MINUTE)
        assert count_rows(store) == 1
        deadline = time.monotonic() + START_TIMEOUT
        while count_rows(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert count_rows(store) == 0


def test_start_and_stop_the_ttl_sweeper(where: str, clock: FakeClock) -> None:
    """LangGraph's SqliteStore and PostgresStore API: a future per start, done when the
    sweeper stops; cancelling one stops it; closing the store stops it too."""
    with FlatstateStore(where, clock=clock) as store:
        assert store.stop_ttl_sweeper() is True  # none runs
        store.put(("t",), "k", {}, ttl=1)
        clock.advance(2 * MINUTE)
        assert count_rows(store) == 1
        future = store.start_ttl_sweeper(0.002)  # every 0.12 s
        assert not future.done()
        again = store.start_ttl_sweeper()  # it runs already: nothing new starts
        deadline = time.monotonic() + START_TIMEOUT
        while count_rows(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert count_rows(store) == 0
        assert again.cancel()
        assert future.result(timeout=START_TIMEOUT) is None
        assert store.stop_ttl_sweeper(timeout=START_TIMEOUT) is True
        with pytest.raises(InvalidStoreItem, match="positive"):
            store.start_ttl_sweeper(-1)
        later = store.start_ttl_sweeper(60)
        assert not later.done()
    assert later.result(timeout=START_TIMEOUT) is None
    with pytest.raises(StoreClosed):
        store.start_ttl_sweeper()


def count_rows(store: Any) -> int:
    """The rows the store's table holds, expired ones too (reads never show those)."""
    if store.location.startswith("postgresql://"):
        import psycopg

        namespace = parse_qs(urlsplit(store.location).query)["namespace"][0]
        with psycopg.connect(POSTGRES_DSN) as conn:
            row = conn.execute(
                "SELECT count(*) FROM flatstate.lg_store_items WHERE ns = %s", (namespace,)
            ).fetchone()
            return int(row[0])
    with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])


@pytest.mark.parametrize(
    "ttl",
    [{"default_ttl": 0}, {"default_ttl": "1"}, {"sweep_interval_minutes": -1}, {"refresh": True}],
)
def test_bad_ttl_config_is_refused(tmp_path: Path, ttl: dict[str, Any]) -> None:
    with pytest.raises(InvalidStoreItem):
        FlatstateStore(tmp_path / "state", ttl=ttl)


# -- batches, errors, lifecycle ----------------------------------------------------------


def test_a_batch_reads_before_it_writes_and_the_last_put_wins(where: str) -> None:
    with FlatstateStore(where) as store:
        store.put(("b",), "k", {"v": 0})
        results = store.batch(
            [
                PutOp(("b",), "k", {"v": 1}),
                GetOp(("b",), "k"),
                PutOp(("b",), "k", {"v": 2}),
                SearchOp(("b",)),
                ListNamespacesOp(),
                PutOp(("c",), "new", {"v": 3}),
            ]
        )
        assert results[0] is None and results[2] is None and results[5] is None
        assert results[1].value == {"v": 0}
        assert [i.value for i in results[3]] == [{"v": 0}]
        assert results[4] == [("b",)]
        assert store.get(("b",), "k").value == {"v": 2}
        assert store.get(("c",), "new").value == {"v": 3}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"x": float("nan")}, "JSON cannot hold"),
        ({"x": {1, 2}}, "not JSON"),
        ({"x": {1: "a"}}, "keys are strings"),
        ({"when": __import__("datetime").datetime(2026, 1, 1)}, "ISO strings"),
        ({"x": "\ud800"}, "lone surrogate"),
        ("not a dict", "a value is a dict"),
        ({"x": __import__("functools").reduce(lambda v, _: [v], range(100), 1)}, "deeper than 64"),
    ],
)
def test_a_bad_value_fails_the_whole_batch(where: str, value: Any, says: str) -> None:
    with FlatstateStore(where) as store:
        with pytest.raises(InvalidStoreItem, match=says):
            store.batch([PutOp(("b",), "good", {"v": 1}), PutOp(("b",), "bad", value)])
        assert store.search(()) == []


def test_bad_namespaces_keys_and_pages_are_refused(where: str) -> None:
    with FlatstateStore(where) as store:
        with pytest.raises(InvalidNamespaceError):
            store.put(("a.b",), "k", {})
        with pytest.raises(InvalidNamespaceError):
            store.batch([GetOp(("a.b",), "k")])  # batch checks what put() would
        with pytest.raises(InvalidNamespaceError):
            store.batch([PutOp(("a\x00b",), "k", {})])
        with pytest.raises(InvalidStoreItem, match="lone surrogate"):
            store.put(("\udc80",), "k", {})
        with pytest.raises(InvalidStoreItem, match="at least one label"):
            store.batch([PutOp((), "k", {})])
        with pytest.raises(InvalidStoreItem, match="key is a string"):
            store.batch([PutOp(("a",), 7, {})])
        with pytest.raises(InvalidStoreItem, match="TTL"):
            store.put(("a",), "k", {}, ttl=-1)
        with pytest.raises(InvalidStoreItem, match="offset"):
            store.search(("a",), offset=-1)
        with pytest.raises(InvalidStoreItem, match="max_depth"):
            store.list_namespaces(max_depth=0)
        with pytest.raises(InvalidStoreItem, match="GetOp, PutOp"):
            store.batch(["get everything"])
        assert store.search(()) == []


def test_keys_and_labels_keep_every_character(where: str) -> None:
    odd = ["", "\x00nul", "é", "日本", "a b", "'; DROP TABLE items; --", "\U0001f600", "\x01"]
    labels = [key.replace("\x00", "") or "x" for key in odd]  # labels cannot hold NUL
    with FlatstateStore(where) as store:
        for i, (label, key) in enumerate(zip(labels, odd, strict=True)):
            store.put((label, "ns"), key, {"i": i, key: label})
        for i, (label, key) in enumerate(zip(labels, odd, strict=True)):
            assert store.get((label, "ns"), key).value == {"i": i, key: label}
        assert store.list_namespaces(max_depth=1) == sorted({(label,) for label in labels})


def test_reopening_keeps_everything(where: str) -> None:
    state = where
    with FlatstateStore(state) as store:
        store.put(("users", "1"), "prefs", {"theme": "dark", "text": "likes mango"})
        store.put(("users", "2"), "prefs", {"theme": "light"})
        store.delete(("users", "2"), "prefs")
        created = store.get(("users", "1"), "prefs").created_at
    with FlatstateStore(state) as store:
        item = store.get(("users", "1"), "prefs")
        assert item.value == {"theme": "dark", "text": "likes mango"}
        assert item.created_at == created
        assert store.get(("users", "2"), "prefs") is None
        assert [i.key for i in store.search((), query="mango")] == ["prefs"]
        assert store.list_namespaces() == [("users", "1")]


def test_vectors_survive_a_reopen(vec_where: str) -> None:
    index = {"dims": 32, "embed": hashing_embed(), "fields": ["text"]}
    with FlatstateStore(vec_where, index=index) as store:
        for key, value in DOCS.items():
            store.put(("docs",), key, value)
    with FlatstateStore(vec_where, index=index) as store:
        assert store.search(("docs",), query="lemon", limit=1)[0].key == "d3"


def test_async_twins_and_async_with(where: str) -> None:
    async def main() -> None:
        async with FlatstateStore(where) as store:
            await asyncio.gather(*(store.aput(("a",), f"k{i}", {"i": i}) for i in range(20)))
            assert (await store.aget(("a",), "k3")).value == {"i": 3}
            found = await store.asearch(("a",), filter={"i": {"$gte": 18}})
            assert {i.key for i in found} == {"k18", "k19"}
            assert await store.alist_namespaces() == [("a",)]
            await store.adelete(("a",), "k3")
            assert await store.aget(("a",), "k3") is None
            assert await store.asweep_ttl() == 0

    asyncio.run(main())


def test_threads_writing_at_once_lose_nothing(where: str) -> None:
    with FlatstateStore(where) as store:

        def work(t: int) -> None:
            for i in range(25):
                store.put(("t", str(t)), str(i), {"i": i})

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(store.search(("t",), limit=EVERYTHING)) == 100


def test_closed_store_refuses(where: str) -> None:
    store = FlatstateStore(where)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreClosed):
        store.get(("a",), "k")
    with pytest.raises(StoreClosed):
        store.put(("a",), "k", {})
    with pytest.raises(StoreClosed):
        store.sweep_ttl()


def test_repr_names_the_file(tmp_path: Path) -> None:
    with FlatstateStore(tmp_path / "state") as store:
        path = str(tmp_path / "state" / "langgraph-store.sqlite")
        assert repr(store) == f"FlatstateStore({path!r})"
        assert store.path == path


def test_other_schemes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidStoreItem, match="postgresql://") as caught:
        FlatstateStore("mysql://user:s3cret@localhost/db")
    assert "s3cret" not in str(caught.value)


def test_a_file_that_is_not_a_store_is_reported_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "langgraph-store.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreCorrupt):
        FlatstateStore(state)
    assert (state / "langgraph-store.sqlite").read_bytes() == b"not a database at all" * 100


def test_a_graph_uses_the_store(where: str) -> None:
    """A real StateGraph whose node reads and writes memories through the injected store."""
    graph_mod = require_extra("langgraph.graph", "langgraph")
    from typing_extensions import TypedDict

    class State(TypedDict):
        user: str
        seen: int

    def remember(state: State, *, store: BaseStore) -> dict[str, int]:
        namespace = ("memories", state["user"])
        store.put(namespace, str(len(store.search(namespace))), {"text": "hello"})
        return {"seen": len(store.search(namespace))}

    builder = graph_mod.StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_edge(graph_mod.START, "remember")
    with FlatstateStore(where) as store:
        graph = builder.compile(store=store)
        assert graph.invoke({"user": "u1", "seen": 0})["seen"] == 1
        assert graph.invoke({"user": "u1", "seen": 0})["seen"] == 2
        assert asyncio.run(graph.ainvoke({"user": "u2", "seen": 0}))["seen"] == 1
        assert store.list_namespaces(prefix=("memories",)) == [
            ("memories", "u1"),
            ("memories", "u2"),
        ]


# -- two processes -----------------------------------------------------------------------


def _write_items(state_dir: str, barrier: Any, worker: int, count: int) -> None:
    with FlatstateStore(state_dir) as store:
        barrier.wait(START_TIMEOUT)
        for i in range(count):
            store.put(("w", str(worker)), str(i), {"i": i, "text": f"worker{worker}"})
            store.put(("shared",), "last", {"worker": worker, "i": i})
            assert store.get(("w", str(worker)), str(i)) is not None


@pytest.mark.slow
def test_two_processes_on_one_state_dir_lose_nothing(where: str) -> None:
    state = where
    FlatstateStore(state).close()
    workers, count = 2, 150
    barrier = ctx.Barrier(workers)
    with running(_write_items, [(state, barrier, w, count) for w in range(workers)]) as procs:
        assert join_all(procs) == [0] * workers
    with FlatstateStore(state) as store:
        for w in range(workers):
            assert len(store.search(("w", str(w)), limit=EVERYTHING)) == count
            assert len(store.search(("w",), query=f"worker{w}", limit=EVERYTHING)) == count
        assert store.get(("shared",), "last").value["i"] == count - 1


def _put_until_killed(state_dir: str, acks: str) -> None:
    with FlatstateStore(state_dir) as store, open(acks, "a", buffering=1) as out:
        for i in range(100_000):
            store.put(("k",), str(i), {"i": i, "text": "survivor"})
            out.write(f"{i}\n")  # acknowledged: the put returned


@pytest.mark.slow
def test_every_acknowledged_put_survives_kill_9(tmp_path: Path, where: str) -> None:
    state, acks = where, str(tmp_path / "acks")
    with running(_put_until_killed, [(state, acks)]) as procs:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if os.path.exists(acks) and os.path.getsize(acks) > 2000:
                break
            time.sleep(0.01)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].join(10)
    acknowledged = [int(line) for line in Path(acks).read_text().split()]
    assert len(acknowledged) > 300
    with FlatstateStore(state) as store:
        kept = {item.key for item in store.search(("k",), limit=len(acknowledged) + 10)}
        assert {str(i) for i in acknowledged} <= kept
        assert len(store.search(("k",), query="survivor", limit=EVERYTHING)) == len(kept)


def test_without_the_extra_the_import_names_it() -> None:
    code = (
        "import sys; sys.modules['langgraph'] = None\n"
        "try:\n    import flatstate.integrations.langgraph\n"
        "except ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("ExtraMissing")
    assert "pip install 'flatstate[langgraph]'" in done.stdout
