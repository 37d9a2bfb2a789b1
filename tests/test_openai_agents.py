"""FlatstateSession against the OpenAI Agents SDK itself: the SDK's own SQLiteSession as the
reference (differential), its Runner end to end with a scripted model, real processes and
kill -9 for durability, and offline compaction."""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flatstate
from flatstate.errors import InvalidEntry, StoreClosed
from flatstate.frozen import thaw
from flatstate.keys import MAX_KEY_LENGTH
from tests.conftest import (
    POSTGRES_DSN,
    check_docstring_examples,
    postgres_location,
    require_extra,
)

agents = require_extra("agents", "openai-agents")

from agents import Agent, RunConfig, Runner  # noqa: E402
from agents.memory import (  # noqa: E402
    Session,
    SessionSettings,
    SQLiteSession,
    is_openai_responses_compaction_aware_session,
)
from agents.memory.session import _session_accepts_wrapper  # noqa: E402
from agents.testing import ModelStep, ScriptedModel, assistant_message  # noqa: E402

from flatstate.integrations.openai_agents import FlatstateSession, session_key  # noqa: E402

RUN = RunConfig(tracing_disabled=True)
DEADLINE = 120.0  # seconds a child process may take (two shared cores)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def said(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "id": "msg_1",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def transcript_files(state: Path) -> list[str]:
    return sorted(glob.glob(str(state / "transcripts" / "*.jsonl")))


def child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


# -- the protocol -------------------------------------------------------------------------


def test_it_is_a_session_the_runner_passes_the_run_context_to(tmp_path: Path) -> None:
    session = FlatstateSession("s", tmp_path)
    assert isinstance(session, Session)
    assert is_openai_responses_compaction_aware_session(session)
    assert _session_accepts_wrapper(session)  # the runner hands every call its wrapper
    session.close()


def test_limits(tmp_path: Path) -> None:
    async def main() -> None:
        session = FlatstateSession("s", tmp_path, session_settings={"limit": 2})
        assert session.session_settings == SessionSettings(limit=2)
        await session.add_items([user(str(n)) for n in range(5)])
        assert await session.get_items() == [user("3"), user("4")]  # settings' limit
        assert await session.get_items(limit=0) == []
        assert await session.get_items(limit=4) == [user(str(n)) for n in range(1, 5)]
        assert await session.get_items(limit=99) == [user(str(n)) for n in range(5)]
        with pytest.raises(ValueError, match="limit"):
            await session.get_items(limit=-1)
        await session.aclose()

    asyncio.run(main())


def test_items_read_back_exactly_and_bad_ones_are_refused(tmp_path: Path) -> None:
    odd = {
        "type": "function_call_output",
        "call_id": "call_☃",
        "output": json.dumps({"rows": [1, 2.5, None, True]}),
        "nested": {"deep": [[[{"k": "é\u2028\x00"}]]], "big": 2**70, "neg": -0.0, "tiny": 5e-324},
        "": "",
    }

    async def main() -> None:
        session = FlatstateSession("s", tmp_path)
        await session.add_items([odd, said("ok")])
        items = await session.get_items()
        assert items == [odd, said("ok")]
        assert json.dumps(items[0]) == json.dumps(odd)  # same order, same number forms
        items[0]["mutated"] = True  # the caller owns what it gets back
        assert await session.get_items(limit=1) == [said("ok")]
        with pytest.raises(InvalidEntry, match="not a number JSON can carry"):
            await session.add_items([user("fine"), {"role": "user", "score": float("nan")}])
        with pytest.raises(TypeError, match="dicts"):
            await session.add_items(["not an item"])  # type: ignore[list-item]
        assert await session.get_items() == [odd, said("ok")]  # nothing of either written
        await session.aclose()

    asyncio.run(main())


