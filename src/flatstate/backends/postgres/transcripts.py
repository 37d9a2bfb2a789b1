"""Transcripts kept in PostgreSQL, shared by every host of a namespace, with the API of a
transcript file (:class:`~flatstate.transcripts.TranscriptLike`).

A transcript is a row of ``transcripts`` and its JSONL lines are rows of
``transcript_lines`` (:mod:`~flatstate.backends.postgres.transcript_schema`), numbered
from 0 (the header) in the order their appends committed
(:mod:`~flatstate.backends.postgres.appends`). Reads walk the primary key
``(transcript, seq)`` from an end and stop as soon as they have what they need, as a
file's reads do from its end: ``tail(n)`` reads ``n`` rows (one more for a transcript
that is all header), ``context()`` reads back to the latest compaction's first kept
entry, whatever the transcript's length. ``context()`` remembers its result by the
transcript's row and line count: an unchanged transcript costs one query returning one
row, a grown one only its new lines.

Archiving (a session's reset or delete) renames the transcript's row to OpenClaw's
archive name, ``<sessionId>.jsonl.<reason>.<time>``, under the row's lock: an append in
flight commits first, and the next one starts a new transcript under the live name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import msgspec
import psycopg

from flatstate.backends.postgres.appends import Appender, Host, new_append
from flatstate.backends.postgres.connection import lost, translate
from flatstate.backends.postgres.transcript_schema import TranscriptQueries
from flatstate.errors import InvalidEntry, ReadOnlyStore, TranscriptNotEmpty
from flatstate.frozen import FrozenMap, NotJSON, freeze, thaw
from flatstate.model import SessionEntry
from flatstate.transcripts import Context, LineProblem, archive_name, transcript_path
from flatstate.transcripts.context import build_context, context_backward
from flatstate.transcripts.file import check_entries, check_line

__all__ = ["PgTranscript", "PgTranscripts", "TranscriptRow"]

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

# Rows a read asks for at once: context() reads back in pages that grow from the first.
FIRST_PAGE = 64
MAX_PAGE = 4096
# New lines context() takes in to extend what it remembers; more and it reads afresh.
EXTEND_LIMIT = 256
ITER_PAGE = 1000
IMPORT_BATCH = 1000
OBJECTS = 256
_decoder = msgspec.json.Decoder()
log = logging.getLogger("flatstate.transcripts")


class TranscriptRow(msgspec.Struct, frozen=True):
    """One transcript in the database, live or archived (for listings and exports)."""

    name: str
    session_id: str
    lines: int
    archived_at: int | None


class PgTranscripts:
    """The transcripts of one store's namespace: their objects, appends, archives."""

    def __init__(self, backend: Host) -> None:
        self.backend = backend
        self.sql = TranscriptQueries(backend.schema)
        self.appender = Appender(backend, self.sql)
        self._objects: OrderedDict[str, PgTranscript] = OrderedDict()
        # (sessionId, sessionFile) -> name: checking a name resolves paths on the disk
        self._names: dict[tuple[str, str | None], str] = {}
        self._lock = threading.Lock()

    def open(self, entry: SessionEntry, key: str) -> PgTranscript:
        """The transcript of ``entry``: named as its file would be (a path-like session id
        or a ``sessionFile`` outside the directory is refused, as for files)."""
        session_file = entry.get("sessionFile")
        named_by = (entry.session_id, session_file if isinstance(session_file, str) else None)
        name = self._names.get(named_by)
        if name is None:
            local = transcript_path(self.backend.transcripts_dir, entry, key)
            name = os.path.basename(local)
            if os.path.exists(local):
                self._adopt(local, self.named(name, entry.session_id))
            if len(self._names) >= OBJECTS:
                self._names.clear()
            self._names[named_by] = name
        return self.named(name, entry.session_id)

    def _adopt(self, local: str, transcript: PgTranscript) -> None:
        """A transcript file that an earlier flatstate kept in ``state_dir/transcripts``
        (before transcripts moved into the database): its lines are imported into the empty
        database transcript, then the file is renamed to ``<file>.bak.<time>``, OpenClaw's
        backup name. Where the database already holds lines (another host's), or the store
        is read-only, the file stays where it is and a warning says so."""
        if self.backend.readonly:
            log.warning("%s: a local transcript the database does not hold; open the store "
                        "for writing once to import it", local)  # fmt: skip
            return
        try:
            with open(local, "rb") as f:
                lines = transcript.import_lines(f)
        except TranscriptNotEmpty:
            log.warning("%s: left in place: the database holds this transcript already", local)
            return
        os.rename(local, archive_name(local, "bak", int(time.time() * 1000)))
        log.info("%s: %d lines imported into %s", local, lines, transcript.path)

    def named(self, name: str, session_id: str | None = None) -> PgTranscript:
        """The transcript called ``name`` (as its file would be), live or archived."""
        with self._lock:
            found = self._objects.get(name)
            if found is None or (session_id is not None and found.session_id != session_id):
                found = PgTranscript(self, name, session_id or _session_of(name))
                self._objects[name] = found
                while len(self._objects) > OBJECTS:
                    self._objects.popitem(last=False)
            self._objects.move_to_end(name)
            return found

    def archive(self, name: str, reason: str, now_ms: int) -> str | None:
        """Rename transcript ``name`` to its archive name; that name, or None if there was
        no transcript (or an empty one)."""
        target = archive_name(name, reason, now_ms)
        backend = self.backend

        def rename(conn: Conn) -> str | None:
            with conn.transaction():
                conn.execute(self.sql.settings, (backend._lock_timeout_ms, backend._synchronous))
                row = conn.execute(
                    self.sql.archive, (target, now_ms, backend.namespace, name)
                ).fetchone()
            return target if row else None

        return self.reading(rename, "archive a transcript", write=True)

    def listing(self) -> list[TranscriptRow]:
        """Every transcript of the namespace, live and archived, by name."""
        rows = self.reading(
            lambda conn: conn.execute(self.sql.listing, (self.backend.namespace,)).fetchall(),
            "list the transcripts",
        )
        return [TranscriptRow(*row) for row in rows]

    def usage(self) -> tuple[int, int]:
        """(transcripts, bytes of their JSONL lines) of the namespace, live and archived."""
        row = self.reading(
            lambda conn: conn.execute(self.sql.usage, (self.backend.namespace,)).fetchone(),
            "measure the transcripts",
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def reading(self, fn: Callable[[Conn], T], doing: str, *, write: bool = False) -> T:
        """Run ``fn`` on a pooled connection, again on another one after a lost connection
        (for up to the lock timeout). A write is retried only where ``fn`` is one
        transaction whose repetition is harmless (a rename that finds nothing to rename)."""
        backend = self.backend
        if write and backend.readonly:
            raise ReadOnlyStore(backend.location, backend.readonly_reason)
        patience = backend._patience()
        while True:
            conn = backend._getconn()
            try:
                return fn(conn)
            except psycopg.Error as exc:
                if not lost(exc) or not patience.again():
                    raise self.error(exc, doing) from exc
            finally:
                if not conn.broken and conn.info.transaction_status != 0:  # not idle
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
                backend._putconn(conn)
            backend._drop_dead_connections()

    def error(self, exc: psycopg.Error, doing: str) -> Exception:
        backend = self.backend
        error = translate(
            exc,
            doing,
            location=backend.location,
            schema=backend.schema,
            lock_timeout=backend.lock_timeout,
            writing=False,
        )
        return getattr(error, "error", error)  # a RetryWrite's public error

    def close(self) -> None:
        self.appender.close()


class _Remembered:
    """What one version of a transcript yielded: enough for context() and to extend it."""

    __slots__ = ("context", "ident", "lines", "path_entries")

    def __init__(
        self, ident: int, lines: int, path_entries: list[FrozenMap], context: Context
    ) -> None:
        self.ident = ident
        self.lines = lines
        self.path_entries = path_entries
        self.context = context


_EMPTY = Context((), (), None, None)


class PgTranscript:
    """One session's transcript in PostgreSQL (see the module docstring). Cheap to create;
    the store hands out one object per transcript name."""

    def __init__(self, owner: PgTranscripts, name: str, session_id: str) -> None:
        self._owner = owner
        self.name = name
        self._session_id = session_id
        self.cwd = os.getcwd()
        self._problems: list[LineProblem] = []
        self._remembered: _Remembered | None = None
        self._mutex = threading.Lock()
        self.rows_read = 0
        """Lines this object has read from the database (for tests and benchmarks)."""

    @property
    def path(self) -> str:
        return f"{self._owner.backend.location}#{self.name}"

    @property
    def session_id(self) -> str | None:
        return self._session_id

    @property
    def problems(self) -> list[LineProblem]:
        return self._problems

    # -- reading -------------------------------------------------------------
    def _parse(self, seq: int, line: str) -> FrozenMap | None:
        self.rows_read += 1
        try:
            value = _decoder.decode(line)
        except msgspec.DecodeError as exc:
            self._problem(seq, f"not JSON ({exc})")
            return None
        if not isinstance(value, dict):
            self._problem(seq, "not a JSON object")
            return None
        try:
            frozen: FrozenMap = freeze(value, decoded=True)
        except NotJSON as exc:
            self._problem(seq, exc.problem)
            return None
        return frozen

    def _problem(self, seq: int | None, problem: str) -> None:
        found = LineProblem(seq + 1 if seq is not None else None, 0, problem)
        if found not in self._problems:
            self._problems.append(found)
            where = f"line {found.line}" if found.line is not None else "transcript"
            log.warning("%s: %s: %s", self.path, where, problem)

    def _entries(self, rows: Iterable[tuple[int, str]]) -> Iterator[FrozenMap]:
        """Parsed entries of ``rows`` (seq, line), the header (line 0) left out."""
        for seq, line in rows:
            entry = self._parse(seq, line)
            if entry is not None and not (seq == 0 and entry.get("type") == "session"):
                yield entry

    def _read(self, fn: Callable[[Conn], T], doing: str = "read a transcript") -> T:
        return self._owner.reading(fn, doing)

    def _key(self) -> tuple[str, str]:
        return self._owner.backend.namespace, self.name

    def header(self) -> FrozenMap | None:
        sql = self._owner.sql
        rows = self._read(
            lambda conn: conn.execute(
                sql.after, (_head_id(conn, sql, *self._key()), -1, 1)
            ).fetchall()
        )
        if not rows or rows[0][0] != 0:
            return None
        first = self._parse(*rows[0])
        return first if first is not None and first.get("type") == "session" else None

    def iter_entries(self) -> Iterator[FrozenMap]:
        """Every entry after the header, first to last, read in pages by line number."""
        sql = self._owner.sql
        ident = self._read(lambda conn: _head_id(conn, sql, *self._key()))
        if ident is None:
            return
        for rows in self._pages(ident):
            yield from self._entries(rows)

    def _pages(self, ident: int) -> Iterator[list[tuple[int, str]]]:
        """Every line of transcript ``ident`` by line number, a page per query (appends
        only add lines after the last, so the pages never overlap or miss one)."""
        sql = self._owner.sql
        last = -1
        while True:

            def page(conn: Conn, after: int = last) -> list[tuple[int, str]]:
                return conn.execute(sql.after, (ident, after, ITER_PAGE)).fetchall()

            rows = self._read(page)
            yield rows
            if len(rows) < ITER_PAGE:
                return
            last = rows[-1][0]

    def tail(self, n: int) -> tuple[FrozenMap, ...]:
        """The last ``n`` entries in order: at most ``n + 1`` rows, read from the end."""
        if n <= 0:
            return ()
        sql = self._owner.sql
        rows = self._read(lambda conn: conn.execute(sql.tail, (*self._key(), n + 1)).fetchall())
        found = list(self._entries(rows))[:n]
        found.reverse()
        return tuple(found)

    def tail_plain(self, n: int) -> list[dict[str, Any]]:
        """:meth:`tail` as fresh plain dicts (see the file transcript's ``tail_plain``)."""
        return [thaw(entry) for entry in self.tail(n)]

    @property
    def leaf_id(self) -> str | None:
        sql = self._owner.sql
        row = self._read(lambda conn: conn.execute(sql.head, self._key()).fetchone())
        return row[2] if row else None

    def context(self) -> Context:
        """The model context (as :meth:`Transcript.context
        <flatstate.transcripts.Transcript.context>`), remembered by the transcript's row
        and line count: one query for an unchanged transcript, its new lines for a grown
        one, a read back from the end to the first kept entry otherwise."""
        remembered = self._remembered
        start = remembered.lines if remembered is not None else 0
        sql = self._owner.sql
        rows = self._read(
            lambda conn: conn.execute(sql.newer, (start, EXTEND_LIMIT, *self._key())).fetchall()
        )
        if not rows:
            return _EMPTY
        ident, lines = rows[0][0], rows[0][1]
        if remembered is not None and remembered.ident == ident:
            if remembered.lines == lines:
                return remembered.context
            fresh = [(seq, line) for _, _, seq, line in rows if seq is not None]
            if len(fresh) == lines - remembered.lines:
                extended = self._extend(remembered, lines, fresh)
                if extended is not None:
                    return extended.context
        if remembered is None and lines <= EXTEND_LIMIT and len(rows) == lines:
            # A short transcript came whole with the first query.
            whole = [(seq, line) for _, _, seq, line in rows if seq is not None]
            return self._remember(ident, lines, reversed(whole)).context
        return self._read_context(ident, lines).context

    def _extend(
        self, remembered: _Remembered, lines: int, fresh: list[tuple[int, str]]
    ) -> _Remembered | None:
        """Add new lines to what is remembered; None when they do not simply extend it."""
        path_entries = list(remembered.path_entries)
        leaf = remembered.context.leaf_id
        for seq, line in fresh:
            entry = self._parse(seq, line)
            if entry is None or entry.get("type") in ("compaction", "session"):
                return None
            if entry.get("parentId") != leaf:
                return None  # a branch: the path changed; read back from the end
            path_entries.append(entry)
            leaf = entry.get("id")
        context = build_context(path_entries, remembered.context.compaction)
        return self._keep(_Remembered(remembered.ident, lines, path_entries, context))

    def _read_context(self, ident: int, lines: int) -> _Remembered:
        sql = self._owner.sql

        def backward() -> Iterator[tuple[int, str]]:
            below, page = lines, FIRST_PAGE
            while below > 0:

                def read(conn: Conn, b: int = below, p: int = page) -> list[tuple[int, str]]:
                    return conn.execute(sql.before, (ident, b, p)).fetchall()

                rows = self._read(read)
                yield from rows
                if len(rows) < page:
                    return
                below, page = rows[-1][0], min(page * 4, MAX_PAGE)

        return self._remember(ident, lines, backward())

    def _remember(self, ident: int, lines: int, backward: Iterable[tuple[int, str]]) -> _Remembered:
        path_entries, context = context_backward(
            self._entries(backward), lambda problem: self._problem(None, problem)
        )
        return self._keep(_Remembered(ident, lines, path_entries, context))

    def _keep(self, remembered: _Remembered) -> _Remembered:
        with self._mutex:
            current = self._remembered
            if (
                current is None
                or current.ident != remembered.ident
                or current.lines <= remembered.lines
            ):
                self._remembered = remembered
        return remembered

    def export_lines(self) -> Iterator[bytes]:
        """Every line as stored, header first, each with its newline: OpenClaw's JSONL."""
        sql = self._owner.sql
        ident = self._read(lambda conn: _head_id(conn, sql, *self._key()))
        if ident is None:
            return
        for rows in self._pages(ident):
            for _, line in rows:
                self.rows_read += 1
                yield line.encode() + b"\n"

    # -- writing -------------------------------------------------------------
    def append(self, entry: Mapping[str, Any]) -> str:
        return self.append_many([entry])[0]

    def append_many(
        self, entries: Sequence[Mapping[str, Any]], *, guard: Callable[[], bool] | None = None
    ) -> list[str]:
        """Append entries in order, in one transaction (shared with appends queued by other
        threads and tasks meanwhile); ``guard`` runs with the transcript's row locked.
        Returns once the commit is durable."""
        if not entries and guard is None:
            return []
        return self._submit(entries, guard).result()

    def submit(self, entries: Sequence[Mapping[str, Any]]) -> Future[list[str]]:
        """Queue an append; the future resolves after its commit (for the async API)."""
        return self._submit(entries, None)

    def _submit(
        self, entries: Sequence[Mapping[str, Any]], guard: Callable[[], bool] | None
    ) -> Future[list[str]]:
        backend = self._owner.backend
        if backend.readonly:
            raise ReadOnlyStore(backend.location, backend.readonly_reason)
        check_entries(entries)
        append = new_append(self.name, self._session_id, self.cwd, entries, guard)
        return self._owner.appender.submit(append)

    def flush(self) -> None:
        """Nothing waits: every append returned after its commit."""

    def import_lines(self, lines: Iterable[bytes]) -> int:
        """Fill an empty transcript with JSONL lines, kept as they are, in one transaction
        (COPY); refused, writing nothing, for a transcript that holds lines."""
        owner, backend = self._owner, self._owner.backend
        if backend.readonly:
            raise ReadOnlyStore(backend.location, backend.readonly_reason)
        prepared: list[tuple[int, str | None, str | None, str]] = []
        leaf: str | None = None
        for number, raw in enumerate(lines, 1):
            data = check_line(raw, number, self.path)
            if data is None:
                continue
            try:
                text = data[:-1].decode()
            except UnicodeDecodeError:
                raise InvalidEntry(
                    None, f"{self.path}: imported line {number} is not UTF-8"
                ) from None
            if "\x00" in text:
                raise InvalidEntry(None, f"{self.path}: imported line {number} holds a NUL byte")
            kind = entry_id = None
            with contextlib.suppress(msgspec.DecodeError):
                value = _decoder.decode(text)
                if isinstance(value, dict):
                    kind = value.get("type") if isinstance(value.get("type"), str) else None
                    entry_id = value.get("id") if isinstance(value.get("id"), str) else None
                    if not (len(prepared) == 0 and kind == "session"):
                        leaf = entry_id
            prepared.append((len(prepared), kind, entry_id, text))
        sql = owner.sql

        def load(conn: Conn) -> int:
            with conn.transaction():
                conn.execute(sql.settings, (backend._lock_timeout_ms, backend._synchronous))
                conn.execute(sql.create, (backend.namespace, [self.name], [self._session_id]))
                row = conn.execute(sql.lock, (backend.namespace, [self.name])).fetchone()
                assert row is not None
                ident, held = row[0], row[2]
                if held:
                    raise TranscriptNotEmpty(self.path, held)
                with conn.cursor().copy(sql.copy) as copy:
                    for seq, kind, entry_id, text in prepared:
                        copy.write_row((ident, seq, kind, entry_id, text))
                conn.execute(sql.set_head, (len(prepared), leaf, ident))
            return len(prepared)

        # Not retried after a lost connection: the reply of its commit may be what was lost.
        try:
            conn = backend._getconn()
            try:
                return load(conn)
            finally:
                backend._putconn(conn)
        except psycopg.Error as exc:
            raise owner.error(exc, "import a transcript") from exc

    def __repr__(self) -> str:
        return f"<PgTranscript {self.path}>"


def _head_id(conn: Conn, sql: TranscriptQueries, namespace: str, name: str) -> int | None:
    row = conn.execute(sql.head, (namespace, name)).fetchone()
    return int(row[0]) if row else None


def _session_of(name: str) -> str:
    """The session id a transcript name carries (``<id>.jsonl`` and its archives)."""
    return name.split(".jsonl", 1)[0]
