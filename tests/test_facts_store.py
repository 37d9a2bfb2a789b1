"""The facts store's writes and reads: dedup, supersede, update, forget, files on disk."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import flatstate.facts
from flatstate.errors import (
    FactNotFound,
    FlatstateError,
    InvalidFact,
    ReadOnlyStore,
    StoreClosed,
    StoreCorrupt,
)
from flatstate.facts import Fact, FactStore, NewFact, open_facts
from tests.conftest import FakeClock, check_docstring_examples
from tests.facts_support import (
    DAY,
    OpenFacts,
    facts_location,
    is_postgres,
    raw_db,
    raw_execute,
    stores,
)


@pytest.fixture
def open_at(tmp_path: Path, clock: FakeClock, facts_backend: str) -> Iterator[OpenFacts]:
    yield from stores(facts_location(facts_backend, tmp_path), clock)


@pytest.fixture
def facts(open_at: OpenFacts) -> FactStore:
    return open_at()


def _match(store: FactStore, word: str) -> list[str]:
    """Texts of the facts the full-text index finds for one word, read straight from the
    database (FTS5 on SQLite, the GIN-indexed tsvector on PostgreSQL)."""
    if is_postgres(store):
        rows = raw_execute(
            store,
            "SELECT text FROM facts WHERE ns = %s AND superseded_at IS NULL "
            "AND search @@ plainto_tsquery('facts_search', facts_fold(%s)) ORDER BY seq",
            (store.backend.namespace, word),  # type: ignore[attr-defined]
        )
    else:
        rows = raw_execute(
            store,
            "SELECT f.text FROM facts_fts JOIN facts AS f ON f.seq = facts_fts.rowid "
            "WHERE facts_fts MATCH ? ORDER BY f.seq",
            (f'"{word}"',),
        )
    return [text for (text,) in rows]


def _sql(store: FactStore, sql: str) -> str:
    """``sql`` with ``?`` placeholders as the store's database writes them."""
    return sql.replace("?", "%s") if is_postgres(store) else sql


def is_postgres_url(location: str) -> bool:
    return location.startswith("postgresql://")


# -- adding and deduplicating ----------------------------------------------------------


def test_add_stores_every_field_and_returns_it(facts: FactStore, clock: FakeClock) -> None:
    fact = facts.add(
        "Alice prefers dark mode",
        why="said so in the kickoff",
        category="preference",
        importance=0.8,
        entity="alice",
        key="theme",
        value="dark",
        source="chat",
        decay_class="stable",
        confidence=0.9,
        tags=("ui", "editor"),
        scope="agent",
        scope_target="main",
        session_key="agent:main:main",
        entry_id="e-42",
    )
    assert facts.get(fact.id) == fact
    assert fact.created_at == clock.now
    assert fact.expires_at == clock.now + 90 * DAY
    assert fact.tags == ("ui", "editor")
    assert (fact.recall_count, fact.last_accessed_at, fact.superseded_at) == (0, None, None)
    assert (fact.session_key, fact.entry_id, fact.scope_target) == (
        "agent:main:main",
        "e-42",
        "main",
    )


def test_exact_duplicate_returns_the_existing_fact(facts: FactStore) -> None:
    first = facts.add("Deploys go to fly.io", category="decision")
    again = facts.add("Deploys go to fly.io", category="decision")
    assert again.id == first.id
    assert facts.count() == 1


def test_normalized_duplicate_returns_the_existing_fact(facts: FactStore) -> None:
    first = facts.add("Deploys go to fly.io")
    for variant in (
        "deploys go to FLY.IO.",
        "  Deploys   go to fly.io!  ",
        "Ｄeploys go to fly.io",
    ):
        assert facts.add(variant).id == first.id
    assert facts.count() == 1
    assert facts.add("Deploys go to render.com").id != first.id


def test_a_restatement_confirms_the_fact(facts: FactStore, clock: FakeClock) -> None:
    first = facts.add("Deploys go to fly.io", decay_class="normal", confidence=0.6)
    clock.advance(10 * DAY)
    again = facts.add(
        "deploys go to fly.io", decay_class="stable", confidence=0.9, entity="deploys"
    )
    assert again.id == first.id
    assert again.last_confirmed_at == clock.now
    assert again.decay_class == "stable"  # the longer-lived class wins
    assert again.expires_at == clock.now + 90 * DAY
    assert again.confidence == 0.9
    assert again.entity == "deploys"  # a field it lacked is filled in
    assert again.created_at == first.created_at


