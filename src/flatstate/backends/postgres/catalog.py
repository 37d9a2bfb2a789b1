"""What a PostgreSQL database holds, for commands that move every agent's state at once."""

from __future__ import annotations

import psycopg
from psycopg import sql

from flatstate.backends.postgres.connection import unavailable
from flatstate.backends.postgres.dsn import dsn_params, resolve

__all__ = ["namespaces"]


def namespaces(location: str) -> list[str]:
    """The namespaces of the location's schema that hold sessions, sorted; none when the
    schema was never created. Reads only."""
    where = resolve(location, agent_id=None, namespace=None, schema=None, state_dir=None)
    dsn_params(where.libpq_dsn, where.redacted)  # an unparsable one, before psycopg quotes it
    try:
        with psycopg.connect(where.libpq_dsn, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (f"{where.schema}.sessions",)
            ).fetchone()
            if not (exists and exists[0]):
                return []
            query = sql.SQL(
                "SELECT n.ns FROM {s}.namespaces n "
                "WHERE EXISTS (SELECT 1 FROM {s}.sessions t WHERE t.ns = n.ns) "
                'ORDER BY n.ns COLLATE "C"'
            )
            rows = conn.execute(query.format(s=sql.Identifier(where.schema))).fetchall()
    except psycopg.OperationalError as exc:
        raise unavailable(where.redacted, exc, "list the namespaces") from exc
    return [row[0] for row in rows]
