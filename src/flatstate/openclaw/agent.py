"""One agent's database, ``agents/<id>/agent/openclaw-agent.sqlite``: the tables flatstate reads.

- ``session_nodes``: one row per session key; ``entry_json`` is the whole
  SessionEntry, OpenClaw's source of truth (the other columns copy fields of
  it for indexes).
- ``session_windows``: one row per transcript generation (session id) of a
  key; the node's ``current_session_id`` is the live one.
- ``transcript_events``: the transcript, one row per JSONL line, by ``seq``
  from 0 (the header). A row holds ``event_json``, or for a large event
  ``event_zstd`` (a zstd frame) with ``event_utf8_bytes``, its size.
- ``auth_profile_store`` / ``auth_profile_state``: the agent's own profiles
  and state (its auth order), row ``primary``.

Reads go in pages by key or ``seq``, so that no query holds more than a page
of rows, whatever the size of the store or of one transcript.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import msgspec

from flatstate.errors import ExtraMissing, StoreCorrupt
from flatstate.openclaw.database import Database, damaged, text

__all__ = ["AGENT_DB_NAME", "KNOWN_SCHEMA", "AgentDatabase", "Event", "Window"]

AGENT_DB_NAME = "openclaw-agent.sqlite"
KNOWN_SCHEMA = 23
"""The agent schema (``PRAGMA user_version``) of OpenClaw 2026.9.6, which flatstate reads."""
PAGE = 256
_MAX_EVENT_BYTES = 4 << 20  # OpenClaw's CHECK constraint on event_utf8_bytes
_decoder = msgspec.json.Decoder()


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """One transcript generation of a session key."""

    session_id: str
    session_key: str
    current: bool
    """Whether it is the key's live transcript (else one that a reset or rollover ended)."""
    updated_at: int
    events: int
    compressed: int


class Event(NamedTuple):
    """One transcript line: ``data`` is its JSON text and ``value`` that JSON parsed, or
    ``damage`` says why the row cannot be read."""

    seq: int
    data: bytes
    value: dict[str, Any] | None
    damage: StoreCorrupt | None