def test_the_same_text_in_another_scope_is_another_fact(facts: FactStore) -> None:
    a = facts.add("Use short answers")
    b = facts.add("Use short answers", scope="session", scope_target="agent:main:s1")
    assert a.id != b.id and facts.count() == 2


def test_a_superseded_fact_does_not_absorb_a_restatement(facts: FactStore) -> None:
    old = facts.add("Deploys go to fly.io")
    new = facts.add("Deploys go to render.com", supersedes=old.id)
    again = facts.add("Deploys go to fly.io")
    assert again.id not in (old.id, new.id)


def test_add_many_is_all_or_nothing(facts: FactStore) -> None:
    added = facts.add_many(["one fact", NewFact(text="two facts", category="other")])
    assert [f.text for f in added] == ["one fact", "two facts"]
    with pytest.raises(InvalidFact):
        facts.add_many(["three facts", NewFact(text="four facts", importance=3.0)])
    with pytest.raises(FactNotFound):
        facts.add_many(["five facts", NewFact(text="six facts", supersedes="no-such-id")])
    assert sorted(f.text for f in facts.list(10)) == ["one fact", "two facts"]


def test_duplicates_within_one_batch_are_stored_once(facts: FactStore) -> None:
    a, b = facts.add_many(["Ship on Fridays", "ship on fridays."])
    assert a.id == b.id and facts.count() == 1


@pytest.mark.parametrize(
    ("text", "fields", "problem"),
    [
        ("", {}, "text"),
        ("   ", {}, "text"),
        ("x" * 10_001, {}, "text"),
        ("ok", {"importance": 1.5}, "importance"),
        ("ok", {"confidence": -0.1}, "confidence"),
        ("ok", {"confidence": True}, "confidence"),
        ("ok", {"decay_class": "forever"}, "decay class"),
        ("ok", {"category": ""}, "category"),
        ("ok", {"tags": ("",)}, "tags"),
        ("ok", {"tags": "ui"}, "tags"),  # a string is not a list of tags
        ("ok", {"decay_class": 3}, "decay class"),
        ("ok", {"entity": "e" * 1001}, "entity"),
        ("ok", {"tags": None}, "tags"),
        ("cut \ud800", {}, "text: the text holds a lone surrogate"),
        ("ok", {"entity": "\udfff"}, "entity: the text holds a lone surrogate"),
        ("ok", {"category": "c\ud800"}, "category: the text holds a lone surrogate"),
        ("ok", {"tags": ["\ud800"]}, "tags: the text holds a lone surrogate"),
    ],
)
def test_invalid_facts_are_refused_and_nothing_is_written(
    facts: FactStore, text: str, fields: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidFact, match=problem) as caught:
        facts.add(text, **fields)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, FlatstateError)
    assert "Nothing was written" in str(caught.value)
    str(caught.value).encode()  # printable: no surrogate in the message
    assert facts.count() == 0
    assert facts.lookup("\udfff") == () and facts.lookup("user", "\ud800") == ()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"importance": float("nan")}, "importance"),
        ({"text": None}, "text"),
        ({"created_at": 2**63}, "does not fit 64 bits"),
        ({"recall_count": 0.5}, "recall_count"),
        ({"tags": ("\ud800",)}, "lone surrogate"),
        ({"id": ""}, "needs its id"),
    ],
)
def test_imported_facts_are_checked_and_a_bad_one_stores_none(
    facts: FactStore, change: dict[str, object], problem: str
) -> None:
    good = facts.add("Prefers tabs", entity="user")
    (exported,) = facts.export()
    assert exported == good
    bad = msgspec.structs.replace(exported, **{"id": "other", **change})
    moved = facts.export()
    with pytest.raises(InvalidFact, match=problem):
        facts.import_facts([msgspec.structs.replace(exported, id="fine"), bad])
    with pytest.raises(InvalidFact, match="takes Fact objects"):
        facts.import_facts([{"text": "a dict"}])  # type: ignore[list-item]
    assert list(facts.export()) == list(moved)  # neither went in


