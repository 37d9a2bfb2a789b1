"""Compaction: the cut, the entry, the count, the hooks, and crashes in the middle."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import flatstate
from flatstate.compaction import (
    Summary,
    SummaryRequest,
    acompact,
    compact,
    estimate_tokens,
    needs_compaction,
    plan_compaction,
)
from flatstate.errors import NeedsAwait
from flatstate.transcripts import FsyncPolicy, TranscriptLike
from tests.conftest import store_location
from tests.processes import running, wait_for_content


def user(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
    }


def assistant(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
    }


def tool_call(path: str) -> dict[str, Any]:
    call = {"type": "toolCall", "id": "c", "name": "read", "arguments": {"path": path}}
    return {"type": "message", "message": {"role": "assistant", "content": [call]}}


def tool_result(text: str) -> dict[str, Any]:
    content = [{"type": "text", "text": text}]
    return {
        "type": "message",
        "message": {"role": "toolResult", "toolCallId": "c", "content": content},
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> flatstate.SessionStore:
    """A store whose transcripts are files (SQLite) or rows (PostgreSQL)."""
    s = flatstate.open_store(store_location(str(request.param), tmp_path))
    yield s
    s.close()


def fill(store: flatstate.SessionStore, key: str, turns: int, size: int = 400) -> TranscriptLike:
    transcript = store.transcript(key)
    for i in range(turns):
        transcript.append_many([user(f"q{i} " + "u" * size), assistant(f"a{i} " + "a" * size)])
    return transcript


def test_compaction_appends_a_summary_and_bumps_the_count(store: flatstate.SessionStore) -> None:
    transcript = fill(store, "main", 40)
    before = transcript.context()
    result = compact(store, "main", keep_recent_tokens=1000)
    assert result is not None and result.compaction_count == 1
    entry = store.get("main")
    assert entry is not None and entry.compaction_count == 1
    last = transcript.tail(1)[0]
    assert last["type"] == "compaction" and last["id"] == result.entry_id
    assert last["firstKeptEntryId"] == result.first_kept_entry_id
    assert (
        last["tokensBefore"]
        == result.tokens_before
        == sum(estimate_tokens(m) for m in before.messages)
    )
    assert last["details"]["compactionCount"] == 1
    after = transcript.context()
    assert after.messages[0]["role"] == "compactionSummary"
    assert after.entries[1]["id"] == result.first_kept_entry_id
    assert result.tokens_after < result.tokens_before
    assert 1000 <= sum(estimate_tokens(m) for m in after.messages[1:]) < 1300


@pytest.mark.parametrize("keep", [0, -5, 1.5, True])
def test_keep_recent_tokens_below_one_is_refused_changing_nothing(
    store: flatstate.SessionStore, keep: Any
) -> None:
    transcript = fill(store, "main", 4)
    before = transcript.tail(100)
    with pytest.raises(ValueError, match="at least 1"):
        compact(store, "main", keep_recent_tokens=keep)
    assert transcript.tail(100) == before and store.get("main").compaction_count == 0  # type: ignore[union-attr]


def test_nothing_to_compact_returns_none(store: flatstate.SessionStore) -> None:
    fill(store, "main", 2)
    assert compact(store, "main", keep_recent_tokens=20_000) is None
    assert store.get("main").compaction_count == 0  # type: ignore[union-attr]


def test_the_cut_never_separates_a_tool_call_from_its_result(
    store: flatstate.SessionStore,
) -> None:
    transcript = store.transcript("main")
    for i in range(10):
        transcript.append_many(
            [
                user(f"q{i}" + "x" * 400),
                tool_call(f"f{i}.md"),
                tool_result("r" * 400),
                assistant("ok"),
            ]
        )
    context = transcript.context()
    ids = [e["id"] for e in context.entries]
    for keep in range(50, 1500, 37):
        plan = plan_compaction(context, keep_recent_tokens=keep)
        assert plan is not None
        cut = ids.index(plan.first_kept_entry_id)
        # Something on both sides, and the summary gets exactly what comes before the cut.
        assert 0 < cut < len(ids) and plan.to_summarize == context.messages[:cut]
        assert context.messages[cut]["role"] != "toolResult"


def test_a_second_compaction_hands_over_the_previous_summary(
    store: flatstate.SessionStore,
) -> None:
    requests: list[SummaryRequest] = []

    def summarizer(request: SummaryRequest) -> Summary:
        requests.append(request)
        return Summary(f"summary {len(requests)}", {"by": "test"})

    transcript = fill(store, "main", 30)
    compact(store, "main", summarizer, keep_recent_tokens=800)
    for i in range(20):
        transcript.append_many([user(f"later{i} " + "u" * 400), assistant("a" * 400)])
    result = compact(store, "main", summarizer, keep_recent_tokens=800)
    assert result is not None and result.compaction_count == 2
    assert requests[0].previous_summary is None and requests[1].previous_summary == "summary 1"
    assert transcript.tail(1)[0]["details"] == {"by": "test", "compactionCount": 2}
    assert transcript.context().messages[0]["summary"] == "summary 2"


def test_the_threshold_rule() -> None:
    assert not needs_compaction(150_000, 200_000, 16_384)
    assert needs_compaction(190_000, 200_000, 16_384)
    assert needs_compaction(175_000, 200_000, 16_384, reserve_tokens_floor=30_000)


def test_context_window_gates_compaction(store: flatstate.SessionStore) -> None:
    fill(store, "main", 40)
    assert compact(store, "main", keep_recent_tokens=500, context_window=1_000_000) is None
    assert compact(store, "main", keep_recent_tokens=500, context_window=5_000) is not None


def test_hooks_get_openclaws_payloads_and_a_failing_hook_breaks_nothing(
    store: flatstate.SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def before(payload: dict[str, Any]) -> None:
        seen.append(("before", payload))

    async def after(payload: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        seen.append(("after", payload))

    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("hook exploded")

    transcript = fill(store, "main", 30)
    result = compact(
        store, "main", keep_recent_tokens=800, before=[broken, before], after=[after, broken]
    )
    assert result is not None
    assert [stage for stage, _ in seen] == ["before", "after"]
    assert set(seen[0][1]) == {"messageCount", "compactingCount", "tokenCount", "sessionFile"}
    assert seen[1][1]["compactedCount"] == 1 and seen[1][1]["sessionFile"] == transcript.path
    assert seen[1][1]["tokenCount"] == result.tokens_after
    failures = [r for r in caplog.records if "compaction goes on" in r.getMessage()]
    assert len(failures) == 2


def test_acompact_awaits_an_async_summarizer(store: flatstate.SessionStore) -> None:
    async def summarizer(request: SummaryRequest) -> str:
        await asyncio.sleep(0)
        return f"{len(request.messages)} messages"

    fill(store, "main", 30)
    result = asyncio.run(acompact(store, "main", summarizer, keep_recent_tokens=800))
    assert result is not None and result.summary.endswith("messages")


def test_compact_in_a_running_loop_says_to_await_acompact(
    store: flatstate.SessionStore, recwarn: pytest.WarningsRecorder
) -> None:
    """Inside an event loop the sync compact() cannot wait for an async summarizer: a typed
    error names acompact, instead of asyncio.run's error and a never-awaited coroutine."""

    async def summarizer(request: SummaryRequest) -> str:
        return "never made"

    fill(store, "main", 30)
    before = store.transcript("main").tail(1)

    async def inside() -> None:
        with pytest.raises(NeedsAwait, match=r"await flatstate\.compaction\.acompact"):
            compact(store, "main", summarizer, keep_recent_tokens=800)

    asyncio.run(inside())
    assert store.transcript("main").tail(1) == before  # nothing was written
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_compacting_the_openclaw_fixture(openclaw_dir: Path) -> None:
    path = openclaw_dir / "agents" / "main" / "sessions" / "sessions.json"
    with flatstate.open_store(path) as store:
        assert store.get("main").compaction_count == 1  # type: ignore[union-attr]
        result = compact(store, "main", keep_recent_tokens=60)
        assert result is not None and result.compaction_count == 2
        assert json.loads(path.read_text())["agent:main:main"]["compactionCount"] == 2


