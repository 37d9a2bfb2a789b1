"""The facts tables on PostgreSQL, their migrations, and the pgvector check.

They live in the same PostgreSQL schema as the sessions (``flatstate`` unless
told otherwise) with a version of their own (``facts_schema_version``), so
the two migrate independently. ``{s}`` in the statements is the schema's
quoted name (filled in by :func:`flatstate.backends.postgres.schema.statements`).

- ``facts``: the columns of SQLite's ``facts`` table plus ``ns``, the
  namespace (the agent id unless told otherwise): every agent's facts share
  the table and never meet. ``seq`` is an identity column the counters and
  vectors hang off; ``search`` is a generated ``tsvector`` of entity
  (weight A), key (B), text and value (C) and category (D), so the index
  follows every change, whoever makes it (flatstate, ``psql``, a script), as
  SQLite's triggers make FTS5 follow. It also holds one lexeme naming the
  namespace (:func:`namespace_lexeme`), so that the GIN index alone finds a
  word among one namespace's facts, however many other namespaces share the
  table. A partial GIN index holds only the facts that are not superseded,
  as FTS5 does on SQLite.
- ``fact_access``: the access counters, in a narrow table (see ``access``),
  dropped with their fact by a trigger.
- ``fact_vectors``: one embedding (``real[]``, unit length) per fact and its
  model. A plain array, not pgvector's ``vector`` type: the tables must exist
  (and stay writable) on a server without the extension; searching casts to
  ``vector`` and needs it (an exact scan, as sqlite-vec's on SQLite).

Text search: ``facts_fold`` lowers, decomposes (NFKD) and strips combining
marks (so "Café" and "cafe" meet, as unicode61's ``remove_diacritics``
makes them), and turns punctuation and symbols into spaces (so "fly.io" is
the two words a prompt's "fly.io" gives, not one host name). The
configuration ``facts_search`` is PostgreSQL's default parser with the
Snowball English stemmer and no stopword list: a prompt's words are
searched as written, stopwords included when that is all there is, as on
SQLite. The database must use UTF-8 (``normalize`` needs it).
"""

from __future__ import annotations

import hashlib
from typing import Any

from flatstate.backends.postgres.schema import run_migrations, table_version
from flatstate.errors import VectorsUnavailable

__all__ = [
    "MARKS",
    "MIGRATIONS",
    "PUNCTUATION",
    "SCHEMA_VERSION",
    "check_pgvector",
    "migrate",
    "namespace_lexeme",
    "schema_version",
]

# Combining marks (diacritics once decomposed) and punctuation or symbols, as
# PostgreSQL regular-expression brackets (the LangGraph store folds its text with them too).
MARKS = r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
PUNCTUATION = (
    r"[\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e\u00a0-\u00bf\u00d7\u00f7\u2000-\u206f"
    r"\u2190-\u2bff\u2e00-\u2e7f\u3000-\u303f\ufe30-\ufe4f\U0001f000-\U0001faff]"
)
_CONFIG = "'{s}.facts_search'::regconfig"


def _vector_of(column: str, weight: str) -> str:
    return f"setweight(to_tsvector({_CONFIG}, {{s}}.facts_fold({column})), '{weight}')"


MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TEXT SEARCH DICTIONARY {s}.facts_stem (TEMPLATE = snowball, Language = english)",
        "CREATE TEXT SEARCH CONFIGURATION {s}.facts_search (PARSER = pg_catalog.default)",
        "ALTER TEXT SEARCH CONFIGURATION {s}.facts_search ADD MAPPING FOR asciiword, word, "
        "numword, asciihword, hword, numhword, hword_asciipart, hword_part, hword_numpart, "
        "int, uint, float, sfloat, version WITH {s}.facts_stem",
        f"""CREATE FUNCTION {{s}}.facts_fold(p text) RETURNS text
            LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
            SELECT regexp_replace(regexp_replace(normalize(lower(p), NFKD),
                '{MARKS}', '', 'g'), '{PUNCTUATION}', ' ', 'g')
        $$""",
        f"""CREATE TABLE {{s}}.facts (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            ns text NOT NULL,
            id text COLLATE "C" NOT NULL UNIQUE,
            text text NOT NULL,
            why text,
            category text NOT NULL DEFAULT 'other',
            importance double precision NOT NULL DEFAULT 0.5,
            entity text,
            key text,
            value text,
            source text,
            created_at bigint NOT NULL,
            decay_class text NOT NULL DEFAULT 'normal',
            expires_at bigint,
            last_confirmed_at bigint,
            confidence double precision NOT NULL DEFAULT 1.0,
            normalized_hash text NOT NULL,
            superseded_at bigint,
            superseded_by text,
            tags text,
            scope text NOT NULL DEFAULT 'global',
            scope_target text,
            session_key text,
            entry_id text,
            decayed_at bigint,
            search tsvector GENERATED ALWAYS AS (
                {_vector_of("coalesce(entity, '')", "A")}
                || {_vector_of("coalesce(key, '')", "B")}
                || {_vector_of("text || ' ' || coalesce(value, '')", "C")}
                || {_vector_of("category", "D")}
                || array_to_tsvector(ARRAY['ns' || md5(ns)])
            ) STORED
        )""",
        # Few indexes, as on SQLite: each is another page written per add.
        "CREATE INDEX facts_hash ON {s}.facts (ns, normalized_hash)",
        "CREATE INDEX facts_ns_seq ON {s}.facts (ns, seq)",
        # count() reads this narrow index rather than the wide rows.
        "CREATE INDEX facts_live ON {s}.facts (ns, expires_at) WHERE superseded_at IS NULL",
        """CREATE INDEX facts_entity ON {s}.facts (ns, lower(entity), lower(key))
            WHERE entity IS NOT NULL""",
        # New entries wait in a pending list that every search reads in full until a
        # vacuum (or the list's limit) merges them: 256 kB (a few hundred facts) rather
        # than the default 4 MB bounds that read. Without the list (fastupdate off) adds
        # were four times slower here.
        """CREATE INDEX facts_search ON {s}.facts USING gin (search)
            WITH (gin_pending_list_limit = 256) WHERE superseded_at IS NULL""",
        # No foreign key: its check would lock (and so write) every recalled fact's row
        # on each batch of counters. A trigger drops a deleted fact's counters instead.
        # Room on each page (fillfactor) lets a counter's update stay on its page without
        # a new index entry (a HOT update).
        """CREATE TABLE {s}.fact_access (
            seq bigint PRIMARY KEY,
            recall_count bigint NOT NULL DEFAULT 0,
            last_accessed_at bigint
        ) WITH (fillfactor = 70)""",
        """CREATE FUNCTION {s}.facts_access_gone() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM {s}.fact_access WHERE seq = OLD.seq;
            RETURN NULL;
        END
        $$""",
        """CREATE TRIGGER facts_access_gone AFTER DELETE ON {s}.facts
            FOR EACH ROW EXECUTE FUNCTION {s}.facts_access_gone()""",
        """CREATE TABLE {s}.fact_vectors (
            seq bigint PRIMARY KEY REFERENCES {s}.facts (seq) ON DELETE CASCADE,
            ns text NOT NULL,
            model text NOT NULL,
            embedding real[] NOT NULL
        )""",
        "CREATE INDEX fact_vectors_model ON {s}.fact_vectors (ns, model)",
        # A changed text makes its embedding wrong (embed_missing() redoes it), and
        # a superseded fact is never searched or deduplicated against.
        """CREATE FUNCTION {s}.facts_vector_stale() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.superseded_at IS NOT NULL OR NEW.text IS DISTINCT FROM OLD.text THEN
                DELETE FROM {s}.fact_vectors WHERE seq = OLD.seq;
            END IF;
            RETURN NULL;
        END
        $$""",
        """CREATE TRIGGER facts_vector_stale AFTER UPDATE OF text, superseded_at ON {s}.facts
            FOR EACH ROW EXECUTE FUNCTION {s}.facts_vector_stale()""",
    ),
    (
        # An id is unique within its namespace, not the schema: `flatstate copy` keeps ids,
        # so one state copied into two namespaces holds each id twice. Every query by id
        # names its namespace.
        "ALTER TABLE {s}.facts DROP CONSTRAINT facts_id_key",
        "ALTER TABLE {s}.facts ADD CONSTRAINT facts_ns_id_key UNIQUE (ns, id)",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)
VERSION_TABLE = "facts_schema_version"


def namespace_lexeme(namespace: str) -> str:
    """The lexeme every fact of ``namespace`` carries in ``search`` (the SQL
    ``'ns' || md5(ns)``): letters and digits only, so also a safe tsquery."""
    return "ns" + hashlib.md5(namespace.encode(), usedforsecurity=False).hexdigest()


def schema_version(conn: Any, schema: str) -> int:
    """The version of the facts tables in ``schema`` (0: not created yet)."""
    return table_version(conn, schema, VERSION_TABLE)


def migrate(conn: Any, schema: str, *, readonly: bool, create: bool, location: str) -> None:
    """Create or upgrade the facts tables in one transaction, serialized across processes
    by the advisory lock the sessions' migration takes too.

    Raises FileNotFoundError when there are none and ``create`` is False (or
    ``readonly``), StoreCorrupt for a newer version, ReadOnlyStore for an older
    one opened read-only.
    """
    found = schema_version(conn, schema)
    if found == 0 and (readonly or not create):
        raise FileNotFoundError(
            f"{location}: no facts in this database yet. Add a fact first "
            "(flatstate facts add), or check the URL's database and schema."
        )
    run_migrations(
        conn, schema, MIGRATIONS, table=VERSION_TABLE, readonly=readonly, location=location
    )


def _install_hint(conn: Any, without: str) -> str:
    major = int(conn.info.server_version) // 10000
    return (
        f"Install pgvector on the database server (Debian/Ubuntu: apt-get install "
        f"postgresql-{major}-pgvector; elsewhere see https://github.com/pgvector/pgvector), "
        "then run CREATE EXTENSION vector; in this database as a role allowed to, "
        f"or {without}"
    )


def check_pgvector(
    conn: Any, *, readonly: bool, without: str = "open the facts without embed="
) -> str:
    """The version of pgvector in this database, creating the extension when the server has
    it and the role may; else VectorsUnavailable naming the extension and how to get it
    (``without``: how to do without vectors, the last words of the fix)."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row:
        return str(row[0])
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    if not available:
        raise VectorsUnavailable(
            'the PostgreSQL server has no pgvector extension ("vector" is not in '
            "pg_available_extensions)",
            fix=_install_hint(conn, without),
        )
    if readonly:
        raise VectorsUnavailable(
            "pgvector is on the server but not created in this database, and the facts "
            "were opened read-only",
            fix="Run CREATE EXTENSION vector; in this database, or open the facts once "
            "without readonly",
        )
    import psycopg

    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege as exc:
        raise VectorsUnavailable(
            "pgvector is on the server but this role may not create it in this database",
            fix="Have a superuser (or the database owner) run CREATE EXTENSION vector;",
        ) from exc
    return check_pgvector(conn, readonly=True, without=without)
