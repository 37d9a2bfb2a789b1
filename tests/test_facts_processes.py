"""Real processes writing one facts database at once: nothing acknowledged is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flatstate.facts import open_facts
from tests.processes import START_TIMEOUT, ctx, join_all, running

pytestmark = pytest.mark.slow


def _add_facts(
    state_dir: str, barrier: Any, worker: int, count: int, batch: int, recalls: Any
) -> None:
    """Add ``count`` facts, recalling after each batch; report how many facts were recalled."""
    recalled = 0
    with open_facts(state_dir) as facts:
        barrier.wait(START_TIMEOUT)
        for i in range(0, count, batch):
            texts = [f"worker {worker} fact {j}" for j in range(i, min(count, i + batch))]
            if batch == 1:
                facts.add(texts[0], session_key=f"agent:main:w{worker}")
            else:
                facts.add_many(texts)
            recalled += len(facts.recall(f"worker {worker} fact {i}"))  # reads and counters
    recalls.put(recalled)  # after close, which writes the counters still waiting


def test_two_processes_adding_facts_lose_none(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    open_facts(state).close()  # created before the race, as a gateway would
    workers, count = 2, 300
    barrier, recalls = ctx.Barrier(workers), ctx.Queue()
    args = [(state, barrier, w, count, 1 if w == 0 else 7, recalls) for w in range(workers)]
    with running(_add_facts, args) as procs:
        assert join_all(procs) == [0] * workers
    counted = [recalls.get(timeout=START_TIMEOUT) for _ in range(workers)]
    assert all(n > 0 for n in counted)
    with open_facts(state) as facts:
        assert facts.count() == workers * count
        texts = {f.text for f in facts.list(workers * count + 10)}
        assert texts == {f"worker {w} fact {i}" for w in range(workers) for i in range(count)}
        # Every fact is findable: the index kept up with both writers.
        for w in range(workers):
            assert facts.search(f"worker {w} fact {count - 1}", limit=1)[0].fact.text == (
                f"worker {w} fact {count - 1}"
            )
        # Every recall of both processes reached the database: none lost, none counted twice.
        assert sum(f.recall_count for f in facts.list(workers * count)) == sum(counted)


def _add_same_facts(state_dir: str, barrier: Any, count: int) -> None:
    with open_facts(state_dir) as facts:
        barrier.wait(START_TIMEOUT)
        for i in range(count):
            facts.add(f"shared fact {i}")


def test_processes_adding_the_same_facts_store_each_once(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    open_facts(state).close()
    workers, count = 2, 150
    barrier = ctx.Barrier(workers)
    with running(_add_same_facts, [(state, barrier, count)] * workers) as procs:
        assert join_all(procs) == [0] * workers
    with open_facts(state) as facts:
        assert facts.count() == count
