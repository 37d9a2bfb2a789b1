"""Compaction: when the context window fills, summarize the old turns and keep the recent ones.

``compact(store, key, summarizer)`` reads the session's context, picks a cut
point that keeps about ``keep_recent_tokens`` of the newest entries (never
between an assistant's tool call and its tool result), asks the summarizer for
a summary of everything before it, appends a ``compaction`` entry
(``summary``, ``firstKeptEntryId``, ``tokensBefore``, ``details``) and bumps
the session's ``compactionCount``. The next context is the summary plus the
entries from ``firstKeptEntryId`` on.

Crash safety: the compaction entry is appended after the entry it keeps from,
so its ``firstKeptEntryId`` always exists; the new count is recorded in the
entry's ``details.compactionCount`` before the session is patched. A crash
between the two leaves the transcript ahead of the session, and
:func:`reconcile` (run when a transcript is opened and before every
compaction) raises ``compactionCount`` to the transcript's. The rule, in one
line: the transcript is the truth, the count catches up.

When the provider rejects a request for being too long (``context length
exceeded``), call ``compact(store, key, summarizer)`` and retry: the threshold
rule :func:`needs_compaction` is only for the check after a successful turn.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec

from flatstate.errors import NeedsAwait
from flatstate.frozen import FrozenMap, encode_json
from flatstate.store import SessionStore
from flatstate.transcripts import Context, TranscriptLike
from flatstate.transcripts.reconcile import reconcile as reconcile_count

__all__ = [
    "CompactionResult",
    "SummaryRequest",
    "acompact",
    "builtin_summarizer",
    "compact",
    "estimate_tokens",
    "needs_compaction",
    "plan_compaction",
    "reconcile",
]

log = logging.getLogger("flatstate.compaction")

DEFAULT_KEEP_RECENT_TOKENS = 20_000
DEFAULT_RESERVE_TOKENS = 16_384


class SummaryRequest(msgspec.Struct, frozen=True, gc=False):
    """What a summarizer is asked to condense."""

    messages: tuple[FrozenMap, ...]
    previous_summary: str | None
    session_file: str
    instructions: str | None = None


class Summary(msgspec.Struct, frozen=True):
    """A summarizer may return a plain string, or this to add ``details`` to the entry."""

    text: str
    details: dict[str, Any] = msgspec.field(default_factory=dict)


Summarizer = Callable[[SummaryRequest], "str | Summary | Awaitable[str | Summary]"]
Hook = Callable[[dict[str, Any]], Any]


class CompactionResult(msgspec.Struct, frozen=True, kw_only=True):
    entry_id: str
    summary: str
    first_kept_entry_id: str
    tokens_before: int
    tokens_after: int
    summarized_messages: int
    compaction_count: int


class CompactionPlan(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Where to cut a context: computed without side effects."""

    to_summarize: tuple[FrozenMap, ...]
    first_kept_entry_id: str
    previous_compaction_id: str | None
    previous_summary: str | None
    tokens_before: int
    messages_before: int


def estimate_tokens(message: Mapping[str, Any]) -> int:
    """About four characters a token, counted over what the model reads."""
    chars = 0
    content = message.get("content")
    if isinstance(content, str):
        chars += len(content)
    elif isinstance(content, tuple | list):
        for block in content:
            if not isinstance(block, FrozenMap | dict):
                continue
            for field in ("text", "thinking"):
                value = block.get(field)
                if isinstance(value, str):
                    chars += len(value)
            if block.get("type") == "toolCall":
                chars += len(str(block.get("name", ""))) + len(encode_json(block.get("arguments")))
    summary = message.get("summary")
    if isinstance(summary, str):
        chars += len(summary)
    return math.ceil(chars / 4)


def needs_compaction(
    context_tokens: int,
    context_window: int = 200_000,
    reserve_tokens: int = DEFAULT_RESERVE_TOKENS,
    reserve_tokens_floor: int = 0,
) -> bool:
    """OpenClaw's threshold after a successful turn: ``tokens > window - reserve``.

    ``reserve_tokens_floor`` (OpenClaw's ``reserveTokensFloor``) is a minimum
    for the reserve; 0 leaves ``reserve_tokens`` as it is.
    """
    return context_tokens > context_window - max(reserve_tokens, reserve_tokens_floor)


