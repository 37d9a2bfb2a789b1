"""OpenClaw's own ``sessions.json``, read and written as OpenClaw does.

The file is one JSON object from session key to entry, written with a 2-space
indent and no trailing newline, mode 0600 in a 0700 directory. Every field
flatstate does not know survives a load and a save.

- Reads parse the file once per version: the version is the file's stat
  (mtime_ns, size, inode) taken *before* reading, so content that changed
  during the read is never marked fresh. A reload re-decodes only the entries
  whose raw JSON changed; the others keep their frozen objects.
- Writes take ``sessions.json.lock`` (OpenClaw's lock-file protocol), re-read
  the file inside it, and replace the file atomically. A save whose text
  equals what is on disk writes nothing.
- A file that is not valid JSON, is not an object, or holds entries that are
  not objects is never overwritten: the store opens read-only, every write
  names the problem and ``flatstate doctor --repair``. (OpenClaw reads such a
  file as ``{}`` and later overwrites it, losing every session.)
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from flatstate._signal import LocalSignal, open_signal
from flatstate.backends.base import Backend, FileCheck, Row
from flatstate.errors import InvalidEntry, ReadOnlyStore, StoreCorrupt, UnsafePath
from flatstate.files import (
    READ_ONLY_FS,
    atomic_write,
    check_place,
    on_read_only_fs,
    sweep_temp_files,
)
from flatstate.frozen import MAX_DEPTH, StringPool, decode_json, encode_json, json_size
from flatstate.locks import FileLock
from flatstate.model import SessionEntry, build_entry

__all__ = [
    "JsonFileBackend",
    "entry_problem",
    "format_store",
    "load_entry",
    "parse_store",
    "repair_hint",
]

LOCK_STALE_SECONDS = 30.0
SWEEP_EVERY_SECONDS = 60.0
_raw_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])

Stat = tuple[int, int, int]


def format_store(entries: dict[str, Any]) -> bytes:
    """The bytes OpenClaw writes for ``entries``: JSON.stringify(store, null, 2)."""
    return encode_json(entries, indent=2)


def _position(data: bytes, problem: str) -> str:
    """Line and column of a JSON syntax error, as people count them."""
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text at byte {exc.start}"
    return problem


def load_entry(key: str, text: bytes, pool: StringPool | None = None) -> SessionEntry:
    """One stored entry from its JSON; raises msgspec's errors or :class:`InvalidEntry`
    (nested too deeply) for one that cannot be loaded as it was written."""
    return build_entry(key, decode_json(text), pool=pool, on_load=True)


def entry_problem(data: bytes, key: str, text: bytes, exc: Exception) -> str:
    """Why entry ``key`` (whose JSON is ``text``) cannot be loaded, and where it is in the file."""
    start = max(data.find(text), 0)
    at = start
    problem = exc.problem if isinstance(exc, InvalidEntry) else str(exc).split(" - at ")[0]
    if "UTF-8" in problem:
        try:
            text.decode()
        except UnicodeDecodeError as bad:
            at = start + bad.start
            problem = f"not UTF-8 text at byte {at}"
    if "out of range" in problem:
        for number in _EXPONENT.finditer(text):
            if float(number.group()) in (float("inf"), float("-inf")):
                at = start + number.start()
                problem = f"the number {number.group().decode()} is out of range"
                break
    return f"entry {key!r} at {_line_column(data, at)}: {problem}"


_EXPONENT = re.compile(rb"-?\d+(?:\.\d+)?[eE][+-]?\d+")


def _too_deep(data: bytes) -> str:
    """Where a file nests objects and arrays past what can be read (strings skipped)."""
    problem = f"objects and arrays nest deeper than {MAX_DEPTH}"
    depth = 0
    for token in _STRUCTURE.finditer(data):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
            if depth > MAX_DEPTH + 1:  # the file's own object is one level more
                return f"{_line_column(data, token.start())}: {problem}"
        elif char in (b"]", b"}"):
            depth -= 1
    return problem


_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _line_column(data: bytes, at: int) -> str:
    line = data.count(b"\n", 0, at) + 1
    column = at - (data.rfind(b"\n", 0, at) + 1) + 1
    return f"line {line}, column {column}"


def _decode_slowly(data: bytes) -> dict[str, msgspec.Raw] | None:
    """The raw entries of a file msgspec refuses but that is valid JSON (a lone surrogate
    escape), each re-encoded the way it is written; None if it is not a JSON object."""
    try:
        doc = decode_json(data)
    except msgspec.MsgspecError:
        return None
    if not isinstance(doc, dict):
        return None
    return {key: msgspec.Raw(encode_json(value)) for key, value in doc.items()}


def repair_hint(path: str) -> str:
    return f"Repair it with: flatstate doctor --repair --store {path}"


def parse_store(path: str, data: bytes) -> tuple[dict[str, msgspec.Raw], list[str]]:
    """Split a sessions.json into raw entries; problems are (key, reason) texts.

    Raises :class:`StoreCorrupt` when the file as a whole cannot be read.
    """
    if not data.strip():
        raise StoreCorrupt(path, "the file is empty", repair_hint(path))
    try:
        raw = _raw_decoder.decode(data)
    except RecursionError:
        raise StoreCorrupt(path, _too_deep(data), repair_hint(path)) from None
    except msgspec.ValidationError as exc:
        raise StoreCorrupt(
            path, f"the top level is not a JSON object ({exc})", repair_hint(path)
        ) from exc
    except msgspec.DecodeError as exc:
        slow = _decode_slowly(data)
        if slow is None:
            problem = f"invalid JSON: {_position(data, str(exc))}"
            raise StoreCorrupt(path, problem, repair_hint(path)) from exc
        raw = slow
    problems = [
        f"entry {key!r} is not a JSON object"
        for key, value in raw.items()
        if not bytes(value).lstrip().startswith(b"{")
    ]
    return raw, problems


class JsonFileBackend(Backend):
    def __init__(
        self,
        path: str,
        *,
        pool: StringPool,
        lock_timeout: float = 10.0,
        readonly: bool = False,
        allow_symlink: bool = False,
    ) -> None:
        self.path = os.path.abspath(path)
        self.location = self.path
        self.directory = os.path.dirname(self.path)
        self.transcripts_dir = self.directory
        self.store_file = self.path
        self.transcript_lock = "file"  # an OpenClaw gateway may append to these files too
        self.pool = pool
        self.readonly = readonly
        self.lock_timeout = lock_timeout
        self.corruption: StoreCorrupt | None = None
        self.file_writes = 0
        check_place(self.path, directory=False)
        self._check_link(allow_symlink)
        if not readonly:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._lock = FileLock(self.path, timeout=lock_timeout, stale=LOCK_STALE_SECONDS)
        self._doc: dict[str, SessionEntry] = {}
        self._hashes: dict[str, int] = {}
        self._token: Stat | None = None
        self._pending: dict[str, SessionEntry | None] | None = None
        self._next_sweep = 0.0
        name = os.path.basename(self.path)
        # The counter is made by the first read that finds the file sound (scan), so that a
        # damaged store, on which every write fails, gets no new file beside it.
        self._signal_path = os.path.join(self.directory, f".{name}.flatstate-signal")
        self.signal = open_signal(self._signal_path, create=False)

    @classmethod
    def check_files(cls, location: str) -> FileCheck:
        path = os.path.abspath(location)
        check = FileCheck(path, os.path.dirname(path), {}, [])
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return check
        try:
            raw, problems = parse_store(path, data)
        except StoreCorrupt as exc:
            check.problems.append(f"{exc.problem}. {exc.fix}")
            return check
        for key, value in raw.items():
            text = bytes(value)
            if not text.lstrip().startswith(b"{"):
                continue
            check.entries[key] = text
            try:
                load_entry(key, text)
            except (msgspec.MsgspecError, InvalidEntry) as exc:
                problems.append(entry_problem(data, key, text, exc))
        check.problems.extend(f"{p}. Repair with: flatstate doctor --repair" for p in problems)
        return check

    def _check_link(self, allow_symlink: bool) -> None:
        if not os.path.islink(self.path) or allow_symlink:
            return
        target = os.path.realpath(self.path)
        inside = os.path.realpath(self.directory) + os.sep
        if not target.startswith(inside):
            raise UnsafePath(
                self.path,
                f"is a symlink to {target}, outside its directory",
                "Point flatstate at the real file, or pass allow_symlink=True if that is meant.",
            )

    # -- reading ---------------------------------------------------------------
    def _stat(self) -> Stat | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _reload(self) -> set[str]:
        """Read the file into ``_doc``, reusing entries whose raw JSON did not change.

        Returns the keys that changed (added, removed or different). A file
        that became unreadable keeps the last good entries readable, with
        ``corruption`` set, so that no reader is silently emptied.
        """
        stat = self._stat()
        if stat is None:
            changed = set(self._doc)
            self._doc, self._hashes, self._token = {}, {}, None
            self.corruption = None
            return changed
        with open(self.path, "rb") as f:
            data = f.read()
        self._token = stat
        try:
            raw, problems = parse_store(self.path, data)
        except StoreCorrupt as exc:
            self.corruption = exc
            return set()
        doc: dict[str, SessionEntry] = {}
        hashes: dict[str, int] = {}
        changed = set()
        for key, value in raw.items():
            text = bytes(value)
            if not text.lstrip().startswith(b"{"):
                continue
            digest = hash(text)
            known = self._doc.get(key)
            if known is not None and self._hashes.get(key) == digest:
                doc[key] = known
            else:
                try:
                    doc[key] = load_entry(key, text, self.pool)
                except (msgspec.MsgspecError, InvalidEntry) as exc:
                    problems.append(entry_problem(data, key, text, exc))
                    continue
                changed.add(key)
            hashes[key] = digest
        changed.update(key for key in self._doc if key not in doc)
        self._doc, self._hashes = doc, hashes
        self.corruption = (
            StoreCorrupt(self.path, "; ".join(problems), repair_hint(self.path))
            if problems
            else None
        )
        return changed

    def _fresh_doc(self) -> None:
        if self._stat() != self._token or self._token is None:
            self._reload()

    def scan(self) -> tuple[Any, Iterator[Row]]:
        self._reload()
        if not self.readonly and self.corruption is None and isinstance(self.signal, LocalSignal):
            self.signal = open_signal(self._signal_path)
        return self._token, iter(list(self._doc.items()))

    def read(self, key: str) -> Row | None:
        self._fresh_doc()
        entry = self._doc.get(key)
        return (key, entry) if entry is not None else None

    def scan_keys(self) -> list[str]:
        self._fresh_doc()
        return sorted(self._doc)

    def count(self) -> int:
        self._fresh_doc()
        return len(self._doc)

    def changes_since(self, token: Any) -> tuple[set[str] | None, Any]:
        stat = self._stat()
        if stat == token:
            return set(), token
        if token != self._token:
            return None, stat  # the caller is behind this backend's own view: start over
        return self._reload(), self._token

    def disk_bytes(self) -> int:
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    # -- writing ---------------------------------------------------------------
    def _begin(self) -> None:
        if on_read_only_fs(self.path):
            raise ReadOnlyStore(self.path, READ_ONLY_FS)
        self._lock.acquire()
        try:
            self._fresh_doc()
            if self.corruption is not None:
                raise ReadOnlyStore(
                    self.path,
                    f"{self.corruption.problem}; nothing will be written until it is repaired. "
                    f"{repair_hint(self.path)}",
                )
        except BaseException:
            self._lock.release()
            raise
        self._pending = {}
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_SECONDS
            sweep_temp_files(self.directory, os.path.basename(self.path))

    def put(self, key: str, entry: SessionEntry, previous: SessionEntry | None) -> int:
        assert self._pending is not None, "put outside a transaction"
        self._pending[key] = entry
        return json_size(entry)

    def remove(self, key: str) -> None:
        assert self._pending is not None, "remove outside a transaction"
        self._pending[key] = None

    def commit(self) -> Any:
        pending, self._pending = self._pending, None
        try:
            assert pending is not None, "commit outside a transaction"
            doc = dict(self._doc)
            for key, entry in pending.items():
                if entry is None:
                    doc.pop(key, None)
                else:
                    doc[key] = entry
            text = format_store(doc)
            if not self._same_as_disk(text):
                atomic_write(self.path, text, mode=0o600)
                self.file_writes += 1
            self._doc = doc
            # Our own write: the raw hashes of changed keys are unknown, so drop
            # them (a later external change re-decodes those entries).
            for key in pending:
                self._hashes.pop(key, None)
            self._token = self._stat()
        finally:
            self._lock.release()
        self.signal.bump()
        return self._token

    def _same_as_disk(self, text: bytes) -> bool:
        """Whether the file (unchanged since we read it, under our lock) holds ``text``.

        Only a file of the same length is read back to compare, so the check
        costs nothing when anything was really changed.
        """
        if self._token is None or self._token[1] != len(text):
            return False
        with open(self.path, "rb") as f:
            return f.read() == text

    def rollback(self) -> None:
        if self._pending is not None:
            self._pending = None
            self._lock.release()

    def close(self) -> None:
        self.rollback()
        self.signal.close()
