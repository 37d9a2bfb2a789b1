"""FlatstateSaver through the sync path and real graphs: a StateGraph driven by a fake chat
model from langchain_core (invoke and ainvoke, interrupt and resume, a restart in a fresh
process, time travel), what content addressing saves, prune with delta channels, and a
kill -9 after acknowledged puts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

from tests.conftest import NO_POSTGRES, POSTGRES_DSN, require_extra

require_extra("langgraph", "langgraph")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage  # noqa: E402
from langgraph.channels.delta import DeltaChannel  # noqa: E402
from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.graph.message import add_messages  # noqa: E402
from langgraph.types import Command, interrupt  # noqa: E402

from flatstate.errors import StoreClosed  # noqa: E402
from flatstate.integrations.langgraph import FlatstateSaver  # noqa: E402
from flatstate.integrations.langgraph._sqlite_engine import FILE_NAME  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class Chat(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def chat_graph(saver: FlatstateSaver, replies: list[str], *, approve: bool = False) -> Any:
    model = GenericFakeChatModel(messages=iter([AIMessage(r) for r in replies]))

    def call_model(state: Chat) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def ask_human(state: Chat) -> dict[str, Any]:
        answer = interrupt({"question": "send it?", "draft": state["messages"][-1].content})
        return {"messages": [HumanMessage(f"human says {answer}")]}

    builder = StateGraph(Chat)
    builder.add_node("model", call_model)
    builder.add_edge(START, "model")
    if approve:
        builder.add_node("human", ask_human)
        builder.add_edge("model", "human")
        builder.add_edge("human", END)
    else:
        builder.add_edge("model", END)
    return builder.compile(checkpointer=saver)


def contents(state: dict[str, Any]) -> list[str]:
    return [m.content for m in state["messages"]]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "state")
    if POSTGRES_DSN is None:
        pytest.skip(NO_POSTGRES)
    schema = f"lg_{uuid.uuid4().hex[:10]}"
    return f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}schema={schema}"


def test_invoke_keeps_the_conversation_across_turns(location: str) -> None:
    with FlatstateSaver.from_conn_string(location) as saver:
        graph = chat_graph(saver, ["hello!", "fine, thanks"])
        config = {"configurable": {"thread_id": "t1"}}
        graph.invoke({"messages": [HumanMessage("hi")]}, config)
        state = graph.invoke({"messages": [HumanMessage("how are you?")]}, config)
        assert contents(state) == ["hi", "hello!", "how are you?", "fine, thanks"]
        saved = saver.get_tuple(config)
        assert saved is not None
        assert contents(saved.checkpoint["channel_values"]) == contents(state)
        assert saved.metadata["step"] == 4
        # Another thread of the same graph starts empty.
        other = graph.get_state({"configurable": {"thread_id": "t2"}})
        assert other.values == {}


def test_ainvoke_uses_the_same_object(location: str) -> None:
    async def main() -> list[str]:
        async with FlatstateSaver.from_conn_string(location) as saver:
            graph = chat_graph(saver, ["one", "two"])
            config = {"configurable": {"thread_id": "a1"}}
            await graph.ainvoke({"messages": [HumanMessage("x")]}, config)
            state = await graph.ainvoke({"messages": [HumanMessage("y")]}, config)
            # The sync method, from a worker thread, sees what the async ones wrote.
            saved = await asyncio.to_thread(saver.get_tuple, config)
            assert saved is not None
            assert contents(saved.checkpoint["channel_values"]) == contents(state)
            return contents(state)

    assert asyncio.run(main()) == ["x", "one", "y", "two"]


def test_interrupt_and_resume(location: str) -> None:
    with FlatstateSaver(location) as saver:
        graph = chat_graph(saver, ["draft reply"], approve=True)
        config = {"configurable": {"thread_id": "i1"}}
        first = graph.invoke({"messages": [HumanMessage("write to Bob")]}, config)
        assert first["__interrupt__"][0].value == {"question": "send it?", "draft": "draft reply"}
        assert graph.get_state(config).next == ("human",)
        state = graph.invoke(Command(resume="yes"), config)
        assert contents(state) == ["write to Bob", "draft reply", "human says yes"]
        assert graph.get_state(config).next == ()


RESUME_SCRIPT = """
import json, sys
from langchain_core.messages import HumanMessage
from langgraph.types import Command
sys.path.insert(0, {repo!r})
from tests.test_langgraph_saver import chat_graph, contents
from flatstate.integrations.langgraph import FlatstateSaver

