"""Threads sharing one store: the string pool and the transcript mutexes hold up."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import flatstate
from flatstate.frozen import StringPool
from flatstate.transcripts import file as transcripts


def run_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_the_string_pool_survives_eight_threads_under_eviction() -> None:
    pool = StringPool(min_length=16, max_strings=8)

    def intern(n: int) -> None:
        for i in range(20_000):
            text = f"thread {n} string {i % 50} " * 2
            assert pool.intern(text) == text

    assert run_threads(8, intern) == []
    assert len(pool) <= 8
    assert pool.bytes == sum(len(s) for s in pool._strings)


def test_eight_threads_upsert_large_strings_into_one_store(tmp_path: Path) -> None:
    with flatstate.open_store(str(tmp_path / "state")) as store:

        def upsert(n: int) -> None:
            for i in range(60):
                store.upsert(f"agent:main:t{n}", {"prompt": f"{n}:{i} " * 200, "i": i})

        assert run_threads(8, upsert) == []
        assert [store.get(f"agent:main:t{n}")["i"] for n in range(8)] == [59] * 8  # type: ignore[index]


def test_the_transcript_mutexes_stay_bounded(tmp_path: Path) -> None:
    for n in range(2_000):
        transcripts.Transcript(str(tmp_path / f"{n}.jsonl")).append({"type": "custom"})
    assert len(transcripts._thread_locks) <= 256