def _is_tool_result(entry: FrozenMap) -> bool:
    message = entry.get("message")
    return (
        entry.get("type") == "message"
        and isinstance(message, Mapping)
        and message.get("role") == "toolResult"
    )


def plan_compaction(
    context: Context, keep_recent_tokens: int = DEFAULT_KEEP_RECENT_TOKENS
) -> CompactionPlan | None:
    """The cut for ``context``: None when everything fits in ``keep_recent_tokens``.
    Raises ValueError below 1: a compaction always keeps an entry to start from."""
    if type(keep_recent_tokens) is not int or keep_recent_tokens < 1:
        raise ValueError(
            f"keep_recent_tokens is a whole number of at least 1, not {keep_recent_tokens!r}: "
            "a compaction keeps the newest entries, at least one, to continue from"
        )
    previous = context.compaction
    start = 1 if previous is not None else 0  # the summary is not an entry to keep or cut
    entries = list(context.entries[start:])
    messages = list(context.messages[start:])
    if not entries:
        return None
    costs = [estimate_tokens(m) for m in messages]
    tokens_before = sum(costs) + (estimate_tokens(context.messages[0]) if previous else 0)
    kept = 0
    cut = len(entries)
    while cut > 0 and kept < keep_recent_tokens:
        cut -= 1
        kept += costs[cut]
    # A tool result never starts the kept part: keep the call that asked for it too.
    while cut > 0 and _is_tool_result(entries[cut]):
        cut -= 1
    if cut == 0:
        return None
    first_kept = entries[cut].get("id")
    if not isinstance(first_kept, str):
        return None
    summary = previous.get("summary") if previous is not None else None
    return CompactionPlan(
        to_summarize=tuple(messages[:cut]),
        first_kept_entry_id=first_kept,
        previous_compaction_id=previous.get("id") if previous is not None else None,
        previous_summary=summary if isinstance(summary, str) else None,
        tokens_before=tokens_before,
        messages_before=len(context.messages),
    )


def builtin_summarizer(request: SummaryRequest) -> Summary:
    """A deterministic summary for tests, examples and benchmarks (no model involved).

    It names how many messages of each role were condensed, the first words of
    the user's requests, and the files the tools read or changed.
    """
    roles: dict[str, int] = {}
    asks: list[str] = []
    read: list[str] = []
    modified: list[str] = []
    for message in request.messages:
        role = str(message.get("role") or message.get("type"))  # an Agents SDK item: its type
        roles[role] = roles.get(role, 0) + 1
        content = message.get("content")
        if role == "user" and isinstance(content, str) and len(asks) < 5:
            asks.append(content[:60])  # the Agents SDK's easy input form
        if not isinstance(content, tuple | list):
            continue
        if role == "user" and len(asks) < 5:
            text = " ".join(b.get("text", "") for b in content if isinstance(b, FrozenMap | dict))
            if text:
                asks.append(text[:60])
        if role == "assistant":
            for block in content:
                if isinstance(block, FrozenMap | dict) and block.get("type") == "toolCall":
                    arguments = block.get("arguments")
                    path = (
                        arguments.get("path") if isinstance(arguments, FrozenMap | dict) else None
                    )
                    if isinstance(path, str):
                        target = read if block.get("name") == "read" else modified
                        if path not in target:
                            target.append(path)
    counts = ", ".join(f"{n} {role}" for role, n in sorted(roles.items()))
    parts = [f"Condensed {len(request.messages)} messages ({counts})."]
    if request.previous_summary:
        parts.append(f"Earlier: {request.previous_summary[:400]}")
    if asks:
        parts.append("The user asked: " + "; ".join(asks) + ".")
    if read or modified:
        parts.append(
            f"Files read: {', '.join(read) or 'none'}; modified: {', '.join(modified) or 'none'}."
        )
    return Summary(" ".join(parts), {"readFiles": read, "modifiedFiles": modified})


