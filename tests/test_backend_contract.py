"""The Backend contract (flatstate.backends.base), run on every backend the store uses,
the in-memory one included, below the store: tokens, change lists, sizes and values."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from flatstate.backends import _blobs
from flatstate.backends.base import Backend
from flatstate.backends.jsonfile import JsonFileBackend
from flatstate.backends.memory import MemoryBackend, database
from flatstate.backends.sqlite import SQLiteBackend
from flatstate.errors import ReadOnlyStore
from flatstate.frozen import StringPool, encode_json
from flatstate.model import SessionEntry, build_entry
from tests.conftest import BACKENDS, postgres_location

Opener = Callable[..., Backend]


@pytest.fixture(
    params=[pytest.param(b, marks=pytest.mark.postgres) if b == "postgres" else b for b in BACKENDS]
)
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens backends on one location of the parametrized kind; closes them after."""
    kind = str(request.param)
    opened: list[Backend] = []
    name = uuid.uuid4().hex
    dsn = postgres_location(tmp_path) if kind == "postgres" else ""

    def factory(readonly: bool = False) -> Backend:
        backend: Backend
        pool = StringPool()
        if kind == "sqlite":
            backend = SQLiteBackend(str(tmp_path / "state"), pool=pool, readonly=readonly)
        elif kind == "jsonfile":
            path = str(tmp_path / "sessions.json")
            backend = JsonFileBackend(path, pool=pool, readonly=readonly)
        elif kind == "memory":
            db = database(name, str(tmp_path / "state"))
            backend = MemoryBackend(db, pool=pool, readonly=readonly)
        else:
            from flatstate.backends.postgres import PostgresBackend

            backend = PostgresBackend(dsn, pool=pool, readonly=readonly)
        opened.append(backend)
        return backend

    yield factory
    for backend in opened:
        backend.close()


def entry(**fields: object) -> SessionEntry:
    return build_entry("agent:main:main", {"sessionId": "s1", "updatedAt": 1, **fields})


def write(backend: Backend, **rows: SessionEntry | None) -> object:
    backend.begin()
    for key, value in rows.items():
        if value is None:
            backend.remove(key)
        else:
            backend.put(key, value, None)
    return backend.commit()


def test_a_commit_is_seen_by_another_backend_as_a_change(open_backend: Opener) -> None:
    writer, reader = open_backend(), open_backend()
    token, rows = reader.scan()
    assert list(rows) == []
    write(writer, a=entry(n=1))
    changed, newer = reader.changes_since(token)
    assert changed in ({"a"}, None)  # None: reload everything (sessions.json always does)
    assert newer != token
    assert reader.read("a") == ("a", entry(n=1))
    assert reader.changes_since(newer) == (set(), newer)


def test_scan_lists_every_row_with_the_token_of_that_instant(open_backend: Opener) -> None:
    backend = open_backend()
    token = write(backend, a=entry(n=1), b=entry(n=2))
    scanned, rows = backend.scan()
    assert dict(rows) == {"a": entry(n=1), "b": entry(n=2)}
    assert backend.changes_since(scanned) == (set(), scanned)
    assert backend.scan_keys() == ["a", "b"] and backend.count() == 2
    assert token is not None


def test_put_reports_the_size_of_the_entry_as_json(open_backend: Opener) -> None:
    backend = open_backend()
    big = entry(prompt={"text": "p" * 5000}, n=1)
    backend.begin()
    size = backend.put("a", big, None)
    backend.rollback()
    exact = len(encode_json(big))
    # A database backend stores a large object once and a 64-character digest in its place.
    assert exact <= size <= exact + 100


@pytest.mark.parametrize(
    "fields",
    [
        {"updatedAt": 2**70},
        {"updatedAt": -(2**63) - 1},
        {"label": "nul \x00 inside", "six": "a\\u0000b"},
        {"big": 1e16, "neg0": -0.0, "deep": [[[[{"x": [1, 2.5, None, True]}]]]]},
    ],
)
def test_values_read_back_exactly(open_backend: Opener, fields: dict[str, object]) -> None:
    write(open_backend(), a=entry(**fields))
    found = open_backend().read("a")
    assert found is not None
    assert encode_json(found[1]) == encode_json(entry(**fields))


def test_a_rolled_back_write_leaves_nothing(open_backend: Opener) -> None:
    backend = open_backend()
    backend.begin()
    backend.put("a", entry(), None)
    backend.rollback()
    assert backend.read("a") is None and open_backend().count() == 0
    write(backend, missing=None)  # removing a missing key is no error
    assert backend.count() == 0


def test_a_read_only_backend_refuses_to_begin(open_backend: Opener) -> None:
    write(open_backend(), a=entry())
    readonly = open_backend(readonly=True)
    with pytest.raises(ReadOnlyStore):
        readonly.begin()
    assert readonly.read("a") is not None


def test_a_reader_far_behind_is_told_to_reload(
    open_backend: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_blobs, "MAX_REPLAY", 3)
    monkeypatch.setattr("flatstate.backends.memory.MAX_REPLAY", 3)
    writer, reader = open_backend(), open_backend()
    token, _ = reader.scan()
    for n in range(10):
        write(writer, **{f"k{n}": entry(n=n)})
    changed, newer = reader.changes_since(token)
    if isinstance(reader, JsonFileBackend):  # no log: it compares the file with what it read
        assert changed == {f"k{n}" for n in range(10)}
    else:
        assert changed is None
    assert reader.changes_since(newer) == (set(), newer)


def test_postgres_location_is_redacted(tmp_path: Path) -> None:
    """The password of a DSN never reaches ``location`` (the backend's name in messages)."""
    if "postgres" not in BACKENDS:
        pytest.skip("no PostgreSQL server")
    from flatstate.backends.postgres import PostgresBackend

    dsn = postgres_location(tmp_path)
    backend = PostgresBackend(dsn, pool=StringPool())
    try:
        password = dsn.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
        assert password and password not in backend.location
        assert quote(password) not in backend.location
    finally:
        backend.close()
