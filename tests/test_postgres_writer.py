"""The group-commit writer on PostgreSQL: many tasks' writes in one transaction, and a
connection killed in the middle of such a batch losing and repeating nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import flatstate
from flatstate.backends import postgres as pg_backend
from flatstate.errors import CommitOutcomeUnknown
from tests.conftest import NO_POSTGRES, POSTGRES_DSN, postgres_location
from tests.pgkill import BackendKiller, self_terminating

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(POSTGRES_DSN is None, reason=NO_POSTGRES)]

TASKS = 24
TIMES = 25


def _increment(key: str) -> Any:
    def apply(draft: flatstate.Draft) -> int:
        count = (draft[key]["count"] if key in draft else 0) + 1
        draft.patch(key, {"count": count})
        return count

    return apply


def _increment_both(n: int) -> Any:
    """The shared counter and a key of this task's own: a batch writes many rows."""
    shared = _increment("shared")

    def apply(draft: flatstate.Draft) -> int:
        draft.patch(f"task-{n}", {"n": n})
        return int(shared(draft))

    return apply


def test_many_tasks_share_transactions_on_postgres(tmp_path: Path) -> None:
    async def main() -> tuple[int, float]:
        async with flatstate.open_async_store(postgres_location(tmp_path)) as store:
            writer = store.sync._writer

            async def task(n: int) -> None:
                for _ in range(TIMES):
                    await store.update(_increment("shared"))
                    await store.patch(f"task-{n}", {"n": n})

            await asyncio.gather(*(task(n) for n in range(TASKS)))
            entry = await store.get("shared")
            assert entry is not None
            return entry["count"], writer.mean_batch

    count, mean_batch = asyncio.run(main())
    assert count == TASKS * TIMES
    assert mean_batch > 1.5, mean_batch  # the tasks' writes shared commits


def test_a_backend_killed_mid_batch_loses_and_repeats_no_write(tmp_path: Path) -> None:
    """pg_terminate_backend on the writer's connection while batches of many tasks' writes
    are in flight: every acknowledged increment is counted once; a batch whose outcome
    could not be settled fails (CommitOutcomeUnknown) and is never run twice."""
    location = postgres_location(tmp_path)

    async def main() -> tuple[int, int, int, float, BackendKiller]:
        async with flatstate.open_async_store(location) as store:
            backend = store.sync.backend
            assert isinstance(backend, pg_backend.PostgresBackend)
            await store.patch("shared", {"count": 0})
            acknowledged = unknown = 0

            async def task() -> None:
                # At least TIMES writes, and on until the killer has fired thrice (a fast
                # machine would otherwise finish first), at most 40 times as many.
                nonlocal acknowledged, unknown
                for done in range(40 * TIMES):
                    if done >= TIMES and killer.fired.value >= 3:
                        break
                    try:
                        await store.update(_increment("shared"))
                    except CommitOutcomeUnknown:
                        unknown += 1
                    else:
                        acknowledged += 1

            killer = BackendKiller(
                [f"flatstate:{backend.namespace}"], pause=(0.005, 0.04), busy_only=True
            )
            with killer:
                await asyncio.gather(*(task() for _ in range(TASKS)))
            entry = await store.get("shared")
            assert entry is not None
            mean_batch = store.sync._writer.mean_batch
            return entry["count"], acknowledged, unknown, mean_batch, killer

    count, acknowledged, unknown, mean_batch, killer = asyncio.run(main())
    assert acknowledged + unknown >= TASKS * TIMES
    killer.check_fired(3)
    assert mean_batch > 1.5, mean_batch
    # Nothing acknowledged is lost and nothing runs twice: an unsettled batch may or may
    # not have committed, never more than once.
    assert acknowledged <= count <= acknowledged + unknown, f"seed {killer.seed}"
    with flatstate.open_store(location) as reopened:
        assert reopened.get("shared")["count"] == count  # type: ignore[index]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_batch_whose_connection_dies_at_commit_is_settled_whole(
    tmp_path: Path, when: str
) -> None:
    """Before COMMIT nothing was written: every write of the batch runs again, once.
    After it (the reply lost): the batch is found in the change log and none is repeated."""

    async def main() -> tuple[list[int], int, list[int]]:
        async with flatstate.open_async_store(postgres_location(tmp_path)) as store:
            await store.patch("shared", {"count": 0})
            with self_terminating(when, min_writes=4) as fired:
                results = await asyncio.gather(
                    *(store.update(_increment_both(n)) for n in range(TASKS))
                )
            entry = await store.get("shared")
            assert entry is not None
            return sorted(results), entry["count"], fired

    results, count, fired = asyncio.run(main())
    assert fired, "no batch of several writes reached a commit"
    assert count == TASKS
    assert results == list(range(1, TASKS + 1))  # each increment ran once, in some order


def test_bench_write_puts_postgres_beside_sqlite(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flatstate.cli import app

    out = tmp_path / "write.json"
    args = ["bench", "write", "--entries", "20", "--tasks", "4", "--synchronous", "normal",
            "--design", "flatstate", "--seconds", "0.2", "--backend", "postgres",
            "--dsn", POSTGRES_DSN or "", "--json-out", str(out), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    runs = json.loads(out.read_text())["runs"]
    assert [run["design"] for run in runs] == ["flatstate", "flatstate-postgres"]
    for run in runs:
        assert run["writes_per_s"] > 0 and run["cpu_us_per_write"] > 0
    assert (POSTGRES_DSN or "").split("@")[0] not in result.output  # no password shown
