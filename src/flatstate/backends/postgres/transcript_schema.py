"""The PostgreSQL tables of transcripts, with a schema version of their own, and every
statement that reads or writes them.

Two tables in the store's schema, created (or migrated) when a store opens:

- ``transcripts``: one row per transcript, keyed by namespace and *name*: the name its
  file would have (``<sessionId>.jsonl``, or the entry's ``sessionFile``) while it is
  live, its archive name (``<name>.reset.<time>``) once archived. ``lines`` is how many
  lines it holds, so the next line's number; ``leaf`` the id of its last entry. This row
  is the transcript's lock: an append takes it (``SELECT ... FOR UPDATE``) and holds it
  to the commit, which is what orders the appends of every host.
- ``transcript_lines``: one row per JSONL line, ``seq`` from 0 (the header) up, with the
  line's text exactly as written (``text``, not ``json``: nothing is re-encoded, a line
  that is not JSON survives an import and is reported when read, as in a file), its
  ``type`` and ``id`` for SQL, and the marker (``txn``) of the append that wrote it,
  which settles an append whose commit reply was lost. The primary key
  ``(transcript, seq)`` is the index every read walks, from either end.

The version lives in ``transcript_schema_version`` so that these tables migrate on their
own, independently of the sessions' schema. Never edit a released step: append one.
"""

from __future__ import annotations

from typing import Any

from flatstate.backends.postgres.schema import run_migrations

__all__ = ["TRANSCRIPT_SCHEMA_VERSION", "TranscriptQueries", "migrate_transcripts"]

MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE {s}.transcripts (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            ns text NOT NULL,
            name text NOT NULL,
            session_id text NOT NULL,
            lines bigint NOT NULL DEFAULT 0,
            leaf text,
            archived_at bigint,
            UNIQUE (ns, name)
        ) WITH (fillfactor = 70)""",
        # lines and leaf change on every append and are not indexed: the update is HOT.
        """CREATE TABLE {s}.transcript_lines (
            transcript bigint NOT NULL REFERENCES {s}.transcripts (id) ON DELETE CASCADE,
            seq bigint NOT NULL,
            type text,
            entry_id text,
            txn bigint,
            line text NOT NULL,
            PRIMARY KEY (transcript, seq)
        )""",
    ),
]
TRANSCRIPT_SCHEMA_VERSION = len(MIGRATIONS)


def migrate_transcripts(conn: Any, schema: str, *, readonly: bool, location: str) -> None:
    """Create or upgrade the transcript tables of ``schema`` (their own version table)."""
    run_migrations(
        conn,
        schema,
        MIGRATIONS,
        table="transcript_schema_version",
        readonly=readonly,
        location=location,
    )


class TranscriptQueries:
    """Every transcript statement, with the schema filled in once."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        head = f"SELECT id FROM {s}.transcripts WHERE ns = %s AND name = %s"
        self.settings = (
            "SELECT set_config('lock_timeout', %s, true), set_config('synchronous_commit', "
            "coalesce(%s, current_setting('synchronous_commit')), true)"
        )
        # Created in name order, locked in name order: two hosts' batches never deadlock.
        self.create = (
            f"INSERT INTO {s}.transcripts (ns, name, session_id) "
            "SELECT %s, n, sid FROM unnest(%s::text[], %s::text[]) AS u(n, sid) ORDER BY n "
            "ON CONFLICT (ns, name) DO NOTHING"
        )
        self.lock = (
            f"SELECT id, name, lines, leaf FROM {s}.transcripts "
            "WHERE ns = %s AND name = ANY(%s::text[]) ORDER BY name FOR UPDATE"
        )
        self.lock_ids = f"SELECT id FROM {s}.transcripts WHERE id = ANY(%s::bigint[]) FOR UPDATE"
        # The rows as one JSON array of [transcript, seq, type, id, line]: one parameter,
        # escaped by msgspec and quoted once, where arrays would be escaped value by value.
        self.insert = (
            f"INSERT INTO {s}.transcript_lines (transcript, seq, type, entry_id, txn, line) "
            "SELECT (r->>0)::bigint, (r->>1)::bigint, r->>2, r->>3, %s, r->>4 "
            "FROM json_array_elements(%s::json) AS r"
        )
        self.set_head = f"UPDATE {s}.transcripts SET lines = %s, leaf = %s WHERE id = %s"
        self.committed = (
            f"SELECT EXISTS (SELECT 1 FROM {s}.transcript_lines "
            "WHERE transcript = %s AND seq >= %s AND txn = %s)"
        )
        self.tail = (
            f"SELECT seq, line FROM {s}.transcript_lines WHERE transcript = ({head}) "
            "ORDER BY seq DESC LIMIT %s"
        )
        self.newer = (
            f"SELECT t.id, t.lines, l.seq, l.line FROM {s}.transcripts t LEFT JOIN LATERAL "
            f"(SELECT seq, line FROM {s}.transcript_lines WHERE transcript = t.id AND seq >= %s "
            "ORDER BY seq LIMIT %s) l ON true WHERE t.ns = %s AND t.name = %s ORDER BY l.seq"
        )
        self.before = (
            f"SELECT seq, line FROM {s}.transcript_lines WHERE transcript = %s AND seq < %s "
            "ORDER BY seq DESC LIMIT %s"
        )
        self.after = (
            f"SELECT seq, line FROM {s}.transcript_lines WHERE transcript = %s AND seq > %s "
            "ORDER BY seq LIMIT %s"
        )
        self.head = f"SELECT id, lines, leaf FROM {s}.transcripts WHERE ns = %s AND name = %s"
        self.archive = (
            f"UPDATE {s}.transcripts SET name = %s, archived_at = %s "
            "WHERE ns = %s AND name = %s AND lines > 0 RETURNING id"
        )
        self.listing = (
            f"SELECT name, session_id, lines, archived_at FROM {s}.transcripts "
            "WHERE ns = %s ORDER BY name"
        )
        self.usage = (
            f"SELECT count(DISTINCT t.id), coalesce(sum(octet_length(l.line) + 1), 0) "
            f"FROM {s}.transcripts t LEFT JOIN {s}.transcript_lines l ON l.transcript = t.id "
            "WHERE t.ns = %s"
        )
        self.copy = f"COPY {s}.transcript_lines (transcript, seq, type, entry_id, line) FROM STDIN"
