"""Facts on PostgreSQL: shared by hosts, kept apart by namespace, through lost connections.

The conformance suites (test_facts_store, _recall, _decay, _queries) run on PostgreSQL
too; this file holds what only a server can show.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from flatstate.errors import StoreUnavailable, VectorsUnavailable
from flatstate.facts import FactStore, open_async_facts, open_facts
from flatstate.facts.postgres import PostgresFacts
from flatstate.facts.vectors import HashingEmbedder
from tests.conftest import NO_POSTGRES, POSTGRES_DSN, postgres_location
from tests.pgkill import BackendKiller, keep_going
from tests.processes import START_TIMEOUT, ctx, join_all, running

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(POSTGRES_DSN is None, reason=NO_POSTGRES)]


def _password() -> str:
    password = urlsplit(POSTGRES_DSN or "").password
    assert password, "the test server's DSN carries a password (scripts/postgres gives one)"
    return password


def _backend(store: FactStore) -> PostgresFacts:
    assert isinstance(store.backend, PostgresFacts)
    return store.backend


@pytest.fixture
def location(tmp_path: Path) -> str:
    return postgres_location(tmp_path)


# -- namespaces, secrets, vectors -------------------------------------------------------


def test_namespaces_keep_their_facts_apart(tmp_path: Path) -> None:
    with (
        open_facts(postgres_location(tmp_path, f"a-{uuid.uuid4().hex[:8]}")) as a,
        open_facts(postgres_location(tmp_path, f"b-{uuid.uuid4().hex[:8]}")) as b,
    ):
        mine = a.add("The deploy target is fly.io", entity="deploy", key="target")
        theirs = b.add("The deploy target is fly.io", entity="deploy", key="target")
        assert mine.id != theirs.id  # no dedup across namespaces
        b.add("Bob is on call this week")
        assert a.count() == 1 and b.count() == 2
        assert [f.id for f in a.recall("who is on call?")] == []
        assert [f.id for f in a.recall("deploy target")] == [mine.id]
        assert a.get(theirs.id) is None and a.lookup("deploy") == (a.get(mine.id),)
        assert a.forget(theirs.id) is False and b.get(theirs.id) is not None
        assert a.resolve(mine.id[:8]).id == mine.id
        assert a.stats().total == 1


def test_the_password_is_in_no_message_or_repr(location: str) -> None:
    password = _password()
    with open_facts(location) as facts:
        fact = facts.add("Secrets stay out of messages")
        shown = [repr(facts), facts.path, str(facts.stats())]
        with pytest.raises(LookupError) as missing:
            facts.resolve("zzzz-no-such-fact")
        shown.append(str(missing.value))
        assert fact.id
    parts = urlsplit(POSTGRES_DSN or "")
    unreachable = urlunsplit(parts._replace(netloc=f"{parts.username}:{password}@127.0.0.1:1"))
    with pytest.raises(StoreUnavailable) as down:
        open_facts(unreachable, connect_timeout=2)
    wrong = urlunsplit(
        parts._replace(netloc=parts.netloc.replace(f":{password}@", ":wrong-secret@"))
    )
    with pytest.raises(StoreUnavailable) as refused:
        open_facts(wrong)
    shown += [str(down.value), repr(down.value), str(refused.value)]
    assert all(password not in text and "wrong-secret" not in text for text in shown), shown
    assert "postgresql://" in facts.path and "namespace=" in facts.path


def test_vectors_without_pgvector_are_a_clear_error(location: str) -> None:
    """The real detection: Debian's server packages here do not carry pgvector."""
    with psycopg.connect(POSTGRES_DSN or "", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone():
            pytest.skip("this server has pgvector; the error cannot be shown here")
        major = conn.info.server_version // 10000
    with pytest.raises(VectorsUnavailable) as caught:
        open_facts(location, embed=HashingEmbedder(8))
    message = str(caught.value)
    assert "pgvector" in message and "pg_available_extensions" in message
    assert f"apt-get install postgresql-{major}-pgvector" in message
    assert "CREATE EXTENSION vector" in message and "embed=" in message
    assert isinstance(caught.value, ImportError) and _password() not in message
    with open_facts(location) as plain:  # nothing was harmed: keywords alone still serve
        assert not plain.vectors and plain.add("still works").text == "still works"


def test_the_async_api_opens_a_url(location: str) -> None:
    async def main() -> None:
        async with open_async_facts(location) as facts:
            fact = await facts.add("Async hosts share facts too")
            assert [f.id for f in await facts.recall("async hosts")] == [fact.id]

    asyncio.run(main())


def test_a_fact_with_a_nul_character_is_refused_cleanly(location: str) -> None:
    with open_facts(location) as facts:
        with pytest.raises(ValueError, match="NUL"):
            facts.add("nul\x00inside")
        with pytest.raises(ValueError, match="NUL"):
            facts.add("fine", entity="bad\x00entity")
        assert facts.count() == 0
        assert facts.get("x\x00") is None and facts.lookup("a\x00") == ()
        assert facts.search("alpha\x00bravo") == ()


# -- two hosts ---------------------------------------------------------------------------


def _host_a(location: str, added: Any) -> None:
    with open_facts(location) as facts:
        fact = facts.add("The staging cluster lives in eu-west-3", entity="staging")
        added.put(fact.id)


def _host_b(location: str, expected: str, found: Any) -> None:
    with open_facts(location) as facts:
        found.put([f.id for f in facts.recall("where is the staging cluster?")])


@pytest.mark.slow
def test_a_fact_added_on_one_host_is_recalled_on_another(tmp_path: Path) -> None:
    """Two processes with different local state directories on one database."""
    namespace = f"hosts-{uuid.uuid4().hex[:8]}"
    host_a = postgres_location(tmp_path / "host-a", namespace)
    host_b = postgres_location(tmp_path / "host-b", namespace)
    added, found = ctx.Queue(), ctx.Queue()
    with running(_host_a, [(host_a, added)]) as procs:
        assert join_all(procs) == [0]
    fact_id = added.get(timeout=START_TIMEOUT)
    with running(_host_b, [(host_b, fact_id, found)]) as procs:
        assert join_all(procs) == [0]
    assert found.get(timeout=START_TIMEOUT) == [fact_id]


def _add_same_facts(location: str, barrier: Any, count: int, ids: Any) -> None:
    with open_facts(location) as facts:
        barrier.wait(START_TIMEOUT)
        ids.put([facts.add(f"shared fact {i}").id for i in range(count)])


@pytest.mark.slow
def test_hosts_adding_the_same_facts_store_each_once(location: str) -> None:
    open_facts(location).close()  # the tables exist before the race, as on a fleet
    workers, count = 2, 100
    barrier, ids = ctx.Barrier(workers), ctx.Queue()
    with running(_add_same_facts, [(location, barrier, count, ids)] * workers) as procs:
        assert join_all(procs) == [0] * workers
    first, second = ids.get(timeout=START_TIMEOUT), ids.get(timeout=START_TIMEOUT)
    assert first == second  # both hosts were handed the one stored fact
    with open_facts(location) as facts:
        assert facts.count() == count
        assert {f.text for f in facts.list(count + 10)} == {
            f"shared fact {i}" for i in range(count)
        }


# -- lost connections ----------------------------------------------------------------------


@contextmanager
def self_terminating(when: str) -> Iterator[list[int]]:
    """The next facts COMMIT's connection kills itself just before or just after it."""
    fired: list[int] = []
    real = psycopg.Connection.execute
    kill = "SELECT pg_terminate_backend(pg_backend_pid())"

    def execute(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if query == "COMMIT" and not fired and not args:
            fired.append(1)
            query = f"{kill}; COMMIT" if when == "before" else f"COMMIT; {kill}"
        return real(self, query, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(psycopg.Connection, "execute", execute)
        yield fired


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_connection_lost_at_commit_neither_loses_nor_repeats_an_add(
    location: str, when: str
) -> None:
    """Before COMMIT: rolled back, the add runs again. After COMMIT (the reply lost): the
    server says the transaction committed, and the add is not repeated."""
    with open_facts(location) as facts:
        facts.add("a first fact")
        with self_terminating(when) as fired:
            fact = facts.add("added across a lost connection", entity="net")
        assert fired == [1]
        assert facts.count() == 2
        assert [f.id for f in facts.lookup("net")] == [fact.id]
        assert facts.get(fact.id) == fact
        # A write that is not idempotent: run twice, the second would find nothing to delete.
        with self_terminating(when) as fired:
            assert facts.forget(fact.id) is True
        assert fired == [1] and facts.get(fact.id) is None and facts.count() == 1


def _add_through_kills(
    location: str, barrier: Any, worker: int, count: int, fired: Any, out: Any
) -> None:
    acknowledged = []
    with open_facts(location, lock_timeout=60) as facts:
        barrier.wait(START_TIMEOUT)
        i = 0
        while keep_going(i, count, fired):
            text = f"worker {worker} fact {i}" if i % 3 else f"common fact {i}"
            acknowledged.append(facts.add(text).text)
            facts.recall(text)  # reads and counters through the kills too
            i += 1
    out.put(acknowledged)


@pytest.mark.slow
def test_terminated_backends_during_adds_lose_and_duplicate_nothing(location: str) -> None:
    """Two hosts add facts (some the same) while a killer terminates their sessions at
    random (pg_terminate_backend): every acknowledged fact is stored exactly once."""
    open_facts(location).close()
    namespace = urlsplit(location).query.split("namespace=")[1].split("&")[0]
    workers, count = 2, 60
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    killer = BackendKiller([f"flatstate-facts:{namespace}"], pause=(0.02, 0.15))
    args = [(location, barrier, w, count, killer.fired, out) for w in range(workers)]
    with running(_add_through_kills, args) as procs:
        with killer:
            codes = join_all(procs)
        assert codes == [0] * workers, f"seed {killer.seed}"
    acknowledged = {text for _ in range(workers) for text in out.get(timeout=10)}
    killer.check_fired()
    with open_facts(location) as facts:
        stored = [f.text for f in facts.list(25 * count)]  # every one: 2 x 10 x count at most
        assert len(stored) == len(set(stored)), f"seed {killer.seed}: a duplicate"
        assert set(stored) == acknowledged, f"seed {killer.seed}"
        assert facts.count() == len(acknowledged)


# -- access counters, written in the background --------------------------------------------


def test_counters_written_in_the_background_are_counted_once(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flatstate.facts.access.ACCESS_FLUSH_SECONDS", 0.0)  # every recall
    with open_facts(location) as facts:
        fact = facts.add("The deploy key is in the vault")
        for n in range(1, 41):
            assert [f.recall_count for f in facts.recall("deploy key")] == [n]
            # Stored, in flight or waiting: this process sees each recall exactly once.
            seen = facts.get(fact.id)
            assert seen is not None and seen.recall_count == n
            if n == 20:  # the background connection dies: its batches are not lost
                background = _backend(facts)._access
                assert background is not None
                background.wait()
                assert background._backend is not None
                pid = background._backend.backend_pid
                with psycopg.connect(POSTGRES_DSN or "", autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _backend(facts).wait_access()
        with open_facts(location) as other:  # what reached the database, before close
            stored = other.get(fact.id)
            assert stored is not None and 0 < stored.recall_count <= 40
    with open_facts(location) as other:
        assert other.get(fact.id).recall_count == 40  # type: ignore[union-attr]
