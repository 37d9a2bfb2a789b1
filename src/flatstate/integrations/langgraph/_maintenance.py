"""Deleting and copying threads, on rows alone (the same code on SQLite and PostgreSQL).

``prune(strategy="keep_latest")`` keeps, for each namespace of a thread, the latest
checkpoint *and the ancestors its delta channels still need*: a ``DeltaChannel`` stores a
full value only every so many steps and rebuilds the rest from the writes of the
checkpoints in between, so dropping them would silently empty the channel. The latest
checkpoint's metadata names those channels (``counters_since_delta_snapshot``); the walk up
its parents keeps every checkpoint until each of them has a stored value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from flatstate.integrations.langgraph._tables import Db, Sql, runs_rows, sweep

__all__ = ["copy_thread", "delete_for_runs", "delete_thread", "prune"]

_refs_channels = msgspec.msgpack.Decoder(dict[str, msgspec.Raw]).decode

DeltaChannels = Callable[[str, bytes], set[str]]
"""(meta_type, metadata) of a checkpoint -> the delta channels it still needs history for."""


def delete_thread(db: Db, sql: Sql, thread_ids: Sequence[str]) -> None:
    for thread_id in thread_ids:
        db.run(sql["delete_thread_rows"], (thread_id,))
        db.run(sql["delete_thread_writes"], (thread_id,))
    sweep(db, sql)


def delete_for_runs(db: Db, sql: Sql, run_ids: Sequence[str]) -> None:
    if not run_ids:
        return
    rows = db.q(sql.format(runs_rows(len(run_ids))), list(run_ids))
    if not rows:
        return
    db.many(sql["delete_row"], rows)
    db.many(sql["delete_row_writes"], rows)
    sweep(db, sql)


def copy_thread(db: Db, sql: Sql, source: str, target: str) -> None:
    if source == target:
        return
    db.run(sql["copy_rows"], (target, source))
    db.run(sql["copy_writes"], (target, source))


def prune(
    db: Db,
    sql: Sql,
    thread_ids: Sequence[str],
    strategy: str,
    delta_channels: DeltaChannels,
) -> None:
    if strategy == "delete":
        delete_thread(db, sql, thread_ids)
        return
    doomed: list[tuple[str, str, str]] = []
    for thread_id in thread_ids:
        by_ns: dict[str, list[tuple[str, str | None, bytes, str, bytes]]] = {}
        for ns, cid, parent, refs, meta_type, metadata in db.q(sql["thread_chain"], (thread_id,)):
            by_ns.setdefault(ns, []).append((cid, parent, bytes(refs), meta_type, bytes(metadata)))
        for ns, rows in by_ns.items():  # newest first
            keep = _chain_to_keep(rows, delta_channels)
            doomed.extend((thread_id, ns, cid) for cid, *_ in rows if cid not in keep)
    if doomed:
        db.many(sql["delete_row"], doomed)
        db.many(sql["delete_row_writes"], doomed)
        sweep(db, sql)


def _chain_to_keep(
    rows: list[tuple[str, str | None, bytes, str, bytes]], delta_channels: DeltaChannels
) -> set[str]:
    """The latest checkpoint, and its ancestors up to a stored value of every delta channel
    it needs."""
    by_id = {row[0]: row for row in rows}
    latest = rows[0]
    keep = {latest[0]}
    needed = delta_channels(latest[3], latest[4]) - set(_refs_channels(latest[2]))
    parent = latest[1]
    while needed and parent is not None and parent in by_id and parent not in keep:
        row = by_id[parent]
        keep.add(row[0])
        needed -= set(_refs_channels(row[2]))
        parent = row[1]
    return keep
