"""The async store and the writer under it: group commit, failures alone, cancellation."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import flatstate
from flatstate import AsyncSessionStore, Draft
from flatstate.errors import EntryTooLarge, InvalidEntry, SessionNotFound, StoreClosed
from tests.conftest import store_location
from tests.processes import running, wait_for_content

COUNTER = "agent:main:counter"


def increment(draft: Draft) -> int:
    entry = draft.get(COUNTER)
    n = (entry["n"] if entry is not None else 0) + 1
    draft.patch(COUNTER, {"n": n})
    return int(n)


@pytest.fixture
def location(tmp_path: Path, backend: str) -> str:
    return store_location(backend, tmp_path)


def run(body: Any) -> Any:
    return asyncio.run(body)


def test_64_tasks_incrementing_one_counter_lose_no_update(location: str) -> None:
    async def main() -> None:
        async with flatstate.open_async_store(location) as store:

            async def task() -> None:
                for _ in range(100):
                    await store.update(increment)

            await asyncio.gather(*(task() for _ in range(64)))
            entry = await store.get(COUNTER)
            assert entry is not None and entry["n"] == 6_400
            # The writer grouped them: far fewer commits than writes.
            assert store.sync.commits < 6_400

    run(main())
    with flatstate.open_store(location) as reopened:
        assert reopened.get(COUNTER)["n"] == 6_400  # type: ignore[index]


def test_the_async_api_has_the_sync_semantics(location: str) -> None:
    async def main() -> None:
        async with flatstate.open_async_store(location) as store:
            assert isinstance(store, AsyncSessionStore)
            stored = await store.upsert("main", {"sessionId": "s1", "turns": 1})
            assert stored.session_id == "s1" and await store.get("agent:main:main") is stored
            patched = await store.patch("main", {"turns": 2})
            assert patched is not None and patched["turns"] == 2
            assert await store.patch("other", {"x": 1}, create=False) is None
            assert await store.keys() == ("agent:main:main",)
            assert await store.count() == 1 and await store.contains("main")
            snap = await store.snapshot()
            assert snap["agent:main:main"]["turns"] == 2
            with pytest.raises(InvalidEntry):
                await store.patch("main", [1, 2])  # type: ignore[arg-type]
            assert await store.delete("main") is True
            assert await store.delete("main") is False
            with pytest.raises(SessionNotFound):
                await store.transcript("gone", create=False).tail(1)
        with pytest.raises(StoreClosed):
            await store.get("main")
        with pytest.raises(StoreClosed):
            await store.patch("main", {})

    run(main())


def test_an_async_transcript_appends_and_reads(location: str) -> None:
    async def main() -> None:
        async with flatstate.open_async_store(location) as store:
            transcript = store.transcript("main")
            first = await transcript.append({"type": "message", "message": {"role": "user"}})
            ids = await transcript.append_many([{"type": "custom"}, {"type": "custom"}])
            tail = await transcript.tail(3)
            assert [e["id"] for e in tail] == [first, *ids]
            context = await transcript.context()
            assert len(context.messages) >= 1
            assert (await transcript.leaf_id()) == ids[-1]
            assert (await transcript.header())["type"] == "session"  # type: ignore[index]
            # 64 tasks at once: every append lands once, in one chain
            more = await asyncio.gather(
                *(transcript.append({"type": "custom", "n": i}) for i in range(64))
            )
            entries = await transcript.tail(70)
            assert sorted(e["id"] for e in entries[-64:]) == sorted(more)
            for before, after in itertools.pairwise(entries):
                assert after["parentId"] == before["id"]

    run(main())


def test_a_failing_write_in_a_batch_fails_alone(location: str) -> None:
    async def main() -> None:
        async with flatstate.open_async_store(location, max_entry_bytes=2_000) as store:

            def boom(draft: Draft) -> None:
                draft.patch("agent:main:bad", {"n": 1})
                raise RuntimeError("boom")

            results = await asyncio.gather(
                *(store.patch(f"k{i}", {"n": i}) for i in range(10)),
                store.update(boom),
                store.patch("huge", {"note": "x" * 5_000}),
                *(store.patch(f"k{i}", {"m": i}) for i in range(10, 20)),
                return_exceptions=True,
            )
            assert isinstance(results[10], RuntimeError)
            assert isinstance(results[11], EntryTooLarge)
            assert all(not isinstance(r, BaseException) for r in results[:10] + results[12:])
            assert await store.get("bad") is None and await store.get("huge") is None
            assert [(await store.get(f"k{i}")) is not None for i in range(20)] == [True] * 20

    run(main())


def test_a_function_raising_cancelled_error_in_a_batch_fails_alone(location: str) -> None:
    """CancelledError is no Exception: it once failed the whole batch, though some of its
    writes had committed, and dropped the rest."""

    async def main() -> None:
        async with flatstate.open_async_store(location) as store:
            await store.patch("warm", {})
            running = threading.Event()

            def slow(draft: Draft) -> None:  # holds the writer while the batch queues
                running.set()
                time.sleep(0.3)
                draft.patch("slow", {})

            holding = asyncio.create_task(store.update(slow))
            await asyncio.to_thread(running.wait)

            def cancelled(draft: Draft) -> None:
                draft.patch("bad", {"n": 1})
                raise asyncio.CancelledError

            results = await asyncio.gather(
                *(store.patch(f"k{i}", {"n": i}) for i in range(3)),
                store.update(cancelled),
                *(store.patch(f"k{i}", {"n": i}) for i in range(3, 6)),
                return_exceptions=True,
            )
            await holding
            assert isinstance(results[3], asyncio.CancelledError)
            assert all(not isinstance(r, BaseException) for r in results[:3] + results[4:])
            assert [(await store.get(f"k{i}"))["n"] for i in range(6)] == list(range(6))  # type: ignore[index]
            assert await store.get("bad") is None

    run(main())


def test_a_cancelled_write_already_taken_is_waited_for(tmp_path: Path) -> None:
    """The caller is cancelled once the write's outcome is there: a read right after the
    cancellation sees what the store will keep."""

    async def main() -> None:
        async with flatstate.open_async_store(str(tmp_path / "state")) as store:
            await store.patch("k", {"v": 0})
            running = threading.Event()

            def slow(draft: Draft) -> None:
                running.set()
                time.sleep(0.2)
                draft.patch("k", {"v": 1})

            task = asyncio.create_task(store.update(slow))
            await asyncio.to_thread(running.wait)  # taken: it runs to its outcome
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await store.get("k"))["v"] == 1  # type: ignore[index]

    run(main())


@pytest.mark.parametrize("how", ["delete", "reset"])
def test_a_cancelled_delete_or_reset_is_waited_for(tmp_path: Path, how: str) -> None:
    """These run on a worker thread, which cannot be withdrawn: the cancelled caller waits
    for the outcome (it returned at once, and the write landed later)."""

    async def main() -> None:
        async with flatstate.open_async_store(str(tmp_path / "state")) as store:
            before = await store.patch("k", {"v": 0})
            assert before is not None
            running = threading.Event()

            def slow(draft: Draft) -> None:
                running.set()
                time.sleep(0.3)

            busy = asyncio.create_task(store.update(slow))  # the writer is busy meanwhile
            await asyncio.to_thread(running.wait)
            task = asyncio.create_task(store.delete("k") if how == "delete" else store.reset("k"))
            await asyncio.sleep(0.05)  # its thread is waiting for the writer
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            after = await store.get("k")
            if how == "delete":
                assert after is None
            else:
                assert after is not None and after.session_id != before.session_id
            await busy

    run(main())


def test_a_draft_cannot_be_written_after_its_update(tmp_path: Path) -> None:
    with flatstate.open_store(str(tmp_path / "state")) as store:
        kept = store.update(lambda draft: draft)
        with pytest.raises(RuntimeError, match="update has ended"):
            kept["late"] = {"n": 1}
        with pytest.raises(RuntimeError, match="update has ended"):
            kept.patch("late", {"n": 1})

        async def not_plain(draft: Draft) -> None:
            draft.patch("late", {"n": 1})

        with pytest.raises(TypeError, match="plain function"):
            store.update(not_plain)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="awaitable"):
            store.update(lambda draft: not_plain(draft))
        assert store.get("late") is None


def test_a_cancelled_write_either_commits_or_never_happens(tmp_path: Path) -> None:
    location = str(tmp_path / "state")

    async def main() -> None:
        async with flatstate.open_async_store(location) as store:
            for round_ in range(30):
                tasks = [
                    asyncio.create_task(store.patch(f"k{i}", {"round": round_})) for i in range(64)
                ]
                await asyncio.sleep(0)
                await asyncio.sleep(round_ * 0.0001)
                for task in tasks[::3]:
                    task.cancel()
                outcomes = await asyncio.gather(*tasks, return_exceptions=True)
                for i, outcome in enumerate(outcomes):
                    entry = await store.get(f"k{i}")
                    if isinstance(outcome, asyncio.CancelledError):
                        # Withdrawn (an older round's value, or none) or committed (this round).
                        assert entry is None or entry["round"] <= round_
                    else:
                        assert entry is not None and entry["round"] == round_
            reopened = flatstate.open_store(location)
            try:
                assert reopened.snapshot() == await store.snapshot()
            finally:
                reopened.close()

    run(main())


def test_eight_threads_patching_through_the_writer_lose_nothing(location: str) -> None:
    with flatstate.open_store(location) as store:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(500):
                    store.patch(f"t{n}", {"i": i, f"f{i % 7}": n})
                    store.update(increment)
            except BaseException as exc:  # asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert [store.get(f"t{n}")["i"] for n in range(8)] == [499] * 8  # type: ignore[index]
        assert store.get(COUNTER)["n"] == 4_000  # type: ignore[index]
        assert store.commits < 8_000  # threads shared commits


def test_a_write_function_that_writes_is_refused(tmp_path: Path) -> None:
    with flatstate.open_store(str(tmp_path / "state")) as store:
        with pytest.raises(RuntimeError, match="cannot write to its own store"):
            store.update(lambda draft: store.patch("main", {}))
        assert store.get("main") is None

    async def main() -> None:  # an async write from the writer's thread: refused, no hang
        async with flatstate.open_async_store(str(tmp_path / "state")) as store:
            with pytest.raises(RuntimeError, match="cannot write to its own store"):
                await store.update(lambda draft: asyncio.run(store.patch("inner", {})))
            await store.patch("after", {})  # the writer still writes
            assert await store.get("inner") is None and await store.get("after") is not None

    run(main())


def test_the_event_loop_stays_responsive_during_a_write_storm(tmp_path: Path) -> None:
    lags: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - start - 0.001)

    async def main() -> None:
        async with flatstate.open_async_store(str(tmp_path / "state")) as store:
            stop = asyncio.Event()
            tick = asyncio.create_task(ticker(stop))

            async def writer(n: int) -> None:
                for i in range(50):
                    await store.patch(f"k{n}", {"i": i, "pad": "x" * 1_000})

            await asyncio.gather(*(writer(n) for n in range(32)))
            stop.set()
            await tick

    run(main())
    # Generous: a shared 2-core machine. The measured figure belongs to `flatstate bench write`.
    assert statistics.quantiles(lags, n=100)[98] < 0.1


def test_an_upsert_builds_its_entry_off_the_loop(tmp_path: Path) -> None:
    """Checking and freezing a new entry takes a big one tens of milliseconds (72 ms for
    0.8 MB here): the threads that read the given mapping are never the loop's."""
    readers: set[str] = set()

    class Watched(dict[str, Any]):
        def items(self) -> Any:
            readers.add(threading.current_thread().name)
            return super().items()

        def __iter__(self) -> Any:
            readers.add(threading.current_thread().name)
            return super().__iter__()

    async def main() -> None:
        async with flatstate.open_async_store(str(tmp_path / "state")) as store:
            written = await store.upsert("main", Watched(sessionId="s", rows=[1, 2]))
            assert list(written["rows"]) == [1, 2] and (await store.get("main"))["sessionId"] == "s"

    run(main())
    assert readers and threading.main_thread().name not in readers, readers


