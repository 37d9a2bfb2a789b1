"""Facts in a state directory's ``facts.sqlite``: the SQLite side of the facts backend.

Every write is one ``BEGIN IMMEDIATE`` transaction: the duplicate check and
the insert see the same database, so two processes adding the same fact
store it once and two adding different facts lose neither. The full-text
index and the vectors follow the rows inside that transaction (triggers, see
``schema``). Keyword search is FTS5 with bm25 over the words the planner
keeps (``query``).
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

from flatstate._sqlite import Checkpointer, Translate
from flatstate.errors import StoreCorrupt
from flatstate.facts.backend import FIELDS, STORED, STORED_COUNT, FactsBackend, Row
from flatstate.facts.query import QueryPlanner, fts_query, quote
from flatstate.facts.schema import DB_FILENAME, SCHEMA_VERSION, WHAT, connect
from flatstate.facts.vectors import (
    Embed,
    VectorIndex,
    fact_driver,
    pack_vector,
    stored_dims,
    unpack_vector,
    vector_driver,
)

__all__ = ["BM25_WEIGHTS", "SQLiteFacts"]

# bm25 weights of the indexed columns: text, category, entity, key, value.
# An entity or key named in the query is a strong hint; a category word is weak.
BM25_WEIGHTS = (1.0, 0.5, 2.0, 1.5, 1.0)

_INSERT = f"INSERT INTO facts ({STORED}) VALUES ({', '.join('?' * STORED_COUNT)}) RETURNING seq"
_SELECT = f"SELECT {FIELDS} FROM facts AS f LEFT JOIN fact_access AS a ON a.seq = f.seq"
# A filter, never an index choice: "+" keeps SQLite from driving a query by the
# facts_live index (list() then sorted every live fact instead of reading the
# newest few by seq). count() alone wants that index: _LIVE_INDEXED.
_LIVE = "+f.superseded_at IS NULL AND (+f.expires_at IS NULL OR +f.expires_at > ?)"
_LIVE_INDEXED = "f.superseded_at IS NULL AND (f.expires_at IS NULL OR f.expires_at > ?)"
# Counts for facts deleted meanwhile are dropped, not left behind as orphans.
_UPSERT_ACCESS = (
    "INSERT INTO fact_access (seq, recall_count, last_accessed_at) "
    "SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM facts WHERE seq = ?1) "
    "ON CONFLICT (seq) DO UPDATE SET recall_count = recall_count + excluded.recall_count, "
    "last_accessed_at = max(coalesce(last_accessed_at, 0), excluded.last_accessed_at)"
)

T = TypeVar("T")


class SQLiteFacts(FactsBackend):
    """``<state_dir>/facts.sqlite``, on one connection that the store's lock serializes.

    Several processes may open the same database; SQLite's locks (WAL mode,
    ``BEGIN IMMEDIATE``, a busy timeout) order their writes.
    """

    def __init__(
        self,
        state_dir: str,
        *,
        vectors: bool,
        lock_timeout: float,
        synchronous: str,
        readonly: bool,
        create: bool,
    ) -> None:
        self.location = self.path = os.path.join(state_dir, DB_FILENAME)
        self.readonly = readonly
        self.schema_version = SCHEMA_VERSION
        driver: ModuleType = vector_driver() if vectors else fact_driver()
        self._errors = Translate(self.path, lock_timeout, driver, WHAT)
        self.conn = connect(
            self.path,
            driver=driver,
            lock_timeout=lock_timeout,
            readonly=readonly,
            create=create,
            synchronous=synchronous,
        )
        self._planner = QueryPlanner(self._count_matching, self._top_seq, self._floor_of)
        self._checkpointer = (
            None
            if readonly
            else Checkpointer(
                self.path, driver=driver, every_commits=256, name="flatstate-facts-checkpoint"
            )
        )

    # -- transactions ------------------------------------------------------------
    def read(self, fn: Callable[[], T]) -> T:
        with self._errors:
            return fn()

    def write(self, fn: Callable[[], T]) -> T:
        conn = self.conn
        with self._errors:
            conn.execute("BEGIN IMMEDIATE")
            ok = False
            try:
                result = fn()
                ok = True
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT" if ok else "ROLLBACK")
                    if ok and self._checkpointer is not None:
                        self._checkpointer.committed()
        return result

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            with contextlib.suppress(Exception):
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.conn.close()

    # -- writes --------------------------------------------------------------------
    def find_duplicate(
        self, digest: str, scope: str, scope_target: str | None, text: str
    ) -> int | None:
        # Exact text and normalized text both land on the hash index.
        found = self.conn.execute(
            "SELECT seq FROM facts WHERE normalized_hash = ? AND superseded_at IS NULL "
            "AND scope = ? AND scope_target IS ? ORDER BY text = ? DESC, seq LIMIT 1",
            (digest, scope, scope_target, text),
        ).fetchone()
        return found[0] if found else None

    def insert(self, values: Sequence[Any]) -> int:
        seq: int = self.conn.execute(_INSERT, values).fetchone()[0]
        return seq

    def decay_class_of(self, seq: int) -> str:
        row = self.conn.execute("SELECT decay_class FROM facts WHERE seq = ?", (seq,)).fetchone()
        return str(row[0])

    def confirm(
        self,
        seq: int,
        now: int,
        decay_class: str,
        expires_at: int | None,
        confidence: float,
        importance: float,
        filled: Sequence[Any],
    ) -> None:
        self.conn.execute(
            "UPDATE facts SET last_confirmed_at = ?, decay_class = ?, expires_at = ?, "
            "confidence = max(confidence, ?), importance = max(importance, ?), "
            "why = coalesce(why, ?), entity = coalesce(entity, ?), key = coalesce(key, ?), "
            "value = coalesce(value, ?), source = coalesce(source, ?), "
            "session_key = coalesce(session_key, ?), entry_id = coalesce(entry_id, ?), "
            "tags = coalesce(tags, ?) WHERE seq = ?",
            (now, decay_class, expires_at, confidence, importance, *filled, seq),
        )

    def supersede(self, old_id: str, new_id: str, now: int) -> int | None:
        row = self.conn.execute(
            "UPDATE facts SET superseded_at = ?, superseded_by = ? "
            "WHERE id = ? AND superseded_at IS NULL RETURNING seq",
            (now, new_id, old_id),
        ).fetchone()
        return row[0] if row else None

    def superseded_by(self, fact_id: str) -> tuple[bool, str | None]:
        found = self.conn.execute(
            "SELECT superseded_by FROM facts WHERE id = ?", (fact_id,)
        ).fetchone()
        return (False, None) if found is None else (True, found[0])

    def exists(self, fact_id: str) -> bool:
        return bool(self.conn.execute("SELECT 1 FROM facts WHERE id = ?", (fact_id,)).fetchone())

    def update(self, fact_id: str, sets: dict[str, Any]) -> int:
        assignments = ", ".join(f"{name} = ?" for name in sets)
        seq: int = self.conn.execute(
            f"UPDATE facts SET {assignments} WHERE id = ? RETURNING seq",
            (*sets.values(), fact_id),
        ).fetchone()[0]
        return seq

    def delete(self, fact_id: str) -> bool:
        return self.conn.execute("DELETE FROM facts WHERE id = ?", (fact_id,)).rowcount > 0

    def expire(self, now: int) -> int:
        return int(
            self.conn.execute(
                "DELETE FROM facts WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            ).rowcount
        )

    def halve(self, decay_class: str, until: int, ttl: int, now: int) -> int:
        return int(
            self.conn.execute(
                "UPDATE facts SET confidence = confidence / 2, decayed_at = ? "
                "WHERE decay_class = ? AND expires_at IS NOT NULL AND expires_at <= ? "
                "AND (decayed_at IS NULL OR decayed_at <= expires_at - ?)",
                (now, decay_class, until, ttl),
            ).rowcount
        )

    def drop_faint(self, floor: float) -> int:
        return int(self.conn.execute("DELETE FROM facts WHERE confidence < ?", (floor,)).rowcount)

    def write_access(self, rows: list[tuple[int, int, int]]) -> None:
        self.conn.executemany(_UPSERT_ACCESS, rows)

    def put_vector_as_is(self, seq: int, model: str, vector: list[float]) -> bool:
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO fact_vectors (seq, model, embedding) VALUES (?, ?, ?)",
            (seq, model, pack_vector(vector)),
        )
        return cursor.rowcount == 1

    def vacuum(self) -> None:
        with self._errors:
            self.conn.execute("INSERT INTO facts_fts (facts_fts) VALUES ('optimize')")
            self.conn.execute("VACUUM")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- reads ---------------------------------------------------------------------
    def by_seq(self, seq: int) -> Row:
        row: Row = self.conn.execute(f"{_SELECT} WHERE f.seq = ?", (seq,)).fetchone()
        return row

    def by_id(self, fact_id: str) -> Row | None:
        row: Row | None = self.conn.execute(f"{_SELECT} WHERE f.id = ?", (fact_id,)).fetchone()
        return row

    def by_prefix(self, prefix: str) -> Sequence[Row]:
        # A range scan of the unique index on id.
        rows: list[Row] = self.conn.execute(
            f"{_SELECT} WHERE f.id >= ? AND f.id < ? LIMIT 2", (prefix, prefix + "\U0010ffff")
        ).fetchall()
        return rows

    def newest(self, now: int, n: int) -> Sequence[Row]:
        rows: list[Row] = self.conn.execute(
            f"{_SELECT} WHERE {_LIVE} ORDER BY f.seq DESC LIMIT ?", (now, n)
        ).fetchall()
        return rows

    def lookup(self, entity: str, key: str | None, now: int, limit: int) -> Sequence[Row]:
        sql = f"{_SELECT} WHERE f.entity = ? COLLATE NOCASE"
        args: builtins.list[Any] = [entity]
        if key is not None:
            sql += " AND f.key = ? COLLATE NOCASE"
            args.append(key)
        sql += f" AND {_LIVE} ORDER BY f.seq DESC LIMIT ?"
        rows: list[Row] = self.conn.execute(sql, (*args, now, limit)).fetchall()
        return rows

    def count_live(self, now: int) -> int:
        row = self.conn.execute(
            f"SELECT count(*) FROM facts AS f WHERE {_LIVE_INDEXED}", (now,)
        ).fetchone()
        return int(row[0])

    def page(self, after: int, limit: int) -> Sequence[Row]:
        rows: list[Row] = self.conn.execute(
            f"{_SELECT} WHERE f.seq > ? ORDER BY f.seq LIMIT ?", (after, limit)
        ).fetchall()
        return rows

    def vector_page(self, after: int, limit: int) -> list[tuple[int, str, str, list[float]]]:
        rows = self.conn.execute(
            "SELECT v.seq, f.id, v.model, v.embedding FROM fact_vectors AS v "
            "JOIN facts AS f ON f.seq = v.seq WHERE v.seq > ? ORDER BY v.seq LIMIT ?",
            (after, limit),
        ).fetchall()
        page = []
        for seq, fact_id, model, blob in rows:
            vector = unpack_vector(blob) if isinstance(blob, bytes) else None
            if vector is None:
                raise StoreCorrupt(
                    self.path,
                    f"the vector of fact {fact_id} is not float32 numbers",
                    "Run embed_missing() after deleting that row of fact_vectors.",
                )
            page.append((seq, fact_id, model, vector))
        return page

    def vector_dims(self, model: str) -> int | None:
        return stored_dims(self.conn, model)

    def vector_models(self) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT model, max(length(embedding)) / 4 FROM fact_vectors GROUP BY model"
        ).fetchall()
        return {str(model): int(dims) for model, dims in rows}

    def by_seqs(self, seqs: list[int]) -> Sequence[Row]:
        rows: list[Row] = self.conn.execute(
            f"{_SELECT} WHERE f.seq IN (SELECT value FROM json_each(?))",
            ("[" + ",".join(map(str, seqs)) + "]",),
        ).fetchall()
        return rows

    def is_live(self, seq: int) -> bool:
        return bool(
            self.conn.execute(
                "SELECT 1 FROM facts WHERE seq = ? AND superseded_at IS NULL", (seq,)
            ).fetchone()
        )

    def keyword(self, query: str, now: int, pool: int) -> list[tuple[float, Row]]:
        plan = self._planner.plan(query)
        if plan is None:
            return []
        terms, floor = plan
        weights = ", ".join(map(str, BM25_WEIGHTS))
        # bm25 ranks inside the index alone; only its top rows are joined to
        # their facts. Superseded facts are not indexed; expired ones wait for
        # decay() and are filtered here, from twice the pool.
        rows = self.conn.execute(
            f"SELECT m.b, {FIELDS} FROM "
            f"(SELECT rowid, bm25(facts_fts, {weights}) AS b FROM facts_fts "
            "WHERE facts_fts MATCH ? AND rowid >= ? ORDER BY b, rowid DESC LIMIT ?) AS m "
            "JOIN facts AS f ON f.seq = m.rowid "
            "LEFT JOIN fact_access AS a ON a.seq = f.seq "
            f"WHERE {_LIVE} ORDER BY m.b, m.rowid DESC LIMIT ?",
            (fts_query(terms), floor, 2 * pool, now, pool),
        ).fetchall()
        return [(row[0], row[1:]) for row in rows]

    def _count_matching(self, term: str, cap: int) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM facts_fts WHERE facts_fts MATCH ? LIMIT ?)",
                (quote(term), cap),
            ).fetchone()[0]
        )

    def _top_seq(self) -> int:
        return int(self.conn.execute("SELECT max(seq) FROM facts").fetchone()[0] or 0)

    def _floor_of(self, terms: list[str], n: int) -> int:
        row = self.conn.execute(
            "SELECT rowid FROM facts_fts WHERE facts_fts MATCH ? "
            "ORDER BY rowid DESC LIMIT 1 OFFSET ?",
            (fts_query(terms), n),
        ).fetchone()
        return int(row[0]) if row else 0

    def stats(self, now: int) -> tuple[int, int, int, tuple[tuple[str, int], ...], int]:
        conn = self.conn
        conn.execute("BEGIN")
        try:
            total, superseded, expired = conn.execute(
                "SELECT count(*), count(superseded_at), "
                "count(CASE WHEN superseded_at IS NULL AND expires_at <= ? THEN 1 END) "
                "FROM facts",
                (now,),
            ).fetchone()
            by_class = tuple(
                (str(name), int(n))
                for name, n in conn.execute(
                    f"SELECT f.decay_class, count(*) FROM facts AS f WHERE {_LIVE} "
                    "GROUP BY f.decay_class ORDER BY f.decay_class",
                    (now,),
                )
            )
            vectors = conn.execute("SELECT count(*) FROM fact_vectors").fetchone()[0]
        finally:
            conn.execute("COMMIT")
        return int(total), int(superseded), int(expired), by_class, int(vectors)

    def disk_bytes(self) -> int:
        disk = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                disk += os.path.getsize(self.path + suffix)
        return disk

    def vectors(self, embed: Embed, model: str) -> VectorIndex:
        return VectorIndex(self.conn, embed, model)
