"""Optional vector search (sqlite-vec; pgvector on the test server that has it), with small
deterministic embedding functions."""

from __future__ import annotations

import math
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest

from flatstate.errors import InvalidFact, VectorsUnavailable
from flatstate.facts import FactStore, open_facts
from flatstate.facts import vectors as vectors_module
from flatstate.facts.vectors import HashingEmbedder
from tests.conftest import FakeClock, pgvector_location, require_extra
from tests.facts_support import OpenFacts, is_postgres, raw_execute, stores

# scripts/test installs the vec extra; under FLATSTATE_REQUIRE_EXTRAS=1 (CI) a missing one fails.
require_extra("sqlite_vec", "vec")

# A stand-in for a model that knows synonyms: words in one group share a direction.
SYNONYMS = {"automobile": "car", "vehicle": "car", "auto": "car", "physician": "doctor"}


def synonym_embed(text: str) -> list[float]:
    words = [SYNONYMS.get(w, w) for w in text.lower().replace("?", " ").split()]
    return HashingEmbedder(32)(" ".join(words))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_at(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> Iterator[OpenFacts]:
    if request.param == "postgres":
        require_extra("psycopg", "postgres")
        yield from stores(pgvector_location(tmp_path), clock)
    else:
        yield from stores(tmp_path / "state", clock)


@pytest.fixture
def facts(open_at: OpenFacts) -> FactStore:
    return open_at(embed=synonym_embed)


def _vector_rows(store: FactStore) -> int:
    if is_postgres(store):
        namespace = store.backend.namespace  # type: ignore[attr-defined]
        rows = raw_execute(store, "SELECT count(*) FROM fact_vectors WHERE ns = %s", (namespace,))
    else:
        rows = raw_execute(store, "SELECT count(*) FROM fact_vectors")
    return int(rows[0][0])


def test_vectors_are_on_and_stored(facts: FactStore) -> None:
    assert facts.vectors
    facts.add("My car is a red hatchback")
    assert _vector_rows(facts) == 1 and facts.stats().vectors == 1


def test_a_vector_match_needs_no_shared_word(facts: FactStore) -> None:
    car = facts.add("My car is a red hatchback")
    facts.add("The physician visit is on Tuesday")
    hits = facts.search("automobile")
    assert [h.fact.id for h in hits] == [car.id]
    assert hits[0].keyword == 0.0 and hits[0].vector == pytest.approx(3**-0.5)  # car of 3 words


def test_hybrid_ranking_merges_keyword_and_vector_hits(facts: FactStore) -> None:
    both = facts.add("The red car needs new tyres")  # "red" by keyword, car by vector
    vector_only = facts.add("Vehicle inspection is due")
    keyword_only = facts.add("Red is the team colour")
    hits = facts.search("red automobile", limit=10)
    order = [h.fact.id for h in hits]
    assert order[0] == both.id
    assert set(order) == {both.id, vector_only.id, keyword_only.id}
    first = hits[0]
    assert first.keyword > 0 and first.vector > 0
    assert first.score > max(h.score for h in hits[1:])


def test_a_near_duplicate_by_vector_returns_the_existing_fact(facts: FactStore) -> None:
    first = facts.add("The user prefers dark mode")
    # Another normalized text (no "the", other words order) but the same content words.
    again = facts.add("Dark mode: user prefers")
    assert again.id == first.id and facts.count() == 1
    other = facts.add("The user prefers light mode")
    assert other.id != first.id


def test_a_store_without_vectors_keeps_them_consistent(open_at: OpenFacts) -> None:
    with_vectors = open_at(embed=synonym_embed)
    kept = with_vectors.add("My car is a red hatchback")
    gone = with_vectors.add("The physician visit is on Tuesday")
    plain = open_at()  # no embedding function: the CLI, another process
    assert not plain.vectors
    plain.forget(gone.id)
    late = plain.add("The automobile club meets on Fridays")
    assert _vector_rows(plain) == 1  # the forgotten fact's vector went with it
    assert with_vectors.embed_missing() == 1
    assert {h.fact.id for h in with_vectors.search("car")} == {kept.id, late.id}


def test_superseded_and_edited_facts_lose_their_vectors(facts: FactStore) -> None:
    old = facts.add("My car is a red hatchback")
    facts.add("My car is a blue estate", supersedes=old.id)
    assert _vector_rows(facts) == 1
    edited = facts.add("The physician visit is on Tuesday")
    facts.update(edited.id, text="The physician visit is on Wednesday")
    assert _vector_rows(facts) == 1
    assert facts.embed_missing() == 1 and _vector_rows(facts) == 2


def test_embeddings_of_another_length_are_refused(open_at: OpenFacts) -> None:
    facts = open_at(embed=HashingEmbedder(16), embed_model="m16")
    facts.add("first fact")
    facts.close()
    wrong = open_at(embed=HashingEmbedder(8), embed_model="m16")
    with pytest.raises(InvalidFact, match="dimensions"):
        wrong.add("second fact")
    assert wrong.count() == 1


def test_an_unusable_embedding_is_refused_for_facts_not_queries(open_at: OpenFacts) -> None:
    def zeros_for_wordless(text: str) -> Sequence[float]:
        return [1.0, 0.5] if any(c.isalpha() for c in text) else [0.0, 0.0]

    facts = open_at(embed=zeros_for_wordless)
    fact = facts.add("anything at all")
    with pytest.raises(InvalidFact, match="no usable vector"):
        facts.add("?!")
    assert facts.search("?!") == ()  # a query never raises: keywords alone
    assert [h.fact.id for h in facts.search("anything")] == [fact.id]


def test_without_a_driver_that_loads_extensions_vectors_are_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real detection, on this Python's own sqlite3, with pysqlite3 made unimportable."""
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        pytest.skip("this Python's sqlite3 loads extensions, so no driver is ever missing")
    monkeypatch.setitem(sys.modules, "pysqlite3", None)
    monkeypatch.setitem(sys.modules, "pysqlite3.dbapi2", None)
    assert vectors_module.fact_driver() is sqlite3
    with pytest.raises(VectorsUnavailable, match=r"pysqlite3 is not installed.*flatstate\[vec\]"):
        open_facts(tmp_path / "state", embed=synonym_embed)
    with open_facts(tmp_path / "state") as plain:  # without vectors, the standard sqlite3 serves
        assert not plain.vectors and plain.count() == 0


def test_a_missing_sqlite_vec_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "sqlite_vec":
            raise ImportError("No module named 'sqlite_vec'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(VectorsUnavailable, match="sqlite-vec package is not installed"):
        open_facts(tmp_path / "state", embed=synonym_embed)
    # The database itself was not harmed and opens without vectors.
    monkeypatch.undo()
    with open_facts(tmp_path / "state") as plain:
        assert plain.count() == 0


def test_the_driver_is_the_first_that_loads_extensions(tmp_path: Path) -> None:
    """This Python's sqlite3 if it can load extensions, else pysqlite3; for every store."""
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        expected: ModuleType = sqlite3
    else:
        expected = require_extra("pysqlite3.dbapi2", "vec")
    assert vectors_module.fact_driver() is expected
    assert vectors_module.vector_driver() is expected
    with open_facts(tmp_path / "state", embed=synonym_embed) as facts:
        assert facts.vectors and isinstance(facts.backend.conn, expected.Connection)  # type: ignore[attr-defined]
    with open_facts(tmp_path / "state") as plain:  # one driver with or without vectors
        assert isinstance(plain.backend.conn, expected.Connection)  # type: ignore[attr-defined]


def test_hashing_embedder_is_deterministic() -> None:
    embed = HashingEmbedder(16)
    assert embed("Dark mode, please") == HashingEmbedder(16)("dark MODE please!")
    assert len(embed("x")) == 16
    assert embed("?!") != embed("...")  # wordless texts are not all one direction


def test_vectors_export_and_import_as_they_are(
    open_at: OpenFacts, tmp_path: Path, clock: FakeClock
) -> None:
    """What `flatstate copy` does between backends: the facts, then their vectors, into a
    store opened without an embedding function; the numbers arrive unchanged."""
    source = open_at(embed=synonym_embed)
    car = source.add("My car is a red hatchback")
    source.add("The physician visit is on Tuesday")
    exported = sorted(source.export_vectors())
    assert [fact_id for fact_id, _, _ in exported] == sorted(f.id for f in source.export())
    with open_facts(tmp_path / "other", clock=clock) as target:
        assert target.import_facts(source.export()) == 2
        assert target.import_vectors(exported) == 2
        assert target.import_vectors(exported) == 0  # those it has are left as they are
        assert sorted(target.export_vectors()) == exported
    with open_facts(tmp_path / "other", embed=synonym_embed, clock=clock) as target:
        assert target.embed_missing() == 0
        assert [h.fact.id for h in target.search("automobile")] == [car.id]


def test_imported_vectors_are_checked_before_any_is_stored(open_at: OpenFacts) -> None:
    facts = open_at(embed=HashingEmbedder(16), embed_model="m16")
    facts.add("first fact")
    ((_, model, vector),) = facts.export_vectors()
    plain = open_at()  # no embedding function: what a copy tool opens
    other = plain.add("second fact")
    old = plain.add("an old fact")
    plain.add("a new fact", supersedes=old.id)
    short = [x / math.sqrt(math.fsum(v * v for v in vector[:8])) for x in vector[:8]]
    for bad, problem in [
        (short, "dimensions"),
        ([x * 2 for x in vector], "unit vector"),
        ([math.nan] * 16, "unit vector"),
        ([], "unit vector"),
    ]:
        with pytest.raises(InvalidFact, match=problem):
            plain.import_vectors([(other.id, model, vector), (other.id, model, bad)])
        assert plain.stats().vectors == 1  # not even the good one went in
    for bad_item, problem in [
        ((other.id, model), "must be"),
        ((other.id, model, ["one", "two"]), "must be"),
        ((other.id, 16, vector), "as text"),
        ((None, model, vector), "as text"),
        ((other.id, "m\x00", vector), "as text"),
    ]:
        with pytest.raises(InvalidFact, match=problem):
            plain.import_vectors([bad_item])  # type: ignore[list-item]
    assert plain.stats().vectors == 1
    batch = [(other.id, model, vector), (old.id, model, vector), ("nosuchfact", model, vector)]
    assert plain.import_vectors(batch) == 1  # a superseded or missing fact gets none