def _write_until_killed(location: str, ack_path: str, start: int) -> None:
    async def main() -> None:
        async with flatstate.open_async_store(location) as store:
            ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

            async def task(n: int) -> None:
                i = start + n * 100_000
                while True:
                    i += 1
                    await store.patch(f"k{n}", {"n": i})
                    os.write(ack, f"{n} {i}\n".encode())

            await asyncio.gather(*(task(n) for n in range(256)))

    asyncio.run(main())


@pytest.mark.slow
def test_kill_9_with_hundreds_of_writes_in_flight_loses_no_acknowledged_one(
    tmp_path: Path,
) -> None:
    location = str(tmp_path / "state")
    ack_path = str(tmp_path / "acks")
    for round_ in range(3):
        base = (round_ + 1) * 100_000_000
        with running(_write_until_killed, [(location, ack_path, base)]) as procs:
            wait_for_content(ack_path)
            time.sleep(0.3 + round_ * 0.2)
            os.kill(procs[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
            procs[0].join(10)
        last: dict[int, int] = {}
        for line in Path(ack_path).read_text().splitlines():
            n, i = map(int, line.split())
            last[n] = max(last.get(n, 0), i)
        assert len(last) > 100  # hundreds of tasks had writes in flight
        with flatstate.open_store(location) as store:
            for n, i in last.items():
                entry = store.get(f"k{n}")
                assert entry is not None and entry["n"] >= i, (round_, n, i)
        Path(ack_path).unlink()


@pytest.mark.slow
def test_the_wal_stays_bounded_while_a_reader_is_open_and_writes_go_on(tmp_path: Path) -> None:
    location = str(tmp_path / "state")
    bound = 40 << 20  # the restart point (16 MiB) plus the size limit's slack
    written = 0
    peak = 0

    async def main() -> None:
        nonlocal written, peak
        reader = flatstate.open_store(location)
        async with flatstate.open_async_store(location) as store:

            async def task(n: int) -> None:
                nonlocal written, peak
                for i in range(200):
                    pad = f"{n}-{i}-" * 1_400  # ~10 KiB, a new blob each time
                    await store.patch(f"k{n % 50}", {"pad": pad, "i": i})
                    written += len(pad)
                    if i % 20 == 0:
                        assert reader.get(f"k{n % 50}") is not None or i == 0
                        peak = max(peak, (await store.stats()).wal_bytes)

            await asyncio.gather(*(task(n) for n in range(48)))
            peak = max(peak, (await store.stats()).wal_bytes)
        reader.close()

    run(main())
    assert written > 2 * bound  # enough written to outgrow the bound without checkpoints
    assert 0 < peak < bound, peak


def test_a_forked_child_writes_through_a_writer_of_its_own(tmp_path: Path) -> None:
    with flatstate.open_store(str(tmp_path / "state")) as store:
        store.patch("main", {"by": "parent"})  # the parent's writer thread is running
        pid = os.fork()
        if pid == 0:  # the child: exit at once, whatever happens
            try:
                with flatstate.open_store(str(tmp_path / "state")) as child:
                    child.patch("child", {"by": "child"})
                store.patch("inherited", {"by": "child"})
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.get("inherited") is not None and store.get("child") is not None


def test_a_lone_write_commits_in_its_callers_thread(tmp_path: Path) -> None:
    """On an idle store a thread's write is committed by that thread at once (no hand-off
    to the writer thread and back); the thread starts only when writes meet."""
    with flatstate.open_store(str(tmp_path / "state")) as store:
        before = set(threading.enumerate())
        for i in range(20):
            store.patch("main", {"i": i})
        assert set(threading.enumerate()) - before == set()
        assert store.get("main")["i"] == 19  # type: ignore[index]
        assert store.commits == 20


def _reap(pid: int, seconds: float) -> int | None:
    """The child's exit code, or None (after killing it) if it has not exited in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_forks_while_the_writer_and_checkpoints_run_never_hang_the_child(tmp_path: Path) -> None:
    """A fork waits for the commit or checkpoint in progress, so a child never inherits a
    lock held by a thread it does not have (it used to hang, now and then, on its first
    write or open)."""
    stop = threading.Event()
    with flatstate.open_store(str(tmp_path / "state")) as store:

        def write(n: int) -> None:  # two threads: their writes meet in the writer thread
            i = 0
            while not stop.is_set():
                store.patch(f"w{n}", {"i": i, "pad": "x" * 2000})
                i += 1

        writers = [threading.Thread(target=write, args=(n,)) for n in range(2)]
        for thread in writers:
            thread.start()
        try:
            outcomes = []
            for round_ in range(25):
                pid = os.fork()
                if pid == 0:
                    try:
                        store.patch("inherited", {"round": round_})
                        with flatstate.open_store(str(tmp_path / "state")) as child:
                            child.patch("child", {"round": round_})
                        os._exit(0)
                    except BaseException:
                        os._exit(1)
                outcomes.append(_reap(pid, 20.0))
        finally:
            stop.set()
            for thread in writers:
                thread.join()
        assert outcomes == [0] * 25
        assert store.get("child")["round"] == 24  # type: ignore[index]
        assert store.get("inherited")["round"] == 24  # type: ignore[index]
