"""The commit pipeline's batch rules, driven on a real SQLite store: a batch that cannot
begin, or whose commit fails, is run again one write at a time, and each write fails alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import flatstate
from flatstate.backends.base import RetryWrite
from flatstate.errors import EntryTooLarge, StoreUnavailable
from flatstate.writer import Job


def _set(key: str, value: Any) -> Any:
    return lambda draft: draft.patch(key, {"v": value})


def test_a_batch_whose_begin_must_be_retried_runs_each_write_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with flatstate.open_store(tmp_path) as store:
        backend = store.backend
        real = backend._begin
        failures = [RetryWrite(StoreUnavailable(store.location, "connection lost", "Retry."))]

        def begin() -> None:
            if failures:
                raise failures.pop()
            real()

        monkeypatch.setattr(backend, "_begin", begin)
        jobs = [Job(_set(f"k{i}", i)) for i in range(5)]
        store._pipeline.commit_batch(jobs)
        assert [job.error for job in jobs] == [None] * 5
        assert [store.get(f"k{i}")["v"] for i in range(5)] == list(range(5))  # type: ignore[index]


def test_a_batch_whose_commit_fails_fails_only_the_guilty_write(tmp_path: Path) -> None:
    with flatstate.open_store(tmp_path, max_entry_bytes=2_000) as store:
        jobs = [Job(_set("a", 1)), Job(_set("big", "x" * 5_000)), Job(_set("b", 2))]
        store._pipeline.commit_batch(jobs)
        assert jobs[0].error is None and jobs[2].error is None
        assert isinstance(jobs[1].error, EntryTooLarge)
        assert store.get("a")["v"] == 1 and store.get("b")["v"] == 2  # type: ignore[index]
        assert store.get("big") is None