def test_session_ids_keep_their_case_and_spaces(tmp_path: Path) -> None:
    long = ["x" * 487, "x" * 488, "x" * 489, "é" * 82, "用户" * 41, "x" * 100_000]
    ids = ["User", "user", " user", "user ", "ü", "Ü", "a%41", "aA", "a/b", "", *long]
    # An id too long for a key is named by its digest, which no encoded id can be.
    assert [len(session_key(i)) <= MAX_KEY_LENGTH for i in long] == [True] * len(long)
    assert "~" in session_key("x" * 488) and "~" not in session_key("x" * 487)
    assert len({session_key(i) for i in ids}) == len(ids)

    async def main() -> None:
        store = await flatstate.open_async_store(tmp_path)
        for n, session_id in enumerate(ids):
            await FlatstateSession(session_id, store).add_items([user(str(n))])
        for n, session_id in enumerate(ids):
            assert await FlatstateSession(session_id, store).get_items() == [user(str(n))]
        await store.aclose()

    asyncio.run(main())


def test_reads_create_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with flatstate.open_async_store(tmp_path) as store:
            session = FlatstateSession("never-written", store)
            assert await session.get_items() == []
            assert await session.pop_item() is None
            await session.clear_session()
            await session.run_compaction({"force": True})
            assert await store.keys() == ()
            assert transcript_files(tmp_path) == []

    asyncio.run(main())


def test_a_forced_compaction_keeping_nothing_keeps_the_newest_item(tmp_path: Path) -> None:
    """keep_recent_tokens=0 and no user message: the cut fell past the end (IndexError)."""

    async def main() -> None:
        session = FlatstateSession("s", tmp_path, keep_recent_tokens=0)
        try:
            await session.add_items(
                [{"role": "assistant", "content": "a1"}, {"role": "assistant", "content": "a2"}]
            )
            await session.run_compaction({"force": True})
            items = await session.get_items()
            assert len(items) == 2 and items[-1] == {"role": "assistant", "content": "a2"}
            assert "Summary" in str(items[0]["content"])
        finally:
            await session.aclose()

    asyncio.run(main())


# -- the differential test ------------------------------------------------------------------

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
sdk_items = st.one_of(
    st.builds(user, st.text(max_size=30)),
    st.builds(said, st.text(max_size=30)),
    st.builds(
        lambda call, args: {
            "type": "function_call",
            "call_id": call,
            "name": "lookup",
            "arguments": args,
        },
        st.text(min_size=1, max_size=8),
        st.text(max_size=30),
    ),
    st.dictionaries(st.text(max_size=8), json_value, max_size=5),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(sdk_items, max_size=4)),
        st.tuples(st.just("get"), st.none() | st.integers(min_value=0, max_value=8)),
        st.tuples(st.just("pop"), st.none()),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=25,
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    root = tmp_path_factory.mktemp("differential")
    store = flatstate.open_store(root / "flatstate")
    yield store, root
    store.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, limit=st.none() | st.integers(min_value=1, max_value=5), data=st.data())
def test_the_same_operations_give_what_the_sdks_sqlite_session_gives(
    shared: tuple[Any, Path], ops: list[tuple[str, Any]], limit: int | None, data: Any
) -> None:
    store, root = shared
    session_id = data.draw(st.uuids()).hex
    settings_ = SessionSettings(limit=limit)
    reference = SQLiteSession(session_id, root / "sdk.sqlite", session_settings=settings_)
    ours = FlatstateSession(session_id, store, session_settings=settings_)

    async def run() -> None:
        for op, arg in [*ops, ("get", None), ("get", 1000)]:
            if op == "add":
                await reference.add_items(arg)
                await ours.add_items(arg)
            elif op == "get":
                assert await ours.get_items(arg) == await reference.get_items(arg)
            elif op == "pop":
                assert await ours.pop_item() == await reference.pop_item()
            else:
                await reference.clear_session()
                await ours.clear_session()

    try:
        asyncio.run(run())
    finally:
        reference.close()
        ours.close()


# -- the Runner, end to end -----------------------------------------------------------------


def echo_model(turns: int) -> ScriptedModel:
    """A model that answers with what it was shown: the count of items and the last one."""

    def respond(call: Any) -> Any:
        last = call.input[-1] if isinstance(call.input, list) else call.input
        content = last.get("content") if isinstance(last, dict) else last
        return [assistant_message(f"{len(call.input)} items, last {content!r}")]

    return ScriptedModel([ModelStep.respond(respond) for _ in range(turns)])