def reconcile(store: SessionStore, key: str, transcript: TranscriptLike | None = None) -> int:
    """Raise ``compactionCount`` to what the transcript records; return the count (see
    :mod:`flatstate.transcripts.reconcile`, which the store runs on every open)."""
    transcript = transcript or store.transcript(key, reconcile=False)
    return reconcile_count(store, key, transcript)


def _payload_before(plan: CompactionPlan, transcript: TranscriptLike) -> dict[str, Any]:
    return {
        "messageCount": plan.messages_before,
        "compactingCount": len(plan.to_summarize),
        "tokenCount": plan.tokens_before,
        "sessionFile": transcript.path,
    }


def _run_hooks_sync(hooks: Sequence[Hook], payload: dict[str, Any], stage: str) -> None:
    for hook in hooks:
        try:
            result = hook(dict(payload))
            if inspect.isawaitable(result):
                _finish_awaitable(result, stage)
        except Exception:
            log.exception("%s hook %r failed; compaction goes on", stage, hook)


def _finish_awaitable(result: Awaitable[Any], stage: str) -> None:
    """Run an async hook from sync code: to completion, or fire-and-forget inside a loop."""

    async def guarded() -> None:
        try:
            await result
        except Exception:
            log.exception("%s hook failed; compaction goes on", stage)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(guarded())
    else:
        # Fire-and-forget inside a running loop, as OpenClaw's auto-compaction
        # does; the set keeps the task alive until it finishes.
        task = loop.create_task(guarded())
        _pending_hooks.add(task)
        task.add_done_callback(_pending_hooks.discard)


_pending_hooks: set[asyncio.Task[None]] = set()


async def _run_hooks_async(hooks: Sequence[Hook], payload: dict[str, Any], stage: str) -> None:
    async def one(hook: Hook) -> None:
        try:
            result = hook(dict(payload))
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("%s hook %r failed; compaction goes on", stage, hook)

    await asyncio.gather(*(one(hook) for hook in hooks))


def _prepare(
    store: SessionStore,
    key: str,
    keep_recent_tokens: int,
    context_window: int | None,
    reserve_tokens: int,
) -> tuple[TranscriptLike, CompactionPlan | None, int]:
    transcript = store.transcript(key, reconcile=False)
    count = reconcile(store, key, transcript)
    context = transcript.context()
    plan = plan_compaction(context, keep_recent_tokens)
    below_threshold = context_window is not None and not needs_compaction(
        plan.tokens_before if plan else 0, context_window, reserve_tokens
    )
    return transcript, None if below_threshold else plan, count


def _commit(
    store: SessionStore,
    key: str,
    transcript: TranscriptLike,
    plan: CompactionPlan,
    summary: str | Summary,
    count: int,
) -> tuple[CompactionResult | None, dict[str, Any]]:
    """Append the compaction and catch the count up; (None, {}) when another writer
    compacted this session while the summary was being written (theirs stands)."""
    text, details = (
        (summary.text, dict(summary.details)) if isinstance(summary, Summary) else (summary, {})
    )
    if not isinstance(text, str):
        raise TypeError(f"a summarizer returns a str or a Summary, not {type(summary).__name__}")
    new_count = count + 1
    details["compactionCount"] = new_count

    def unchanged() -> bool:
        """Under the transcript lock: nobody compacted since this plan was made."""
        latest = transcript.context().compaction
        return (latest.get("id") if latest is not None else None) == plan.previous_compaction_id

    written = transcript.append_many(
        [
            {
                "type": "compaction",
                "summary": text,
                "firstKeptEntryId": plan.first_kept_entry_id,
                "tokensBefore": plan.tokens_before,
                "details": details,
            }
        ],
        guard=unchanged,
    )
    if not written:
        return None, {}
    entry_id = written[0]
    reconcile(store, key, transcript)
    after = transcript.context()
    tokens_after = sum(estimate_tokens(m) for m in after.messages)
    result = CompactionResult(
        entry_id=entry_id,
        summary=text,
        first_kept_entry_id=plan.first_kept_entry_id,
        tokens_before=plan.tokens_before,
        tokens_after=tokens_after,
        summarized_messages=len(plan.to_summarize),
        compaction_count=new_count,
    )
    payload = {
        "messageCount": len(after.messages),
        "tokenCount": tokens_after,
        "compactedCount": new_count,
        "sessionFile": transcript.path,
    }
    return result, payload