with FlatstateSaver(sys.argv[1]) as saver:
    graph = chat_graph(saver, [], approve=True)
    config = {{"configurable": {{"thread_id": "r1"}}}}
    pending = graph.get_state(config)
    state = graph.invoke(Command(resume="from the new process"), config)
    print(json.dumps({{"next": list(pending.next), "messages": contents(state)}}))
"""


def test_a_fresh_process_resumes_from_the_checkpoint(location: str, tmp_path: Path) -> None:
    with FlatstateSaver(location) as saver:
        graph = chat_graph(saver, ["needs approval"], approve=True)
        graph.invoke({"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": "r1"}})
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT.format(repo=str(REPO)))
    done = subprocess.run(
        [sys.executable, str(script), location], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "next": ["human"],
        "messages": ["go", "needs approval", "human says from the new process"],
    }


def test_time_travel_to_an_earlier_checkpoint(location: str) -> None:
    with FlatstateSaver(location) as saver:
        graph = chat_graph(saver, ["first answer", "second answer", "answer on the fork"])
        config = {"configurable": {"thread_id": "tt"}}
        graph.invoke({"messages": [HumanMessage("q1")]}, config)
        graph.invoke({"messages": [HumanMessage("q2")]}, config)
        history = list(graph.get_state_history(config))
        # Newest first; the checkpoint after the first turn has two messages.
        after_first = next(s for s in history if contents(s.values) == ["q1", "first answer"])
        assert len(history) >= 6
        # Replaying from it forks the thread: the second turn is gone from the new branch.
        forked = graph.invoke({"messages": [HumanMessage("q2 again")]}, after_first.config)
        assert contents(forked) == ["q1", "first answer", "q2 again", "answer on the fork"]
        old = graph.get_state(history[0].config)  # the old branch is still there
        assert contents(old.values) == ["q1", "first answer", "q2", "second answer"]
        latest = saver.get_tuple(config)
        assert latest is not None
        assert latest.parent_config is not None


class Documents(TypedDict):
    docs: dict[str, str]
    step: int


def test_disk_grows_with_the_changes_not_the_steps(tmp_path: Path) -> None:
    """64 entries of 1 KiB, one rewritten per step: 100 steps store ~100 KiB, not 6.4 MiB."""

    def edit(state: Documents) -> dict[str, Any]:
        docs = dict(state["docs"])
        step = state["step"] + 1
        docs[f"doc{step % 64}"] = f"{step:04d}" + os.urandom(510).hex()
        return {"docs": docs, "step": step}

    builder = StateGraph(Documents)
    builder.add_node("edit", edit)
    builder.add_edge(START, "edit")
    builder.add_conditional_edges("edit", lambda s: END if s["step"] >= 100 else "edit")
    docs = {f"doc{i}": os.urandom(512).hex() for i in range(64)}
    with FlatstateSaver(str(tmp_path / "state")) as saver:
        graph = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "d", "recursion_limit": 1000}}
        final = graph.invoke({"docs": docs, "step": 0}, {**config, "recursion_limit": 1000})
        assert final["step"] == 100
        saved = saver.get_tuple(config)
        assert saved is not None and saved.checkpoint["channel_values"]["docs"] == final["docs"]
        engine: Any = saver._engine
        pieces = engine._db.q("SELECT count(*), sum(length(body)) FROM blobs")[0]
        checkpoints = engine._db.q("SELECT count(*) FROM checkpoints")[0][0]
    assert checkpoints >= 101
    # Each step adds about one 1 KiB piece and the 1 KiB list of the dict's 64 pieces (which
    # the checkpoint and the write that made it share); the initial 64 KiB is stored once:
    # 101 checkpoints whole would be 6.4 MiB, and as many writes again.
    print(f"{checkpoints} checkpoints: {pieces[0]} pieces, {pieces[1]} bytes")
    assert pieces[1] < 64 * 1100 + 101 * 2300


def test_values_of_every_shape_round_trip(tmp_path: Path) -> None:
    values = {
        "big_list": [{"i": i, "text": "x" * (i * 37 % 900)} for i in range(200)],
        "big_dict": {f"k{i}": ("v" * i, i, None, b"\x00" * (i % 5)) for i in range(300)},
        "int_keys": {i: "y" * 100 for i in range(100)},
        "nested": [[1, 2], {"a": None}, None, b"bytes" * 500, 3.5, True],
        "small": "s",
        "none": None,
        "tuple": tuple(range(1000)),
    }
    with FlatstateSaver(str(tmp_path / "state")) as saver:
        from langgraph.checkpoint.conformance.test_utils import (
            generate_checkpoint,
            generate_config,
            generate_metadata,
        )

        versions = {k: 1 for k in values}
        cp = generate_checkpoint(channel_values=values, channel_versions=versions)
        stored = saver.put(generate_config("shapes"), cp, generate_metadata(), versions)
        saver._engine.cache.clear()
        got = saver.get_tuple(stored)
        assert got is not None
        # Exactly what the serializer itself gives back (it turns tuples into lists).
        serde = saver.serde
        expected = {k: serde.loads_typed(serde.dumps_typed(v)) for k, v in values.items()}
        assert got.checkpoint["channel_values"] == expected
        saver.put_writes(stored, [("big_list", values["big_list"])], "task")
        saver._engine.cache.clear()
        got = saver.get_tuple(stored)
        assert got is not None and got.pending_writes is not None
        assert got.pending_writes[0][2] == expected["big_list"]


def concat(state: list[str], batches: list[list[str]]) -> list[str]:
    return state + [item for batch in batches for item in batch]


class Log(TypedDict):
    items: Annotated[list[str], DeltaChannel(concat, snapshot_frequency=4)]
    n: int


def _delta_graph(saver: FlatstateSaver) -> Any:
    def step(state: Log) -> dict[str, Any]:
        return {"items": [f"item{state['n']}"], "n": state["n"] + 1}

    builder = StateGraph(Log)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", lambda s: END if s["n"] >= 10 else "step")
    return builder.compile(checkpointer=saver)


def test_prune_keeps_the_ancestors_delta_channels_need(tmp_path: Path) -> None:
    with FlatstateSaver(str(tmp_path / "state")) as saver:
        graph = _delta_graph(saver)
        config = {"configurable": {"thread_id": "delta"}}
        graph.invoke({"items": [], "n": 0}, config)
        before = graph.get_state(config).values
        assert before["items"] == [f"item{i}" for i in range(10)]
        count = len(list(saver.list(config)))
        saver.prune(["delta"], strategy="keep_latest")
        kept = list(saver.list(config))
        assert 1 < len(kept) < count  # the chain back to the last snapshot, not everything
        saver._engine.cache.clear()
        assert graph.get_state(config).values == before
        # And the thread goes on from there.
        graph.invoke({"n": 5}, config)
        assert graph.get_state(config).values["items"][:10] == before["items"]
        saver.prune(["delta"], strategy="delete")
        assert list(saver.list(config)) == []
        with pytest.raises(ValueError, match="keep_latest, delete"):
            saver.prune(["delta"], strategy="everything")


def test_prune_and_delete_sweep_unused_pieces(tmp_path: Path) -> None:
    with FlatstateSaver(str(tmp_path / "state")) as saver:
        graph = chat_graph(saver, [f"reply {i} " + "z" * 3000 for i in range(6)])
        for thread in ("a", "b"):
            for turn in range(3):
                graph.invoke(
                    {"messages": [HumanMessage(f"{thread}{turn}" * 400)]},
                    {"configurable": {"thread_id": thread}},
                )
        engine: Any = saver._engine

        def pieces() -> int:
            return int(engine._db.q("SELECT count(*) FROM blobs")[0][0])

        full = pieces()
        saver.copy_thread("a", "c")
        assert pieces() == full  # a copy shares the pieces
        saver.delete_thread("a")
        assert pieces() == full  # "c" still names them
        saver.prune(["b"], strategy="keep_latest")
        assert len(list(saver.list({"configurable": {"thread_id": "b"}}))) == 1
        saver.delete_thread("c")
        saver.delete_thread("b")
        assert pieces() == 0


KILL_SCRIPT = """
import sys
from flatstate.integrations.langgraph import FlatstateSaver
from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata

saver = FlatstateSaver(sys.argv[1])
parent = None
for i in range(100000):
    config = {"configurable": {"thread_id": "k", "checkpoint_ns": ""}}
    if parent:
        config["configurable"]["checkpoint_id"] = parent
    values = {"n": i, "blob": [str(j) * 300 for j in range(i % 7, i % 7 + 20)]}
    cp = generate_checkpoint(channel_values=values, channel_versions={"n": i, "blob": i})
    saved = saver.put(config, cp, generate_metadata(step=i), {"n": i, "blob": i})
    parent = saved["configurable"]["checkpoint_id"]
    print(i, parent, flush=True)
"""


@pytest.mark.slow
def test_an_acknowledged_put_survives_kill_9(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    script = tmp_path / "kill.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    child = subprocess.Popen(
        [sys.executable, str(script), state], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acked: list[tuple[int, str]] = []
    for line in child.stdout:
        n, cid = line.split()
        acked.append((int(n), cid))
        if len(acked) >= 300:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with FlatstateSaver(state) as saver:
        for n, cid in acked:
            got = saver.get_tuple({"configurable": {"thread_id": "k", "checkpoint_id": cid}})
            assert got is not None, f"acknowledged put {n} was lost"
            assert got.checkpoint["channel_values"]["n"] == n
            blob = got.checkpoint["channel_values"]["blob"]
            assert blob == [str(j) * 300 for j in range(n % 7, n % 7 + 20)]


def test_bad_locations_and_closed_savers_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no checkpointer for redis://"):
        FlatstateSaver("redis://localhost")
    with pytest.raises(ValueError, match="state directory or a postgresql"):
        FlatstateSaver("")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / FILE_NAME).write_bytes(b"this is not a database" * 100)
    from flatstate.errors import StoreCorrupt

    with pytest.raises(StoreCorrupt, match="sqlite3"):
        FlatstateSaver(str(tmp_path / "state"))
    saver = FlatstateSaver(str(tmp_path / "other"))
    saver.close()
    with pytest.raises(StoreClosed):
        saver.get_tuple({"configurable": {"thread_id": "x"}})
    with pytest.raises(StoreClosed):
        saver.delete_thread("x")


@pytest.mark.postgres
def test_postgres_messages_never_show_the_password() -> None:
    if POSTGRES_DSN is None:
        pytest.skip(NO_POSTGRES)
    from flatstate.errors import StoreUnavailable

    secret = "s3cret-pass-word"
    dsn = f"postgresql://nobody:{secret}@127.0.0.1:1/nothing?connect_timeout=1"
    with pytest.raises(StoreUnavailable) as caught:
        FlatstateSaver(dsn, lock_timeout=0.5)
    assert secret not in str(caught.value)
    with pytest.raises(StoreUnavailable) as bad:
        FlatstateSaver(f"{dsn}&namespace=a&state_dir=/nowhere", lock_timeout=0.5)
    assert secret not in str(bad.value)
    assert "namespace=a" in str(bad.value)
    with FlatstateSaver(POSTGRES_DSN) as saver:
        assert "password" not in repr(saver).lower() or ":" not in repr(saver).split("@")[0]


def test_table_prefixes_keep_namespaces_apart() -> None:
    from flatstate.integrations.langgraph._postgres_engine import table_prefix

    assert table_prefix("main") == "lg_"  # the default namespace: the tables it always had
    names = ["a", "A", "a-b", "a_b", "é", "", "x" * 200, "x" * 201, "'; DROP TABLE x; --"]
    prefixes = [table_prefix(name) for name in names]
    assert len(set(prefixes)) == len(names)
    for prefix in prefixes:
        assert prefix.startswith("lg_") and prefix.endswith("_")
        assert len(prefix + "checkpoints_run") <= 63  # PostgreSQL's longest identifier
        assert all(c.isascii() and (c.isalnum() or c == "_") for c in prefix)


@pytest.mark.postgres
def test_a_namespace_in_the_url_isolates_its_checkpoints(tmp_path: Path) -> None:
    """The URL the other flatstate stores take (namespace, state_dir) names checkpoints of
    that namespace alone; the same namespace sees them from another saver."""
    if POSTGRES_DSN is None:
        pytest.skip(NO_POSTGRES)
    from tests.conftest import postgres_location

    schema = f"lg_{uuid.uuid4().hex[:10]}"
    one = postgres_location(tmp_path, "team-one", schema=schema)
    two = postgres_location(tmp_path, "team-two", schema=schema)
    config = {"configurable": {"thread_id": "alice"}}
    with FlatstateSaver(one) as saver:
        graph = chat_graph(saver, ["hello!"])
        graph.invoke({"messages": [HumanMessage("hi")]}, config)
        assert "namespace=team-one" in repr(saver)
    with FlatstateSaver(two) as other:
        assert other.get_tuple(config) is None
        assert list(other.list(None)) == []
    with FlatstateSaver(one) as again:
        found = again.get_tuple(config)
        assert found is not None
        assert contents(found.checkpoint["channel_values"])[-1] == "hello!"
    default = f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}schema={schema}"
    with FlatstateSaver(default) as plain, FlatstateSaver(default + "&namespace=main") as main:
        plain.put(*_put_args("t1"))
        assert main.get_tuple({"configurable": {"thread_id": "t1"}}) is not None


def _put_args(thread_id: str) -> tuple[Any, ...]:
    cp, md, versions = _cp(1, {"x": "y"})
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}, cp, md, versions


def _cp(n: int, values: dict[str, Any]) -> tuple[Any, Any, Any]:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint, generate_metadata

    versions = {k: n for k in values}
    return (
        generate_checkpoint(channel_values=values, channel_versions=versions),
        (generate_metadata(step=n)),
        versions,
    )


def test_writes_that_arrive_before_their_checkpoint_are_kept(tmp_path: Path) -> None:
    """LangGraph saves a checkpoint in the background while tasks already write to it."""
    with FlatstateSaver(str(tmp_path / "state")) as saver:
        cp, md, versions = _cp(1, {"x": "y"})
        config = {
            "configurable": {"thread_id": "w", "checkpoint_ns": "", "checkpoint_id": cp["id"]}
        }
        saver.put_writes(config, [("x", "early")], "task")
        saver.put({"configurable": {"thread_id": "w", "checkpoint_ns": ""}}, cp, md, versions)
        got = saver.get_tuple({"configurable": {"thread_id": "w"}})
        assert got is not None and got.pending_writes == [("task", "x", "early")]


def test_a_second_saver_on_the_same_directory_sees_the_first_ones_changes(
    tmp_path: Path,
) -> None:
    """Two savers keep two caches, as two processes would: each sees the other's writes and
    deletes on its next read."""
    location = str(tmp_path / "state")
    with FlatstateSaver(location) as one, FlatstateSaver(location) as two:
        big = {"docs": {f"d{i}": "x" * 2000 for i in range(8)}}
        cp, md, versions = _cp(1, big)
        first = one.put({"configurable": {"thread_id": "s", "checkpoint_ns": ""}}, cp, md, versions)
        assert two.get_tuple({"configurable": {"thread_id": "s"}}) is not None  # cached in two
        cp2, md2, versions2 = _cp(2, {"docs": {**big["docs"], "d0": "changed" * 300}})
        one.put(first, cp2, md2, versions2)
        latest = two.get_tuple({"configurable": {"thread_id": "s"}})
        assert latest is not None and latest.checkpoint["id"] == cp2["id"]
        one.delete_thread("s")
        assert two.get_tuple({"configurable": {"thread_id": "s"}}) is None
        # two's next put must store every piece again: one's sweep deleted them.
        two.put({"configurable": {"thread_id": "s2", "checkpoint_ns": ""}}, cp, md, versions)
        one._engine.cache.clear()
        again = one.get_tuple({"configurable": {"thread_id": "s2"}})
        assert again is not None and again.checkpoint["channel_values"] == big


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "fresh"])
def test_a_value_changed_in_place_by_its_reader_changes_no_other_read(
    location: str, cached: bool
) -> None:
    """Nodes may change the state they are handed in place: every read gets values of
    its own, whether they come from the cache (copied) or from the tables (decoded)."""
    values = {
        "docs": {f"d{i}": "x" * 3000 for i in range(8)},
        "tags": ["a", "b", "c"],
        "nested": {"inner": {"k": [1, 2]}},
        "count": 3,
    }
    with FlatstateSaver(location) as saver:
        cp, md, versions = _cp(1, values)
        config = saver.put(
            {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp, md, versions
        )
        expected = json.loads(json.dumps(values))
        for _ in range(3):
            if not cached:
                saver._engine.cache.clear()
            got = saver.get_tuple(config)
            assert got is not None
            state = got.checkpoint["channel_values"]
            assert state == expected
            state["docs"]["d0"] = "changed"
            state["docs"]["new"] = "added"
            state["tags"].append("d")
            state["nested"]["inner"]["k"].append(3)
            got.checkpoint["channel_versions"]["docs"] = 99
        again = saver.get_tuple(config)
        assert again is not None and again.checkpoint["channel_versions"]["docs"] == 1


def _replace_a_leaf(value: Any) -> None:
    value["d3"] = "changed in place" * 100


def _replace_a_leaf_by_an_equal_one(value: Any) -> None:
    value["n"] = True  # == 1, but stored as msgpack's true


def _reorder_the_keys(value: Any) -> None:
    value["d0"] = value.pop("d0")


def _grow_a_list(value: Any) -> None:
    value.append("one more")


def _change_a_nested_value(value: Any) -> None:
    value["inner"]["k"].append(3)


@pytest.mark.parametrize(
    ("value", "change"),
    [
        ({**{f"d{i}": "x" * 3000 for i in range(8)}, "n": 1}, _replace_a_leaf),
        ({**{f"d{i}": "x" * 3000 for i in range(8)}, "n": 1}, _replace_a_leaf_by_an_equal_one),
        ({f"d{i}": str(i) * 3000 for i in range(8)}, _reorder_the_keys),
        ([str(i) * 3000 for i in range(8)], _grow_a_list),
        ({"inner": {"k": [1, 2]}, "big": "y" * 5000}, _change_a_nested_value),
    ],
    ids=[
        "a leaf replaced",
        "a leaf replaced by an equal one",
        "keys reordered",
        "a list grown",
        "a nested value changed",
    ],
)
def test_a_value_changed_in_place_between_its_write_and_its_checkpoint_is_stored_as_changed(
    tmp_path: Path, value: Any, change: Callable[[Any], None]
) -> None:
    """The saver reuses the layout a write made for the same value object in the next
    checkpoint, but only if the value is unchanged: a flat one checked leaf by leaf (by
    identity: True == 1), any other by its bytes."""
    with FlatstateSaver(str(tmp_path / "state")) as saver:
        cp, md, versions = _cp(1, {"docs": value})
        first = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        config = saver.put(first, cp, md, versions)
        saver.put_writes(config, [("docs", value)], "task")
        change(value)
        cp2, md2, versions2 = _cp(2, {"docs": value})
        latest = saver.put(config, cp2, md2, versions2)
        saver._engine.cache.clear()
        got = saver.get_tuple(latest)
        assert got is not None and repr(got.checkpoint["channel_values"]["docs"]) == repr(value)


def test_a_change_by_a_program_that_bumps_no_counter_is_seen_within_the_interval(
    tmp_path: Path,
) -> None:
    """Writers bump a shared counter, so a read answers from the cache without a query;
    a program that writes the file without it is caught by the check every CHECK_INTERVAL."""
    import sqlite3
    import time

    from flatstate.integrations.langgraph._sqlite_engine import CHECK_INTERVAL

    location = tmp_path / "state"
    with FlatstateSaver(str(location)) as saver:
        cp, md, versions = _cp(1, {"docs": {"d": "x" * 3000}})
        config = saver.put(
            {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp, md, versions
        )
        assert saver.get_tuple(config) is not None  # cached
        conn = sqlite3.connect(location / FILE_NAME)
        with conn:
            conn.execute("DELETE FROM checkpoints")
            conn.execute("UPDATE meta SET generation = generation + 1")
        conn.close()
        deadline = time.monotonic() + CHECK_INTERVAL + 5
        while saver.get_tuple(config) is not None:
            assert time.monotonic() < deadline, "the deleted checkpoint is still served"
            time.sleep(0.01)


def test_threads_and_tasks_write_through_one_saver_at_once(location: str) -> None:
    """Sync puts from worker threads and async puts from a loop share one writer: every
    acknowledged checkpoint is there, each thread's chain intact."""
    import threading

    with FlatstateSaver(location) as saver:

        def chain(thread_id: str, count: int) -> None:
            config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
            for n in range(count):
                cp, md, versions = _cp(n + 1, {"n": n, "blob": [thread_id * 50] * (n + 3)})
                config = saver.put(config, cp, md, versions)

        async def achain(thread_id: str, count: int) -> None:
            config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
            for n in range(count):
                cp, md, versions = _cp(n + 1, {"n": n, "blob": [thread_id * 50] * (n + 3)})
                config = await saver.aput(config, cp, md, versions)

        async def tasks() -> None:
            await asyncio.gather(*(achain(f"task{i}", 15) for i in range(6)))

        workers = [threading.Thread(target=chain, args=(f"thr{i}", 15)) for i in range(4)]
        for worker in workers:
            worker.start()
        asyncio.run(tasks())
        for worker in workers:
            worker.join()
        for thread_id in [f"thr{i}" for i in range(4)] + [f"task{i}" for i in range(6)]:
            listed = list(saver.list({"configurable": {"thread_id": thread_id}}))
            assert [t.checkpoint["channel_values"]["n"] for t in listed] == list(range(14, -1, -1))
            assert listed[0].checkpoint["channel_values"]["blob"] == [thread_id * 50] * 17
            parents = [t.parent_config["configurable"]["checkpoint_id"] for t in listed[:-1]]
            assert parents == [t.config["configurable"]["checkpoint_id"] for t in listed[1:]]


