"""The facts database on disk: its schema, its migrations, and how it is opened.

Schema (version 1), in ``<state_dir>/facts.sqlite``:

- ``facts``: one row per fact. ``seq`` is the integer rowid the full-text
  index, the counters and the vectors hang off; ``id`` is the fact's public,
  stable UUID. ``decayed_at`` (when confidence was last halved) is
  bookkeeping for ``decay()`` and not part of :class:`~flatstate.facts.Fact`.
- ``fact_access``: ``recall_count`` and ``last_accessed_at`` of the facts
  that were ever recalled, in a narrow table of their own (see ``access``).
- ``facts_fts``: FTS5 (porter stemming over unicode61) over text, category,
  entity, key and value, an external-content index of the facts that are not
  superseded.
- ``fact_vectors``: one embedding per fact that is not superseded (float32,
  unit length) and the name of the model that made it, for the optional
  vector search.
- ``schema_version``: the version, migrated in place on open.

The index and the vectors are kept in step by triggers rather than by
statements in our write path: a trigger runs inside whatever transaction
changes the row, whoever makes it (flatstate, the ``sqlite3`` shell, a
script), so the index can never drift from the table. The update trigger
fires only when an indexed column changes, so bumping access counters on
every recall never touches the index.

``fact_vectors`` is a plain table, not a sqlite-vec ``vec0`` virtual table:
a trigger that named a ``vec0`` table would fail in every connection without
the extension loaded, and this database must stay writable by a process
(or a CLI) that has no vectors. sqlite-vec's distance functions scan it.
"""

from __future__ import annotations

import sqlite3
from types import ModuleType

from flatstate import _sqlite

__all__ = ["DB_FILENAME", "MIGRATIONS", "SCHEMA_VERSION", "WHAT", "connect"]

DB_FILENAME = "facts.sqlite"

# Each migration moves the schema from version i to i + 1 inside one
# transaction. Never edit a released step: append a new one.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        # seq is declared, not the implicit rowid: VACUUM may renumber an
        # implicit rowid, and the index and the vectors are keyed by it.
        """CREATE TABLE facts (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            text TEXT NOT NULL,
            why TEXT,
            category TEXT NOT NULL DEFAULT 'other',
            importance REAL NOT NULL DEFAULT 0.5,
            entity TEXT,
            key TEXT,
            value TEXT,
            source TEXT,
            created_at INTEGER NOT NULL,
            decay_class TEXT NOT NULL DEFAULT 'normal',
            expires_at INTEGER,
            last_confirmed_at INTEGER,
            confidence REAL NOT NULL DEFAULT 1.0,
            normalized_hash TEXT NOT NULL,
            superseded_at INTEGER,
            superseded_by TEXT,
            tags TEXT,
            scope TEXT NOT NULL DEFAULT 'global',
            scope_target TEXT,
            session_key TEXT,
            entry_id TEXT,
            decayed_at INTEGER
        )""",
        # Few indexes on purpose: each one is another page written per add.
        # "Newest" is seq order, so no index on created_at.
        "CREATE INDEX facts_hash ON facts (normalized_hash)",
        # count() reads only this narrow index, not the wide rows: at 100k facts
        # a scan of the table took 37 ms, and the after-compaction hook counts.
        "CREATE INDEX facts_live ON facts (superseded_at, expires_at)",
        """CREATE INDEX facts_entity ON facts (entity COLLATE NOCASE, key COLLATE NOCASE)
            WHERE entity IS NOT NULL""",
        """CREATE VIRTUAL TABLE facts_fts USING fts5(
            text, category, entity, key, value,
            content='facts', content_rowid='seq', tokenize='porter unicode61'
        )""",
        # Only facts that are not superseded are indexed: recall never wants the
        # others, and this way they cost it nothing however many pile up.
        """CREATE TRIGGER facts_fts_insert AFTER INSERT ON facts
            WHEN new.superseded_at IS NULL BEGIN
            INSERT INTO facts_fts (rowid, text, category, entity, key, value)
            VALUES (new.seq, new.text, new.category, new.entity, new.key, new.value);
        END""",
        """CREATE TRIGGER facts_fts_delete AFTER DELETE ON facts
            WHEN old.superseded_at IS NULL BEGIN
            INSERT INTO facts_fts (facts_fts, rowid, text, category, entity, key, value)
            VALUES ('delete', old.seq, old.text, old.category, old.entity, old.key, old.value);
        END""",
        # An external-content index must be told the old values to remove them.
        """CREATE TRIGGER facts_fts_update
            AFTER UPDATE OF seq, text, category, entity, key, value, superseded_at ON facts BEGIN
            INSERT INTO facts_fts (facts_fts, rowid, text, category, entity, key, value)
            SELECT 'delete', old.seq, old.text, old.category, old.entity, old.key, old.value
            WHERE old.superseded_at IS NULL;
            INSERT INTO facts_fts (rowid, text, category, entity, key, value)
            SELECT new.seq, new.text, new.category, new.entity, new.key, new.value
            WHERE new.superseded_at IS NULL;
        END""",
        # Access counters apart from the wide rows: see access.py.
        """CREATE TABLE fact_access (
            seq INTEGER PRIMARY KEY,
            recall_count INTEGER NOT NULL DEFAULT 0,
            last_accessed_at INTEGER
        )""",
        """CREATE TRIGGER fact_access_delete AFTER DELETE ON facts BEGIN
            DELETE FROM fact_access WHERE seq = old.seq;
        END""",
        """CREATE TABLE fact_vectors (
            seq INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            embedding BLOB NOT NULL
        )""",
        """CREATE TRIGGER fact_vectors_delete AFTER DELETE ON facts BEGIN
            DELETE FROM fact_vectors WHERE seq = old.seq;
        END""",
        # A changed text makes its embedding wrong (embed_missing() redoes it), and
        # a superseded fact is never searched or deduplicated against.
        """CREATE TRIGGER fact_vectors_stale AFTER UPDATE OF seq, text, superseded_at ON facts
            WHEN new.superseded_at IS NOT NULL OR new.text IS NOT old.text
                OR new.seq IS NOT old.seq BEGIN
            DELETE FROM fact_vectors WHERE seq = old.seq;
        END""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

# The page cache: large enough for the FTS index's hot pages at 100k facts.
PAGE_CACHE_KIB = 16384
WHAT = "facts database"


def connect(
    path: str,
    *,
    driver: ModuleType = sqlite3,
    lock_timeout: float,
    readonly: bool,
    create: bool,
    synchronous: str,
) -> sqlite3.Connection:
    """Open ``path`` (creating it 0600 in a 0700 directory if allowed) and migrate its schema.

    Raises StoreCorrupt, naming the file and how to inspect it, when the file
    is not a facts database; the file is never replaced.
    """
    missing = None
    if readonly or not create:
        missing = (
            f"{path}: no facts database here. Add a fact first "
            "(flatstate facts add), or pass the right --store."
        )
    conn: sqlite3.Connection = _sqlite.connect(
        path,
        MIGRATIONS,
        what=WHAT,
        lock_timeout=lock_timeout,
        readonly=readonly,
        synchronous=synchronous,
        page_cache_kib=PAGE_CACHE_KIB,
        driver=driver,
        missing=missing,
    )
    return conn
