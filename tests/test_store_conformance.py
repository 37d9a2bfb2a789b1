"""The store contract, run against every backend (see conftest.BACKENDS).

Each test reads as a statement of behaviour a caller may rely on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import pytest

from flatstate import SessionEntry, SessionStore
from flatstate.errors import (
    EntryTooLarge,
    InvalidEntry,
    InvalidSessionKey,
    ReadOnlyStore,
    StoreClosed,
)

StoreFactory = Callable[..., SessionStore]


# -- reads share, never copy ---------------------------------------------------


def test_get_returns_the_same_object_until_the_entry_changes(store: SessionStore) -> None:
    store.upsert("agent:main:main", {"sessionId": "s1", "updatedAt": 1})
    first = store.get("agent:main:main")
    assert first is store.get("agent:main:main")
    assert first is store.get("main")  # an alias reads the same object
    store.patch("main", {"model": "m"})
    assert store.get("main") is not first
    assert first.get("model") is None  # the old object never changes


def test_snapshot_is_shared_and_survives_later_writes(store: SessionStore) -> None:
    store.upsert("agent:main:a", {"sessionId": "a", "updatedAt": 1})
    snap = store.snapshot()
    assert snap is store.snapshot()
    store.upsert("agent:main:b", {"sessionId": "b", "updatedAt": 2})
    store.delete("agent:main:a")
    assert list(snap) == ["agent:main:a"]
    assert list(store.snapshot()) == ["agent:main:b"]


def test_unchanged_entries_are_shared_between_snapshots(store: SessionStore) -> None:
    store.upsert("agent:main:a", {"sessionId": "a", "updatedAt": 1})
    store.upsert("agent:main:b", {"sessionId": "b", "updatedAt": 1})
    before = store.snapshot()
    store.patch("agent:main:b", {"totalTokens": 5})
    after = store.snapshot()
    assert after["agent:main:a"] is before["agent:main:a"]
    assert after["agent:main:b"] is not before["agent:main:b"]


def test_entries_and_snapshots_refuse_every_mutation(store: SessionStore) -> None:
    entry = store.upsert(
        "main", {"sessionId": "s", "updatedAt": 1, "origin": {"label": "x"}, "tags": [1]}
    )
    snap = store.snapshot()
    mutations: list[Callable[[], object]] = [
        lambda: entry.__setitem__("model", "m"),
        lambda: entry.__delitem__("sessionId"),
        lambda: entry.update({"a": 1}),
        lambda: entry.pop("sessionId"),
        lambda: entry.setdefault("a", 1),
        lambda: entry.clear(),
        lambda: setattr(entry, "x", 1),
        lambda: entry["origin"].__setitem__("label", "y"),
        lambda: snap.__setitem__("agent:main:x", {}),
        lambda: snap.__delitem__("agent:main:main"),
        lambda: snap.update({}),
    ]
    for mutate in mutations:
        with pytest.raises(TypeError):
            mutate()
    assert isinstance(entry["tags"], tuple)
    assert store.get("main") == {
        "sessionId": "s",
        "updatedAt": 1,
        "origin": {"label": "x"},
        "tags": [1],
    }


def test_to_dict_is_a_private_deep_copy(store: SessionStore) -> None:
    store.upsert("main", {"sessionId": "s", "updatedAt": 1, "origin": {"label": "x"}})
    mine = store.get("main").to_dict()  # type: ignore[union-attr]
    mine["origin"]["label"] = "changed"
    mine["new"] = [1]
    assert store.get("main")["origin"]["label"] == "x"  # type: ignore[index]
    assert "new" not in store.get("main")  # type: ignore[operator]


def test_copy_and_deepcopy_return_the_shared_object(store: SessionStore) -> None:
    entry = store.upsert("main", {"sessionId": "s", "updatedAt": 1})
    assert copy.copy(entry) is entry
    assert copy.deepcopy(entry) is entry


# -- mapping behaviour -----------------------------------------------------------


def test_len_contains_keys_and_iteration_in_key_order(store: SessionStore) -> None:
    for key in ("agent:main:zeta", "agent:main:alpha", "agent:ops:main", "global"):
        store.upsert(key, {"updatedAt": 1})
    expected = ["agent:main:alpha", "agent:main:zeta", "agent:ops:main", "global"]
    assert len(store) == 4
    assert list(store.keys()) == expected
    assert list(store) == expected
    assert [k for k, _ in store.items()] == expected
    assert list(store.snapshot()) == expected
    assert "zeta" in store and "agent:main:nope" not in store and 42 not in store


def test_missing_keys(store: SessionStore) -> None:
    assert store.get("agent:main:missing") is None
    assert store.delete("agent:main:missing") is False
    assert store.patch("agent:main:missing", {"model": "m"}, create=False) is None
    assert len(store) == 0


# -- writes ----------------------------------------------------------------------


def test_upsert_generates_session_id_and_updated_at(store: SessionStore, clock: object) -> None:
    entry = store.upsert("main", {"chatType": "direct"})
    assert entry.session_id and entry.updated_at
    assert store.get("main") == entry


def test_patch_follows_openclaw_merge_rules(open_store: StoreFactory, clock: object) -> None:
    from tests.conftest import FakeClock

    assert isinstance(clock, FakeClock)
    store = open_store(clock=clock)
    created = store.patch("main", {"model": "opus", "modelProvider": "anthropic"})
    assert created is not None
    assert created.updated_at == clock.now
    assert created.session_started_at == clock.now
    session_id = created.session_id

    clock.advance(1000)
    patched = store.patch("main", {"model": "gpt"})
    assert patched is not None
    assert patched.session_id == session_id  # kept
    assert patched.model_provider is None  # model without provider drops it
    assert patched.updated_at == clock.now
    assert patched.session_started_at == created.session_started_at

    clock.advance(1000)
    future = store.patch("main", {"updatedAt": clock.now + 10_000_000})
    assert future is not None and future.updated_at == clock.now  # clamped to now

    clock.advance(1000)
    quiet = store.patch("main", {"label": "x"}, preserve_activity=True)
    assert quiet is not None and quiet.updated_at == future.updated_at

    clock.advance(1000)
    reset = store.patch("main", {"sessionId": "fresh-id"})
    assert reset is not None and reset.session_started_at == clock.now

    gone = store.patch("main", {"label": None})
    assert gone is not None and "label" not in gone


def test_update_sets_patches_and_deletes_atomically(store: SessionStore) -> None:
    store.upsert("agent:main:a", {"sessionId": "a", "updatedAt": 1})
    store.upsert("agent:main:b", {"sessionId": "b", "updatedAt": 1})

    def change(draft: object) -> int:
        from flatstate import Draft

        assert isinstance(draft, Draft)
        draft["agent:main:c"] = {"sessionId": "c", "updatedAt": 3}
        draft.patch("agent:main:a", {"totalTokens": 7})
        del draft["agent:main:b"]
        assert "agent:main:b" not in draft and "agent:main:c" in draft
        assert sorted(draft) == ["agent:main:a", "agent:main:c"]
        return len(draft)

    assert store.update(change) == 2
    assert sorted(store.keys()) == ["agent:main:a", "agent:main:c"]
    assert store.get("agent:main:a")["totalTokens"] == 7  # type: ignore[index]


def test_update_that_raises_writes_nothing(store: SessionStore) -> None:
    store.upsert("agent:main:a", {"sessionId": "a", "updatedAt": 1})
    before = store.snapshot()

    def fail(draft: object) -> None:
        draft["agent:main:b"] = {"updatedAt": 2}  # type: ignore[index]
        del draft["agent:main:a"]  # type: ignore[attr-defined]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.update(fail)
    assert store.snapshot() == before
    assert store.get("agent:main:a") is before["agent:main:a"]


def test_draft_is_invisible_to_readers_until_commit(store: SessionStore) -> None:
    seen: list[object] = []

    def peek(draft: object) -> None:
        draft["agent:main:new"] = {"updatedAt": 1}  # type: ignore[index]
        seen.append(store.get("agent:main:new"))
        seen.append(len(store.snapshot()))

    store.update(peek)
    assert seen == [None, 0]
    assert store.get("agent:main:new") is not None


def test_delete_removes_the_entry(store: SessionStore) -> None:
    store.upsert("main", {"updatedAt": 1})
    assert store.delete("Agent:Main:Main") is True
    assert store.get("main") is None and len(store) == 0


# -- keys ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["", "   ", "agent:", "agent:main", "agent:main:", "agent:Bad Id:x", "a\nb", "x" * 600]
)
def test_invalid_keys_are_refused_and_nothing_is_written(store: SessionStore, bad: str) -> None:
    with pytest.raises(InvalidSessionKey):
        store.upsert(bad, {"updatedAt": 1})
    with pytest.raises(InvalidSessionKey):
        store.patch(bad, {"model": "m"})
    assert len(store) == 0


def test_keys_are_normalized(store: SessionStore) -> None:
    store.upsert(" Agent:Main:Telegram:Direct:42 ", {"updatedAt": 1})
    store.upsert("cron:Nightly", {"updatedAt": 1})
    assert list(store.keys()) == ["agent:main:cron:nightly", "agent:main:telegram:direct:42"]


def test_agent_id_scopes_bare_keys(open_store: StoreFactory) -> None:
    store = open_store(agent_id="ops")
    store.upsert("main", {"updatedAt": 1})
    assert list(store.keys()) == ["agent:ops:main"]


# -- bad entries -----------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        ["not", "an", "object"],
        "text",
        {"sessionId": "../../etc/passwd"},
        {"sessionId": "a/b"},
        {"sessionId": ""},
        {"sessionId": 12},
        {"sessionId": "x.checkpoint.y"},
        {"updatedAt": "yesterday"},
        {"updatedAt": 1, "bad": object()},
    ],
)
def test_invalid_entries_are_refused_and_nothing_is_touched(
    store: SessionStore, entry: object
) -> None:
    store.upsert("agent:main:keep", {"sessionId": "keep", "updatedAt": 1})
    before = store.snapshot()
    with pytest.raises((InvalidEntry, TypeError)) as info:
        store.upsert("agent:main:x", entry)  # type: ignore[arg-type]
    if isinstance(info.value, InvalidEntry):
        assert "agent:main:x" in str(info.value)
    assert store.snapshot() == before


def test_patch_with_an_unsafe_session_id_is_refused(store: SessionStore) -> None:
    store.upsert("main", {"sessionId": "ok", "updatedAt": 1})
    with pytest.raises(InvalidEntry, match="not a safe id"):
        store.patch("main", {"sessionId": "../x"})
    assert store.get("main").session_id == "ok"  # type: ignore[union-attr]


def test_entries_over_the_size_limit_are_refused(open_store: StoreFactory) -> None:
    store = open_store(max_entry_bytes=4096)
    store.upsert("agent:main:ok", {"updatedAt": 1, "note": "x" * 100})
    with pytest.raises(EntryTooLarge) as info:
        store.upsert("agent:main:big", {"updatedAt": 1, "note": "x" * 5000})
    assert info.value.limit == 4096 and info.value.size > 4096
    assert "agent:main:big" in str(info.value)
    with pytest.raises(EntryTooLarge):
        store.patch("agent:main:ok", {"blob": {"text": "y" * 5000}})
    assert store.get("agent:main:big") is None
    assert "blob" not in store.get("agent:main:ok")  # type: ignore[operator]


# -- fields round trip -----------------------------------------------------------


def test_unknown_fields_survive_close_and_reopen(open_store: StoreFactory) -> None:
    entry = {
        "sessionId": "s",
        "updatedAt": 1,
        "pluginExtensions": {"x": {"deep": [1, {"a": None}, "é"]}},
        "someFutureField": 3.5,
        "skillsSnapshot": {"prompt": "p" * 5000, "skills": [{"name": "a"}]},
    }
    store = open_store()
    store.upsert("main", entry)
    store.close()
    reopened = open_store()
    assert reopened.get("main").to_dict() == entry  # type: ignore[union-attr]


def test_load_time_migrations(store: SessionStore) -> None:
    entry = store.upsert(
        "main",
        {
            "updatedAt": 1,
            "provider": "telegram",
            "lastProvider": "telegram",
            "lastTo": "telegram:1",
            "room": "#ops",
            "skillsSnapshot": {"prompt": "p", "resolvedSkills": [{"huge": True}]},
        },
    )
    assert "provider" not in entry and entry["channel"] == "telegram"
    assert "lastProvider" not in entry and entry["lastChannel"] == "telegram"
    assert "room" not in entry and entry["groupChannel"] == "#ops"
    assert "resolvedSkills" not in entry["skillsSnapshot"]
    assert entry["deliveryContext"] == {"channel": "telegram", "to": "telegram:1"}


def test_delivery_context_and_last_fields_stay_in_step(store: SessionStore) -> None:
    store.patch("main", {"lastChannel": "telegram", "lastTo": "t:1"})
    moved = store.patch("main", {"deliveryContext": {"channel": "discord", "to": "channel:9"}})
    assert moved is not None
    assert (moved["lastChannel"], moved["lastTo"]) == ("discord", "channel:9")
    again = store.patch("main", {"lastChannel": "slack", "lastTo": "c:1", "lastAccountId": "work"})
    assert again is not None
    assert again["deliveryContext"] == {"channel": "slack", "to": "c:1", "accountId": "work"}


# -- cache bound -----------------------------------------------------------------


def test_store_larger_than_the_cache_still_works(open_store: StoreFactory) -> None:
    writer = open_store()
    for i in range(60):
        writer.upsert(f"agent:main:k{i:02d}", {"updatedAt": i, "note": f"{i}" + "n" * 2000})
    store = open_store(cache_bytes=30_000)
    stats = store.stats()
    assert not stats.cache_complete and stats.cache_bytes <= 30_000
    assert len(store) == 60
    assert list(store.keys()) == [f"agent:main:k{i:02d}" for i in range(60)]
    assert all(store.get(f"agent:main:k{i:02d}")["updatedAt"] == i for i in range(60))  # type: ignore[index]
    assert len(store.snapshot()) == 60
    assert [k for k, _ in store.items()] == list(store.keys())
    store.patch("agent:main:k00", {"label": "patched"})
    assert store.get("agent:main:k00")["label"] == "patched"  # type: ignore[index]
    assert store.stats().cache_bytes <= 30_000


def test_stats_report_the_cache_and_its_bound(store: SessionStore) -> None:
    store.upsert("main", {"updatedAt": 1})
    stats = store.stats()
    assert stats.entries == 1 and stats.cached_entries == 1
    assert 0 < stats.cache_bytes <= stats.cache_limit
    assert stats.cache_complete


def test_large_repeated_strings_are_held_once(store: SessionStore) -> None:
    prompt = "skills " * 2000
    for i in range(5):
        store.upsert(
            f"agent:main:s{i}", {"updatedAt": 1, "skillsSnapshot": {"prompt": prompt + ""}}
        )
    prompts = [store.get(f"agent:main:s{i}")["skillsSnapshot"]["prompt"] for i in range(5)]  # type: ignore[index]
    assert all(p is prompts[0] for p in prompts)


# -- freshness across store instances --------------------------------------------


def test_a_second_store_sees_writes_at_once(open_store: StoreFactory) -> None:
    a, b = open_store(), open_store()
    a.upsert("main", {"sessionId": "one", "updatedAt": 1})
    assert b.get("main").session_id == "one"  # type: ignore[union-attr]
    b.patch("main", {"model": "m"})
    assert a.get("main")["model"] == "m"  # type: ignore[index]
    b.delete("main")
    assert a.get("main") is None and len(a) == 0


def test_concurrent_read_modify_write_sees_the_latest_state(open_store: StoreFactory) -> None:
    a, b = open_store(), open_store()
    a.upsert("main", {"updatedAt": 1, "count": 0})
    for i in range(20):
        store = a if i % 2 else b
        store.update(lambda d: d.patch("main", {"count": d["main"]["count"] + 1}))
    assert a.get("main")["count"] == 20  # type: ignore[index]


# -- lifecycle -------------------------------------------------------------------


def test_readonly_store_refuses_writes(open_store: StoreFactory) -> None:
    open_store().upsert("main", {"updatedAt": 1})
    ro = open_store(readonly=True)
    assert ro.get("main") is not None
    with pytest.raises(ReadOnlyStore):
        ro.patch("main", {"model": "m"})


# Every read and write of the store, each run on a closed one.
USES: dict[str, Callable[[SessionStore], object]] = {
    "get": lambda s: s.get("main"),
    "get of an absent key": lambda s: s.get("agent:main:absent"),
    "snapshot": lambda s: s.snapshot(),
    "keys": lambda s: s.keys(),
    "items": lambda s: list(s.items()),
    "len": len,
    "in": lambda s: "main" in s,
    "iteration": list,
    "transcript": lambda s: s.transcript("main"),
    "stats": lambda s: s.stats(),
    "maintain": lambda s: s.maintain(),
    "upsert": lambda s: s.upsert("main", {}),
    "patch": lambda s: s.patch("main", {}),
    "update": lambda s: s.update(lambda draft: None),
    "delete": lambda s: s.delete("main"),
    "reset": lambda s: s.reset("main"),
}


@pytest.mark.parametrize(
    "options",
    [{}, {"cache_bytes": 1}],
    ids=["cached", "uncached"],
)
@pytest.mark.parametrize("use", list(USES))
def test_a_closed_store_refuses_every_read_and_write(
    open_store: StoreFactory, use: str, options: dict[str, object]
) -> None:
    store = open_store(**options)
    store.upsert("main", {"updatedAt": 1})
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(StoreClosed, match="was closed; open it again") as info:
        USES[use](store)
    assert isinstance(info.value, ValueError) and info.value.location == store.location
    assert store.location in str(info.value)


def test_entries_are_mappings(store: SessionStore) -> None:
    entry = store.upsert("main", {"updatedAt": 1, "origin": {"a": 1}})
    assert isinstance(entry, Mapping) and isinstance(entry, SessionEntry)
    assert isinstance(entry["origin"], Mapping)
    assert dict(entry)["updatedAt"] == 1
