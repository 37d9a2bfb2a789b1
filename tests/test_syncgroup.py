"""The transcripts' sync group: appends that wait together share their fsyncs, a failure
fails alone, order and completeness hold with many writers, and kill -9 loses no
acknowledged append."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import flatstate
from flatstate.transcripts import FsyncPolicy, Transcript, syncgroup
from flatstate.transcripts.syncgroup import SyncGroup, Written
from flatstate.writer import Job
from tests.processes import running, wait_for_content


class Acks:
    """A notify function for jobs submitted from a test thread, and a way to wait for them."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self._done = threading.Condition()

    def __call__(self, jobs: list[Job]) -> None:
        with self._done:
            self.jobs.extend(jobs)
            self._done.notify_all()

    def wait(self, count: int) -> list[Job]:
        with self._done:
            assert self._done.wait_for(lambda: len(self.jobs) >= count, timeout=60)
            return list(self.jobs)


def _held_back(group: SyncGroup, acks: Acks) -> threading.Event:
    """Submit a job that keeps the group busy until the returned event is set, so that
    what is submitted meanwhile is taken as one batch."""
    gate = threading.Event()
    taken = threading.Event()

    def first() -> Written:
        taken.set()
        gate.wait(60)
        return Written(None, (0, 0), "first")

    group.submit(first, acks, None)
    assert taken.wait(60)
    return gate


def _written(path: Path, text: str, result: Any) -> Written:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, text.encode())
    st = os.fstat(fd)
    return Written(fd, (st.st_dev, st.st_ino), result)


def test_appends_waiting_together_share_one_fsync_per_file(tmp_path: Path) -> None:
    group, acks = SyncGroup(name="test-sync"), Acks()
    gate = _held_back(group, acks)
    for n in range(3):
        group.submit(lambda n=n: _written(tmp_path / "a", f"a{n}\n", f"a{n}"), acks, None)
    for n in range(2):
        group.submit(lambda n=n: _written(tmp_path / "b", f"b{n}\n", f"b{n}"), acks, None)
    gate.set()
    jobs = acks.wait(6)
    assert sorted(job.outcome() for job in jobs) == ["a0", "a1", "a2", "b0", "b1", "first"]
    assert group.fsyncs == 2  # one per file, not one per append
    assert (tmp_path / "a").read_text() == "a0\na1\na2\n"


def test_a_failing_write_or_fsync_fails_only_its_own_appends(tmp_path: Path) -> None:
    group, acks = SyncGroup(name="test-sync"), Acks()
    gate = _held_back(group, acks)
    reader, writer = os.pipe()  # fsync of a pipe fails (EINVAL): a sync the disk refused
    os.close(reader)

    def refused() -> Written:
        return Written(writer, (-1, -1), "never acknowledged")

    def broken() -> Written:
        raise OSError("the write failed")

    group.submit(refused, acks, None)
    group.submit(broken, acks, None)
    group.submit(lambda: _written(tmp_path / "ok", "fine\n", "ok"), acks, None)
    gate.set()
    results = sorted(str(job.error or job.result) for job in acks.wait(4))
    assert "ok" in results and "first" in results
    assert any("the write failed" in r for r in results)
    assert any("Invalid argument" in r for r in results)  # the pipe's fsync, alone
    assert "never acknowledged" not in results
    with pytest.raises(OSError):
        os.fstat(writer)  # the group closes every descriptor it was handed


def test_many_threads_appending_keep_every_line_in_order(tmp_path: Path) -> None:
    transcripts = [Transcript(str(tmp_path / f"t{n}.jsonl"), lock="flock") for n in range(4)]
    errors: list[BaseException] = []
    before = syncgroup.group().fsyncs

    def write(thread: int) -> None:
        try:
            for i in range(40):
                transcripts[i % 4].append({"type": "custom", "thread": thread, "i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    for transcript in transcripts:
        entries = list(Transcript(transcript.path).iter_entries())
        assert len(entries) == 8 * 10
        for earlier, later in itertools.pairwise(entries):
            assert later["parentId"] == earlier["id"]  # one chain, no line lost
        for thread in range(8):
            mine = [e["i"] for e in entries if e["thread"] == thread]
            assert mine == sorted(mine)  # each writer's appends in its order
    assert syncgroup.group().fsyncs - before <= 8 * 40  # never more than one per append


def test_a_task_append_waits_for_its_fsync_through_the_group(tmp_path: Path) -> None:
    async def main() -> None:
        async with flatstate.open_async_store(tmp_path / "state") as store:
            transcripts = [store.transcript(f"s{n}") for n in range(16)]
            for transcript in transcripts:
                await transcript.append({"type": "custom", "n": -1})
            before = syncgroup.group().batches
            ids = await asyncio.gather(
                *(t.append({"type": "custom", "n": n}) for n, t in enumerate(transcripts))
            )
            assert len(set(ids)) == 16
            assert syncgroup.group().batches - before <= 16
            for n, transcript in enumerate(transcripts):
                tail = await transcript.tail(1)
                assert tail[0]["n"] == n and tail[0]["id"] == ids[n]

    asyncio.run(main())


def test_a_batched_policy_still_syncs_only_per_its_window(tmp_path: Path) -> None:
    before = syncgroup.group().fsyncs
    transcript = Transcript(
        str(tmp_path / "t.jsonl"), fsync=FsyncPolicy.batched(every=1000, seconds=3600)
    )
    for n in range(20):
        transcript.append({"type": "custom", "n": n})
    assert syncgroup.group().fsyncs == before  # the policy's window, not the group, decides
    assert len(transcript.tail(50)) == 20


def _append_until_killed(location: str, ack_path: str) -> None:
    async def main() -> None:
        async with flatstate.open_async_store(location) as store:
            ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

            async def task(n: int) -> None:
                transcript = store.transcript(f"s{n}")
                i = 0
                while True:
                    i += 1
                    await transcript.append({"type": "custom", "n": i})
                    os.write(ack, f"{n} {i}\n".encode())

            await asyncio.gather(*(task(n) for n in range(32)))

    asyncio.run(main())


def test_kill_9_with_grouped_appends_in_flight_loses_no_acknowledged_one(
    tmp_path: Path,
) -> None:
    location = str(tmp_path / "state")
    ack_path = str(tmp_path / "acks")
    with running(_append_until_killed, [(location, ack_path)]) as procs:
        wait_for_content(ack_path)
        time.sleep(0.5)
        os.kill(procs[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
        procs[0].join(10)
    last: dict[int, int] = {}
    for line in Path(ack_path).read_text().splitlines():
        n, i = map(int, line.split())
        last[n] = max(last.get(n, 0), i)
    assert len(last) > 8  # many sessions had appends in flight
    with flatstate.open_store(location) as store:
        for n, i in last.items():
            numbers = [e["n"] for e in store.transcript(f"s{n}").iter_entries()]
            assert numbers == list(range(1, len(numbers) + 1))  # in order, no gap
            assert len(numbers) >= i, (n, i)  # every acknowledged one is there
