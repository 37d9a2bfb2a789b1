"""The checkpoint tables and every statement on them, shared by SQLite and PostgreSQL.

Three tables: ``checkpoints`` (one row per checkpoint: the checkpoint without its channel
values, its metadata, and ``refs``, the packed map channel -> [version, manifest] that
says where each value is), ``writes`` (pending writes, keyed as LangGraph keys them) and
``blobs`` (pieces by digest, see :mod:`._pieces`). A checkpoint row is self-contained, so
prune, copy and delete work on rows alone; pieces are shared by every row (of any thread)
that names them, and a sweep after a delete removes those no row names any more.

Statements use ``?`` placeholders and ``{p}`` before table names; each engine formats them
for its database (a table prefix, ``%s`` on PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from flatstate.integrations.langgraph._pieces import (
    LISTED,
    PIECES_TYPE,
    listing,
    manifest_digests,
    refs_manifests,
    unpack_manifest,
)

__all__ = ["Db", "Row", "Sql", "WriteRow", "list_rows", "runs_rows", "sweep"]


class Db(Protocol):
    """What the table code needs of a connection inside a transaction."""

    def q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class Row(NamedTuple):
    """One checkpoint as stored."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    run_id: str | None
    type: str
    checkpoint: bytes
    meta_type: str
    metadata: bytes
    refs: bytes


class WriteRow(NamedTuple):
    task_id: str
    idx: int
    channel: str
    type: str
    value: bytes
    task_path: str


ROW_COLUMNS = (
    "thread_id, checkpoint_ns, checkpoint_id, parent_id, run_id, type, checkpoint, "
    "meta_type, metadata, refs"
)
WRITE_COLUMNS = "task_id, idx, channel, type, value, task_path"