def test_a_crash_between_the_entry_and_the_count_is_reconciled_on_open(
    store: flatstate.SessionStore,
) -> None:
    transcript = fill(store, "main", 30)
    kept = transcript.tail(2)[0]["id"]
    details = {"compactionCount": 3}
    compaction = {
        "type": "compaction",
        "summary": "s",
        "firstKeptEntryId": kept,
        "details": details,
    }
    transcript.append({**compaction, "tokensBefore": 1})
    assert store.get("main").compaction_count == 0  # type: ignore[union-attr]
    store.transcript("main")
    assert store.get("main").compaction_count == 3  # type: ignore[union-attr]


def _compact_until_killed(location: str, ack: str) -> None:
    with flatstate.open_store(location, transcript_fsync=FsyncPolicy.batched()) as store:
        transcript = store.transcript("main")
        fd = os.open(ack, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        i = 0
        while True:
            i += 1
            transcript.append_many(
                [user(f"q{i} " + "u" * 300), tool_call(f"f{i}"), tool_result("r" * 300)]
            )
            if i % 3 == 0 and compact(store, "main", keep_recent_tokens=400) is not None:
                os.write(fd, b"c\n")


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_kill_9_during_compaction_never_leaves_an_inconsistent_session(
    tmp_path: Path, backend: str
) -> None:
    location = store_location(backend, tmp_path)
    ack = str(tmp_path / "acks")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for round_ in range(6):
        with running(_compact_until_killed, [(location, ack)]) as procs:
            wait_for_content(ack)
            time.sleep(rng.uniform(0.0, 0.4))
            os.kill(procs[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
            procs[0].join(10)
        with flatstate.open_store(location) as store:
            transcript = store.transcript("main")  # opening reconciles the count
            entries = list(transcript.iter_entries())
            ids = {e["id"] for e in entries}
            compactions = [e for e in entries if e["type"] == "compaction"]
            assert compactions, f"seed {seed}"
            for c in compactions:
                assert c["firstKeptEntryId"] in ids, f"seed {seed}, round {round_}"
            assert [c["details"]["compactionCount"] for c in compactions] == list(
                range(1, len(compactions) + 1)
            )
            assert store.get("main").compaction_count == len(compactions), f"seed {seed}"  # type: ignore[union-attr]
            context = transcript.context()
            assert (
                context.compaction is not None and context.compaction["id"] == compactions[-1]["id"]
            )


def test_a_compaction_made_meanwhile_wins_and_the_count_stays_true(
    store: flatstate.SessionStore,
) -> None:
    fill(store, "main", 40)
    inner: list[object] = []

    def slow_summarizer(request: SummaryRequest) -> str:
        # While this summary is being written, another writer compacts the session.
        inner.append(compact(store, "main", keep_recent_tokens=1000))
        return "outer summary"

    assert compact(store, "main", slow_summarizer, keep_recent_tokens=1000) is None
    assert inner and inner[0] is not None
    transcript = store.transcript("main")
    compactions = [e for e in transcript.iter_entries() if e["type"] == "compaction"]
    assert len(compactions) == 1 and compactions[0]["summary"] != "outer summary"
    assert store.get("main").compaction_count == 1  # type: ignore[union-attr]