def test_counts_are_whole_numbers_and_none_below_zero(facts: FactStore) -> None:
    facts.add("Prefers tabs", entity="user")
    huge = 2**70  # past what SQL's LIMIT takes: all of them
    assert len(facts.search("tabs", limit=huge)) == len(facts.lookup("user", limit=huge)) == 1
    assert len(facts.list(huge)) == len(facts.recall("tabs", limit=huge)) == 1
    assert facts.lookup("user", limit=-1) == facts.list(-1) == facts.search("tabs", limit=-1) == ()
    for call in (lambda: facts.search("tabs", limit=None), lambda: facts.list("3")):
        with pytest.raises(TypeError, match="whole number"):
            call()  # type: ignore[no-untyped-call]
    with pytest.raises(ValueError, match="at least 1"):
        list(facts.export(batch=0))


def test_decay_class_is_guessed_when_not_given(facts: FactStore) -> None:
    assert facts.add("Prefers tabs", category="preference").decay_class == "stable"
    assert facts.add("Working on the parser refactor").decay_class == "ephemeral"
    assert facts.add("The build is red today").decay_class == "session"
    assert facts.add("Use the old API for now").decay_class == "short"
    assert facts.add("The API lives at /v2").decay_class == "normal"
    assert facts.add("Old name", decay_class="durable").decay_class == "stable"  # an alias


# -- supersede, update, forget ------------------------------------------------------------


def test_supersede_hides_the_old_fact_but_keeps_it(facts: FactStore, clock: FakeClock) -> None:
    old = facts.add("Deploys go to fly.io", category="decision")
    new = facts.add("Deploys go to render.com", category="decision")
    clock.advance(1000)
    marked = facts.supersede(old, new.id)
    assert (marked.superseded_at, marked.superseded_by) == (clock.now, new.id)
    assert facts.get(old.id) == marked
    assert [f.id for f in facts.list(10)] == [new.id]
    assert facts.count() == 1
    assert [h.fact.id for h in facts.search("deploys")] == [new.id]
    assert _match(facts, "fly") == []  # it left the full-text index


def test_supersede_refuses_what_cannot_be(facts: FactStore) -> None:
    a = facts.add("fact a")
    b = facts.add("fact b")
    with pytest.raises(InvalidFact, match="itself"):
        facts.supersede(a, a)
    with pytest.raises(FactNotFound):
        facts.supersede(a, "missing")
    with pytest.raises(FactNotFound):
        facts.supersede("missing", a)
    facts.supersede(a, b)
    with pytest.raises(InvalidFact, match="already superseded"):
        facts.supersede(a, b)


def test_add_with_supersedes_replaces_in_one_step(facts: FactStore) -> None:
    old = facts.add("The API lives at /v1")
    new = facts.add("The API lives at /v2", supersedes=old.id)
    superseded = facts.get(old.id)
    assert superseded is not None and superseded.superseded_by == new.id


def test_fts_follows_an_update(facts: FactStore) -> None:
    fact = facts.add("The cache lives in redis", entity="cache")
    assert _match(facts, "redis") == ["The cache lives in redis"]
    updated = facts.update(fact.id, text="The cache lives in memcached", key="backend")
    assert updated.text == "The cache lives in memcached" and updated.key == "backend"
    assert updated.normalized_hash != fact.normalized_hash
    assert _match(facts, "redis") == []
    assert _match(facts, "memcached") == ["The cache lives in memcached"]
    assert _match(facts, "backend") == ["The cache lives in memcached"]  # key is indexed
    assert [h.fact.id for h in facts.search("memcached backend")] == [fact.id]


def test_fts_follows_a_change_made_by_any_writer(facts: FactStore) -> None:
    fact = facts.add("The queue is rabbitmq")
    # The index is kept by triggers (SQLite) or a generated column (PostgreSQL), so even a
    # plain sqlite3 or psql session keeps it in step.
    raw_execute(
        facts, _sql(facts, "UPDATE facts SET text = 'The queue is kafka' WHERE id = ?"), (fact.id,)
    )
    assert _match(facts, "rabbitmq") == []
    assert _match(facts, "kafka") == ["The queue is kafka"]
    assert [h.fact.id for h in facts.search("kafka")] == [fact.id]
    raw_execute(facts, _sql(facts, "DELETE FROM facts WHERE id = ?"), (fact.id,))
    assert _match(facts, "kafka") == []


