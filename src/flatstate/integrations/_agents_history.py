"""An Agents SDK session's history as entries of a flatstate transcript, without the SDK.

Each item is one ``custom`` entry (``customType`` :data:`ITEM`, the item in ``data``); the
file is only ever appended to, and the history is the path from the leaf (the last line)
back along ``parentId``, as in every OpenClaw transcript:

- adding items appends them as children of the leaf;
- popping the last item appends a :data:`POP` marker whose parent is that item's parent, so
  the popped item is left on a dead branch (one line: durable and atomic);
- a compaction is OpenClaw's own ``compaction`` entry: the history is then its summary, the
  items from its ``firstKeptEntryId`` on, and what follows it (one line, so it replaces the
  history atomically).

Reading walks that path backwards from the end of the file and stops once it has the items
asked for, so a read costs what it returns, not the length of the session.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flatstate.frozen import FrozenMap, encode_json, freeze, thaw

__all__ = [
    "ITEM",
    "POP",
    "SUMMARY_PREFIX",
    "CompactionCut",
    "History",
    "estimate_tokens",
    "item_entry",
    "plan_cut",
    "pop_entry",
    "summary_item",
    "walk",
]

ITEM = "openai-agents.item"
POP = "openai-agents.pop"
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"


def item_entry(item: Mapping[str, Any]) -> dict[str, Any]:
    """The transcript entry that holds ``item``."""
    return {"type": "custom", "customType": ITEM, "data": item}


def pop_entry(parent: str | None, popped: str) -> dict[str, Any]:
    """A marker that moves the leaf back to ``parent``, leaving ``popped`` off the path."""
    return {"type": "custom", "customType": POP, "parentId": parent, "data": {"popped": popped}}


def summary_item(compaction: Mapping[str, Any]) -> dict[str, Any]:
    """The item a compaction stands for at the head of the history. An assistant message,
    as the SDK's own handoff summaries are: every model provider accepts one anywhere."""
    return {"role": "assistant", "content": SUMMARY_PREFIX + str(compaction.get("summary", ""))}


@dataclass(frozen=True)
class History:
    """The newest items of a history, oldest first, as the entries that hold them.

    When ``summary_included``, the first entry is the compaction whose summary heads the
    history. ``compaction`` is the latest compaction on the path (None: none, or not
    reached before ``limit`` items); ``complete`` says the entries are the whole history;
    ``leaf`` is the id of the last line.
    """

    entries: list[Mapping[str, Any]]
    compaction: Mapping[str, Any] | None
    complete: bool
    leaf: str | None
    summary_included: bool

    @property
    def stored(self) -> list[Mapping[str, Any]]:
        """The item entries, without the compaction that heads the history."""
        return self.entries[1:] if self.summary_included else self.entries

    def plain(self) -> list[dict[str, Any]]:
        """The items as fresh plain dicts, as the SDK expects them (it may change them)."""
        # A tail read decodes fresh dicts, handed on as they are; a whole-file read's entries
        # are frozen, and copied.
        out = [_own(entry["data"]) for entry in self.stored]
        if self.summary_included and self.compaction is not None:
            out.insert(0, summary_item(self.compaction))
        return out


def _own(data: Any) -> dict[str, Any]:
    return thaw(data) if isinstance(data, FrozenMap) else data  # type: ignore[no-any-return]


def _is_item(entry: Mapping[str, Any]) -> bool:
    return (
        entry.get("type") == "custom"
        and entry.get("customType") == ITEM
        and isinstance(entry.get("data"), Mapping)
    )


def walk(
    entries: Sequence[Mapping[str, Any]], limit: int | None, whole_file: bool
) -> History | None:
    """The newest ``limit`` items (None: all) of the history whose last line is the last of
    ``entries`` (the end of the file, in file order); None when ``entries`` end before the
    walk does and the file holds more (read a longer tail and walk again)."""
    leaf = entries[-1].get("id") if entries else None
    found: list[Mapping[str, Any]] = []
    compaction: Mapping[str, Any] | None = None
    wanted: Any = leaf
    for entry in reversed(entries):
        if wanted is None:
            break
        entry_id = entry.get("id")
        if entry_id != wanted:
            continue  # a dead branch (popped items) or a line of another writer's branch
        wanted = entry.get("parentId")
        if _is_item(entry):
            found.append(entry)
        elif entry.get("type") == "compaction" and compaction is None:
            compaction = entry
        if limit is not None and len(found) >= limit:
            return _history(found, compaction, False, leaf, limit)
        if compaction is not None and entry_id == compaction.get("firstKeptEntryId"):
            wanted = None
    if wanted is not None and not whole_file:
        return None
    # The root, the first kept item, or a parent missing from the file (the path ends there).
    return _history(found, compaction, True, leaf if isinstance(leaf, str) else None, limit)