RUNNER_CHILD = """
    import asyncio, sys
    from agents import Agent, RunConfig, Runner
    from agents.testing import ModelStep, ScriptedModel, assistant_message
    from flatstate.integrations.openai_agents import FlatstateSession

    def respond(call):
        return [assistant_message(f"{len(call.input)} items")]

    async def main():
        session = FlatstateSession("conversation", sys.argv[1], keep_recent_tokens=1,
                                   compact_after_tokens=int(sys.argv[2]))
        agent = Agent(name="a", model=ScriptedModel([ModelStep.respond(respond)]))
        result = await Runner.run(agent, "from the second process", session=session,
                                  run_config=RunConfig(tracing_disabled=True))
        print(result.final_output)
        await session.aclose()

    asyncio.run(main())
"""


def test_runner_turns_see_the_earlier_turns_here_and_in_another_process(tmp_path: Path) -> None:
    async def main() -> None:
        session = FlatstateSession("conversation", tmp_path)
        agent = Agent(name="a", model=echo_model(3))
        outputs = []
        for question in ("one", "two", "three"):
            result = await Runner.run(agent, question, session=session, run_config=RUN)
            outputs.append(result.final_output)
        assert outputs == ["1 items, last 'one'", "3 items, last 'two'", "5 items, last 'three'"]
        assert len(await session.get_items()) == 6
        await session.aclose()

    asyncio.run(main())
    done = child(RUNNER_CHILD, str(tmp_path), "1000000")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "7 items"

    async def after() -> list[Any]:
        async with FlatstateSession("conversation", tmp_path) as session:
            return await session.get_items()

    items = asyncio.run(after())
    assert len(items) == 8 and items[6] == {"role": "user", "content": "from the second process"}


# -- compaction -------------------------------------------------------------------------------


def test_the_runners_call_after_a_short_turn_changes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        session = FlatstateSession("c", tmp_path, keep_recent_tokens=1)  # budget: the default
        agent = Agent(name="a", model=echo_model(4))
        for question in ("one", "two", "three", "four"):
            await Runner.run(agent, question, session=session, run_config=RUN)
        [path] = transcript_files(tmp_path)
        before = Path(path).read_bytes()
        await session.run_compaction({"response_id": "resp-1", "force": False})
        assert Path(path).read_bytes() == before
        assert len(await session.get_items()) == 8
        await session.run_compaction({"force": True})  # force: past any budget
        items = await session.get_items()
        assert items[0]["content"].startswith("Summary of the earlier conversation:")
        assert items[1:] == [user("four"), *items[2:]] and len(items) == 3
        await session.aclose()

    asyncio.run(main())


def test_past_the_budget_the_runner_compacts_and_goes_on_from_there(tmp_path: Path) -> None:
    async def main() -> None:
        session = FlatstateSession("conversation", tmp_path, keep_recent_tokens=1,
                                   compact_after_tokens=60)  # fmt: skip
        agent = Agent(name="a", model=echo_model(4))
        seen = []
        for question in ("one", "two", "three", "four"):
            result = await Runner.run(agent, question, session=session, run_config=RUN)
            seen.append(result.final_output)
            items = await session.get_items()
            assert user(question) in items  # the latest user message is always kept
        # Turn 2 onwards compacted after itself: each turn then saw a summary, the previous
        # question and answer, and its own question.
        assert seen[1:] == ["3 items, last 'two'", "4 items, last 'three'", "4 items, last 'four'"]
        assert "The user asked: one" in items[0]["content"]
        entry = await session.store.get(session.key)  # type: ignore[union-attr]
        assert entry is not None and entry["compactionCount"] == 3
        await session.aclose()

    asyncio.run(main())
    done = child(RUNNER_CHILD, str(tmp_path), "60")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4 items"  # a reopened process goes on from the summary