def compact(
    store: SessionStore,
    key: str,
    summarizer: Summarizer = builtin_summarizer,
    *,
    keep_recent_tokens: int = DEFAULT_KEEP_RECENT_TOKENS,
    reserve_tokens: int = DEFAULT_RESERVE_TOKENS,
    context_window: int | None = None,
    instructions: str | None = None,
    before: Sequence[Hook] = (),
    after: Sequence[Hook] = (),
) -> CompactionResult | None:
    """Compact session ``key``; None when there is nothing old enough to summarize, or
    when another process compacted it while this summary was being made.

    With ``context_window``, compaction happens only when
    :func:`needs_compaction` says so (the after-turn rule); without it, it
    always happens (``/compact``, or the overflow-error recipe). Hooks get
    OpenClaw's payloads; a hook that raises is logged and ignored. An async
    summarizer or hook is run to completion here; inside an event loop use
    :func:`acompact`.
    """
    transcript, plan, count = _prepare(
        store, key, keep_recent_tokens, context_window, reserve_tokens
    )
    if plan is None:
        return None
    _run_hooks_sync(before, _payload_before(plan, transcript), "before_compaction")
    request = SummaryRequest(
        plan.to_summarize, plan.previous_summary, transcript.path, instructions
    )
    summary = summarizer(request)
    if inspect.isawaitable(summary):
        _outside_a_loop(summary)
        summary = asyncio.run(_await(summary))
    result, payload = _commit(store, key, transcript, plan, summary, count)
    if result is not None:
        _run_hooks_sync(after, payload, "after_compaction")
    return result


async def _await(value: Awaitable[Any]) -> Any:
    return await value


def _outside_a_loop(pending: Awaitable[Any]) -> None:
    """Inside a running event loop, drop ``pending`` and raise NeedsAwait: waiting for it here
    would block the loop it needs (asyncio.run refuses to)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    if inspect.iscoroutine(pending):
        pending.close()  # never awaited, on purpose: no "was never awaited" warning
    raise NeedsAwait(
        "compact()",
        "Its summarizer is async: there, use `await flatstate.compaction.acompact(...)`.",
    )


async def acompact(
    store: SessionStore,
    key: str,
    summarizer: Summarizer = builtin_summarizer,
    *,
    keep_recent_tokens: int = DEFAULT_KEEP_RECENT_TOKENS,
    reserve_tokens: int = DEFAULT_RESERVE_TOKENS,
    context_window: int | None = None,
    instructions: str | None = None,
    before: Sequence[Hook] = (),
    after: Sequence[Hook] = (),
) -> CompactionResult | None:
    """:func:`compact` for async code: awaits the summarizer and runs hooks concurrently.

    Reading the transcript and committing the result (file and database work) run on a
    worker thread, never on the event loop."""
    transcript, plan, count = await asyncio.to_thread(
        _prepare, store, key, keep_recent_tokens, context_window, reserve_tokens
    )
    if plan is None:
        return None
    await _run_hooks_async(before, _payload_before(plan, transcript), "before_compaction")
    request = SummaryRequest(
        plan.to_summarize, plan.previous_summary, transcript.path, instructions
    )
    summary = summarizer(request)
    if inspect.isawaitable(summary):
        summary = await summary
    result, payload = await asyncio.to_thread(_commit, store, key, transcript, plan, summary, count)
    if result is not None:
        await _run_hooks_async(after, payload, "after_compaction")
    return result