def test_fts_follows_forget(facts: FactStore) -> None:
    keep = facts.add("Lunch is at noon")
    gone = facts.add("Standup is at nine, before lunch")
    assert facts.forget(gone.id) is True
    assert facts.forget(gone.id) is False
    assert facts.get(gone.id) is None
    assert _match(facts, "lunch") == [keep.text]
    assert _match(facts, "standup") == []


def test_update_changes_the_expiry_with_the_class(facts: FactStore, clock: FakeClock) -> None:
    fact = facts.add("A passing thought", decay_class="ephemeral")
    updated = facts.update(fact.id, decay_class="stable", tags=("kept",))
    assert updated.expires_at == fact.created_at + 90 * DAY and updated.tags == ("kept",)
    assert facts.update(fact.id, decay_class="permanent").expires_at is None


def test_update_refuses_unknown_fields_and_ids(facts: FactStore) -> None:
    fact = facts.add("x marks the spot")
    with pytest.raises(InvalidFact, match="supersedes"):
        facts.update(fact.id, supersedes="y")
    with pytest.raises(FactNotFound):
        facts.update("missing", text="y")
    with pytest.raises(InvalidFact):
        facts.update(fact.id, importance=7)
    assert facts.get(fact.id) == fact


# -- reads --------------------------------------------------------------------------------


def test_list_is_newest_first_and_live_only(facts: FactStore, clock: FakeClock) -> None:
    made = []
    for i in range(5):
        made.append(facts.add(f"fact number {i}", decay_class="permanent"))
        clock.advance(1000)
    short = facts.add("short-lived fact", decay_class="ephemeral")
    assert [f.id for f in facts.list(3)] == [short.id, made[4].id, made[3].id]
    clock.advance(5 * 3_600_000)
    assert [f.id for f in facts.list(3)] == [made[4].id, made[3].id, made[2].id]
    assert facts.count() == 5
    assert facts.list(0) == ()


def test_lookup_by_entity_and_key(facts: FactStore) -> None:
    theme = facts.add("Alice likes dark mode", entity="Alice", key="theme")
    editor = facts.add("Alice uses vim", entity="alice", key="editor")
    facts.add("Bob uses emacs", entity="bob", key="editor")
    assert [f.id for f in facts.lookup("ALICE")] == [editor.id, theme.id]
    assert [f.id for f in facts.lookup("alice", "Theme")] == [theme.id]
    assert facts.lookup("carol") == ()


def test_resolve_takes_a_unique_id_prefix(facts: FactStore) -> None:
    fact = facts.add("Prefixes are for people")
    assert facts.resolve(fact.id[:8]) == fact
    assert facts.resolve(fact.id) == fact
    with pytest.raises(FactNotFound):
        facts.resolve("zzzzzzzz")
    with pytest.raises(FactNotFound):
        facts.resolve(fact.id[:3])  # too short to be taken as a prefix


def test_facts_are_immutable_and_shareable(facts: FactStore) -> None:
    fact = facts.add("Immutable facts", tags=("a",))
    with pytest.raises(AttributeError):
        fact.text = "changed"  # type: ignore[misc]
    assert isinstance(fact.tags, tuple)
    assert hash(fact) == hash(facts.get(fact.id))  # frozen structs hash by value
    assert type(fact) is Fact


def test_stats_count_by_state_and_class(facts: FactStore, clock: FakeClock) -> None:
    a = facts.add("a fact", decay_class="stable")
    facts.add("b fact", decay_class="ephemeral")
    facts.add("c fact", decay_class="normal", supersedes=a.id)
    clock.advance(5 * 3_600_000)
    stats = facts.stats()
    assert (stats.live, stats.superseded, stats.expired, stats.total) == (1, 1, 1, 3)
    assert stats.by_class == (("normal", 1),)
    # PostgreSQL's second step made ids unique per namespace.
    assert stats.schema_version == (2 if stats.path.startswith("postgresql") else 1)
    assert stats.disk_bytes > 0 and stats.vectors == 0


# -- the file on disk ---------------------------------------------------------------------