PUT_ROW = (
    f"INSERT INTO {{p}}checkpoints ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET "
    "parent_id = excluded.parent_id, run_id = excluded.run_id, type = excluded.type, "
    "checkpoint = excluded.checkpoint, meta_type = excluded.meta_type, "
    "metadata = excluded.metadata, refs = excluded.refs"
)
ROW_EXISTS = (
    "SELECT 1 FROM {p}checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
)
PUT_BLOB = "INSERT INTO {p}blobs (digest, body) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING"
# A regular write is kept the first time (a retried task writes the same thing again);
# a special one (error, interrupt, resume) replaces what was there.
PUT_WRITE = (
    f"INSERT INTO {{p}}writes (thread_id, checkpoint_ns, checkpoint_id, {WRITE_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
REPLACE_WRITE = (
    f"INSERT INTO {{p}}writes (thread_id, checkpoint_ns, checkpoint_id, {WRITE_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET "
    "channel = excluded.channel, type = excluded.type, value = excluded.value, "
    "task_path = excluded.task_path"
)
GET_ROW = (
    f"SELECT {ROW_COLUMNS} FROM {{p}}checkpoints "
    "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
)
LATEST_ROW = (
    f"SELECT {ROW_COLUMNS} FROM {{p}}checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
    "ORDER BY checkpoint_id DESC LIMIT 1"
)
GET_WRITES = (
    f"SELECT {WRITE_COLUMNS} FROM {{p}}writes "
    "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? "
    "ORDER BY task_path, task_id, idx"
)
GET_BLOB = "SELECT body FROM {p}blobs WHERE digest = ?"
DELETE_THREAD = (
    "DELETE FROM {p}checkpoints WHERE thread_id = ?",
    "DELETE FROM {p}writes WHERE thread_id = ?",
)
DELETE_ROW = (
    "DELETE FROM {p}checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
    "DELETE FROM {p}writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
)
COPY_THREAD = (
    f"INSERT INTO {{p}}checkpoints ({ROW_COLUMNS}) SELECT ?, checkpoint_ns, checkpoint_id, "
    "parent_id, run_id, type, checkpoint, meta_type, metadata, refs FROM {p}checkpoints "
    "WHERE thread_id = ? ON CONFLICT DO NOTHING",
    f"INSERT INTO {{p}}writes (thread_id, checkpoint_ns, checkpoint_id, {WRITE_COLUMNS}) "
    f"SELECT ?, checkpoint_ns, checkpoint_id, {WRITE_COLUMNS} FROM {{p}}writes "
    "WHERE thread_id = ? ON CONFLICT DO NOTHING",
)
THREAD_CHAIN = (
    "SELECT checkpoint_ns, checkpoint_id, parent_id, refs, meta_type, metadata "
    "FROM {p}checkpoints "
    "WHERE thread_id = ? ORDER BY checkpoint_ns, checkpoint_id DESC"
)
ALL_REFS = "SELECT refs FROM {p}checkpoints"
ALL_WRITE_MANIFESTS = "SELECT value FROM {p}writes WHERE type = ?"
ALL_DIGESTS = "SELECT digest FROM {p}blobs"
DELETE_BLOB = "DELETE FROM {p}blobs WHERE digest = ?"


def runs_rows(count: int) -> str:
    marks = ", ".join("?" * count)
    return (
        "SELECT thread_id, checkpoint_ns, checkpoint_id FROM {p}checkpoints "
        f"WHERE run_id IN ({marks})"
    )


def list_rows(*, thread: bool, ns: bool, checkpoint: bool, before: bool) -> str:
    """The rows ``list`` scans, newest first (metadata filters apply afterwards)."""
    where = []
    if thread:
        where.append("thread_id = ?")
    if ns:
        where.append("checkpoint_ns = ?")
    if checkpoint:
        where.append("checkpoint_id = ?")
    if before:
        where.append("checkpoint_id < ?")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {ROW_COLUMNS} FROM {{p}}checkpoints{clause} ORDER BY checkpoint_id DESC"


def sweep(db: Db, sql: Sql) -> int:
    """Delete the pieces no checkpoint or write names any more; how many went.

    Scans every row's refs: deletes are rare maintenance, and a piece may be shared by any
    thread (a copy, or the same content written twice), so no narrower scan is exact."""
    referenced: set[bytes] = set()
    lists: set[bytes] = set()
    for (refs,) in db.q(sql["all_refs"]):
        for manifest in refs_manifests(bytes(refs)):
            (lists if manifest[0] == LISTED else referenced).update(manifest_digests(manifest))
    for (packed,) in db.q(sql["all_write_manifests"], (PIECES_TYPE,)):
        manifest = unpack_manifest(bytes(packed))
        (lists if manifest[0] == LISTED else referenced).update(manifest_digests(manifest))
    for digest in lists:  # a list piece, and the pieces it lists
        referenced.add(digest)
        for (body,) in db.q(sql["get_blob"], (digest,)):
            referenced.update(listing(bytes(body)))
    dead = [(d,) for (d,) in db.q(sql["all_digests"]) if bytes(d) not in referenced]
    if dead:
        db.many(sql["delete_blob"], dead)
    return len(dead)


STATEMENTS = {
    "put_row": PUT_ROW,
    "put_blob": PUT_BLOB,
    "put_write": PUT_WRITE,
    "replace_write": REPLACE_WRITE,
    "get_row": GET_ROW,
    "latest_row": LATEST_ROW,
    "get_writes": GET_WRITES,
    "get_blob": GET_BLOB,
    "delete_thread_rows": DELETE_THREAD[0],
    "delete_thread_writes": DELETE_THREAD[1],
    "delete_row": DELETE_ROW[0],
    "delete_row_writes": DELETE_ROW[1],
    "copy_rows": COPY_THREAD[0],
    "copy_writes": COPY_THREAD[1],
    "thread_chain": THREAD_CHAIN,
    "all_refs": ALL_REFS,
    "all_write_manifests": ALL_WRITE_MANIFESTS,
    "all_digests": ALL_DIGESTS,
    "delete_blob": DELETE_BLOB,
}


class Sql:
    """Every statement formatted for one database: ``prefix`` before table names,
    ``placeholder`` for parameters."""

    def __init__(self, prefix: str, placeholder: str = "?") -> None:
        self.prefix = prefix
        self.placeholder = placeholder
        self._named = {name: self.format(text) for name, text in STATEMENTS.items()}

    def __getitem__(self, name: str) -> str:
        return self._named[name]

    def format(self, text: str) -> str:
        text = text.replace("{p}", self.prefix)
        return text.replace("?", self.placeholder) if self.placeholder != "?" else text
