"""Cross-process lock files that OpenClaw's own writers also honour.

A lock on ``target`` is the file ``target + ".lock"``, created exclusively
(``O_CREAT | O_EXCL``) and holding ``{"pid", "createdAt", "starttime"}`` as
OpenClaw writes it, so an flatstate process and an OpenClaw gateway working on
the same ``sessions.json`` or transcript exclude each other.

A lock whose holder is gone (dead pid, pid reused by a newer process) or that
is older than ``stale`` seconds is taken over. Inside one process the lock is
re-entrant and threads queue on an ordinary mutex first, so only one thread
per process ever polls the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

from flatstate.errors import DiskFull, LockTimeout, is_disk_full

__all__ = ["FileLock", "LockInfo", "inspect_lock", "pid_alive", "process_start_time"]

_POLL_SECONDS = 0.01
EMPTY_LOCK_GRACE = 2.0
_POLL_MAX_SECONDS = 0.1


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux /proc), or None."""
    if pid == os.getpid():
        return _own_start_time()
    return _read_start_time(pid)


_own: dict[int, int | None] = {}


def _own_start_time() -> int | None:
    """This process's start time, read once per pid (it cannot change; a fork has a new pid)."""
    pid = os.getpid()
    if pid not in _own:
        _own[pid] = _read_start_time(pid)
    return _own[pid]


def _read_start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LockInfo:
    """What a lock file says about its holder, and whether it may be taken over."""

    def __init__(self, path: str, payload: dict[str, Any] | None, stale_after: float) -> None:
        self.path = path
        pid = payload.get("pid") if payload else None
        self.pid: int | None = pid if isinstance(pid, int) and pid > 0 else None
        created = payload.get("createdAt") if payload else None
        self.created_at: str | None = created if isinstance(created, str) else None
        self.age: float | None = None
        if self.created_at:
            with contextlib.suppress(ValueError):
                stamp = datetime.fromisoformat(self.created_at.replace("Z", "+00:00"))
                self.age = max(0.0, time.time() - stamp.timestamp())
        if self.age is None:
            with contextlib.suppress(OSError):
                self.age = max(0.0, time.time() - os.stat(path).st_mtime)
        reasons = []
        if self.pid is None:
            reasons.append("missing-pid")
        elif not pid_alive(self.pid):
            reasons.append("dead-pid")
        else:
            started = payload.get("starttime") if payload else None
            now_started = process_start_time(self.pid)
            if isinstance(started, int) and now_started is not None and started != now_started:
                reasons.append("recycled-pid")
        if self.age is not None and self.age > stale_after:
            reasons.append("too-old")
        # A lock with no pid may be one being written this very moment; a
        # writer fills it within microseconds, so after a short grace it was
        # abandoned (its writer died between creating and filling it).
        if reasons == ["missing-pid"]:
            reasons = ["empty-lock"] if (self.age or 0.0) > EMPTY_LOCK_GRACE else []
        self.stale_reasons = reasons

    @property
    def stale(self) -> bool:
        return bool(self.stale_reasons)


def inspect_lock(lock_path: str, stale_after: float = 30.0) -> LockInfo | None:
    """Read the lock file at ``lock_path``; None if there is none."""
    try:
        with open(lock_path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    return LockInfo(lock_path, payload if isinstance(payload, dict) else None, stale_after)


_process_locks: dict[str, _Held] = {}
_registry_lock = threading.Lock()


class _Held:
    def __init__(self) -> None:
        self.mutex = threading.RLock()
        self.depth = 0


class FileLock:
    """An exclusive, re-entrant, cross-process lock on ``target``.

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "sessions.json")
    >>> with FileLock(target):
    ...     os.path.exists(target + ".lock")
    True
    >>> os.path.exists(target + ".lock")
    False

    ``timeout`` seconds to wait (None waits forever) before
    :class:`~flatstate.errors.LockTimeout`, which names the holder's pid;
    ``stale`` seconds after which a live holder's lock is taken over anyway.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 10.0,
        stale: float = 30.0,
        option: str = "lock_timeout",
    ) -> None:
        self.target = os.path.abspath(target)
        self.path = self.target + ".lock"
        self.timeout = timeout
        self.option = option  # the setting a LockTimeout tells the user to raise
        self.stale = stale
        with _registry_lock:
            self._held = _process_locks.setdefault(self.path, _Held())

    def acquire(self) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        held = self._held
        remaining = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not held.mutex.acquire(timeout=remaining):
            raise LockTimeout(
                self.path, self.timeout or 0.0, self._holder_pid(), option=self.option
            )
        try:
            if held.depth == 0:
                self._acquire_file(deadline)
            held.depth += 1
        except BaseException:
            held.mutex.release()
            raise

    def _holder_pid(self) -> int | None:
        info = inspect_lock(self.path, self.stale)
        return info.pid if info else None

    def _acquire_file(self, deadline: float | None) -> None:
        created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        started = process_start_time(os.getpid())
        data = (
            f'{{\n  "pid": {os.getpid()},\n  "createdAt": "{created}"'
            + (f',\n  "starttime": {started}' if started is not None else "")
            + "\n}"
        ).encode()
        delay = _POLL_SECONDS
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                pass
            else:
                # A writer killed between this create and this write leaves an
                # empty lock; LockInfo calls that stale after EMPTY_LOCK_GRACE.
                try:
                    os.write(fd, data)
                except OSError as exc:
                    os.unlink(self.path)  # ours, just made: no other writer is shut out by it
                    if is_disk_full(exc):
                        raise DiskFull(self.path) from exc
                    raise
                finally:
                    os.close(fd)
                return
            info = inspect_lock(self.path, self.stale)
            if info is not None and info.stale:
                self._break(info)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(
                    self.path, self.timeout or 0.0, info.pid if info else None, option=self.option
                )
            time.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX_SECONDS)

    def _break(self, info: LockInfo) -> None:
        """Remove a stale lock, unless another process replaced it meanwhile."""
        try:
            os.rename(self.path, f"{self.path}.stale.{os.getpid()}")
        except FileNotFoundError:
            return
        stolen = f"{self.path}.stale.{os.getpid()}"
        recheck = inspect_lock(stolen, self.stale)
        if recheck is not None and not recheck.stale:
            # We renamed a fresh lock that appeared between inspect and rename:
            # put it back if its place is still free, and let its holder keep it.
            with contextlib.suppress(OSError):
                os.link(stolen, self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stolen)

    def release(self) -> None:
        held = self._held
        held.depth -= 1
        try:
            if held.depth == 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            held.mutex.release()

    @property
    def is_held(self) -> bool:
        """Whether this process holds the lock (from any thread)."""
        return self._held.depth > 0

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
