"""The PostgreSQL schema of :mod:`flatstate.backends.postgres.backend`, as numbered migrations.

Every table carries ``ns`` (the namespace, by default the agent id), so many
agents, or many gateways, share one database and one schema. ``{s}`` in the
statements below is the schema's quoted name and ``{schema}`` its name as a
SQL string literal; :func:`statements` fills both in.

The change log is kept by a trigger, not by flatstate's own statements, so
that a change made by any program (``psql``, a script) is logged, numbered
and announced exactly like one of ours:

- ``namespaces.seq`` counts the changes of a namespace (the change log's
  *position*). The trigger increments it, which takes that row's lock until
  the transaction ends: the positions of a namespace are handed out one
  transaction at a time, in commit order and without gaps (a rolled-back
  transaction gives its numbers back). A reader that has seen position
  ``p`` and finds ``p + 1`` next in the log has missed nothing. A sequence
  would not do: its numbers are handed out before commit, so a reader could
  see ``p + 2`` committed while ``p + 1`` is still in flight, skip it and
  never come back.
- ``changes`` maps each position to the key it changed, and to the marker of
  the flatstate write that made it (``txn``), which settles a commit whose
  reply was lost.
- ``sessions.version`` is the position of the row's last change: a per-row
  version that a writer checks (``put``/``remove`` below) so that a change
  made by a program outside flatstate's namespace lock is never overwritten
  unseen.
- ``pg_notify`` on the namespace's channel (``namespaces.channel``), with the
  position as payload, is delivered to every listening process when the
  transaction commits.

Never edit a released step: append a new one.
"""

from __future__ import annotations

__all__ = [
    "CONFLICT_SQLSTATE",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STALE_SQLSTATE",
    "channel_name",
    "migrate",
    "statements",
]

import hashlib
from collections.abc import Sequence
from typing import Any

from flatstate._schema import needs_migration

# Raised by put() and remove() when the row is not at the version the writer based its
# change on (a custom SQLSTATE: class "AS" is not used by PostgreSQL).
CONFLICT_SQLSTATE = "AS409"
# Raised by begin_write_at() when the log's head is not where the writer's view was.
STALE_SQLSTATE = "AS412"

MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE {s}.namespaces (
            ns text PRIMARY KEY,
            seq bigint NOT NULL DEFAULT 0,
            channel text NOT NULL
        )""",
        """CREATE TABLE {s}.sessions (
            ns text NOT NULL,
            key text NOT NULL,
            session_id text NOT NULL,
            updated_at bigint,
            version bigint NOT NULL DEFAULT 0,
            entry json NOT NULL,
            blobs jsonb,
            PRIMARY KEY (ns, key)
        ) WITH (fillfactor = 80)""",
        # No index on updated_at: nothing here queries by it, and with every column a
        # patch changes left unindexed, the update is HOT (no index entry rewritten) and
        # fillfactor leaves the room on the page for it.
        """CREATE TABLE {s}.blobs (
            ns text NOT NULL,
            hash text NOT NULL,
            value json NOT NULL,
            PRIMARY KEY (ns, hash)
        )""",
        """CREATE TABLE {s}.changes (
            ns text NOT NULL,
            seq bigint NOT NULL,
            key text NOT NULL,
            txn bigint,
            PRIMARY KEY (ns, seq)
        )""",
        # The channel of a namespace: LISTEN takes an identifier of at most 63 bytes, and a
        # namespace may be any text, so the channel is named by a hash of schema and namespace.
        """CREATE FUNCTION {s}.channel(p_ns text) RETURNS text
            LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT 'flatstate_' || left(encode(sha256(convert_to({schema} || '/' || p_ns,
                'UTF8')), 'hex'), 32)
        $$""",
        # The writers' lock of a namespace. flatstate takes it for every write transaction;
        # a program that writes sessions by hand may take it too, and is then serialized
        # with flatstate exactly like another flatstate process.
        """CREATE FUNCTION {s}.lock(p_ns text) RETURNS void LANGUAGE sql AS $$
            SELECT pg_advisory_xact_lock(hashtextextended({schema} || '/' || p_ns, 0))
        $$""",
        """CREATE FUNCTION {s}.log_change(p_ns text, p_key text) RETURNS bigint
            LANGUAGE plpgsql AS $$
        DECLARE
            pos bigint;
            chan text;
        BEGIN
            UPDATE {s}.namespaces SET seq = seq + 1 WHERE ns = p_ns
                RETURNING seq, channel INTO pos, chan;
            IF NOT FOUND THEN
                INSERT INTO {s}.namespaces AS n (ns, seq, channel)
                    VALUES (p_ns, 1, {s}.channel(p_ns))
                    ON CONFLICT (ns) DO UPDATE SET seq = n.seq + 1
                    RETURNING n.seq, n.channel INTO pos, chan;
            END IF;
            INSERT INTO {s}.changes (ns, seq, key, txn)
                VALUES (p_ns, pos, p_key,
                        nullif(current_setting('flatstate.txn', true), '')::bigint);
            PERFORM pg_notify(chan, pos::text);
            RETURN pos;
        END
        $$""",
        # BEFORE, so that the row's version is the position of the change that wrote it.
        """CREATE FUNCTION {s}.sessions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                PERFORM {s}.log_change(OLD.ns, OLD.key);
                RETURN OLD;
            END IF;
            IF TG_OP = 'UPDATE' AND (OLD.ns <> NEW.ns OR OLD.key <> NEW.key) THEN
                PERFORM {s}.log_change(OLD.ns, OLD.key);
            END IF;
            NEW.version := {s}.log_change(NEW.ns, NEW.key);
            RETURN NEW;
        END
        $$""",
        """CREATE TRIGGER sessions_changed BEFORE INSERT OR UPDATE OR DELETE ON {s}.sessions
            FOR EACH ROW EXECUTE FUNCTION {s}.sessions_changed()""",
        # Starts a write: lock timeout, durability, the writer's marker (logged with each
        # change, it tells after a lost connection whether the commit happened), the
        # namespace lock, and then (a new snapshot per statement, READ COMMITTED) the head
        # of the log as it is under the lock.
        """CREATE FUNCTION {s}.begin_write(p_ns text, p_lock_timeout text, p_synchronous text,
                p_marker bigint) RETURNS bigint LANGUAGE plpgsql AS $$
        BEGIN
            -- One statement for the settings (each costs an executor run); the lock after.
            PERFORM set_config('lock_timeout', p_lock_timeout, true),
                set_config('flatstate.txn', p_marker::text, true),
                set_config('synchronous_commit',
                           coalesce(p_synchronous, current_setting('synchronous_commit')), true);
            PERFORM {s}.lock(p_ns);
            RETURN coalesce((SELECT n.seq FROM {s}.namespaces n WHERE n.ns = p_ns), 0);
        END
        $$""",
        # Writes a row if it is still at p_expected: a version, 0 for "absent", NULL for
        # "unknown" (write whatever is there). Returns the new version (its log position).
        """CREATE FUNCTION {s}.put(p_ns text, p_key text, p_session_id text,
                p_updated_at bigint, p_entry json, p_blobs jsonb, p_expected bigint)
            RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            v bigint;
        BEGIN
            IF p_expected IS DISTINCT FROM 0 THEN
                UPDATE {s}.sessions SET session_id = p_session_id, updated_at = p_updated_at,
                        entry = p_entry, blobs = p_blobs
                    WHERE ns = p_ns AND key = p_key
                        AND (p_expected IS NULL OR version = p_expected)
                    RETURNING version INTO v;
                IF FOUND THEN
                    RETURN v;
                END IF;
                IF p_expected IS NOT NULL THEN
                    RAISE EXCEPTION 'session % is no longer at version %', p_key, p_expected
                        USING ERRCODE = 'AS409';
                END IF;
            END IF;
            INSERT INTO {s}.sessions (ns, key, session_id, updated_at, entry, blobs)
                VALUES (p_ns, p_key, p_session_id, p_updated_at, p_entry, p_blobs)
                ON CONFLICT (ns, key) DO NOTHING
                RETURNING version INTO v;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'session % was created by another writer', p_key
                    USING ERRCODE = 'AS409';
            END IF;
            RETURN v;
        END
        $$""",
        # Deletes a row if it is still at p_expected; returns the log position of the
        # delete, or NULL when there was nothing to delete.
        """CREATE FUNCTION {s}.remove(p_ns text, p_key text, p_expected bigint)
            RETURNS bigint LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM {s}.sessions WHERE ns = p_ns AND key = p_key
                AND (p_expected IS NULL OR version = p_expected);
            IF FOUND THEN
                RETURN (SELECT n.seq FROM {s}.namespaces n WHERE n.ns = p_ns);
            END IF;
            IF p_expected IS NOT NULL
                    AND EXISTS (SELECT 1 FROM {s}.sessions WHERE ns = p_ns AND key = p_key) THEN
                RAISE EXCEPTION 'session % is no longer at version %', p_key, p_expected
                    USING ERRCODE = 'AS409';
            END IF;
            RETURN NULL;
        END
        $$""",
    ),
    (
        # A session's JSON is ~10 KiB, which PostgreSQL compresses on every patch: pglz
        # (the default) took ~120 us of each put's ~190 here, lz4 a few. Only where the
        # server was built with lz4 (PostgreSQL 14 on; Debian's is): elsewhere nothing
        # changes. Values already stored keep their compression until rewritten.
        """DO $$
        BEGIN
            EXECUTE 'ALTER TABLE {s}.sessions ALTER COLUMN entry SET COMPRESSION lz4';
            EXECUTE 'ALTER TABLE {s}.blobs ALTER COLUMN value SET COMPRESSION lz4';
        EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
            NULL;
        END
        $$""",
    ),
    (
        # begin_write, for a write already run on the store's view: it goes on only if the
        # log's head under the lock is still where that view was, so that the lock, the
        # check and the rows travel in one round trip; otherwise nothing is written.
        """CREATE FUNCTION {s}.begin_write_at(p_ns text, p_lock_timeout text,
                p_synchronous text, p_marker bigint, p_expected bigint)
            RETURNS bigint LANGUAGE plpgsql AS $$
        DECLARE
            head bigint := {s}.begin_write(p_ns, p_lock_timeout, p_synchronous, p_marker);
        BEGIN
            IF head <> p_expected THEN
                RAISE EXCEPTION 'namespace % moved on from position % to %',
                    p_ns, p_expected, head USING ERRCODE = 'AS412';
            END IF;
            RETURN head;
        END
        $$""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