@pytest.mark.parametrize("facts_backend", ["sqlite"])
def test_database_file_and_directory_are_private(facts: FactStore, tmp_path: Path) -> None:
    facts.add("private")
    assert stat.S_IMODE(os.stat(facts.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    with raw_db(facts.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]


def test_facts_survive_close_and_reopen(open_at: OpenFacts) -> None:
    first = open_at()
    fact = first.add("durable", tags=("t",))
    first.close()
    assert open_at().get(fact.id) == fact


def test_a_damaged_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    path = state / "facts.sqlite"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    with pytest.raises(StoreCorrupt) as caught:
        open_facts(state)
    message = str(caught.value)
    assert str(path) in message and "sqlite3" in message and "integrity_check" in message
    assert isinstance(caught.value, OSError)
    assert path.read_bytes() == garbage


def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with raw_db(state / "facts.sqlite") as conn:
        conn.execute("CREATE TABLE other (x)")
    with pytest.raises(StoreCorrupt, match="not a facts database"):
        open_facts(state)


def test_a_newer_schema_is_refused(tmp_path: Path, facts_backend: str, pg_schema: str) -> None:
    # A schema of its own on PostgreSQL: the version is shared by every namespace in it.
    location = facts_location(facts_backend, tmp_path, schema=pg_schema)
    store = open_facts(location)
    if is_postgres(store):
        raw_execute(store, "UPDATE facts_schema_version SET version = 99")
    else:
        store.close()
        with raw_db(store.path) as conn:
            conn.execute("UPDATE schema_version SET version = 99")
    store.close()
    with pytest.raises(StoreCorrupt, match="newer"):
        open_facts(location)


def test_missing_database_without_create(
    tmp_path: Path, facts_backend: str, pg_schema: str
) -> None:
    location = facts_location(facts_backend, tmp_path / "nowhere", schema=pg_schema)
    with pytest.raises(FileNotFoundError, match="no facts"):
        open_facts(location if is_postgres_url(location) else tmp_path / "nowhere", create=False)
    with pytest.raises(FileNotFoundError, match="no facts"):
        open_facts(location if is_postgres_url(location) else tmp_path / "nowhere", readonly=True)
    assert not (tmp_path / "nowhere").exists()


def test_readonly_store_reads_and_refuses_writes(open_at: OpenFacts) -> None:
    writer = open_at()
    fact = writer.add("read me")
    writer.close()
    reader = open_at(readonly=True)
    assert reader.get(fact.id) == fact
    assert [f.id for f in reader.recall("read me")] == [fact.id]
    with pytest.raises(ReadOnlyStore):
        reader.add("no")
    with pytest.raises(ReadOnlyStore):
        reader.forget(fact.id)


def test_a_closed_store_refuses_use(open_at: OpenFacts) -> None:
    store = open_at()
    store.close()
    store.close()  # twice is fine
    for use in (store.count, lambda: store.recall("x"), lambda: store.add("y")):
        with pytest.raises(StoreClosed, match="was closed; open it again") as info:
            use()
        assert info.value.location == store.path


# -- the public surface -------------------------------------------------------------------


def test_exported_members_are_sorted_and_present() -> None:
    names = flatstate.facts.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(flatstate.facts, name)


@pytest.mark.parametrize(
    "module",
    [
        "flatstate.facts",
        "flatstate.facts.model",
        "flatstate.facts.query",
        "flatstate.facts.ranking",
        "flatstate.facts.store",
        "flatstate.facts.context",
        "flatstate.facts.aio",
        "flatstate.facts.vectors",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    check_docstring_examples(module)


def test_the_async_store_has_every_method_of_the_sync_one(
    tmp_path: Path, facts_backend: str
) -> None:
    """docs/facts.md: the async store "opens the same" and has FactStore's methods."""
    import asyncio
    import inspect

    from flatstate.facts import open_async_facts
    from flatstate.facts.aio import AsyncFactStore

    public = {n for n, _ in inspect.getmembers(FactStore) if not n.startswith("_")}
    public -= {"close", "backend"}  # aclose; the backend is the sync store's own
    assert sorted(public - set(dir(AsyncFactStore))) == []

    async def main() -> None:
        # Awaited, then used as a context.
        facts = await open_async_facts(facts_location(facts_backend, tmp_path / "async"))
        async with facts:
            added = await facts.add("Prefers tabs", entity="user")
            assert await facts.list(5) == (added,) and await facts.resolve(added.id[:6]) == added
            exported = [f async for f in facts.export(batch=1)]
            assert exported == [added] and await facts.import_facts(exported) == 0
            assert [v async for v in facts.export_vectors()] == []
            assert await facts.vector_models() == {}
            with pytest.raises(ValueError, match="at least 1"):
                [f async for f in facts.export(batch=0)]
            await facts.flush()

    asyncio.run(main())
