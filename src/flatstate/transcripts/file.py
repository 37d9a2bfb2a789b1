"""One transcript file (the format is in the package docstring): appends that exclude
each other across threads and processes, each one complete line, and reads from the end
that remember what they read by the file's identity, mtime and size, so that they never
grow with the file."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from flatstate.errors import (
    ConflictError,
    DiskFull,
    InvalidEntry,
    LockTimeout,
    TranscriptNotEmpty,
    is_disk_full,
)
from flatstate.frozen import FrozenMap, NotJSON, decode_json, encode_json, freeze
from flatstate.locks import FileLock
from flatstate.transcripts import syncgroup
from flatstate.transcripts.context import Context, build_context, context_backward, iso_now
from flatstate.writer import Job, Notify

__all__ = ["SESSION_VERSION", "FsyncPolicy", "LineProblem", "Transcript"]

log = logging.getLogger("flatstate.transcripts")

SESSION_VERSION = 3
CHUNK = 64 * 1024
TAIL_BYTES = 32 * 1024
"""A transcript object remembers up to this many bytes of lines from the file's end (what it
last wrote or read there), so that a tail of a file nobody else changed needs no read."""
LOCK_STALE_SECONDS = 30 * 60.0  # OpenClaw's transcript locks: stale after 30 minutes


@dataclass(frozen=True)
class FsyncPolicy:
    """When appends reach the disk itself, not only the operating system.

    ``every`` 1 syncs each append before it returns (survives power loss).
    Larger values sync after that many appends or ``seconds`` since the last
    sync, whichever comes first; a process crash loses nothing either way,
    a power loss at most that window.
    """

    every: int = 1
    seconds: float = 1.0

    @classmethod
    def batched(cls, every: int = 256, seconds: float = 0.05) -> FsyncPolicy:
        return cls(every=every, seconds=seconds)


class LineProblem(msgspec.Struct, frozen=True):
    """A line that is not a JSON object: where it is and why. Never dropped silently."""

    line: int | None
    offset: int
    problem: str


class _Cached:
    """What one file version yielded: enough to answer context() and extend on append."""

    __slots__ = ("context", "ident", "path_entries", "size")

    def __init__(
        self,
        ident: tuple[int, int, int],
        size: int,
        path_entries: list[FrozenMap],
        context: Context,
    ):
        self.ident = ident  # (st_dev, st_ino, st_mtime_ns)
        self.size = size
        self.path_entries = path_entries  # from the first entry the context needs to the leaf
        self.context = context


class _Tail:
    """The last lines of one version of the file, as this object last read or wrote them:
    a tail they hold costs a ``stat``, not a read. Never changed: replaced whole, so threads
    read it without a lock."""

    __slots__ = ("ident", "lines", "size", "whole")

    def __init__(
        self,
        ident: tuple[int, int, int, int],
        lines: tuple[tuple[int, bytes], ...],
        size: int,
        whole: bool,
    ) -> None:
        self.ident = ident  # (st_dev, st_ino, st_size, st_mtime_ns) of the version they end
        self.lines = lines  # (offset, line without its newline), in file order, none blank
        self.size = size  # their bytes
        self.whole = whole  # they start at the file's first line


def _is_header(line: bytes) -> bool:
    value = decode_json(line)
    return isinstance(value, dict) and value.get("type") == "session"


def _file_ident(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _kept(
    lines: list[tuple[int, bytes]], size: int, whole: bool, ident: tuple[int, int, int, int]
) -> _Tail:
    """The newest of ``lines`` (``size`` bytes) that fit :data:`TAIL_BYTES`."""
    start = 0
    while size > TAIL_BYTES:
        size -= len(lines[start][1])
        start += 1
    return _Tail(ident, tuple(lines[start:]), size, whole and start == 0)


# Keyed by real path; bounded, least recently used first out.
_index: OrderedDict[str, _Cached] = OrderedDict()
_index_lock = threading.Lock()
INDEX_SIZE = 256


def _index_get(path: str) -> _Cached | None:
    with _index_lock:
        found = _index.get(path)
        if found is not None:
            _index.move_to_end(path)
        return found


def _index_put(path: str, cached: _Cached) -> None:
    with _index_lock:
        _index[path] = cached
        _index.move_to_end(path)
        while len(_index) > INDEX_SIZE:
            _index.popitem(last=False)


class Transcript:
    """One session's transcript file. Cheap to create; state lives in the file and the index.

    ``session_id`` names the session in a header written on the first append;
    ``cwd`` goes into that header too.
    """

    def __init__(
        self,
        path: str,
        *,
        session_id: str | None = None,
        cwd: str | None = None,
        fsync: FsyncPolicy | None = None,
        lock: str = "file",
        lock_timeout: float = 60.0,
    ) -> None:
        if lock not in ("file", "flock"):
            raise ValueError(f"lock is 'file' (OpenClaw's lock file) or 'flock', not {lock!r}")
        self.path = os.path.abspath(path)
        self.session_id = session_id
        self.cwd = cwd if cwd is not None else os.getcwd()
        self.fsync = fsync or FsyncPolicy()
        self.lock_mode = lock
        self.lock_timeout = lock_timeout
        self._file_lock = FileLock(self.path, timeout=lock_timeout, stale=LOCK_STALE_SECONDS)
        self._unsynced = 0
        self._last_sync = time.monotonic()
        self.bytes_read = 0
        """Bytes this object has read from the file (for tests and benchmarks)."""
        self._known_leaf: tuple[int, int, str | None] | None = None  # (inode, size, leaf id)
        self._tail_seen: _Tail | None = None
        self._seen_file = False  # once seen, a missing file was archived, not never made
        self.problems: list[LineProblem] = []

    # -- reading -------------------------------------------------------------
    def _stat(self) -> os.stat_result | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        self._seen_file = True
        return st

    def _read_at(self, fd: int, offset: int, size: int) -> bytes:
        data = os.pread(fd, size, offset)
        self.bytes_read += len(data)
        return data

    def _lines_backward(self, fd: int, end: int) -> Iterator[tuple[int, bytes]]:
        """(offset, line) pairs from ``end`` back to the start of the file.

        A last line without its newline is a write that never finished: it is
        reported and skipped (the next append cuts it off).
        """
        position = end
        carry = b""  # the start of a line whose end was in the block read before
        first = True
        while position > 0:
            size = min(CHUNK, position)
            position -= size
            block = self._read_at(fd, position, size) + carry
            if first:
                first = False
                cut = block.rfind(b"\n") + 1
                if cut < len(block):
                    self._problem(None, position + cut, "incomplete last line (ignored)")
                    block = block[:cut]
            lines = block.split(b"\n")
            starts = [position]
            for line in lines[:-1]:
                starts.append(starts[-1] + len(line) + 1)
            carry = lines[0]
            for i in range(len(lines) - 1, 0, -1):
                if lines[i].strip():
                    yield starts[i], lines[i]
        if carry.strip():
            yield 0, carry

    def _problem(self, line: int | None, offset: int, problem: str) -> None:
        found = LineProblem(line, offset, problem)
        if found not in self.problems:
            self.problems.append(found)
            where = f"line {line}" if line is not None else f"byte {offset}"
            log.warning("%s: %s: %s", self.path, where, problem)

    def _line_number(self, fd: int, offset: int) -> int:
        """1-based line number of the line at ``offset`` (only on the error path)."""
        count, position = 1, 0
        while position < offset:
            data = os.pread(fd, min(CHUNK, offset - position), position)
            count += data.count(b"\n")
            position += len(data)
        return count

    def _parse(self, fd: int, offset: int, line: bytes) -> FrozenMap | None:
        value = self._decode(fd, offset, line)
        if value is None:
            return None
        try:
            frozen: FrozenMap = freeze(value, decoded=True)
        except NotJSON as exc:
            self._problem(self._line_number(fd, offset), offset, exc.problem)
            return None
        return frozen

    def _decode(self, fd: int, offset: int, line: bytes) -> dict[str, Any] | None:
        """A line as a plain JSON object, or None (reported) when it is not one."""
        try:
            value = decode_json(line)
        except msgspec.DecodeError as exc:
            self._problem(self._line_number(fd, offset), offset, f"not JSON ({exc})")
            return None
        if not isinstance(value, dict):
            self._problem(self._line_number(fd, offset), offset, "not a JSON object")
            return None
        return value

    def header(self) -> FrozenMap | None:
        """The first line, when it is a session header."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            data = self._read_at(fd, 0, CHUNK)
            line, newline, _ = data.partition(b"\n")
            if not newline:
                return None
            first = self._parse(fd, 0, line)
        finally:
            os.close(fd)
        return first if first is not None and first.get("type") == "session" else None

    def iter_entries(self) -> Iterator[FrozenMap]:
        """Every entry after the header, first to last (reads the whole file, streaming)."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed by the generator's finally
        except FileNotFoundError:
            return
        try:
            offset = 0
            number = 0
            for raw in f:
                number += 1
                self.bytes_read += len(raw)
                start, offset = offset, offset + len(raw)
                if not raw.endswith(b"\n"):
                    self._problem(number, start, "incomplete last line (ignored)")
                    break
                if not raw.strip():
                    continue
                try:
                    value = decode_json(raw)
                except msgspec.DecodeError as exc:
                    self._problem(number, start, f"not JSON ({exc})")
                    continue
                if not isinstance(value, dict):
                    self._problem(number, start, "not a JSON object")
                    continue
                if value.get("type") == "session" and number == 1:
                    continue
                try:
                    yield freeze(value, decoded=True)
                except NotJSON as exc:
                    self._problem(number, start, exc.problem)
        finally:
            f.close()

    def tail(self, n: int) -> tuple[FrozenMap, ...]:
        """The last ``n`` entries in file order, read from the end (header excluded)."""
        return tuple(self._tail(n, self._parse))

    def tail_plain(self, n: int) -> list[dict[str, Any]]:
        """:meth:`tail` as fresh plain dicts: for a caller that hands the entries straight
        to a model of its own (an adapter validating them into a framework's classes),
        which would otherwise thaw the frozen copies ``tail`` makes."""
        return self._tail(n, self._decode)

    def cached_tail_plain(self, n: int) -> list[dict[str, Any]] | None:
        """:meth:`tail_plain` when the lines this object remembers from the end of the file
        hold it and the file is still the version they end (one ``stat``, no read); else
        None, and nothing was read."""
        if n <= 0:
            return []
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        return self._from_seen(st, n, frozen=False)

    def _from_seen(self, st: os.stat_result, n: int, *, frozen: bool) -> list[Any] | None:
        seen = self._tail_seen
        if seen is None or seen.ident != _file_ident(st):
            return None
        lines = seen.lines
        header = bool(lines) and lines[0][0] == 0 and _is_header(lines[0][1])
        usable = len(lines) - header
        if usable < n and not seen.whole:
            return None
        wanted = lines[len(lines) - min(n, usable) :]
        # One decode of them all as a JSON array (each line decoded to an object when it was
        # remembered): the loop over lines in C, not here.
        found: list[Any] = decode_json(b"[" + b",".join(line for _, line in wanted) + b"]")
        if frozen:
            try:
                return [freeze(value, decoded=True) for value in found]
            except NotJSON:
                return None  # the read from the file reports it
        return found

    def _tail(self, n: int, parse: Callable[[int, int, bytes], Any]) -> list[Any]:
        if n <= 0:
            return []
        st = self._stat()
        if st is None:
            return []
        cached = self._from_seen(st, n, frozen=parse == self._parse)
        if cached is not None:
            return cached
        found: list[Any] = []
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            st = os.fstat(fd)
            lines: list[tuple[int, bytes]] = []
            clean, whole = True, True
            for offset, line in self._lines_backward(fd, st.st_size):
                entry = parse(fd, offset, line)
                if entry is None:
                    clean = False
                    continue
                lines.append((offset, line))
                if offset == 0 and entry.get("type") == "session":
                    continue
                found.append(entry)
                if len(found) >= n:
                    whole = offset == 0
                    break
            # Remembered only when every line read was sound and the last one ends the file.
            if clean and lines and lines[0][0] + len(lines[0][1]) + 1 == st.st_size:
                lines.reverse()
                size = sum(len(line) for _, line in lines)
                self._tail_seen = _kept(lines, size, whole, _file_ident(st))
        finally:
            os.close(fd)
        found.reverse()
        return found

    def context(self) -> Context:
        """The model context: the latest compaction's summary plus the entries from its
        ``firstKeptEntryId`` on, along the path from the root to the leaf.

        Reads backwards from the end and stops at the first kept entry; an
        unchanged file costs one ``stat``, a grown one only its new bytes.
        """
        st = self._stat()
        if st is None:
            return Context((), (), None, None)
        ident = (st.st_dev, st.st_ino, st.st_mtime_ns)
        cached = _index_get(self.path)
        if cached is not None:
            if cached.ident == ident and cached.size == st.st_size:
                return cached.context
            if cached.ident[:2] == ident[:2] and cached.size < st.st_size:
                extended = self._extend(cached, st.st_size, ident)
                if extended is not None:
                    return extended.context
        fresh = self._read_context(ident)
        return fresh.context

    def _extend(self, cached: _Cached, size: int, ident: tuple[int, int, int]) -> _Cached | None:
        """Add appended entries to a cached context; None when they do not simply extend it."""
        with open(self.path, "rb") as f:
            f.seek(cached.size)
            data = f.read(size - cached.size)
            self.bytes_read += len(data)
        if not data.endswith(b"\n"):
            return None
        path_entries = list(cached.path_entries)
        leaf = cached.context.leaf_id
        for line in data.split(b"\n")[:-1]:
            if not line.strip():
                continue
            try:
                value = decode_json(line)
            except msgspec.DecodeError:
                return None
            if not isinstance(value, dict) or value.get("type") == "compaction":
                return None
            if value.get("parentId") != leaf:
                return None  # a branch: the path changed; rebuild from the end
            try:
                entry: FrozenMap = freeze(value, decoded=True)
            except NotJSON:
                return None
            path_entries.append(entry)
            leaf = entry.get("id")
        context = build_context(path_entries, cached.context.compaction)
        fresh = _Cached(ident, size, path_entries, context)
        _index_put(self.path, fresh)
        return fresh

    def _read_context(self, ident: tuple[int, int, int]) -> _Cached:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return _Cached(ident, 0, [], Context((), (), None, None))
        try:
            size = os.fstat(fd).st_size
            parsed = (
                self._parse(fd, offset, line) for offset, line in self._lines_backward(fd, size)
            )
            path_entries, context = self._context_of(entry for entry in parsed if entry is not None)
        finally:
            os.close(fd)
        cached = _Cached(ident, size, path_entries, context)
        _index_put(self.path, cached)
        return cached

    def _context_of(self, backward: Iterable[FrozenMap]) -> tuple[list[FrozenMap], Context]:
        """The context of entries given last first (see :func:`context_backward`)."""
        return context_backward(backward, lambda problem: self._problem(None, 0, problem))

    @property
    def leaf_id(self) -> str | None:
        """The id of the last entry (the parent of the next append)."""
        last = self.tail(1)
        leaf = last[0].get("id") if last else None
        return leaf if isinstance(leaf, str) else None

    def export_lines(self) -> Iterator[bytes]:
        """Every line as it is in the file, header included, each ending in a newline (an
        incomplete last line is reported and left out): OpenClaw's JSONL as it stands."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed by the generator's finally
        except FileNotFoundError:
            return
        try:
            offset = 0
            for number, raw in enumerate(f, 1):
                self.bytes_read += len(raw)
                if not raw.endswith(b"\n"):
                    self._problem(number, offset, "incomplete last line (ignored)")
                    break
                offset += len(raw)
                yield raw
        finally:
            f.close()

    # -- writing -------------------------------------------------------------
    def append(self, entry: Mapping[str, Any]) -> str:
        """Append one entry as a child of the leaf; returns its id.

        Missing ``id`` (8 hex characters), ``parentId`` (the current leaf) and
        ``timestamp`` are filled in. The first append writes the header.
        """
        return self.append_many([entry])[0]

    def append_many(
        self, entries: Sequence[Mapping[str, Any]], *, guard: Callable[[], bool] | None = None
    ) -> list[str]:
        """Append entries in order under one lock hold; each is its own complete line.

        ``guard``, if given, runs under the lock first: when it returns False
        nothing is written and the result is empty (a compare-and-append).
        With the default policy the append returns once it is on the disk: the lock is
        released first and the fsync shared with the appends syncing at the same time
        (:mod:`~flatstate.transcripts.syncgroup`).
        """
        check_entries(entries)
        written = self._write(entries, guard)
        if written.fd is None:
            return written.result  # type: ignore[no-any-return]
        return syncgroup.group().sync(written)  # type: ignore[no-any-return]

    def submit_append(
        self,
        entries: Sequence[Mapping[str, Any]],
        notify: Notify,
        waiter: Any,
        *,
        guard: Callable[[], bool] | None = None,
    ) -> Job:
        """:meth:`append_many` for a task: the entries are written now when no other writer
        holds the transcript (a few system calls that never wait: no fsync, no lock wait),
        else by the sync group's thread once it gets the lock; the group then syncs them
        with the appends waiting beside them. ``notify`` gets the job once its outcome is
        final (``result``: the ids), so a task awaits ``waiter`` holding no thread. Bad
        entries raise InvalidEntry here, as does a write made here that fails."""
        check_entries(entries)
        group = syncgroup.group()
        try:
            written = self._write(entries, guard, wait=False)
        except _Busy:  # another writer has it: the group's thread waits its turn
            return group.submit(lambda: self._write(entries, guard), notify, waiter)
        return group.submit(lambda: written, notify, waiter)

    def _write(
        self,
        entries: Sequence[Mapping[str, Any]],
        guard: Callable[[], bool] | None,
        *,
        wait: bool = True,
    ) -> syncgroup.Written:
        """Write the entries under the lock; what is left to sync (a duplicate descriptor
        when every append is synced, which the sync group closes). ``wait`` False: _Busy
        rather than wait for another writer."""
        ids: list[str] = []
        with self._exclusive() if wait else self._exclusive_now() as (fd, st):
            key = (st.st_dev, st.st_ino)
            if guard is not None and not guard():
                return syncgroup.Written(None, key, ids)
            inode, size = st.st_ino, st.st_size
            lines: list[bytes] = []
            known = self._known_leaf
            if known is not None and known[:2] == (inode, size) and size:
                leaf = known[2]  # nobody appended since our own last (complete) append
            else:
                size = self._repair_tail(fd, size)
                leaf = self._leaf_from(fd, size) if size else None
            if size == 0:
                lines.append(encode_json(self._new_header()) + b"\n")
            for entry in entries:
                record = dict(entry)
                record.setdefault("id", os.urandom(4).hex())
                record.setdefault("parentId", leaf)
                record.setdefault("timestamp", iso_now())
                leaf = record["id"]
                ids.append(record["id"])
                lines.append(encode_json(record) + b"\n")
            data = memoryview(b"".join(lines))
            try:
                while data:  # one write() in practice; a short write continues where it stopped
                    data = data[os.write(fd, data) :]
            except OSError as exc:
                os.ftruncate(fd, size)  # no half line stays behind
                if is_disk_full(exc):
                    raise DiskFull(self.path) from exc
                raise
            self._remember_end(fd, st, size, lines)
            size += sum(map(len, lines))
            self._known_leaf = (inode, size, leaf)
            if self.fsync.every <= 1:
                return syncgroup.Written(os.dup(fd), key, ids)
            self._maybe_sync(fd, len(lines))
        return syncgroup.Written(None, key, ids)

    def _remember_end(self, fd: int, st: os.stat_result, size: int, lines: list[bytes]) -> None:
        """After our write of ``lines`` at ``size``: the lines remembered from the end, grown
        by them when they were the end of the version ``st`` (locked, then), else them alone."""
        seen = self._tail_seen
        base: list[tuple[int, bytes]]
        if size == 0:
            base, total, whole = [], 0, True
        elif seen is not None and size == st.st_size and seen.ident == _file_ident(st):
            base, total, whole = list(seen.lines), seen.size, seen.whole
        else:
            base, total, whole = [], 0, False
        offset = size
        for line in lines:
            base.append((offset, line[:-1]))
            offset += len(line)
            total += len(line) - 1
        self._tail_seen = _kept(base, total, whole, _file_ident(os.fstat(fd)))

    def import_lines(self, lines: Iterable[bytes]) -> int:
        """Fill an empty transcript with JSONL ``lines`` (header first, as exported), kept
        byte for byte; returns how many. Refuses, writing nothing, a transcript that holds
        a line (:class:`~flatstate.errors.TranscriptNotEmpty`) and a line with a newline
        inside; a write that fails midway is cut off again."""
        with self._exclusive() as (fd, st):
            if st.st_size:
                raise TranscriptNotEmpty(self.path, _count_lines(fd, st.st_size))
            count = 0
            try:
                for line in lines:
                    data = check_line(line, count + 1, self.path)
                    if data is None:
                        continue
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    count += 1
                os.fsync(fd)
            except BaseException as exc:
                os.ftruncate(fd, 0)  # nothing of a refused or failed import stays
                if isinstance(exc, OSError) and is_disk_full(exc):
                    raise DiskFull(self.path) from exc
                raise
            self._known_leaf = None
        return count

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[tuple[int, os.stat_result]]:
        """The transcript opened for appending, with every other writer kept out.

        Every flatstate writer takes an ``flock`` on the file. ``lock="file"``
        also takes OpenClaw's ``<file>.lock``, so that an OpenClaw gateway
        writing the same transcript is excluded too; ``"flock"`` alone (for
        state directories only flatstate writes) creates no file per append.
        """
        if self.lock_mode == "file":
            with self._file_lock, self._flocked() as held:
                yield held
        else:
            with self._flocked() as held:
                yield held

    @contextlib.contextmanager
    def _exclusive_now(self) -> Iterator[tuple[int, os.stat_result]]:
        """:meth:`_exclusive` if no other writer holds the transcript now; else _Busy at once
        (the OpenClaw lock file is always left to a thread that may wait for it)."""
        if self.lock_mode == "file":
            raise _Busy
        mutex = _thread_lock(self.path)
        if not mutex.acquire(blocking=False):
            raise _Busy
        try:
            with self._flocked(wait=False) as held:
                yield held
        finally:
            mutex.release()

    @contextlib.contextmanager
    def _flocked(self, *, wait: bool = True) -> Iterator[tuple[int, os.stat_result]]:
        with _thread_lock(self.path):
            deadline = time.monotonic() + self.lock_timeout
            while True:
                fd = self._open_for_append()
                try:
                    if wait:
                        waited = _flock(fd, deadline, self.path, self.lock_timeout)
                    else:
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        except BlockingIOError:
                            raise _Busy from None
                        waited = False
                    st = os.fstat(fd)
                    # Archiving renames the file under this lock: whoever had to
                    # wait for it may hold the old file and must reopen.
                    if not waited or st.st_ino == os.stat(self.path).st_ino:
                        break
                except BaseException:
                    os.close(fd)
                    raise
                os.close(fd)
            try:
                yield fd, st
            finally:
                # Released explicitly: a duplicate of fd, left for the sync group to fsync,
                # shares the open file and would otherwise hold the flock until then.
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _open_for_append(self) -> int:
        """The file, made on a first append; one this object has seen and that is gone was
        archived (its session reset or deleted, maybe by another process), and an append
        through this old handle would make a file no session names."""
        try:
            fd = _open_current(self.path, create=not self._seen_file)
        except FileNotFoundError:
            raise ConflictError(
                self.path,
                "this transcript was archived (its session was reset or deleted) since this "
                "handle last used it; nothing was written. Get the session's transcript "
                "again with store.transcript(key)",
            ) from None
        self._seen_file = True
        return fd

    def _new_header(self) -> dict[str, Any]:
        return {
            "type": "session",
            "version": SESSION_VERSION,
            "id": self.session_id or str(uuid.uuid4()),
            "timestamp": iso_now(),
            "cwd": self.cwd,
        }

    def _repair_tail(self, fd: int, size: int) -> int:
        """Cut an incomplete last line (a write that never finished); return the size."""
        if size == 0:
            return 0
        if os.pread(fd, 1, size - 1) == b"\n":
            return size
        good = size
        while good > 0:
            start = max(0, good - CHUNK)
            block = os.pread(fd, good - start, start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                good = start + cut + 1
                break
            good = start
        log.warning("%s: removed an incomplete last line (%d bytes)", self.path, size - good)
        os.ftruncate(fd, good)
        return good

    def _leaf_from(self, fd: int, size: int) -> str | None:
        for offset, line in self._lines_backward(fd, size):
            try:
                entry = decode_json(line)
            except msgspec.DecodeError:
                self._parse(fd, offset, line)  # reports it
                continue
            if not isinstance(entry, dict):
                continue
            if entry.get("type") == "session":
                return None
            leaf = entry.get("id")
            return leaf if isinstance(leaf, str) else None
        return None

    def _maybe_sync(self, fd: int, count: int) -> None:
        self._unsynced += count
        now = time.monotonic()
        policy = self.fsync
        if self._unsynced >= policy.every or now - self._last_sync >= policy.seconds:
            os.fsync(fd)
            self._unsynced = 0
            self._last_sync = now

    def flush(self) -> None:
        """Sync appends still waiting for a batched fsync."""
        if self._unsynced:
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._unsynced = 0
            self._last_sync = time.monotonic()

    def __repr__(self) -> str:
        return f"<Transcript {self.path}>"


class _Busy(Exception):
    """Another writer holds the transcript (an append that will not wait was asked for)."""


def check_entries(entries: Sequence[Mapping[str, Any]]) -> None:
    """InvalidEntry for the first entry that is not an object with a ``type`` or holds
    something JSON cannot carry (nothing is written then)."""
    for number, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("type"), str):
            raise InvalidEntry(
                None, f"a transcript entry is an object with a 'type', not {entry!r:.80}"
            )
        try:
            freeze(entry)
        except NotJSON as exc:
            raise InvalidEntry(
                None, f"transcript entry {number}, {exc.where()}: {exc.problem}"
            ) from None


def check_line(line: bytes, number: int, where: str) -> bytes | None:
    """One imported line with its newline, None for a blank one; InvalidEntry for a line
    with a newline inside it (lines are given one by one)."""
    body = line[:-1] if line.endswith(b"\n") else line
    if b"\n" in body:
        raise InvalidEntry(None, f"{where}: imported line {number} has a newline inside it")
    return body + b"\n" if body.strip() else None


def _count_lines(fd: int, size: int) -> int:
    count, position = 0, 0
    while position < size:
        data = os.pread(fd, min(CHUNK, size - position), position)
        count += data.count(b"\n")
        position += len(data)
    return count


def _open_current(path: str, *, create: bool = True) -> int:
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    return os.open(path, flags, 0o600)


def _flock(fd: int, deadline: float, path: str, timeout: float) -> bool:
    """Take an exclusive flock on ``fd``; whether we had to wait for it."""
    delay = 0.001
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return waited
        except BlockingIOError:
            waited = True
            if time.monotonic() >= deadline:
                raise LockTimeout(path, timeout) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


# Threads queue on a mutex before the flock. A fixed table of them, chosen by path, keeps
# the registry bounded however many transcripts a process touches; reentrant, so a thread
# whose two transcripts share a slot never waits on itself.
_thread_locks = tuple(threading.RLock() for _ in range(256))


def _thread_lock(path: str) -> threading.RLock:
    """The mutex of a transcript in this process: threads queue here, not on the flock."""
    return _thread_locks[hash(path) % len(_thread_locks)]
