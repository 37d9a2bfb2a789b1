"""``FlatstateStore``: LangGraph's long-term memory store (``BaseStore``) on flatstate, in a
state directory (SQLite, :mod:`._store_sqlite`) or on PostgreSQL (:mod:`._store_postgres`).

Keyword queries go through the facts' query sanitiser, so any text is a safe query;
embeddings are stored as unit vectors and compared with sqlite-vec or pgvector.

A batch runs as LangGraph's own stores run it: its reads (gets, searches, namespace
listings) all see one state, the one before the batch's puts, and its puts (the last one
per namespace and key) commit together in one transaction, after which the batch returns.
Every write goes through one writer thread per store (:mod:`flatstate.writer`): writes of
several threads or tasks that arrive together share one commit. Embeddings are computed
before the write lock is taken.

TTL: an item with a TTL expires ``ttl`` minutes after its last write, or its last read
when refreshing; an expired item is never returned, even before a sweep deletes it. The
sweep runs every ``sweep_interval_minutes`` on a thread of its own (or from
:meth:`FlatstateStore.start_ttl_sweeper`), or now with :meth:`FlatstateStore.sweep_ttl`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Iterable, Sequence

from flatstate.errors import ExtraMissing, InvalidStoreItem, StoreClosed
from flatstate.integrations.langgraph._items import unit_vector
from flatstate.model import Clock, now_ms

try:
    from langgraph.store.base import BaseStore, IndexConfig, Op, Result, TTLConfig

    from flatstate.integrations.langgraph._plan import (
        Plan,
        Put,
        check_index,
        check_ttl_config,
        plan_batch,
    )
    from flatstate.integrations.langgraph._store_engine import Blobs, StoreEngine
except ImportError as exc:  # the extra is missing: say which one
    raise ExtraMissing("flatstate.integrations.langgraph", "langgraph") from exc

__all__ = ["FlatstateStore"]

log = logging.getLogger("flatstate.langgraph")

_POSTGRES = ("postgresql://", "postgres://")
# LangGraph's stores sweep every 5 minutes when start_ttl_sweeper is given no interval.
DEFAULT_SWEEP_MINUTES = 5.0


class FlatstateStore(BaseStore):
    """LangGraph's ``BaseStore`` in ``<state_dir>/langgraph-store.sqlite`` or on PostgreSQL.

    - ``location``: a state directory, created if missing, or a ``postgresql://`` URL
      (``?namespace=`` isolates one store's items from another's on the same database,
      default ``main``; ``?schema=``, default ``flatstate``).
    - ``index``: LangGraph's ``IndexConfig`` for semantic search: ``dims``, ``embed`` (a
      LangChain ``Embeddings``, or a function from a list of texts to a list of vectors,
      sync or async) and optional ``fields`` (JSON paths; default the whole value). Needs
      ``flatstate[vec]`` on SQLite, pgvector on PostgreSQL. Without it, ``query`` is a
      keyword search over the values' text.
    - ``ttl``: LangGraph's ``TTLConfig``: ``default_ttl`` (minutes, for puts that name
      none), ``refresh_on_read`` (default True), ``sweep_interval_minutes`` (a background
      sweep; without it, :meth:`sweep_ttl` or :meth:`start_ttl_sweeper` sweeps).
    - ``clock``: now, in epoch milliseconds (tests pass a fake one).
    - ``lock_timeout``: seconds a write waits for another process's write, then
      LockTimeout; on PostgreSQL also how long lost connections are retried.
    - ``synchronous``: ``"normal"`` (a commit survives a crash of the process) or ``"full"``
      (also a power loss; on PostgreSQL ``synchronous_commit`` on for the store's writes).
    - ``connect_timeout``, ``pool_size`` (PostgreSQL): connecting, and the reads' pool.

    Thread-safe; several processes (on PostgreSQL, hosts) may open the same store. Close it
    (or use ``with`` / ``async with``).
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
        connect_timeout: float = 10.0,
        pool_size: int = 4,
    ) -> None:
        where = os.fspath(location)
        self.ttl_config = check_ttl_config(ttl)
        self.index_config, self._embeddings, self._fields = check_index(index)
        self._clock: Clock = clock or now_ms
        vectors = self._embeddings is not None
        dims = self.index_config["dims"] if self.index_config else 0
        self._engine: StoreEngine
        if where.startswith(_POSTGRES):
            from flatstate.integrations.langgraph._store_postgres import PostgresStoreEngine

            self._engine = PostgresStoreEngine(
                where,
                vectors=vectors,
                dims=dims,
                clock=self._clock,
                lock_timeout=lock_timeout,
                synchronous=synchronous,
                connect_timeout=connect_timeout,
                pool_size=pool_size,
            )
        elif "://" in where:
            raise InvalidStoreItem(
                f"no store for {where.split('://', 1)[0]}:// locations: give a state "
                "directory or a postgresql:// URL"
            )
        else:
            from flatstate.integrations.langgraph._store_sqlite import SqliteStoreEngine

            self._engine = SqliteStoreEngine(
                where,
                vectors=vectors,
                dims=dims,
                clock=self._clock,
                lock_timeout=lock_timeout,
                synchronous=synchronous,
            )
        self.location = self._engine.location
        self._closed = False
        self._sweeper_lock = threading.Lock()
        self._stop_sweeping = threading.Event()
        self._sweeper: threading.Thread | None = None
        interval = (self.ttl_config or {}).get("sweep_interval_minutes")
        if interval:
            self.start_ttl_sweeper(interval)

    @property
    def path(self) -> str:
        """The SQLite file (a state directory's store), or the redacted URL."""
        return self.location

    # -- lifecycle -----------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"FlatstateStore({self.location!r})"

    def close(self) -> None:
        """Stop the sweeper, commit what is queued, and close the database."""
        self.stop_ttl_sweeper()
        if self._closed:
            return
        self._closed = True
        self._engine.close()

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
            raise StoreClosed(self.location)

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
        dims = self.index_config["dims"] if self.index_config else 0
        query_blobs = {q: unit_vector(v, dims, f"the query {q[:40]!r}") for q, v in queries.items()}
        self._check_open()
        results, refresh = self._engine.read(plan, query_blobs)
        if plan.puts or refresh:
            self._engine.write(plan.puts, self._vector_blobs(plan.puts, vectors, dims), refresh)
        return results

    # -- writes --------------------------------------------------------------------------
    def _vector_blobs(
        self, puts: list[Put], vectors: Sequence[Sequence[float]], dims: int
    ) -> Blobs:
        """Each put's (field, unit vector) pairs, from the embeddings in the puts' order."""
        wanted = sum(len(put.fields) for put in puts)
        if len(vectors) != wanted:
            raise InvalidStoreItem(
                f"the embedding function returned {len(vectors)} vectors for {wanted} texts"
            )
        out: Blobs = []
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

    # -- TTL -----------------------------------------------------------------------------
    def sweep_ttl(self) -> int:
        """Delete the expired items now; return how many. (Reads never return them anyway.)"""
        self._check_open()
        return self._engine.sweep()

    async def asweep_ttl(self) -> int:
        return await asyncio.to_thread(self.sweep_ttl)

    def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> concurrent.futures.Future[None]:
        """Sweep every ``sweep_interval_minutes`` (default: the TTL config's, else 5) on a
        thread of its own, as LangGraph's SqliteStore and PostgresStore do. The future is
        done when the sweeper stops; cancelling it stops the sweeper. Starting it while it
        runs changes nothing. (Unlike theirs, it also runs without a TTL config: puts may
        name a ttl of their own.)"""
        self._check_open()
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.add_done_callback(lambda f: self._stop_sweeping.set() if f.cancelled() else None)
        with self._sweeper_lock:
            if self._sweeper is not None and self._sweeper.is_alive():
                return future
            minutes = (
                sweep_interval_minutes
                or (self.ttl_config or {}).get("sweep_interval_minutes")
                or DEFAULT_SWEEP_MINUTES
            )
            if not isinstance(minutes, int | float) or isinstance(minutes, bool) or minutes <= 0:
                raise InvalidStoreItem(
                    f"sweep_interval_minutes is {minutes!r}: a positive number of minutes"
                )
            self._stop_sweeping.clear()
            self._sweeper = threading.Thread(
                target=self._sweep_every,
                args=(float(minutes) * 60.0, future),
                name="flatstate-langgraph-ttl-sweeper",
                daemon=True,
            )
            self._sweeper.start()
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper; True once it stopped (or none ran), False if ``timeout``
        seconds passed first."""
        self._stop_sweeping.set()
        with self._sweeper_lock:
            sweeper = self._sweeper
            if sweeper is None or not sweeper.is_alive():
                return True
            if sweeper is not threading.current_thread():
                sweeper.join(timeout)
            stopped = not sweeper.is_alive()
            if stopped:
                self._sweeper = None
            return stopped

    def _sweep_every(self, seconds: float, future: concurrent.futures.Future[None]) -> None:
        while not self._stop_sweeping.wait(seconds):
            try:
                swept = self.sweep_ttl()
            except StoreClosed:
                break
            except Exception:  # a locked or full disk now may pass: try again next time
                log.warning("TTL sweep of %s failed", self.location, exc_info=True)
            else:
                if swept:
                    log.info("TTL sweep of %s deleted %d items", self.location, swept)
        if future.set_running_or_notify_cancel():
            future.set_result(None)
