"""What a LangGraph store's database does for it, whichever database it is.

An engine (:mod:`._store_sqlite`, :mod:`._store_postgres`) runs a batch's reads in one
snapshot (:meth:`StoreEngine.read`), commits its puts and TTL refreshes through one writer
thread (:meth:`StoreEngine.write`), and sweeps expired items. The row handling both share,
paging in Python and namespace listing, is here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from langgraph.store.base import (
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

from flatstate.integrations.langgraph._filters import CompiledFilter
from flatstate.integrations.langgraph._items import decode_json, decode_namespace
from flatstate.integrations.langgraph._plan import Plan, Put
from flatstate.model import Clock

__all__ = [
    "MS_PER_MINUTE",
    "ORDER",
    "ROW_COLUMNS",
    "Blobs",
    "StoreEngine",
    "item_of",
    "listing",
    "literal_prefix",
    "page",
    "search_item",
]

MS_PER_MINUTE = 60_000
# Every order ends on (namespace, key), which is unique: paging with offset is stable.
ORDER = "updated_at DESC, namespace, key"
ROW_COLUMNS = "seq, namespace, key, value, created_at, updated_at, ttl_minutes"
Blobs = list[list[tuple[str, bytes]]]
"""Each put's (field, unit float32 vector) pairs."""


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _text(key: Any) -> str:
    return key if isinstance(key, str) else bytes(key).decode()


def item_of(row: Sequence[Any], namespace: tuple[str, ...] | None = None) -> Item:
    """An Item from a row of ROW_COLUMNS."""
    return Item(
        value=decode_json(row[3]),
        key=_text(row[2]),
        namespace=namespace if namespace is not None else decode_namespace(row[1]),
        created_at=_when(row[4]),
        updated_at=_when(row[5]),
    )


def search_item(row: Sequence[Any]) -> SearchItem:
    """A SearchItem from a row of ROW_COLUMNS and its score."""
    score = row[7]
    return SearchItem(
        namespace=decode_namespace(row[1]),
        key=_text(row[2]),
        value=decode_json(row[3]),
        created_at=_when(row[4]),
        updated_at=_when(row[5]),
        score=None if score is None else float(score),
    )


def page(
    rows: Iterable[Sequence[Any]],
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


def literal_prefix(conditions: Sequence[MatchCondition]) -> list[str]:
    """The labels every listed namespace starts with: the first prefix condition up to its
    first wildcard (SQL reads only that range)."""
    for condition in conditions:
        if condition.match_type == "prefix":
            literal: list[str] = []
            for label in condition.path:
                if label == "*":
                    break
                literal.append(label)
            return literal
    return []


def _matches(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    part = namespace[: len(path)] if condition.match_type == "prefix" else namespace[-len(path) :]
    return all(p == "*" or p == label for p, label in zip(path, part, strict=True))


def listing(blobs: Iterable[Any], op: ListNamespacesOp) -> list[tuple[str, ...]]:
    """``op``'s page of the namespaces in ``blobs`` (distinct, sorted, live)."""
    conditions = tuple(op.match_conditions or ())
    out: list[tuple[str, ...]] = []
    if op.limit == 0:
        return out
    offset = op.offset
    last: tuple[str, ...] | None = None
    for blob in blobs:
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


class StoreEngine:
    """The database half of a FlatstateStore (see the module's docstring)."""

    location: str  # for repr and messages: a path, or a URL without its password
    clock: Clock

    # -- to be supplied -------------------------------------------------------------
    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every read inside sees one state of the database."""
        raise NotImplementedError
        yield

    def get(self, op: GetOp, now: int, refresh: list[int]) -> Item | None:
        raise NotImplementedError

    def search(
        self,
        op: SearchOp,
        compiled: CompiledFilter,
        query_blobs: dict[str, bytes | None],
        now: int,
        refresh: list[int],
    ) -> list[SearchItem]:
        raise NotImplementedError

    def list_namespaces(self, op: ListNamespacesOp, now: int) -> list[tuple[str, ...]]:
        raise NotImplementedError

    def write(self, puts: list[Put], blobs: Blobs, refresh: list[int]) -> None:
        """Commit ``puts`` and the TTL refreshes of ``refresh`` (seqs) in one transaction."""
        raise NotImplementedError

    def sweep(self) -> int:
        """Delete the expired items now; how many."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------
    def read(
        self, plan: Plan, query_blobs: dict[str, bytes | None]
    ) -> tuple[list[Result], list[int]]:
        """The results of the plan's reads (None for its puts), all from one snapshot, and
        the seqs of the items whose TTL they refresh."""
        results: list[Result] = [None] * len(plan.ops)
        refresh: list[int] = []
        reads = [(i, op) for i, op in enumerate(plan.ops) if not isinstance(op, PutOp)]
        if not reads:
            return results, refresh
        with self.snapshot():
            now = self.clock()
            for i, op in reads:
                if isinstance(op, GetOp):
                    results[i] = self.get(op, now, refresh)
                elif isinstance(op, SearchOp):
                    results[i] = self.search(op, plan.filters[i], query_blobs, now, refresh)
                elif isinstance(op, ListNamespacesOp):
                    results[i] = self.list_namespaces(op, now)
        return results, refresh
