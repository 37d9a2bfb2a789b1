"""Facts for asyncio code: the same methods as :class:`~flatstate.facts.FactStore`,
each run on a worker thread, since every one of them reads or writes SQLite."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Any

from flatstate.aio import Opening
from flatstate.facts.model import DecayReport, Fact, Hit, NewFact
from flatstate.facts.store import FactStats, FactStore, open_facts

__all__ = ["AsyncFactStore", "open_async_facts"]


class AsyncFactStore:
    """A :class:`~flatstate.facts.FactStore` whose calls never block the event loop.
    ``sync`` is the store underneath."""

    def __init__(self, facts: FactStore) -> None:
        self.sync = facts

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

    async def aclose(self) -> None:
        await asyncio.to_thread(self.sync.close)


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
