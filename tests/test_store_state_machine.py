"""A hypothesis state machine: the store against a plain dict, through writes and reopens."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import flatstate
from tests.conftest import NO_POSTGRES, POSTGRES_DSN, FakeClock, store_location

KEYS = st.sampled_from([f"agent:main:k{i}" for i in range(6)] + ["agent:ops:main", "global"])
# Fields without merge rules of their own, so the model is a plain dict update.
FIELDS = st.sampled_from(["label", "note", "totalTokens", "origin", "tags", "big"])
VALUES = st.one_of(
    st.integers(-5, 5),
    # Without NUL: PostgreSQL's jsonb cannot hold it (test_postgres checks it is refused).
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2),
    st.just("x" * 1500),  # large enough to be pooled and stored as a blob when nested
    st.just({"prompt": "p" * 1200}),
)
PATCHES = st.dictionaries(FIELDS, st.one_of(VALUES, st.none()), min_size=1, max_size=3)
ENTRIES = st.dictionaries(FIELDS, VALUES, max_size=3)


class StoreMachine(RuleBasedStateMachine):
    backend = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="flatstate-sm-")
        self.location = store_location(self.backend, Path(self.root))
        self.clock = FakeClock()
        # A small cache bound half of the time, so eviction and backend misses are exercised.
        self.cache_bytes = 1 << 30
        self.model: dict[str, dict[str, Any]] = {}
        self.store = self._open()

    def _open(self) -> flatstate.SessionStore:
        return flatstate.open_store(self.location, clock=self.clock, cache_bytes=self.cache_bytes)

    @rule(data=st.data())
    def shrink_cache(self, data: st.DataObject) -> None:
        self.cache_bytes = data.draw(st.sampled_from([6_000, 1 << 30]))
        self.store.close()
        self.store = self._open()

    @rule(key=KEYS, fields=ENTRIES, n=st.integers(0, 9))
    def upsert(self, key: str, fields: dict[str, Any], n: int) -> None:
        entry = {"sessionId": f"s{n}", "updatedAt": 1000 + n, **fields}
        self.store.upsert(key, entry)
        self.model[key] = entry

    @rule(key=KEYS, changes=PATCHES)
    def patch(self, key: str, changes: dict[str, Any]) -> None:
        self.clock.advance(7)
        result = self.store.patch(key, changes)
        assert result is not None
        new = dict(self.model.get(key, {}))
        if key not in self.model:
            new["sessionId"] = result.session_id
            new["sessionStartedAt"] = self.clock.now
        for field, value in changes.items():
            if value is None:
                new.pop(field, None)
            else:
                new[field] = value
        new["updatedAt"] = self.clock.now
        self.model[key] = new

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert self.store.delete(key) == (key in self.model)
        self.model.pop(key, None)

    @rule(keys=st.lists(KEYS, min_size=1, max_size=3, unique=True), fail=st.booleans())
    def update_many(self, keys: list[str], fail: bool) -> None:
        def change(draft: flatstate.Draft) -> None:
            for i, key in enumerate(keys):
                if i % 2 and key in draft:
                    del draft[key]
                else:
                    draft[key] = {"sessionId": f"u{i}", "updatedAt": 5, "note": key}
            if fail:
                raise ValueError("abandon")

        try:
            self.store.update(change)
        except ValueError:
            assert fail
            return
        for i, key in enumerate(keys):
            if i % 2 and key in self.model:
                del self.model[key]
            else:
                self.model[key] = {"sessionId": f"u{i}", "updatedAt": 5, "note": key}

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def write_from_a_second_store(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model)))
        with flatstate.open_store(self.location, clock=self.clock) as other:
            other.patch(key, {"label": "other"})
        self.model[key] = {**self.model[key], "label": "other", "updatedAt": self.clock.now}

    @invariant()
    def matches_the_model(self) -> None:
        assert len(self.store) == len(self.model)
        assert list(self.store.keys()) == sorted(self.model)
        snapshot = self.store.snapshot()
        assert {k: v.to_dict() for k, v in snapshot.items()} == self.model
        for key, expected in self.model.items():
            entry = self.store.get(key)
            assert entry is not None and entry.to_dict() == expected

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)


class JsonStoreMachine(StoreMachine):
    backend = "jsonfile"


class PostgresStoreMachine(StoreMachine):
    backend = "postgres"


for machine in (StoreMachine, JsonStoreMachine, PostgresStoreMachine):
    machine.TestCase.settings = settings(
        max_examples=30,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
# Every open of a PostgreSQL store makes two connections (~25 ms each here): fewer examples.
PostgresStoreMachine.TestCase.settings = settings(
    PostgresStoreMachine.TestCase.settings, max_examples=15
)
TestSQLiteStoreMachine = StoreMachine.TestCase
TestJsonStoreMachine = JsonStoreMachine.TestCase
TestPostgresStoreMachine = pytest.mark.postgres(
    pytest.mark.skipif(POSTGRES_DSN is None, reason=NO_POSTGRES)(PostgresStoreMachine.TestCase)
)
