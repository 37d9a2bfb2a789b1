"""Real processes racing one store: no lost update, fresh reads, kill -9 mid-write."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import flatstate
from tests.processes import RUN_TIMEOUT, START_TIMEOUT, ctx, join_all, running, wait_for_content

pytestmark = pytest.mark.slow

COUNTER_KEY = "agent:main:counter"


def _increment(location: str, barrier: Any, times: int) -> None:
    with flatstate.open_store(location) as store:
        barrier.wait(START_TIMEOUT)
        for _ in range(times):
            store.update(lambda d: d.patch(COUNTER_KEY, {"count": d[COUNTER_KEY]["count"] + 1}))


def check_counter_race(location: str) -> None:
    """4 processes x 500 read-modify-write increments of one counter; none may be lost."""
    with flatstate.open_store(location) as store:
        store.upsert(COUNTER_KEY, {"count": 0})
    workers, times = 4, 500
    barrier = ctx.Barrier(workers)
    with running(_increment, [(location, barrier, times)] * workers) as procs:
        assert join_all(procs) == [0] * workers
    with flatstate.open_store(location) as store:
        assert store.get(COUNTER_KEY)["count"] == workers * times  # type: ignore[index]


def test_four_processes_patching_one_counter_lose_no_update(tmp_path: Path) -> None:
    check_counter_race(str(tmp_path / "state"))


def _write_and_announce(location: str, queue: Any, count: int) -> None:
    with flatstate.open_store(location) as store:
        for i in range(1, count + 1):
            store.patch("agent:main:seq", {"n": i})
            queue.put(i)  # only after the write was acknowledged


def test_a_reader_process_sees_each_acknowledged_write(tmp_path: Path) -> None:
    location = str(tmp_path / "state")
    reader = flatstate.open_store(location, check_interval=3600)  # only the shared signal helps
    reader.get("agent:main:seq")  # warm: the reader has a cached view before the writer starts
    queue = ctx.Queue()
    try:
        with running(_write_and_announce, [(location, queue, 200)]) as procs:
            for _ in range(200):
                acknowledged = queue.get(timeout=RUN_TIMEOUT)
                entry = reader.get("agent:main:seq")
                assert entry is not None and entry["n"] >= acknowledged
            assert join_all(procs) == [0]
    finally:
        reader.close()


def _write_until_killed(location: str, ack_path: str, start: int) -> None:
    with flatstate.open_store(location) as store:
        ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        i = start
        while True:
            i += 1
            store.update(
                lambda d, i=i: [
                    d.patch(f"agent:main:k{j}", {"n": i, "pad": "p" * (i % 3000)})
                    for j in range(i % 4 + 1)
                ]
            )
            os.write(ack, f"{i}\n".encode())


def test_kill_9_mid_write_never_loses_an_acknowledged_write(tmp_path: Path) -> None:
    location = str(tmp_path / "state")
    ack_path = str(tmp_path / "acks")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for round_ in range(6):
        # Each round counts from its own base, so a value can only come from it.
        with running(_write_until_killed, [(location, ack_path, round_ * 1_000_000)]) as procs:
            wait_for_content(ack_path)
            time.sleep(rng.uniform(0.0, 0.6))
            os.kill(procs[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
            procs[0].join(10)
        acked = (
            [int(line) for line in Path(ack_path).read_text().split()]
            if Path(ack_path).exists()
            else []
        )
        with flatstate.open_store(location) as store:
            if acked:
                last = acked[-1]
                # Every key written by the last acknowledged update holds it or something newer.
                for j in range(last % 4 + 1):
                    entry = store.get(f"agent:main:k{j}")
                    assert entry is not None, f"seed {seed}, round {round_}"
                    assert entry["n"] >= last, f"seed {seed}, round {round_}: lost write {last}"
                    assert entry["n"] < (round_ + 1) * 1_000_000
        check = sqlite3.connect(os.path.join(location, "sessions.sqlite"))
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check.close()
        Path(ack_path).unlink(missing_ok=True)
