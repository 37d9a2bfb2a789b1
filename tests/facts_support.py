"""Shared pieces of the facts tests: a store on a fake clock (on SQLite or PostgreSQL),
and a fixed corpus."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from flatstate.facts import FactStore, open_facts
from flatstate.facts.vectors import fact_driver
from tests.conftest import FakeClock, postgres_location

HOUR = 3_600_000
DAY = 24 * HOUR

OpenFacts = Callable[..., FactStore]


def facts_location(backend: str, root: Path, **params: str) -> str:
    """Where a test keeps its facts: a state directory under ``root`` (sqlite), or a
    namespace of its own on the test server (postgres; ``params`` go in the URL)."""
    if backend == "postgres":
        return postgres_location(root, **params)
    return str(root / "state")


def stores(location: str | Path, clock: FakeClock) -> Iterator[OpenFacts]:
    """For a fixture: opens fact stores at ``location`` on a fake clock; closes them after.

    Each test module wraps this in its own fixture (fixtures imported from a
    helper module would trip the linter's redefinition check).
    """
    opened: list[FactStore] = []

    def factory(**options: Any) -> FactStore:
        options.setdefault("clock", clock)
        store = open_facts(location, **options)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


# A small memory with known answers: each query in the recall tests names the
# fact it should find first.
CORPUS: list[dict[str, Any]] = [
    {
        "text": "Alice prefers dark mode in every editor",
        "category": "preference",
        "entity": "alice",
        "key": "theme",
        "value": "dark",
    },
    {
        "text": "The billing service deploys to fly.io from the main branch",
        "category": "decision",
        "entity": "billing",
        "key": "deploy",
    },
    {
        "text": "Bob is the on-call engineer for the search cluster this week",
        "category": "entity",
        "entity": "bob",
        "key": "role",
    },
    {
        "text": "Invoices are generated nightly by the cron worker at 02:00 UTC",
        "category": "fact",
        "entity": "invoices",
    },
    {
        "text": "Use postgres 16 for the analytics warehouse, not duckdb",
        "category": "decision",
        "entity": "analytics",
        "key": "database",
    },
    {"text": "Carol wants release notes written in plain English", "category": "preference"},
    {"text": "Staging database is reset every Monday morning", "category": "fact"},
    {"text": "Dark chocolate is banned from the office kitchen", "category": "other"},
]


@contextmanager
def raw_db(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A plain connection to a facts database, as a script or the sqlite3 shell would open it.

    It uses the same SQLite library as the store (see vectors.fact_driver): two
    copies of SQLite in one process must not open the same file, and the
    tests keep stores open beside these connections. Autocommit; closed on exit.
    """
    with closing(fact_driver().connect(os.fspath(path), isolation_level=None)) as conn:
        yield conn


def raw_execute(store: FactStore, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the store's database the way another program would (the sqlite3
    shell, psql): outside flatstate, in a connection of its own, committed at once. On
    PostgreSQL ``facts`` means this store's schema (``ns`` is the store's namespace) and
    placeholders are ``%s``; on SQLite ``?``."""
    backend = store.backend
    if store.path.startswith("postgresql://"):
        import psycopg

        from flatstate.backends.postgres import split_dsn

        dsn = split_dsn(backend._dsn)[0]  # type: ignore[attr-defined]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'SET search_path = "{backend.schema}"')  # type: ignore[attr-defined]
            cursor = conn.execute(sql.encode(), params)
            return cursor.fetchall() if cursor.description else []
    with raw_db(store.path) as conn:
        return conn.execute(sql, params).fetchall()


def is_postgres(store: FactStore) -> bool:
    return store.path.startswith("postgresql://")
