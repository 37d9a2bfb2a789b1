"""What the model sees of a transcript: the latest compaction's summary, then the entries
it kept and those after it, as OpenClaw (pi-coding-agent) builds its context."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from flatstate.frozen import FrozenMap

__all__ = [
    "CONTEXT_TYPES",
    "Context",
    "build_context",
    "context_backward",
    "iso_now",
    "to_epoch_ms",
]

CONTEXT_TYPES = frozenset({"message", "custom_message", "branch_summary"})
"""Entry types that reach the model (``custom`` and the rest do not)."""

_last_stamp: tuple[int, str] = (0, "")


def iso_now() -> str:
    """The current UTC time as JavaScript's ``toISOString()`` writes it (formatted once per ms)."""
    global _last_stamp
    ms = time.time_ns() // 1_000_000
    if _last_stamp[0] != ms:
        when = datetime.fromtimestamp(ms / 1000, UTC)
        _last_stamp = (ms, when.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return _last_stamp[1]


def to_epoch_ms(stamp: object) -> int:
    """Epoch milliseconds of an ISO timestamp (as ``new Date(s).getTime()``), 0 if unreadable."""
    if not isinstance(stamp, str):
        return 0
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


class Context(msgspec.Struct, frozen=True, gc=False):
    """What the model sees: the latest compaction's summary, then the kept entries.

    ``messages`` are in pi-coding-agent's message format (``compactionSummary``,
    ``custom``, ``branchSummary`` or the stored message); ``entries`` are the
    transcript entries they came from (the compaction entry for the summary).
    """

    messages: tuple[FrozenMap, ...]
    entries: tuple[FrozenMap, ...]
    compaction: FrozenMap | None
    leaf_id: str | None


def _message_of(entry: FrozenMap) -> FrozenMap | None:
    kind = entry.get("type")
    if kind == "message":
        message = entry.get("message")
        return message if isinstance(message, FrozenMap) else None
    if kind == "custom_message":
        return FrozenMap._wrap(
            {
                "role": "custom",
                "customType": entry.get("customType"),
                "content": entry.get("content"),
                "display": entry.get("display"),
                "details": entry.get("details"),
                "timestamp": to_epoch_ms(entry.get("timestamp")),
            }
        )
    if kind == "branch_summary" and entry.get("summary"):
        return FrozenMap._wrap(
            {
                "role": "branchSummary",
                "summary": entry.get("summary"),
                "fromId": entry.get("fromId"),
                "timestamp": to_epoch_ms(entry.get("timestamp")),
            }
        )
    return None


def _summary_message(compaction: FrozenMap) -> FrozenMap:
    return FrozenMap._wrap(
        {
            "role": "compactionSummary",
            "summary": compaction.get("summary"),
            "tokensBefore": compaction.get("tokensBefore"),
            "timestamp": to_epoch_ms(compaction.get("timestamp")),
        }
    )


def build_context(path_entries: list[FrozenMap], compaction: FrozenMap | None) -> Context:
    """The context of a root-to-leaf path, as OpenClaw (pi-coding-agent) builds it."""
    messages: list[FrozenMap] = []
    sources: list[FrozenMap] = []

    def emit(entry: FrozenMap) -> None:
        message = _message_of(entry)
        if message is not None:
            messages.append(message)
            sources.append(entry)

    if compaction is None:
        for entry in path_entries:
            emit(entry)
    else:
        messages.append(_summary_message(compaction))
        sources.append(compaction)
        at = next(i for i, e in enumerate(path_entries) if e is compaction)
        keep = False
        for entry in path_entries[:at]:
            keep = keep or entry.get("id") == compaction.get("firstKeptEntryId")
            if keep:
                emit(entry)
        for entry in path_entries[at + 1 :]:
            emit(entry)
    leaf = path_entries[-1].get("id") if path_entries else None
    return Context(tuple(messages), tuple(sources), compaction, leaf)


def context_backward(
    backward: Iterable[FrozenMap], problem: Callable[[str], None]
) -> tuple[list[FrozenMap], Context]:
    """The context of entries given last first: follow ``parentId`` from the leaf and stop
    at the latest compaction's first kept entry, so that only the needed entries are read
    (a file read from its end, or rows read by descending line number).

    Returns the path from the first entry the context needs to the leaf, and the context;
    ``problem`` hears of a compaction that keeps from an entry that is not there.
    """
    path_entries: list[FrozenMap] = []
    compaction: FrozenMap | None = None
    wanted: Any = None  # the parentId we follow next; None before the leaf is found
    leaf_found = False
    for entry in backward:
        if entry.get("type") == "session":
            continue
        if leaf_found and entry.get("id") != wanted:
            continue  # on another branch
        leaf_found = True
        path_entries.append(entry)
        wanted = entry.get("parentId")
        if compaction is None and entry.get("type") == "compaction":
            compaction = entry
        if compaction is not None and entry.get("id") == compaction.get("firstKeptEntryId"):
            break
        if wanted is None:
            break
    path_entries.reverse()
    if compaction is not None and not any(
        e.get("id") == compaction.get("firstKeptEntryId") for e in path_entries
    ):
        problem(
            f"compaction {compaction.get('id')} keeps from a missing entry; "
            "the context is its summary and what follows it"
        )
    return path_entries, build_context(path_entries, compaction)
