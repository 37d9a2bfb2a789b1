"""A store that lives in this process's memory: ``open_store("memory://NAME")``.

Every store opened under one name shares one :class:`MemoryDatabase`, the way processes
share a file, so tests (ours, and those of programs built on flatstate) can run two stores
against each other without a disk. Entries are kept as JSON text and decoded on every read,
as a real backend decodes what it reads, so a value that would not survive storage fails
here too. Transcripts live in a directory of the database's own (``state_dir``, a new
temporary directory by default). Nothing survives the process.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from flatstate.backends._blobs import MAX_REPLAY
from flatstate.backends.base import Backend, Row
from flatstate.errors import LockTimeout
from flatstate.frozen import StringPool, decode_json, encode_json
from flatstate.model import SessionEntry, build_entry

__all__ = ["SCHEME", "MemoryBackend", "MemoryDatabase", "database"]

SCHEME = "memory://"


class MemoryDatabase:
    """Rows, a change log and a writer lock, shared by every backend opened on it."""

    def __init__(self, name: str, state_dir: str | None = None) -> None:
        self.name = name
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="flatstate-memory-")
        self.rows: dict[str, bytes] = {}
        self.log: list[str] = []  # the key changed at each position, from position 1
        self.writer = threading.Lock()
        self.commits = 0  # the change signal every store on this database reads


_databases: dict[str, MemoryDatabase] = {}
_databases_guard = threading.Lock()


def database(name: str, state_dir: str | None = None) -> MemoryDatabase:
    """The database called ``name`` in this process, made on first use."""
    with _databases_guard:
        found = _databases.get(name)
        if found is None:
            found = _databases[name] = MemoryDatabase(name, state_dir)
        return found


class _Signal:
    def __init__(self, db: MemoryDatabase) -> None:
        self._db = db

    def read(self) -> int:
        return self._db.commits

    def bump(self) -> None:
        self._db.commits += 1

    def close(self) -> None:
        pass


class MemoryBackend(Backend):
    def __init__(
        self,
        db: MemoryDatabase,
        *,
        pool: StringPool,
        lock_timeout: float = 10.0,
        readonly: bool = False,
    ) -> None:
        self.db = db
        self.pool = pool
        self.readonly = readonly
        self.lock_timeout = lock_timeout
        self.location = SCHEME + db.name
        self.transcripts_dir = db.state_dir
        self.signal = _Signal(db)
        self._pending: dict[str, bytes | None] | None = None

    def _row(self, key: str, text: bytes) -> Row:
        return key, build_entry(key, decode_json(text), pool=self.pool, on_load=True)

    def scan(self) -> tuple[Any, Iterator[Row]]:
        rows = list(self.db.rows.items())
        return len(self.db.log), iter([self._row(key, text) for key, text in rows])

    def read(self, key: str) -> Row | None:
        text = self.db.rows.get(key)
        return None if text is None else self._row(key, text)

    def scan_keys(self) -> list[str]:
        return sorted(self.db.rows)

    def count(self) -> int:
        return len(self.db.rows)

    def changes_since(self, token: Any) -> tuple[set[str] | None, Any]:
        log = self.db.log
        head = len(log)
        if token == head:
            return set(), token
        if not isinstance(token, int) or token > head or head - token > MAX_REPLAY:
            return None, head  # unknown, or too far behind to replay: reload everything
        return set(log[token:head]), head

    def _begin(self) -> None:
        if not self.db.writer.acquire(timeout=self.lock_timeout):
            raise LockTimeout(self.location, self.lock_timeout)
        self._pending = {}

    def put(self, key: str, entry: SessionEntry, previous: SessionEntry | None) -> int:
        assert self._pending is not None, "put outside a transaction"
        text = encode_json(entry)
        self._pending[key] = text
        return len(text)

    def remove(self, key: str) -> None:
        assert self._pending is not None, "remove outside a transaction"
        self._pending[key] = None

    def commit(self) -> Any:
        pending, self._pending = self._pending, None
        assert pending is not None, "commit outside a transaction"
        try:
            db = self.db
            for key, text in pending.items():
                if text is None:
                    if db.rows.pop(key, None) is None:
                        continue
                else:
                    db.rows[key] = text
                db.log.append(key)
            self.signal.bump()
            return len(db.log)
        finally:
            self.db.writer.release()

    def rollback(self) -> None:
        if self._pending is not None:
            self._pending = None
            self.db.writer.release()

    def close(self) -> None:
        self.rollback()
