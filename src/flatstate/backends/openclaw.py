"""OpenClaw 2026.9's own agent database as a read-only store.

``open_store(".../agents/main/agent/openclaw-agent.sqlite")`` (or the OpenClaw
root with ``agent_id``) serves ``get``, ``snapshot``, ``keys`` and
``transcript(key).tail/context`` from the database OpenClaw itself keeps:
entries are ``session_nodes.entry_json`` as stored, transcripts are the
``transcript_events`` rows. Every write raises
:class:`~flatstate.errors.ReadOnlyStore`: the database is OpenClaw's, and
``flatstate import-openclaw`` makes a copy that flatstate may change.

The file is opened as :mod:`flatstate.openclaw.database` describes (immutable,
or a private copy to replay a WAL) and only while no gateway holds it
(``force=True`` reads it anyway). The files' stat is the change token: when
OpenClaw writes, the next check reopens the database and reloads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgspec

from flatstate._signal import LocalSignal
from flatstate.backends.base import Backend, Row
from flatstate.errors import InvalidEntry, ReadOnlyStore, StoreClosed, StoreCorrupt
from flatstate.frozen import FrozenMap, NotJSON, StringPool, decode_json, freeze, thaw
from flatstate.model import SessionEntry, build_entry
from flatstate.openclaw.agent import AgentDatabase, Event
from flatstate.openclaw.database import Stamp, damaged
from flatstate.openclaw.root import check_not_in_use, open_state
from flatstate.transcripts import Context, Transcript

__all__ = ["OpenClawBackend", "StoredTranscript"]

_WHY = (
    "it is OpenClaw 2026.9's own database, which flatstate only reads; to change these "
    "sessions, import them first: flatstate import-openclaw <the OpenClaw directory> DEST"
)


class OpenClawBackend(Backend):
    readonly = True
    readonly_reason = _WHY
    keeps_transcripts = True

    def __init__(
        self, path: str, *, pool: StringPool, root: str | None, agent_id: str, force: bool = False
    ) -> None:
        self.path = os.path.abspath(path)
        self.location = self.path
        self.transcripts_dir = os.path.dirname(self.path)
        self.pool = pool
        self.signal = LocalSignal()  # nobody bumps it: changes are found by the stat check
        self.root = root
        self.agent_id = agent_id
        self.force = force
        self.corruption: StoreCorrupt | None = None
        self._reopen_lock = threading.Lock()
        self._closed = False
        self.database = self._open()

    def _open(self) -> AgentDatabase:
        if not self.force:
            state = open_state(self.root)
            try:
                check_not_in_use(self.path, self.agent_id, state)
            finally:
                if state is not None:
                    state.close()
        return AgentDatabase(self.path)

    # -- reading ---------------------------------------------------------------
    def _entry(self, key: str, data: bytes, problems: list[str]) -> SessionEntry | None:
        try:
            return build_entry(key, decode_json(data), pool=self.pool, on_load=True)
        except (msgspec.MsgspecError, InvalidEntry) as exc:
            problems.append(f"session_nodes entry {key!r}: {exc}")
            return None

    def scan(self) -> tuple[Any, Iterator[Row]]:
        problems: list[str] = []
        rows: list[Row] = []
        for page in self.database.entry_pages():
            for key, data in page:
                entry = self._entry(key, data, problems)
                if entry is not None:
                    rows.append((key, entry))
        self.corruption = (
            damaged(self.path, self.database.db.what, "; ".join(problems)) if problems else None
        )
        return self.database.db.stamp, iter(rows)

    def read(self, key: str) -> Row | None:
        data = self.database.entry(key)
        entry = self._entry(key, data, []) if data is not None else None
        return (key, entry) if entry is not None else None

    def scan_keys(self) -> list[str]:
        return self.database.keys()

    def count(self) -> int:
        return self.database.count()

    def fresh_database(self) -> AgentDatabase:
        """The database as it is now: reopened when OpenClaw wrote since it was opened
        (an immutable open must never read a file that changed under it)."""
        with self._reopen_lock:
            if self._closed:
                raise StoreClosed(self.location)
            if self.database.db.current_stamp() != self.database.db.stamp:
                self.database.close(replaced=True)
                self.database = self._open()
            return self.database

    def changes_since(self, token: Any) -> tuple[set[str] | None, Any]:
        stamp = self.fresh_database().db.stamp
        return (set(), token) if stamp == token else (None, stamp)

    def disk_bytes(self) -> int:
        return self.database.db.disk_bytes()

    def transcript(self, entry: SessionEntry, key: str) -> Transcript | None:
        return StoredTranscript(self, entry.session_id)

    # -- writing: refused (begin() says why before any of these is reached) -----
    def _begin(self) -> None:
        raise ReadOnlyStore(self.path, _WHY)

    def put(self, key: str, entry: SessionEntry, previous: SessionEntry | None) -> int:
        raise ReadOnlyStore(self.path, _WHY)

    def remove(self, key: str) -> None:
        raise ReadOnlyStore(self.path, _WHY)

    def commit(self) -> Any:
        raise ReadOnlyStore(self.path, _WHY)

    def rollback(self) -> None:
        pass  # no write ever begins: there is nothing to abandon

    def close(self) -> None:
        with self._reopen_lock:
            self._closed = True
            self.database.close()


class StoredTranscript(Transcript):
    """One session's ``transcript_events``, read as a transcript file would be; read-only.

    ``tail(n)`` reads the last ``n`` rows, ``context()`` reads back from the end
    only as far as the latest compaction keeps (and remembers the result until
    the database changes). A row that cannot be read is a problem in
    ``problems`` (line = ``seq + 1``, its line in an exported JSONL file), as a
    bad line of a file is.
    """

    def __init__(self, backend: OpenClawBackend, session_id: str) -> None:
        super().__init__(f"{backend.path}#{session_id}", session_id=session_id, lock="flock")
        self._backend = backend
        self._context: tuple[Stamp, Context] | None = None

    def _entries(self, *, backward: bool = False, limit: int | None = None) -> Iterator[FrozenMap]:
        assert self.session_id is not None
        database = self._backend.fresh_database()
        events = database.events(self.session_id, backward=backward, limit=limit)
        for event in events:
            entry = self._frozen(event)
            if entry is not None:
                yield entry

    def _frozen(self, event: Event) -> FrozenMap | None:
        if event.damage is not None:
            self._problem(event.seq + 1, 0, event.damage.problem)
            return None
        try:
            frozen: FrozenMap = freeze(event.value, decoded=True)
        except NotJSON as exc:
            self._problem(event.seq + 1, 0, exc.problem)
            return None
        return frozen

    def header(self) -> FrozenMap | None:
        first = next(self._entries(limit=1), None)
        return first if first is not None and first.get("type") == "session" else None

    def iter_entries(self) -> Iterator[FrozenMap]:
        for entry in self._entries():
            if entry.get("type") != "session":
                yield entry

    def tail(self, n: int) -> tuple[FrozenMap, ...]:
        if n <= 0:
            return ()
        found = [e for e in self._entries(backward=True, limit=n + 1) if e.get("type") != "session"]
        return tuple(reversed(found[:n]))

    def tail_plain(self, n: int) -> list[dict[str, Any]]:
        return [thaw(entry) for entry in self.tail(n)]

    def context(self) -> Context:
        stamp = self._backend.fresh_database().db.stamp
        if self._context is None or self._context[0] != stamp:
            _, context = self._context_of(self._entries(backward=True))
            self._context = (stamp, context)
        return self._context[1]

    def append_many(self, entries: Sequence[Mapping[str, Any]], *, guard: Any = None) -> list[str]:
        raise ReadOnlyStore(self.path, _WHY)

    def submit_append(self, entries: Sequence[Mapping[str, Any]], *args: Any, **kw: Any) -> Any:
        raise ReadOnlyStore(self.path, _WHY)

    def cached_tail_plain(self, n: int) -> list[dict[str, Any]] | None:
        return None  # rows in a database, not lines of a file: read them

    def __repr__(self) -> str:
        return f"<StoredTranscript {self.path}>"
