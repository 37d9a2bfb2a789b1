"""FlatstateStore on PostgreSQL, what only a server has: stores (processes) sharing one
namespace, namespaces and schemas that never meet, the missing pgvector named with its fix,
no password in any message, connections lost and retried. The behaviours both databases
share run on both in test_langgraph_store.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flatstate.errors import StoreClosed, StoreUnavailable, VectorsUnavailable
from tests.conftest import NO_POSTGRES, POSTGRES_DSN, FakeClock, postgres_location, require_extra

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(POSTGRES_DSN is None, reason=NO_POSTGRES)]

lg = require_extra("flatstate.integrations.langgraph", "langgraph")
require_extra("psycopg", "postgres")
import psycopg  # noqa: E402

FlatstateStore = lg.FlatstateStore
MINUTE = 60_000
SECRET = "s3cret-pass-word"


def namespace_of(location: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(location).query)["namespace"][0]


def test_two_stores_on_one_namespace_see_each_others_writes(tmp_path: Path) -> None:
    where = postgres_location(tmp_path)
    with FlatstateStore(where) as one, FlatstateStore(where) as two:
        one.put(("users", "alice"), "theme", {"text": "dark mode"})
        assert two.get(("users", "alice"), "theme").value == {"text": "dark mode"}
        two.put(("users", "bob"), "tz", {"text": "Lisbon"})
        assert [i.key for i in one.search(("users",), query="lisbon")] == ["tz"]
        assert one.list_namespaces() == [("users", "alice"), ("users", "bob")]
        two.delete(("users", "alice"), "theme")
        assert one.get(("users", "alice"), "theme") is None


def test_another_process_sees_the_puts(tmp_path: Path) -> None:
    where = postgres_location(tmp_path)
    with FlatstateStore(where) as store:
        store.put(("p",), "from-parent", {"n": 1})
    script = textwrap.dedent(
        """
        import sys
        from flatstate.integrations.langgraph import FlatstateStore

        with FlatstateStore(sys.argv[1]) as store:
            assert store.get(("p",), "from-parent").value == {"n": 1}
            store.put(("p",), "from-child", {"n": 2})
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, where], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    with FlatstateStore(where) as store:
        assert store.get(("p",), "from-child").value == {"n": 2}


def test_namespaces_never_meet(tmp_path: Path, clock: FakeClock) -> None:
    a, b = postgres_location(tmp_path), postgres_location(tmp_path)
    with FlatstateStore(a, clock=clock) as one, FlatstateStore(b, clock=clock) as two:
        one.put(("m",), "k", {"text": "apple", "who": "one"}, ttl=1)
        two.put(("m",), "k", {"text": "apple", "who": "two"}, ttl=1)
        two.put(("only-two",), "k", {"text": "kiwi"})
        assert one.get(("m",), "k").value["who"] == "one"
        assert [i.value["who"] for i in one.search((), query="apple")] == ["one"]
        assert one.search((), query="kiwi") == []
        assert one.list_namespaces() == [("m",)]
        clock.advance(2 * MINUTE)
        assert one.sweep_ttl() == 1  # its own expired item, not the other namespace's
        assert two.sweep_ttl() == 1


def test_a_schema_of_its_own(tmp_path: Path, pg_schema: str) -> None:
    where = postgres_location(tmp_path, schema=pg_schema)
    with FlatstateStore(where) as store:
        store.put(("s",), "k", {"v": 1})
    with psycopg.connect(POSTGRES_DSN) as conn:
        row = conn.execute(
            f'SELECT count(*) FROM "{pg_schema}".lg_store_items WHERE ns = %s',
            (namespace_of(where),),
        ).fetchone()
    assert row is not None and row[0] == 1


def _server_has_pgvector() -> bool:
    with psycopg.connect(POSTGRES_DSN) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
            is not None
        )


