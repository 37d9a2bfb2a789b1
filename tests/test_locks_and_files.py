"""Lock files compatible with OpenClaw's, and atomic replacement."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from flatstate.errors import LockTimeout
from flatstate.files import atomic_write, sweep_temp_files
from flatstate.locks import FileLock, inspect_lock
from tests.processes import START_TIMEOUT, ctx, join_all, running


def test_the_lock_file_says_who_holds_it(tmp_path: Path) -> None:
    target = tmp_path / "sessions.json"
    with FileLock(str(target)) as lock:
        payload = json.loads(Path(lock.path).read_text())
        assert payload["pid"] == os.getpid() and payload["createdAt"].endswith("Z")
        assert lock.is_held
    assert not Path(lock.path).exists()


def test_the_lock_is_reentrant_in_one_process(tmp_path: Path) -> None:
    lock = FileLock(str(tmp_path / "f"))
    with lock, FileLock(str(tmp_path / "f")):
        assert lock.is_held
    assert not lock.is_held


def test_a_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "sessions.json"
    Path(f"{target}.lock").write_text(
        json.dumps({"pid": 2**22 + 12345, "createdAt": "2026-01-01T00:00:00.000Z"})
    )
    with FileLock(str(target), timeout=1):
        assert json.loads(Path(f"{target}.lock").read_text())["pid"] == os.getpid()


def test_an_old_lock_is_taken_over_even_if_its_holder_lives(tmp_path: Path) -> None:
    target = tmp_path / "t"
    Path(f"{target}.lock").write_text(
        json.dumps({"pid": os.getppid(), "createdAt": "2020-01-01T00:00:00Z"})
    )
    info = inspect_lock(f"{target}.lock", stale_after=30)
    assert info is not None and info.stale_reasons == ["too-old"]
    with FileLock(str(target), timeout=1, stale=30):
        pass


def _hold(target: str, ready: Any, seconds: float) -> None:
    with FileLock(target, timeout=5):
        ready.set()
        time.sleep(seconds)


def test_a_live_holder_makes_others_time_out_with_its_pid(tmp_path: Path) -> None:
    target = str(tmp_path / "t")
    ready = ctx.Event()
    with running(_hold, [(target, ready, 3.0)]) as procs:
        assert ready.wait(START_TIMEOUT)
        with pytest.raises(LockTimeout) as info:
            FileLock(target, timeout=0.3).acquire()
        assert info.value.holder_pid == procs[0].pid
        assert str(procs[0].pid) in str(info.value)
        assert isinstance(info.value, TimeoutError)
        assert "raise lock_timeout" in str(info.value)
        with pytest.raises(LockTimeout, match="raise refresh_lock_timeout"):
            FileLock(target, timeout=0.1, option="refresh_lock_timeout").acquire()


def _count(target: str, counter: str, barrier: Any, times: int) -> None:
    barrier.wait(START_TIMEOUT)
    for _ in range(times):
        with FileLock(target, timeout=30):
            value = int(Path(counter).read_text())
            Path(counter).write_text(str(value + 1))


def test_processes_exclude_each_other(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    barrier = ctx.Barrier(3)
    with running(_count, [(str(tmp_path / "t"), str(counter), barrier, 100)] * 3) as procs:
        assert join_all(procs) == [0, 0, 0]
    assert counter.read_text() == "300"


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    atomic_write(str(path), b"one")
    atomic_write(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_stale_temp_files_are_swept(tmp_path: Path) -> None:
    old = tmp_path / "sessions.json.123.abc.tmp"
    new = tmp_path / "sessions.json.456.def.tmp"
    old.write_text("x")
    new.write_text("y")
    os.utime(old, (time.time() - 600, time.time() - 600))
    assert sweep_temp_files(str(tmp_path), "sessions.json") == [str(old)]
    assert new.exists() and not old.exists()