def test_compaction_uses_the_sessions_summarizer_and_keeps_tool_pairs(tmp_path: Path) -> None:
    requests = []

    async def summarize(request: Any) -> str:
        requests.append(request)
        return "they talked"

    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "42"}

    async def main() -> None:
        session = FlatstateSession("c", tmp_path, summarizer=summarize, keep_recent_tokens=1)
        await session.add_items([user("a"), said("b"), call, output, said("done")])
        await session.run_compaction({"force": True})
        # No user message to cut at but the first: there is nothing to summarize.
        assert requests == [] and len(await session.get_items()) == 5
        await session.add_items([user("next"), call, output])
        await session.run_compaction({"force": True})
        assert [thaw(m) for m in requests[0].messages] == [
            user("a"),
            said("b"),
            call,
            output,
            said("done"),
        ]
        assert await session.get_items() == [
            {"role": "assistant", "content": "Summary of the earlier conversation:\nthey talked"},
            user("next"),
            call,
            output,
        ]
        await session.aclose()

    asyncio.run(main())


def test_a_failing_summarizer_changes_nothing(tmp_path: Path) -> None:
    def broken(request: Any) -> str:
        raise RuntimeError("model down")

    async def main() -> None:
        session = FlatstateSession("c", tmp_path, summarizer=broken, keep_recent_tokens=1)
        await session.add_items([user("a"), said("b"), user("c")])
        [path] = transcript_files(tmp_path)
        before = Path(path).read_bytes()
        with pytest.raises(RuntimeError, match="model down"):
            await session.run_compaction({"force": True})
        assert Path(path).read_bytes() == before
        await session.aclose()

    asyncio.run(main())


def test_pop_and_clear_around_a_compaction(tmp_path: Path) -> None:
    async def main() -> None:
        session = FlatstateSession("c", tmp_path, keep_recent_tokens=1)
        await session.add_items([user("a"), said("b"), user("c"), said("d")])
        await session.run_compaction({"force": True})
        summary, *kept = await session.get_items()
        assert kept == [user("c"), said("d")]
        assert await session.pop_item() == said("d")  # kept by the compaction
        assert await session.get_items() == [summary, user("c")]
        await session.add_items([said("e")])
        assert await session.pop_item() == said("e")  # after it
        assert await session.pop_item() == user("c")
        assert await session.get_items() == [summary]
        assert await session.pop_item() == summary
        assert await session.get_items() == [] and await session.pop_item() is None
        await session.add_items([user("again")])
        assert await session.get_items() == [user("again")]
        await session.aclose()

        reopened = FlatstateSession("c", tmp_path)  # pops were durable
        assert await reopened.get_items() == [user("again")]
        [path] = transcript_files(tmp_path)
        await reopened.clear_session()
        assert await reopened.get_items() == []
        assert not os.path.exists(path)
        assert glob.glob(path + ".reset.*")  # archived as a reset does
        await reopened.add_items([user("fresh")])
        assert await reopened.get_items() == [user("fresh")]
        await reopened.aclose()

    asyncio.run(main())


# -- concurrency and lifetimes ---------------------------------------------------------------


def test_64_concurrent_sessions_and_many_tasks_on_one(tmp_path: Path) -> None:
    async def turns(session: FlatstateSession, n: int) -> None:
        for turn in range(n):
            await session.get_items(limit=20)
            await session.add_items([user(f"{session.session_id} {turn}"), said(str(turn))])

    async def main() -> None:
        async with flatstate.open_async_store(tmp_path) as store:
            sessions = [FlatstateSession(f"s{n}", store) for n in range(64)]
            await asyncio.gather(*(turns(s, 5) for s in sessions))
            for s in sessions:
                items = await s.get_items()
                assert items[::2] == [user(f"{s.session_id} {t}") for t in range(5)]
            one = FlatstateSession("busy", store)
            await asyncio.gather(*(one.add_items([user(str(n))]) for n in range(64)))
            await asyncio.gather(*(one.pop_item() for _ in range(16)))
            assert len(await one.get_items()) == 48

    asyncio.run(main())