def test_semantic_search_without_pgvector_says_how_to_get_it(tmp_path: Path) -> None:
    if _server_has_pgvector():
        pytest.skip("this server has pgvector: the error cannot happen here")
    secret = postgres_location(tmp_path)  # the test server's own password is in it
    index = {"dims": 4, "embed": lambda texts: [[1.0, 0.0, 0.0, 0.0] for _ in texts]}
    with pytest.raises(VectorsUnavailable) as caught:
        FlatstateStore(secret, index=index)
    message = str(caught.value)
    assert "pgvector" in message and "CREATE EXTENSION vector" in message
    assert "open the store without index=" in message
    password = psycopg.conninfo.conninfo_to_dict(POSTGRES_DSN).get("password")
    assert not password or password not in message
    with FlatstateStore(secret) as store:  # without index= it opens, and keyword search works
        store.put(("d",), "k", {"text": "apple"})
        assert [i.key for i in store.search(("d",), query="apple")] == ["k"]


def test_no_password_in_repr_or_errors(tmp_path: Path) -> None:
    where = postgres_location(tmp_path)
    password = psycopg.conninfo.conninfo_to_dict(POSTGRES_DSN).get("password")
    store = FlatstateStore(where)
    text = repr(store) + store.location
    assert f"namespace={namespace_of(where)}" in store.location
    store.close()
    with pytest.raises(StoreClosed) as closed:
        store.put(("a",), "k", {})
    if password:
        assert password not in text and password not in str(closed.value)
    refused = f"postgresql://nobody:{SECRET}@127.0.0.1:1/nothing?connect_timeout=1&namespace=x"
    with pytest.raises(StoreUnavailable) as caught:
        FlatstateStore(refused, lock_timeout=0.5)
    assert SECRET not in str(caught.value) and "namespace=x" in str(caught.value)
    with pytest.raises(StoreUnavailable, match="sslmode") as bad:
        FlatstateStore(f"postgresql://u:{SECRET}@127.0.0.1/x?sslmode=nonsense")
    assert SECRET not in str(bad.value)


def _terminate(application_name: str) -> int:
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return len(rows)


def test_lost_connections_are_made_again(tmp_path: Path) -> None:
    where = postgres_location(tmp_path)
    name = f"flatstate-lgstore:{namespace_of(where)}"[:63]
    with FlatstateStore(where) as store:
        store.put(("c",), "before", {"v": 1})
        assert store.get(("c",), "before") is not None
        assert _terminate(name) >= 2  # the writer's connection and the pooled reader's
        store.put(("c",), "after", {"v": 2})
        assert {i.key for i in store.search(("c",))} == {"before", "after"}
        assert _terminate(name) >= 2
        assert store.get(("c",), "after").value == {"v": 2}
        assert store.sweep_ttl() == 0


def test_values_and_keys_postgres_text_cannot_hold(tmp_path: Path) -> None:
    """PostgreSQL text holds no NUL: keys are bytes there, values JSON (NUL escaped), and the
    keyword index reads a NUL as a space."""
    with FlatstateStore(postgres_location(tmp_path)) as store:
        store.put(("n",), "a\x00b", {"text": "apple\x00kiwi", "raw": "\x00"})
        assert store.get(("n",), "a\x00b").value == {"text": "apple\x00kiwi", "raw": "\x00"}
        assert [i.key for i in store.search(("n",), query="kiwi")] == ["a\x00b"]


def test_the_tables_hold_what_the_docs_say(tmp_path: Path) -> None:
    where = postgres_location(tmp_path)
    with FlatstateStore(where) as store:
        store.put(("docs", "a"), "k", {"text": "The deploy target is fly.io"}, ttl=5)
        store.put(("docs", "a"), "off", {"text": "hidden"}, index=False)
    with psycopg.connect(POSTGRES_DSN) as conn:
        rows: list[Any] = conn.execute(
            "SELECT namespace, key, ttl_minutes, expires_at IS NOT NULL, search IS NOT NULL "
            "FROM flatstate.lg_store_items WHERE ns = %s ORDER BY key",
            (namespace_of(where),),
        ).fetchall()
    assert [(bytes(r[0]), bytes(r[1]), r[2], r[3], r[4]) for r in rows] == [
        (b"docs\x00a", b"k", 5.0, True, True),
        (b"docs\x00a", b"off", None, False, False),
    ]