def statements(step: tuple[str, ...], schema: str) -> list[str]:
    """The statements of one migration step for ``schema`` (a validated identifier)."""
    quoted = '"' + schema + '"'
    literal = "'" + schema + "'"
    return [text.replace("{s}", quoted).replace("{schema}", literal) for text in step]


def channel_name(schema: str, namespace: str) -> str:
    """The LISTEN channel of a namespace; the same as the SQL function ``channel``."""
    digest = hashlib.sha256(f"{schema}/{namespace}".encode()).hexdigest()
    return "flatstate_" + digest[:32]


def table_version(conn: Any, schema: str, table: str) -> int:
    """The version that the version table ``table`` of ``schema`` records (0: none yet)."""
    qualified = f'"{schema}".{table}'
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
    if not row or not row[0]:
        return 0
    found = conn.execute(f"SELECT max(version) FROM {qualified}").fetchone()
    return int(found[0] or 0) if found else 0


def run_migrations(
    conn: Any,
    schema: str,
    migrations: Sequence[tuple[str, ...]],
    *,
    table: str,
    readonly: bool,
    location: str,
) -> None:
    """Bring one set of flatstate's tables in ``schema`` (sessions, transcripts, facts, auth;
    each with its version table ``table``) to ``len(migrations)`` in one transaction,
    serialized with every other migration of the schema by one advisory lock; a read-only
    caller only checks the version."""
    latest = len(migrations)
    found = table_version(conn, schema, table)
    if not needs_migration(location, found, latest, readonly=readonly):
        return
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"flatstate-migrate/{schema}",),
        )
        version = table_version(conn, schema, table)  # again, under the lock
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{schema}".{table} (version integer NOT NULL)')
        for step in migrations[version:]:
            for statement in statements(step, schema):
                conn.execute(statement.encode())
        if version < latest:
            conn.execute(f'DELETE FROM "{schema}".{table}')
            conn.execute(f'INSERT INTO "{schema}".{table} (version) VALUES (%s)', (latest,))


def migrate(conn: Any, schema: str, *, readonly: bool, location: str) -> None:
    """Create or upgrade the session tables of ``schema`` to SCHEMA_VERSION."""
    run_migrations(
        conn, schema, MIGRATIONS, table="schema_version", readonly=readonly, location=location
    )