def test_an_empty_checkpoint_id_means_the_latest(location: str) -> None:
    """As in LangGraph's own savers: `checkpoint_id: ""` is no id (it read as "not found",
    so a graph started the thread afresh), in a cold saver as in a warm one."""
    thread = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    with FlatstateSaver(location) as saver:
        for n in (1, 2):
            checkpoint = empty_checkpoint()
            checkpoint["id"] = f"1ef{n}"
            saver.put(thread, checkpoint, {"step": n}, {})
    for warm in (False, True):
        with FlatstateSaver(location) as saver:
            if warm:
                saver.get_tuple(thread)
            empty = {"configurable": {**thread["configurable"], "checkpoint_id": ""}}
            found = saver.get_tuple(empty)
            assert found is not None and found.checkpoint["id"] == "1ef2"
            assert [t.checkpoint["id"] for t in saver.list(empty)] == ["1ef2", "1ef1"]


def test_prune_and_delete_for_runs_refuse_a_lone_string(location: str) -> None:
    """A str is a sequence of one-letter ids: prune("alice") acted on threads a, l, i, c, e."""
    with FlatstateSaver(location) as saver:
        with pytest.raises(TypeError, match="thread_ids must be a sequence"):
            saver.prune("alice", strategy="delete")
        with pytest.raises(TypeError, match="run_ids must be a sequence"):
            saver.delete_for_runs("run-1")
        with pytest.raises(TypeError, match="thread_ids must be a sequence"):
            asyncio.run(saver.aprune("alice"))


def test_reads_racing_the_writes_of_their_checkpoint_never_fail(tmp_path: Path) -> None:
    """A server polling get_state while a step's tasks save their writes: the writer thread
    adds to the cached row's writes as the reader walks them (a KeyError for a write whose
    pieces the reader had not fetched, or "dictionary changed size")."""
    import threading
    import time

    thread = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    failures: list[BaseException] = []
    stop = time.monotonic() + 3
    with FlatstateSaver(str(tmp_path / "state")) as saver:

        def write() -> None:
            step = 0
            while time.monotonic() < stop:
                checkpoint = empty_checkpoint()
                checkpoint["id"] = f"1ef{step:06d}"
                config = saver.put(thread, checkpoint, {"step": step}, {})
                for task in range(8):
                    value = {f"k{j}": f"{step}-{task}" * 30 for j in range(40)}
                    saver.put_writes(config, [("a", value)], f"task{task}", f"p{task}")
                step += 1

        def read() -> None:
            while time.monotonic() < stop:
                try:
                    saver.get_tuple(thread)
                except Exception as exc:  # any failure is the finding
                    failures.append(exc)

        threads = [threading.Thread(target=write), threading.Thread(target=read)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
