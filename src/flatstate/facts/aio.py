"""Facts for asyncio code: the same methods as :class:`~flatstate.facts.FactStore`,
each run on a worker thread, since every one of them reads or writes SQLite."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from flatstate.aio import Opening
from flatstate.facts.model import DecayReport, Fact, Hit, NewFact
from flatstate.facts.store import FactStats, FactStore, open_facts

__all__ = ["AsyncFactStore", "open_async_facts"]

T = TypeVar("T")


class AsyncFactStore:
    """A :class:`~flatstate.facts.FactStore` whose calls never block the event loop.
    ``sync`` is the store underneath."""

    def __init__(self, facts: FactStore) -> None:
        self.sync = facts

    @property
    def path(self) -> str:
        return self.sync.path

    @property
    def vectors(self) -> bool:
        return self.sync.vectors

    async def add(self, text: str, **fields: Any) -> Fact:
        return await asyncio.to_thread(self.sync.add, text, **fields)

    async def add_many(self, facts: Iterable[NewFact | str]) -> tuple[Fact, ...]:
        return await asyncio.to_thread(self.sync.add_many, list(facts))

    async def supersede(self, old: Fact | str, new: Fact | str) -> Fact:
        return await asyncio.to_thread(self.sync.supersede, old, new)

    async def update(self, fact_id: str, **changes: Any) -> Fact:
        return await asyncio.to_thread(self.sync.update, fact_id, **changes)

    async def forget(self, fact_id: str) -> bool:
        return await asyncio.to_thread(self.sync.forget, fact_id)

    async def decay(self) -> DecayReport:
        return await asyncio.to_thread(self.sync.decay)

    async def get(self, fact_id: str) -> Fact | None:
        return await asyncio.to_thread(self.sync.get, fact_id)

    async def lookup(
        self, entity: str, key: str | None = None, *, limit: int = 50
    ) -> tuple[Fact, ...]:
        return await asyncio.to_thread(self.sync.lookup, entity, key, limit=limit)

    async def count(self) -> int:
        return await asyncio.to_thread(self.sync.count)

    async def search(self, query: str, *, limit: int = 10) -> tuple[Hit, ...]:
        return await asyncio.to_thread(self.sync.search, query, limit=limit)

    async def recall(
        self,
        query: str,
        *,
        budget_tokens: int = 800,
        limit: int | None = None,
        preview_chars: int = 300,
    ) -> tuple[Fact, ...]:
        return await asyncio.to_thread(
            self.sync.recall,
            query,
            budget_tokens=budget_tokens,
            limit=limit,
            preview_chars=preview_chars,
        )

    async def stats(self) -> FactStats:
        return await asyncio.to_thread(self.sync.stats)

    async def resolve(self, ref: str) -> Fact:
        return await asyncio.to_thread(self.sync.resolve, ref)

    async def list(self, n: int = 20) -> tuple[Fact, ...]:
        return await asyncio.to_thread(self.sync.list, n)

    async def vacuum(self) -> None:
        await asyncio.to_thread(self.sync.vacuum)

    async def embed_missing(self, batch: int = 256) -> int:
        return await asyncio.to_thread(self.sync.embed_missing, batch)

    async def flush(self) -> None:
        await asyncio.to_thread(self.sync.flush)

    async def vector_models(self) -> dict[str, int]:
        return await asyncio.to_thread(self.sync.vector_models)

    def export(self, batch: int = 500) -> AsyncIterator[Fact]:
        """Every fact, as :meth:`FactStore.export`, a page read on a worker thread at a time."""
        return _paged(self.sync.export(batch), batch)

    def export_vectors(self, batch: int = 500) -> AsyncIterator[tuple[str, str, Sequence[float]]]:
        return _paged(self.sync.export_vectors(batch), batch)

    async def import_facts(self, facts: Iterable[Fact]) -> int:
        return await asyncio.to_thread(self.sync.import_facts, list(facts))

    async def import_vectors(self, vectors: Iterable[tuple[str, str, Sequence[float]]]) -> int:
        return await asyncio.to_thread(self.sync.import_vectors, list(vectors))

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncFactStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncFactStore {self.sync.path}>"


async def _paged(items: Iterator[T], batch: int) -> AsyncIterator[T]:
    """``items`` (a sync store's paged reader) handed out as they come, each page read
    on a worker thread, so the loop never waits for the database."""
    size = max(1, batch)  # a batch the store refuses raises from its first read
    while True:
        page = await asyncio.to_thread(lambda: list(itertools.islice(items, size)))
        for item in page:
            yield item
        if len(page) < size:
            return


def open_async_facts(state_dir: str | os.PathLike[str], **options: Any) -> Opening[AsyncFactStore]:
    """Open the facts of a state directory for asyncio code (the options of
    :func:`~flatstate.facts.open_facts`); await it or use ``async with``.

    >>> import asyncio, tempfile
    >>> async def main() -> list[str]:
    ...     async with open_async_facts(tempfile.mkdtemp()) as facts:
    ...         await facts.add("Prefers dark mode", category="preference")
    ...         return [f.text for f in await facts.recall("dark mode?")]
    >>> asyncio.run(main())
    ['Prefers dark mode']
    """
    return Opening(lambda: AsyncFactStore(open_facts(state_dir, **options)))