def _history(
    found: list[Mapping[str, Any]],
    compaction: Mapping[str, Any] | None,
    complete: bool,
    leaf: Any,
    limit: int | None,
) -> History:
    found.reverse()
    with_summary = complete and compaction is not None and (limit is None or len(found) < limit)
    if with_summary and compaction is not None:
        found.insert(0, compaction)
    return History(
        found, compaction, complete, leaf if isinstance(leaf, str) else None, with_summary
    )


def estimate_tokens(item: Mapping[str, Any]) -> int:
    """About four characters a token, counted over the item's JSON: every item type the SDK
    produces (messages, tool calls and their outputs, reasoning) counts what it carries."""
    return math.ceil(len(encode_json(item)) / 4)


def is_user_message(item: Mapping[str, Any]) -> bool:
    """A message the user wrote, as the SDK tells one (typed or the easy input form)."""
    if item.get("type") == "message":
        return item.get("role") == "user"
    return item.get("role") == "user" and "content" in item


@dataclass(frozen=True)
class CompactionCut:
    """Where to cut a history: summarize ``to_summarize``, keep from ``first_kept`` on."""

    to_summarize: tuple[FrozenMap, ...]
    first_kept: str
    previous_summary: str | None
    tokens_before: int


def plan_cut(history: History, keep_recent_tokens: int) -> CompactionCut | None:
    """The cut for a complete history, or None when nothing old enough can be summarized.

    The kept part holds about ``keep_recent_tokens`` of the newest items and always the
    latest user message; it starts at a user message where one allows it (a turn's
    start), never at a tool output whose call would be summarized, nor right after a
    reasoning item (the Responses API refuses either half alone).
    """
    stored = history.stored
    items: list[FrozenMap] = [freeze(entry["data"]) for entry in stored]
    if len(items) < 2:
        return None
    costs = [estimate_tokens(item) for item in items]
    tokens_before = sum(costs)
    if history.summary_included and history.compaction is not None:
        tokens_before += estimate_tokens(summary_item(history.compaction))
    cut, kept = len(items) - 1, costs[-1]  # the newest item is always kept
    while cut > 0 and kept < keep_recent_tokens:
        cut -= 1
        kept += costs[cut]
    users = [i for i, item in enumerate(items) if is_user_message(item)]
    if users:
        cut = min(cut, users[-1])
        at_turn = [i for i in users if 0 < i <= cut]
        if at_turn:
            cut = at_turn[-1]
    cut = _keep_pairs(items, cut)
    if cut <= 0:
        return None
    previous = history.compaction.get("summary") if history.compaction is not None else None
    return CompactionCut(
        to_summarize=tuple(items[:cut]),
        first_kept=str(stored[cut]["id"]),
        previous_summary=previous if isinstance(previous, str) else None,
        tokens_before=tokens_before,
    )


def _keep_pairs(items: list[FrozenMap], cut: int) -> int:
    """Move ``cut`` back until no kept output's call (the nearest item before it with its
    ``call_id``), and no reasoning item the first kept item follows, is summarized."""
    while cut > 0:
        earlier = cut
        for index in range(cut, len(items)):
            if _is_output(items[index]):
                call = _call_of(items, index)
                if call is not None:
                    earlier = min(earlier, call)
        if earlier > 0 and items[earlier - 1].get("type") == "reasoning":
            earlier -= 1
        if earlier >= cut:
            return cut
        cut = earlier
    return cut


def _call_of(items: list[FrozenMap], output: int) -> int | None:
    call_id = items[output].get("call_id")
    for index in range(output - 1, -1, -1):
        if items[index].get("call_id") == call_id and not _is_output(items[index]):
            return index
    return None


def _is_output(item: Mapping[str, Any]) -> bool:
    kind = item.get("type")
    return isinstance(kind, str) and kind.endswith("_output")


def new_entry_id() -> str:
    """An entry id as the transcript makes them (8 hex characters)."""
    return os.urandom(4).hex()


def check_items(items: Iterable[object]) -> list[Mapping[str, Any]]:
    """The items as mappings, or TypeError naming the first that is not one."""
    checked: list[Mapping[str, Any]] = []
    for number, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise TypeError(
                f"session item {number} is a {type(item).__name__}; the Agents SDK's items "
                "are dicts (TResponseInputItem). Nothing was written."
            )
        checked.append(item)
    return checked
