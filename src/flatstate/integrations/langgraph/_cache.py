"""What a saver remembers of its tables: recent checkpoint rows with their writes, the
latest checkpoint of each thread, and pieces by digest; bounded in bytes.

Rows are cached only where this process can tell when another one changed the tables (the
SQLite file keeps a generation number every commit bumps); pieces everywhere, since a
digest always names the same bytes. A reader fills the cache only if nothing was applied
or cleared while it read the database (``epoch``), so a slow read never puts back what a
commit replaced.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from flatstate.integrations.langgraph._flat import Copier
from flatstate.integrations.langgraph._tables import Row, WriteRow

__all__ = ["DEFAULT_CACHE_BYTES", "Entry", "RowCache"]

DEFAULT_CACHE_BYTES = 64 << 20

Key = tuple[str, str, str]
Writes = dict[tuple[str, int], WriteRow]


class Entry:
    """A checkpoint row, its writes, and (``joined``) the stored bytes of its channel values
    once assembled from their pieces, so that reading the row again decodes them at once;
    or better (``values``) a copier of the decoded value, where :func:`._flat.copier` makes one."""

    __slots__ = ("joined", "refs", "row", "size", "values", "writes")

    def __init__(self, row: Row, writes: Writes, joined: dict[str, bytes] | None = None) -> None:
        self.row = row
        self.writes = writes
        self.joined = joined or {}
        self.values: dict[str, Copier] = {}
        self.refs: Any = None  # the row's refs, decoded on first use
        self.size = len(row.checkpoint) + len(row.metadata) + len(row.refs) + 200
        self.size += sum(len(w.value) + 100 for w in writes.values())
        self.size += sum(len(v) for v in self.joined.values())

    def sorted_writes(self) -> list[WriteRow]:
        """The pending writes in LangGraph's order, as one look at them: the writer thread
        adds to ``writes`` while readers use the entry (copying a dict is atomic)."""
        return sorted(self.writes.copy().values(), key=lambda w: (w.task_path, w.task_id, w.idx))


def writes_dict(rows: list[WriteRow]) -> Writes:
    return {(w.task_id, w.idx): w for w in rows}


class RowCache:
    def __init__(self, limit: int = DEFAULT_CACHE_BYTES, *, rows: bool) -> None:
        self.limit = limit
        self.rows_enabled = rows
        self.lock = threading.Lock()
        self.epoch = 0
        self.generation: Any = None  # the tables' generation this cache reflects
        self._rows: OrderedDict[Key, Entry] = OrderedDict()
        self._latest: dict[tuple[str, str], str] = {}
        self._blobs: OrderedDict[bytes, bytes] = OrderedDict()
        self._row_bytes = 0
        self._blob_bytes = 0

    @property
    def size(self) -> int:
        """What the cache holds, in bytes (roughly: payloads plus a fixed overhead each)."""
        return self._row_bytes + self._blob_bytes

    # -- reads -------------------------------------------------------------------
    def latest(self, thread_id: str, ns: str) -> str | None:
        return self._latest.get((thread_id, ns))

    def find(self, thread_id: str, ns: str, checkpoint_id: str | None) -> Entry | None:
        """The cached row of a checkpoint (the thread's latest when ``checkpoint_id`` is None)."""
        cid = checkpoint_id or self.latest(thread_id, ns)
        return self.row((thread_id, ns, cid)) if cid is not None else None

    def row(self, key: Key) -> Entry | None:
        with self.lock:
            entry = self._rows.get(key)
            if entry is not None:
                self._rows.move_to_end(key)
            return entry

    def blobs(self, digests: list[bytes]) -> tuple[dict[bytes, bytes], list[bytes]]:
        """(found, missing) of ``digests``."""
        found: dict[bytes, bytes] = {}
        missing: list[bytes] = []
        with self.lock:
            blobs = self._blobs
            for digest in digests:
                body = blobs.get(digest)
                if body is None:
                    missing.append(digest)
                else:
                    found[digest] = body
                    blobs.move_to_end(digest)
        return found, missing

    def remember_joined(self, entry: Entry, channel: str, data: bytes) -> None:
        with self.lock:
            entry.joined[channel] = data
            entry.size += len(data)
            if self._rows.get(self._key(entry)) is entry:
                self._row_bytes += len(data)
                self._trim()

    def remember_value(self, entry: Entry, channel: str, make: Copier, size: int) -> None:
        """Keep a copier of a channel's decoded value (``size`` bytes, about its stored
        form) in place of the stored bytes, which no read needs any more."""
        with self.lock:
            entry.values[channel] = make
            grown = size - len(entry.joined.pop(channel, b""))
            entry.size += grown
            if self._rows.get(self._key(entry)) is entry:
                self._row_bytes += grown
                self._trim()

    @staticmethod
    def _key(entry: Entry) -> Key:
        row = entry.row
        return (row.thread_id, row.checkpoint_ns, row.checkpoint_id)

    def unstored(self, pieces: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The pieces not known to be in the tables: all of them unless rows are cached
        (only there does a sweep by another process clear the cache before a write relies
        on it)."""
        if not self.rows_enabled:
            return pieces
        blobs = self._blobs
        return [piece for piece in pieces if piece[0] not in blobs]

    # -- fills from reads (only if nothing changed meanwhile) ---------------------
    def fill_row(self, epoch: int, entry: Entry, latest: bool) -> None:
        if not self.rows_enabled:
            return
        with self.lock:
            if epoch != self.epoch:
                return
            row = entry.row
            self._put_row((row.thread_id, row.checkpoint_ns, row.checkpoint_id), entry)
            if latest:
                self._latest[(row.thread_id, row.checkpoint_ns)] = row.checkpoint_id
            self._trim()

    def fill_blob(self, epoch: int, digest: bytes, body: bytes) -> None:
        with self.lock:
            if epoch != self.epoch:
                return
            self._put_blob(digest, body)
            self._trim()

    # -- changes this process committed --------------------------------------------
    def apply_put(self, entry: Entry, pieces: list[tuple[bytes, bytes]]) -> None:
        """A committed put: its row (with the writes it had in that transaction) and its
        pieces."""
        with self.lock:
            self.epoch += 1
            row = entry.row
            key = (row.thread_id, row.checkpoint_ns, row.checkpoint_id)
            self._put_row(key, entry)
            latest = self._latest.get(key[:2])
            if latest is not None and row.checkpoint_id > latest:
                self._latest[key[:2]] = row.checkpoint_id
            for digest, body in pieces:
                self._put_blob(digest, body)
            self._trim()

    def apply_writes(
        self, key: Key, rows: list[WriteRow], pieces: list[tuple[bytes, bytes]]
    ) -> None:
        with self.lock:
            self.epoch += 1
            if self.rows_enabled:
                for digest, body in pieces:
                    self._put_blob(digest, body)
            entry = self._rows.get(key)
            if entry is None:
                return
            for w in rows:
                if w.idx < 0:
                    entry.writes[(w.task_id, w.idx)] = w
                else:
                    entry.writes.setdefault((w.task_id, w.idx), w)
            self._row_bytes -= entry.size
            entry.size = Entry(entry.row, entry.writes).size
            self._row_bytes += entry.size
            self._trim()

    def clear(self) -> None:
        with self.lock:
            self.epoch += 1
            self._rows.clear()
            self._latest.clear()
            self._blobs.clear()
            self._row_bytes = self._blob_bytes = 0

    # -- inside the lock -------------------------------------------------------------
    def _put_row(self, key: Key, entry: Entry) -> None:
        self._drop_row(key)
        self._rows[key] = entry
        self._row_bytes += entry.size

    def _drop_row(self, key: Key) -> None:
        old = self._rows.pop(key, None)
        if old is not None:
            self._row_bytes -= old.size
            if self._latest.get(key[:2]) == key[2]:
                del self._latest[key[:2]]

    def _put_blob(self, digest: bytes, body: bytes) -> None:
        if digest not in self._blobs:
            self._blobs[digest] = body
            self._blob_bytes += len(body) + 64

    def _trim(self) -> None:
        while self._row_bytes + self._blob_bytes > self.limit and (self._rows or self._blobs):
            if self._blobs and (self._blob_bytes >= self._row_bytes or not self._rows):
                _, body = self._blobs.popitem(last=False)
                self._blob_bytes -= len(body) + 64
            else:
                key, entry = self._rows.popitem(last=False)
                self._row_bytes -= entry.size
                if self._latest.get(key[:2]) == key[2]:
                    del self._latest[key[:2]]