WRITER_CHILD = """
    import asyncio, sys
    from flatstate.integrations.openai_agents import FlatstateSession

    async def main():
        name, count = sys.argv[2], int(sys.argv[3])
        shared = FlatstateSession("shared", sys.argv[1])
        own = FlatstateSession(name, sys.argv[1])
        for n in range(count):
            await shared.add_items([{"role": "user", "content": f"{name} {n}"}])
            await own.add_items([{"role": "user", "content": f"{name} {n}"}])
            print(f"ack {n}", flush=True)
        await shared.aclose()
        await own.aclose()

    asyncio.run(main())
"""


def test_two_processes_on_one_store(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER_CHILD), str(tmp_path), name, "40"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=DEADLINE)
        assert proc.returncode == 0, err

    async def main() -> None:
        async with flatstate.open_async_store(tmp_path) as store:
            shared = await FlatstateSession("shared", store).get_items()
            assert len(shared) == 80
            for name in ("p1", "p2"):
                mine = [i for i in shared if i["content"].startswith(name)]
                assert mine == [user(f"{name} {n}") for n in range(40)]  # each in its order
                own = await FlatstateSession(name, store).get_items()
                assert own == [user(f"{name} {n}") for n in range(40)]

    asyncio.run(main())


def test_kill_9_mid_turn_loses_no_acknowledged_item(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER_CHILD), str(tmp_path), "k", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged = -1
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + DEADLINE
        while acknowledged < 150 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            acknowledged = int(line.split()[1])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(DEADLINE)

    async def main() -> None:
        async with FlatstateSession("k", tmp_path) as session:
            items = await session.get_items()
            assert len(items) >= acknowledged + 1
            assert items == [user(f"k {n}") for n in range(len(items))]  # in order, no gap
            await session.add_items([user("after the crash")])  # a cut line does not stop us
            assert (await session.get_items(limit=1)) == [user("after the crash")]

    asyncio.run(main())


def test_a_program_that_never_closes_still_exits(tmp_path: Path) -> None:
    done = child(
        """
        import asyncio, sys, threading
        from flatstate.integrations.openai_agents import FlatstateSession

        async def main():
            session = FlatstateSession("s", sys.argv[1])
            await session.add_items([{"role": "user", "content": "hi"}])

        asyncio.run(main())
        print([t.name for t in threading.enumerate()
               if not t.daemon and t is not threading.main_thread()])
        """,
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

    async def main() -> list[Any]:
        async with FlatstateSession("s", tmp_path) as session:
            return await session.get_items()

    assert asyncio.run(main()) == [user("hi")]


def test_a_shared_store_stays_open_and_an_own_one_closes(tmp_path: Path) -> None:
    async def main() -> None:
        store = await flatstate.open_async_store(tmp_path)
        shared = FlatstateSession("a", store)
        await shared.add_items([user("x")])
        await shared.aclose()
        assert await store.keys() == (session_key("a"),)
        with pytest.raises(RuntimeError, match="closed"):
            await shared.get_items()
        own = FlatstateSession("b", tmp_path / "other")
        await own.add_items([user("y")])
        inner = own.store
        own.close()  # the sync close
        assert inner is not None
        with pytest.raises(StoreClosed):
            await inner.keys()
        await store.aclose()
        with pytest.raises(TypeError, match="store options"):
            FlatstateSession("c", store, cache_bytes=1)

    asyncio.run(main())


@pytest.mark.skipif(POSTGRES_DSN is None, reason="no PostgreSQL server (see tests/conftest.py)")
def test_a_postgresql_location(tmp_path: Path) -> None:
    location = postgres_location(tmp_path)

    async def main() -> None:
        session = FlatstateSession("pg", location)
        agent = Agent(name="a", model=echo_model(2))
        for question in ("one", "two"):
            await Runner.run(agent, question, session=session, run_config=RUN)
        await session.aclose()
        async with FlatstateSession("pg", location) as again:
            items = await again.get_items()
            assert [i.get("content") for i in items[::2]] == ["one", "two"]
            assert await again.pop_item() == items[-1]
            assert len(await again.get_items()) == 3

    asyncio.run(main())


def test_docstring_examples() -> None:
    check_docstring_examples("flatstate.integrations.openai_agents")