class AgentDatabase:
    """The sessions, transcripts and auth rows of one agent's database, read-only."""

    def __init__(self, path: str, *, replay_wal: bool = True) -> None:
        self.db = Database(path, "an OpenClaw agent database", replay_wal=replay_wal)
        self.path = self.db.path
        if not self.db.has_table("session_nodes"):
            self.db.close()
            raise damaged(self.path, self.db.what, "it has no session_nodes table")

    # -- sessions ---------------------------------------------------------------
    def entry_pages(self) -> Iterator[list[tuple[str, bytes]]]:
        """(session key, entry JSON) of every session, in key order, a page at a time."""
        after = b""
        while True:
            rows = self.db.query(
                # The stored bytes of the last key, compared as text: a key that is not
                # valid UTF-8 still pages on exactly.
                "SELECT session_key, entry_json FROM session_nodes "
                "WHERE session_key > CAST(? AS TEXT) ORDER BY session_key LIMIT ?",
                (after, PAGE),
            )
            if not rows:
                return
            yield [(text(key), entry) for key, entry in rows]
            after = rows[-1][0]

    def entry(self, key: str) -> bytes | None:
        rows = self.db.query("SELECT entry_json FROM session_nodes WHERE session_key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    def keys(self) -> list[str]:
        rows = self.db.query("SELECT session_key FROM session_nodes")
        return sorted(text(key) for (key,) in rows)

    def count(self) -> int:
        return int(self.db.query("SELECT count(*) FROM session_nodes")[0][0])

    # -- transcripts -------------------------------------------------------------
    def windows(self) -> list[Window]:
        """Every transcript generation with its event counts, in session id order."""
        rows = self.db.query(
            """SELECT w.session_id, w.session_key, w.session_id = n.current_session_id,
                      w.updated_at, count(e.seq), coalesce(sum(e.event_json IS NULL), 0)
               FROM session_windows w
               LEFT JOIN session_nodes n ON n.session_key = w.session_key
               LEFT JOIN transcript_events e ON e.session_id = w.session_id
               GROUP BY w.session_id ORDER BY w.session_id"""
        )
        return [
            Window(
                session_id=text(sid),
                session_key=text(key),
                current=bool(current),
                updated_at=updated,
                events=events,
                compressed=compressed,
            )
            for sid, key, current, updated, events, compressed in rows
        ]

    def has_compressed_events(self) -> bool:
        rows = self.db.query("SELECT 1 FROM transcript_events WHERE event_json IS NULL LIMIT 1")
        return bool(rows)

    def events(
        self, session_id: str, *, backward: bool = False, limit: int | None = None
    ) -> Iterator[Event]:
        """The transcript of ``session_id`` in ``seq`` order (or from the end), header included.

        Compressed events are decompressed; without the zstd extra that raises
        :class:`~flatstate.errors.ExtraMissing`. A row that cannot be
        read comes with its ``damage`` instead of being skipped in silence.
        """
        bound = -1 if not backward else 1 << 62
        left = limit
        order, compare = ("DESC", "<") if backward else ("ASC", ">")
        while left is None or left > 0:
            page = PAGE if left is None else min(PAGE, left)
            rows = self.db.query(
                f"SELECT seq, event_json, event_zstd, event_utf8_bytes FROM transcript_events "
                f"WHERE session_id = ? AND seq {compare} ? ORDER BY seq {order} LIMIT ?",
                (session_id, bound, page),
            )
            for seq, stored, blob, size in rows:
                yield self._event(session_id, seq, stored, blob, size)
            if len(rows) < page:
                return
            bound = rows[-1][0]
            if left is not None:
                left -= len(rows)

    def _event(
        self, session_id: str, seq: int, stored: bytes | None, blob: bytes | None, size: int | None
    ) -> Event:
        try:
            data = bytes(stored) if stored is not None else self._decompress(blob, size)
            value = _decoder.decode(data)
            if not isinstance(value, dict):
                raise ValueError("it is not a JSON object")
        except (msgspec.DecodeError, ValueError, UnicodeError) as exc:
            problem = f"transcript {session_id} event seq {seq}: {exc}"
            return Event(seq, b"", None, damaged(self.path, self.db.what, problem))
        # A JSON text cannot hold a raw newline inside a string, so one between tokens is
        # layout only; as a space it cannot split the line when written as JSONL.
        return Event(seq, data.replace(b"\n", b" "), value, None)

    def _decompress(self, blob: bytes | None, size: int | None) -> bytes:
        try:
            import zstandard
        except ImportError:
            raise ExtraMissing(
                f"reading OpenClaw's compressed transcript events (in {self.path})", "zstd"
            ) from None
        if blob is None or not isinstance(size, int) or not 0 < size <= _MAX_EVENT_BYTES:
            raise ValueError(f"no usable compressed form (event_utf8_bytes {size!r})")
        try:
            data: bytes = zstandard.ZstdDecompressor().decompress(blob, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise ValueError(f"the zstd frame cannot be decompressed ({exc})") from None
        if len(data) != size:
            raise ValueError(f"it decompresses to {len(data)} bytes, not {size}")
        return data

    # -- auth --------------------------------------------------------------------
    def auth_rows(self) -> tuple[bytes | None, bytes | None]:
        """The agent's own auth profile store and state (JSON texts), where it has them."""
        found: list[bytes | None] = []
        for table, column, key in (
            ("auth_profile_store", "store_json", "store_key"),
            ("auth_profile_state", "state_json", "state_key"),
        ):
            rows = (
                self.db.query(f"SELECT {column} FROM {table} WHERE {key} = 'primary'")
                if self.db.has_table(table)
                else []
            )
            found.append(bytes(rows[0][0]) if rows else None)
        return found[0], found[1]

    # -- the file ----------------------------------------------------------------
    def schema(self) -> tuple[int, str | None]:
        """(``PRAGMA user_version``, the OpenClaw version that created it)."""
        version = int(self.db.query("PRAGMA user_version")[0][0])
        app = (
            self.db.query("SELECT app_version FROM schema_meta WHERE meta_key = 'primary'")
            if self.db.has_table("schema_meta")
            else []
        )
        return version, text(app[0][0]) if app and app[0][0] is not None else None

    def close(self, *, replaced: bool = False) -> None:
        self.db.close(replaced=replaced)

    def __repr__(self) -> str:
        return f"<AgentDatabase {self.path}>"
