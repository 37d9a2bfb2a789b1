"""Every statement the PostgreSQL backend sends, and the pending statements of a write."""

from __future__ import annotations

from typing import Any

__all__ = ["Op", "Queries"]


class Op:
    """One statement of a pending write: a row's ``put`` or ``remove``, or a blob insert."""

    __slots__ = ("key", "params", "put", "query")

    def __init__(
        self, query: str, params: tuple[Any, ...], key: str | None = None, put: bool = False
    ) -> None:
        self.query = query
        self.params = params
        self.key = key
        self.put = put


class Queries:
    """Every statement, with the schema filled in once."""

    def __init__(self, schema: str) -> None:
        s = f'"{schema}"'
        self.add_namespace = (
            f"INSERT INTO {s}.namespaces (ns, channel) VALUES (%s, {s}.channel(%s)) "
            "ON CONFLICT DO NOTHING"
        )
        self.position = f"SELECT seq FROM {s}.namespaces WHERE ns = %s"
        self.read = (
            f"SELECT version, entry::text, blobs::text FROM {s}.sessions WHERE ns = %s AND key = %s"
        )
        rows = f"SELECT key, version, entry::text, blobs::text FROM {s}.sessions WHERE ns = %s"
        self.scan = f"{rows} ORDER BY key"
        self.scan_after = f"{rows} AND key > %s ORDER BY key"
        self.keys = f'SELECT key FROM {s}.sessions WHERE ns = %s ORDER BY key COLLATE "C"'
        self.count = f"SELECT count(*) FROM {s}.sessions WHERE ns = %s"
        self.blobs = f"SELECT hash, value::text FROM {s}.blobs WHERE ns = %s AND hash = ANY(%s)"
        self.changes = (
            f"SELECT seq, key FROM {s}.changes WHERE ns = %s AND seq > %s ORDER BY seq LIMIT %s"
        )
        self.begin_write = f"SELECT {s}.begin_write(%s, %s, %s, %s::bigint)"
        self.begin_write_at = f"SELECT {s}.begin_write_at(%s, %s, %s, %s::bigint, %s::bigint)"
        self.lock = f"SELECT {s}.lock(%s)"
        self.committed = (
            f"SELECT EXISTS (SELECT 1 FROM {s}.changes WHERE ns = %s AND seq > %s AND txn = %s)"
        )
        self.put = f"SELECT {s}.put(%s, %s, %s, %s, %s::json, %s::jsonb, %s)"
        self.put_blob = (
            f"INSERT INTO {s}.blobs (ns, hash, value) VALUES (%s, %s, %s::json) "
            "ON CONFLICT DO NOTHING"
        )
        self.remove = f"SELECT {s}.remove(%s, %s, %s)"
        # At most a given number of the oldest rows up to a position: one bounded batch.
        self.prune = (
            f"DELETE FROM {s}.changes WHERE ns = %s AND seq <= least(%s, "
            f"(SELECT min(seq) FROM {s}.changes WHERE ns = %s) + %s)"
        )
        # At most a given number of the blobs no session refers to: one bounded batch.
        self.collect_blobs = (
            f"DELETE FROM {s}.blobs b WHERE b.ns = %s AND b.hash IN "
            f"(SELECT x.hash FROM {s}.blobs x WHERE x.ns = %s AND x.hash NOT IN "
            f"(SELECT j.value FROM {s}.sessions t, jsonb_each_text(t.blobs) AS j "
            "WHERE t.ns = %s AND t.blobs IS NOT NULL) LIMIT %s)"
        )
        self.disk_bytes = (
            f"SELECT (SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {s}.sessions t "
            "WHERE t.ns = %s) "
            f"+ (SELECT coalesce(sum(pg_column_size(b.*)), 0) FROM {s}.blobs b WHERE b.ns = %s) "
            f"+ (SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM {s}.changes c WHERE c.ns = %s)"
        )
