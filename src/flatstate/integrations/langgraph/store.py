"""``FlatstateStore``: LangGraph's long-term memory store (``BaseStore``) in flatstate's SQLite.

One database file in the state directory (see ``_items`` for its schema), opened the way
every flatstate database is (0600, WAL, a busy timeout, background checkpoints, migrations
in place, a damaged file reported and never replaced). Keyword queries go through the
facts' query sanitiser, so any text is a safe query; embeddings are stored and compared
with the facts' sqlite-vec code.

A batch runs as LangGraph's own stores run it: its reads (gets, searches, namespace
listings) all see one state, the one before the batch's puts, and its puts (the last one
per namespace and key) commit together in one transaction, after which the batch returns.
Every write goes through one writer thread per store (:mod:`flatstate.writer`): writes of
several threads or tasks that arrive together share one commit. Embeddings are computed
before the write lock is taken.

TTL: an item with a TTL expires ``ttl`` minutes after its last write, or its last read
when refreshing; an expired item is never returned, even before a sweep deletes it. The
sweep runs every ``sweep_interval_minutes`` on a thread of its own, or now with
:meth:`FlatstateStore.sweep_ttl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from flatstate._sqlite import Checkpointer, Translate, restart_log
from flatstate.errors import ExtraMissing, InvalidStoreItem, StoreClosed
from flatstate.facts.query import fts_query
from flatstate.facts.vectors import fact_driver, load_sqlite_vec, vector_driver
from flatstate.integrations.langgraph._filters import CompiledFilter
from flatstate.integrations.langgraph._items import (
    DB_FILENAME,
    WHAT,
    connect,
    decode_json,
    decode_namespace,
    encode_namespace,
    unit_vector,
)
from flatstate.model import Clock, now_ms
from flatstate.writer import Job, Writer

try:
    from langgraph.store.base import (
        BaseStore,
        GetOp,
        IndexConfig,
        Item,
        ListNamespacesOp,
        MatchCondition,
        Op,
        PutOp,
        Result,
        SearchItem,
        SearchOp,
        TTLConfig,
    )

    from flatstate.integrations.langgraph._plan import (
        Plan,
        Put,
        check_index,
        check_ttl_config,
        plan_batch,
    )
except ImportError as exc:  # the extra is missing: say which one
    raise ExtraMissing("flatstate.integrations.langgraph", "langgraph") from exc

__all__ = ["FlatstateStore"]

log = logging.getLogger("flatstate.langgraph")

MS_PER_MINUTE = 60_000
_COLUMNS = "seq, namespace, key, value, created_at, updated_at, ttl_minutes"
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_ORDER = "updated_at DESC, namespace, key"
_POSTGRES = ("postgresql://", "postgres://")


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _namespace_range(labels: Sequence[str]) -> tuple[str, list[Any]]:
    """SQL (and its arguments) for the namespaces that start with ``labels``."""
    if not labels:
        return "", []
    low = encode_namespace(labels)
    # Every namespace under ``low`` lies in [low, low + 0x01): its next byte is a separator.
    return " AND namespace >= ? AND namespace < ?", [low, low + b"\x01"]


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    part = namespace[: len(path)] if condition.match_type == "prefix" else namespace[-len(path) :]
    return all(p == "*" or p == label for p, label in zip(path, part, strict=True))


class FlatstateStore(BaseStore):
    """LangGraph's ``BaseStore`` in ``<state_dir>/langgraph-store.sqlite``.

    - ``location``: a state directory, created if missing.
    - ``index``: LangGraph's ``IndexConfig`` for semantic search: ``dims``, ``embed`` (a
      LangChain ``Embeddings``, or a function from a list of texts to a list of vectors,
      sync or async) and optional ``fields`` (JSON paths; default the whole value). Needs
      ``flatstate[vec]``. Without it, ``query`` is a keyword search over the values' text.
    - ``ttl``: LangGraph's ``TTLConfig``: ``default_ttl`` (minutes, for puts that name
      none), ``refresh_on_read`` (default True), ``sweep_interval_minutes`` (a background
      sweep; without it, :meth:`sweep_ttl` sweeps).
    - ``clock``: now, in epoch milliseconds (tests pass a fake one).
    - ``lock_timeout``: seconds a write waits for another process's write, then LockTimeout.
    - ``synchronous``: ``"normal"`` (a commit survives a crash of the process) or ``"full"``
      (also a power loss).

    Thread-safe; several processes may open the same state directory. Close it (or use
    ``with`` / ``async with``).
    """

    supports_ttl = True

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        clock: Clock | None = None,
        lock_timeout: float = 30.0,
        synchronous: str = "normal",
    ) -> None:
        where = os.fspath(location)
        if where.startswith(_POSTGRES):
            raise InvalidStoreItem(
                "FlatstateStore runs on a state directory (SQLite); PostgreSQL is not "
                "supported yet: pass a directory path"
            )
        self.ttl_config = check_ttl_config(ttl)
        self.index_config, self._embeddings, self._fields = check_index(index)
        self.path = os.path.join(os.path.expanduser(where), DB_FILENAME)
        self._clock: Clock = clock or now_ms
        self._lock_timeout = lock_timeout
        driver = vector_driver() if self._embeddings is not None else fact_driver()
        self._driver = driver
        self._errors = Translate(self.path, lock_timeout, driver, WHAT)
        self._conn = connect(
            self.path, driver=driver, lock_timeout=lock_timeout, synchronous=synchronous
        )
        self._lock = threading.RLock()
        self._closed = False
        try:
            if self._embeddings is not None:
                load_sqlite_vec(self._conn)
        except BaseException:
            self._conn.close()
            raise
        self._checkpointer = Checkpointer(
            self.path, driver=driver, name="flatstate-langgraph-checkpoint"
        )
        self._writer = Writer(
            self._commit, lambda: StoreClosed(self.path), name="flatstate-langgraph-writer"
        )
        self._stop_sweeping = threading.Event()
        self._sweeper: threading.Thread | None = None
        interval = (self.ttl_config or {}).get("sweep_interval_minutes")
        if interval:
            self._sweeper = threading.Thread(
                target=self._sweep_every,
                args=(interval * 60.0,),
                name="flatstate-langgraph-ttl-sweeper",
                daemon=True,
            )
            self._sweeper.start()

    # -- lifecycle -----------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"FlatstateStore({self.path!r})"

    def close(self) -> None:
        """Stop the sweeper, commit what is queued, and close the database."""
        self._stop_sweeping.set()
        if self._sweeper is not None and self._sweeper is not threading.current_thread():
            self._sweeper.join()
        self._writer.close()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._checkpointer.close()
            # Another process may hold the log; its own checkpoints will copy it back.
            with contextlib.suppress(self._driver.Error):
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._conn.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> FlatstateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> FlatstateStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(self.path)

    # -- the batch -----------------------------------------------------------------------
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run ``ops``: reads first (one state), then the puts in one commit; see the module."""
        self._check_open()
        plan = plan_batch(ops, self._fields, self._embeddings is not None)
        embeddings = self._embeddings
        vectors: Sequence[Sequence[float]] = []
        queries: dict[str, Sequence[float]] = {}
        if embeddings is not None:
            texts = [text for put in plan.puts for _, text in put.fields]
            if texts:
                vectors = embeddings.embed_documents(texts)
            queries = {q: embeddings.embed_query(q) for q in plan.queries}
        return self._run(plan, vectors, queries)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """:meth:`batch` for asyncio: embeddings awaited, the database on a worker thread."""
        self._check_open()
        plan = plan_batch(ops, self._fields, self._embeddings is not None)
        embeddings = self._embeddings
        vectors: Sequence[Sequence[float]] = []
        queries: dict[str, Sequence[float]] = {}
        if embeddings is not None:
            texts = [text for put in plan.puts for _, text in put.fields]
            if texts:
                vectors = await embeddings.aembed_documents(texts)
            found = await asyncio.gather(*(embeddings.aembed_query(q) for q in plan.queries))
            queries = dict(zip(plan.queries, found, strict=True))
        return await asyncio.to_thread(self._run, plan, vectors, queries)

    def _run(
        self,
        plan: Plan,
        vectors: Sequence[Sequence[float]],
        queries: dict[str, Sequence[float]],
    ) -> list[Result]:
        results: list[Result] = [None] * len(plan.ops)
        refresh: list[int] = []
        dims = self.index_config["dims"] if self.index_config else 0
        query_blobs = {q: unit_vector(v, dims, f"the query {q[:40]!r}") for q, v in queries.items()}
        reads = [(i, op) for i, op in enumerate(plan.ops) if not isinstance(op, PutOp)]
        if reads:
            with self._lock, self._errors:
                self._check_open()
                now = self._clock()
                conn = self._conn
                conn.execute("BEGIN")  # every read of the batch sees the same state
                try:
                    for i, op in reads:
                        if isinstance(op, GetOp):
                            results[i] = self._get(op, now, refresh)
                        elif isinstance(op, SearchOp):
                            compiled = plan.filters[i]
                            results[i] = self._search(op, compiled, query_blobs, now, refresh)
                        elif isinstance(op, ListNamespacesOp):
                            results[i] = self._list_namespaces(op, now)
                finally:
                    conn.execute("COMMIT")
        if plan.puts or refresh:
            blobs = self._vector_blobs(plan.puts, vectors, dims)
            self._writer.run(Job(lambda conn: self._write(conn, plan.puts, blobs, refresh)))
        return results

    # -- reads ---------------------------------------------------------------------------
    def _item(self, row: Sequence[Any], namespace: tuple[str, ...] | None = None) -> Item:
        return Item(
            value=decode_json(row[3]),
            key=row[2],
            namespace=namespace if namespace is not None else decode_namespace(row[1]),
            created_at=_when(row[4]),
            updated_at=_when(row[5]),
        )

    def _get(self, op: GetOp, now: int, refresh: list[int]) -> Item | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM items WHERE namespace = ? AND key = ? AND {_LIVE}",
            (encode_namespace(op.namespace), op.key, now),
        ).fetchone()
        if row is None:
            return None
        if op.refresh_ttl and row[6] is not None:
            refresh.append(row[0])
        return self._item(row, tuple(op.namespace))

    def _search(
        self,
        op: SearchOp,
        compiled: CompiledFilter,
        query_blobs: dict[str, bytes | None],
        now: int,
        refresh: list[int],
    ) -> list[SearchItem]:
        where = _LIVE
        args: list[Any] = [now]
        in_range, range_args = _namespace_range(op.namespace_prefix)
        where += in_range
        args += range_args
        for clause in compiled.sql:
            where += f" AND {clause}"
        args += compiled.args
        match = fts_query(op.query) if op.query and self._embeddings is None else None
        blob = query_blobs.get(op.query) if op.query else None
        if blob is not None:  # None also for a zero vector, which points nowhere: unranked
            assert self.index_config is not None
            sql = (
                f"SELECT {_COLUMNS}, (SELECT max(1.0 - vec_distance_cosine(v.embedding, ?)) "
                "FROM item_vectors AS v WHERE v.seq = items.seq AND length(v.embedding) = ?) "
                f"AS score FROM items WHERE {where} "
                f"ORDER BY score IS NULL, score DESC, {_ORDER}"
            )
            args = [blob, self.index_config["dims"] * 4, *args]
        elif match is not None:
            # bm25 is lower for better matches; the score given out is higher for them.
            sql = (
                f"SELECT {_COLUMNS}, -m.b FROM (SELECT rowid, bm25(items_fts) AS b "
                "FROM items_fts WHERE items_fts MATCH ?) AS m "
                f"JOIN items ON items.seq = m.rowid WHERE {where} ORDER BY m.b, {_ORDER}"
            )
            args = [match, *args]
        else:
            sql = f"SELECT {_COLUMNS}, NULL FROM items WHERE {where} ORDER BY {_ORDER}"
        predicate = compiled.predicate()
        if predicate is None:
            rows: Iterable[Sequence[Any]] = self._conn.execute(
                f"{sql} LIMIT ? OFFSET ?", (*args, op.limit, op.offset)
            ).fetchall()
        else:
            rows = self._page(self._conn.execute(sql, args), predicate, op.offset, op.limit)
        out = []
        for row in rows:
            item = self._item(row)
            if op.refresh_ttl and row[6] is not None:
                refresh.append(row[0])
            score = row[7]
            out.append(
                SearchItem(
                    namespace=item.namespace,
                    key=item.key,
                    value=item.value,
                    created_at=item.created_at,
                    updated_at=item.updated_at,
                    score=None if score is None else float(score),
                )
            )
        return out

    @staticmethod
    def _page(
        rows: Iterator[Sequence[Any]],
        predicate: Callable[[dict[str, Any]], bool],
        offset: int,
        limit: int,
    ) -> list[Sequence[Any]]:
        """Rows whose value meets ``predicate``, the page ``offset:offset + limit`` of them."""
        out: list[Sequence[Any]] = []
        if limit == 0:
            return out
        for row in rows:
            if not predicate(decode_json(row[3])):
                continue
            if offset:
                offset -= 1
                continue
            out.append(row)
            if len(out) == limit:
                break
        return out

    def _list_namespaces(self, op: ListNamespacesOp, now: int) -> list[tuple[str, ...]]:
        conditions = tuple(op.match_conditions or ())
        where, args = _LIVE, [now]
        for condition in conditions:
            if condition.match_type == "prefix":
                literal: list[str] = []
                for label in condition.path:
                    if label == "*":
                        break
                    literal.append(label)
                in_range, range_args = _namespace_range(literal)
                where += in_range
                args += range_args
                break
        cursor = self._conn.execute(
            f"SELECT DISTINCT namespace FROM items WHERE {where} ORDER BY namespace", args
        )
        out: list[tuple[str, ...]] = []
        if op.limit == 0:
            return out
        offset = op.offset
        last: tuple[str, ...] | None = None
        for (blob,) in cursor:
            namespace = decode_namespace(blob)
            if not all(_matches(c, namespace) for c in conditions):
                continue
            if op.max_depth is not None:
                # Truncating sorted namespaces keeps them sorted: equal ones are adjacent.
                namespace = namespace[: op.max_depth]
                if namespace == last:
                    continue
                last = namespace
            if offset:
                offset -= 1
                continue
            out.append(namespace)
            if len(out) == op.limit:
                break
        return out

    # -- writes --------------------------------------------------------------------------
    def _vector_blobs(
        self, puts: list[Put], vectors: Sequence[Sequence[float]], dims: int
    ) -> list[list[tuple[str, bytes]]]:
        """Each put's (field, unit vector) pairs, from the embeddings in the puts' order."""
        wanted = sum(len(put.fields) for put in puts)
        if len(vectors) != wanted:
            raise InvalidStoreItem(
                f"the embedding function returned {len(vectors)} vectors for {wanted} texts"
            )
        out: list[list[tuple[str, bytes]]] = []
        at = 0
        for put in puts:
            pairs = []
            for name, _text in put.fields:
                blob = unit_vector(vectors[at], dims, f"field {name!r} of key {put.key!r}")
                at += 1
                if blob is not None:  # a zero vector points nowhere: the field goes unscored
                    pairs.append((name, blob))
            out.append(pairs)
        return out

    def _write(
        self,
        conn: Any,
        puts: list[Put],
        blobs: list[list[tuple[str, bytes]]],
        refresh: list[int],
    ) -> None:
        now = self._clock()
        if refresh:
            conn.executemany(
                "UPDATE items SET expires_at = ? + CAST(ttl_minutes * ? AS INTEGER) "
                f"WHERE seq = ? AND ttl_minutes IS NOT NULL AND {_LIVE}",
                [(now, MS_PER_MINUTE, seq, now) for seq in refresh],
            )
        for put, pairs in zip(puts, blobs, strict=True):
            if put.value is None:
                conn.execute(
                    "DELETE FROM items WHERE namespace = ? AND key = ?", (put.namespace, put.key)
                )
                continue
            expires = None if put.ttl is None else now + int(put.ttl * MS_PER_MINUTE)
            # An item that expired but was not swept yet is replaced as a new one.
            seq = conn.execute(
                "INSERT INTO items (namespace, key, value, created_at, updated_at, ttl_minutes, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
                "created_at = CASE WHEN items.expires_at <= excluded.updated_at "
                "THEN excluded.created_at ELSE items.created_at END, "
                "updated_at = excluded.updated_at, ttl_minutes = excluded.ttl_minutes, "
                "expires_at = excluded.expires_at RETURNING seq",
                (put.namespace, put.key, put.value, now, now, put.ttl, expires),
            ).fetchone()[0]
            conn.execute("DELETE FROM items_fts WHERE rowid = ?", (seq,))
            conn.execute("DELETE FROM item_vectors WHERE seq = ?", (seq,))
            if put.keyword:
                conn.execute("INSERT INTO items_fts (rowid, doc) VALUES (?, ?)", (seq, put.keyword))
            if pairs:
                conn.executemany(
                    "INSERT OR REPLACE INTO item_vectors (seq, field, embedding) VALUES (?, ?, ?)",
                    [(seq, name, blob) for name, blob in pairs],
                )

    def _commit(self, jobs: list[Job]) -> None:
        """The writer's commit: every job in one transaction, each undone alone if it fails."""
        with self._lock, self._errors:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                # A lone job (most often) needs no savepoint: the transaction is its own.
                alone = len(jobs) == 1
                for job in jobs:
                    if not alone:
                        conn.execute("SAVEPOINT job")
                    try:
                        with self._errors:
                            job.result = job.fn(conn)
                    except Exception as exc:
                        conn.execute("ROLLBACK" if alone else "ROLLBACK TO job")
                        job.error = exc
                    if not alone:
                        conn.execute("RELEASE job")
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if self._checkpointer.committed():
                restart_log(conn, int(self._lock_timeout * 1000), self._driver)

    # -- TTL -----------------------------------------------------------------------------
    def sweep_ttl(self) -> int:
        """Delete the expired items now; return how many. (Reads never return them anyway.)"""
        self._check_open()

        def sweep(conn: Any) -> int:
            return int(
                conn.execute(
                    "DELETE FROM items WHERE expires_at IS NOT NULL AND expires_at <= ?",
                    (self._clock(),),
                ).rowcount
            )

        return int(self._writer.run(Job(sweep)))

    async def asweep_ttl(self) -> int:
        return await asyncio.to_thread(self.sweep_ttl)

    def _sweep_every(self, seconds: float) -> None:
        while not self._stop_sweeping.wait(seconds):
            try:
                self.sweep_ttl()
            except StoreClosed:
                return
            except Exception:  # a locked or full disk now may pass: try again next time
                log.warning("TTL sweep of %s failed", self.path, exc_info=True)
