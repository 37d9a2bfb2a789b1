"""The PostgreSQL tables of :mod:`flatstate.auth.postgres`, their migrations and statements.

The auth tables share the schema of the sessions' (``flatstate`` by default)
and keep a version of their own, ``auth_schema_version``, so that either can
change without the other. ``{s}`` in the statements is the schema's quoted
name; :func:`~flatstate.backends.postgres.schema.statements` fills it in.
Never edit a released step: append a new one.
"""

from __future__ import annotations

from typing import Any

from flatstate.backends.postgres.schema import run_migrations

__all__ = ["AUTH_SCHEMA_VERSION", "BEGIN_WRITE", "MIGRATIONS", "Queries", "migrate"]

MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE SEQUENCE {s}.auth_versions",
        """CREATE TABLE {s}.auth_stores (
            ns text PRIMARY KEY,
            version bigint NOT NULL DEFAULT nextval('{s}.auth_versions'),
            doc json NOT NULL DEFAULT '{"version": 1}'
        )""",
        """CREATE TABLE {s}.auth_profiles (
            ns text NOT NULL,
            profile_id text NOT NULL,
            profile_pos bigint,
            credential json,
            stats_pos bigint,
            stats json,
            PRIMARY KEY (ns, profile_id),
            CHECK ((credential IS NULL) = (profile_pos IS NULL)),
            CHECK ((stats IS NULL) = (stats_pos IS NULL)),
            CHECK (credential IS NOT NULL OR stats IS NOT NULL)
        )""",
        """CREATE TABLE {s}.auth_refresh_claims (
            ns text NOT NULL,
            profile_id text NOT NULL,
            claimant text NOT NULL,
            tokens text NOT NULL,
            until timestamptz NOT NULL,
            PRIMARY KEY (ns, profile_id)
        )""",
        # Any change of a profile row, by anyone, gives its namespace a new version.
        """CREATE FUNCTION {s}.auth_profiles_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {s}.auth_stores AS a (ns)
                VALUES (CASE WHEN TG_OP = 'DELETE' THEN OLD.ns ELSE NEW.ns END)
                ON CONFLICT (ns) DO UPDATE SET version = nextval('{s}.auth_versions');
            IF TG_OP = 'UPDATE' AND OLD.ns <> NEW.ns THEN
                UPDATE {s}.auth_stores SET version = nextval('{s}.auth_versions')
                    WHERE ns = OLD.ns;
            END IF;
            RETURN NULL;
        END
        $$""",
        """CREATE TRIGGER auth_profiles_changed
            AFTER INSERT OR UPDATE OR DELETE ON {s}.auth_profiles
            FOR EACH ROW EXECUTE FUNCTION {s}.auth_profiles_changed()""",
        # A change of the document row itself (json has no equality: compare the text).
        """CREATE FUNCTION {s}.auth_stores_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.doc::text IS DISTINCT FROM OLD.doc::text THEN
                NEW.version := nextval('{s}.auth_versions');
            END IF;
            RETURN NEW;
        END
        $$""",
        """CREATE TRIGGER auth_stores_changed BEFORE UPDATE ON {s}.auth_stores
            FOR EACH ROW EXECUTE FUNCTION {s}.auth_stores_changed()""",
    ),
]
AUTH_SCHEMA_VERSION = len(MIGRATIONS)

LOAD = """SELECT NULL::text, version, doc::text, NULL::bigint, NULL::text, NULL::bigint, NULL::text
        FROM {s}.auth_stores WHERE ns = %(ns)s
    UNION ALL
    SELECT profile_id, NULL, NULL, profile_pos, credential::text, stats_pos, stats::text
        FROM {s}.auth_profiles WHERE ns = %(ns)s"""
VERSION = "SELECT version FROM {s}.auth_stores WHERE ns = %s"
BEGIN_WRITE = (
    "SELECT pg_current_xact_id()::text, set_config('lock_timeout', %s, true), "
    "pg_advisory_xact_lock(hashtextextended(%s, 0))"
)
UPSERT_PROFILE = """INSERT INTO {s}.auth_profiles AS p
        (ns, profile_id, profile_pos, credential, stats_pos, stats)
    VALUES (%s, %s, %s, %s::json, %s, %s::json)
    ON CONFLICT (ns, profile_id) DO UPDATE SET profile_pos = EXCLUDED.profile_pos,
        credential = EXCLUDED.credential, stats_pos = EXCLUDED.stats_pos, stats = EXCLUDED.stats"""
DELETE_PROFILES = "DELETE FROM {s}.auth_profiles WHERE ns = %s AND profile_id = ANY(%s)"
UPSERT_STORE = """INSERT INTO {s}.auth_stores AS a (ns, doc) VALUES (%s, %s::json)
    ON CONFLICT (ns) DO UPDATE SET doc = EXCLUDED.doc"""
# Take the claim unless someone else holds a live one on the same tokens.
CLAIM = """INSERT INTO {s}.auth_refresh_claims AS c (ns, profile_id, claimant, tokens, until)
    VALUES (%s, %s, %s, %s, clock_timestamp() + make_interval(secs => %s))
    ON CONFLICT (ns, profile_id) DO UPDATE SET claimant = EXCLUDED.claimant,
        tokens = EXCLUDED.tokens, until = EXCLUDED.until
    WHERE c.until <= clock_timestamp() OR c.tokens <> EXCLUDED.tokens
        OR c.claimant = EXCLUDED.claimant
    RETURNING claimant"""
CLAIM_HOLDER = """SELECT claimant, round(extract(epoch FROM until - clock_timestamp()))::int
    FROM {s}.auth_refresh_claims WHERE ns = %s AND profile_id = %s"""
UNCLAIM = "DELETE FROM {s}.auth_refresh_claims WHERE ns = %s AND profile_id = %s AND claimant = %s"


class Queries:
    """The statements for one schema (a validated identifier), filled in once.

    >>> Queries("flatstate").version
    'SELECT version FROM "flatstate".auth_stores WHERE ns = %s'
    """

    def __init__(self, schema: str) -> None:
        quoted = f'"{schema}"'
        self.load = LOAD.replace("{s}", quoted)
        self.version = VERSION.replace("{s}", quoted)
        self.upsert_profile = UPSERT_PROFILE.replace("{s}", quoted)
        self.delete_profiles = DELETE_PROFILES.replace("{s}", quoted)
        self.upsert_store = UPSERT_STORE.replace("{s}", quoted)
        self.claim = CLAIM.replace("{s}", quoted)
        self.claim_holder = CLAIM_HOLDER.replace("{s}", quoted)
        self.unclaim = UNCLAIM.replace("{s}", quoted)


def migrate(conn: Any, schema: str, *, readonly: bool, location: str) -> None:
    """Create or upgrade the auth tables of ``schema`` (their own version table)."""
    run_migrations(
        conn, schema, MIGRATIONS, table="auth_schema_version", readonly=readonly, location=location
    )
