"""Values read back as written: what the writer is given back equals what a fresh reader of
the stored data gets, on every backend, or the write is refused with InvalidEntry and changes
nothing."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flatstate import SessionStore
from flatstate.errors import InvalidEntry, InvalidSessionKey
from flatstate.frozen import MAX_DEPTH, thaw

StoreFactory = Callable[..., SessionStore]


class Level(enum.IntEnum):
    LOW = 1


class Color(str, enum.Enum):  # noqa: UP042 (not StrEnum: its str() is "Color.RED")
    RED = "red"


class Shouting(str):
    def __str__(self) -> str:
        return "CHANGED"


def same(a: Any, b: Any) -> bool:
    """JSON equality that also tells 1 from 1.0 and True, and 0.0 from -0.0."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and repr(a) == repr(b)


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=4)
    | st.sampled_from(["\ud83d", "cut \ud83d", "\udc00x", Level.LOW, 1e16, -0.0])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=4), children, max_size=3)
        | st.dictionaries(st.integers(), children, max_size=2)
        | st.tuples(children, children)
        | st.frozensets(st.integers(), max_size=2)
        | st.sets(st.text(max_size=2), max_size=2)
    ),
    max_leaves=8,
)


_keys = itertools.count()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=values)
def test_a_value_reads_back_as_written_or_is_refused(open_store: StoreFactory, value: Any) -> None:
    writer = _writers.get(id(open_store)) or _writers.setdefault(id(open_store), open_store())
    key = f"agent:main:v{next(_keys)}"
    value = [value]  # a top-level None would mean "remove the field"
    try:
        writer.patch(key, {"v": value})
    except InvalidEntry as exc:
        assert exc.key == key and exc.problem.startswith("v[0]")
        written = None
    else:
        written = writer.get(key)["v"]
    with open_store() as fresh:  # reads what is stored, not the writer's cache
        stored = fresh.get(key)
        assert stored is None if written is None else same(stored["v"], written), (value, written)


_writers: dict[int, SessionStore] = {}


def test_str_subclasses_are_stored_as_the_text_they_hold(open_store: StoreFactory) -> None:
    # Not as str() of them: an enum's __str__ says "Color.RED", a subclass's anything.
    value = {"color": Color.RED, "loud": Shouting("kept"), "list": [Color.RED]}
    with open_store() as writer:
        writer.patch("main", {"v": value})
        assert same(writer.get("main")["v"], {"color": "red", "loud": "kept", "list": ["red"]})
        transcript = writer.transcript("main")
        transcript.append({"type": "custom", "data": value})
        assert thaw(transcript.tail(1)[0]["data"]) == {
            "color": "red", "loud": "kept", "list": ["red"]
        }  # fmt: skip
    assert same(open_store().get("main")["v"], {"color": "red", "loud": "kept", "list": ["red"]})


@pytest.mark.parametrize("fields", [{"cut\ud83d": 1}, {"v": {"ok": {"\udcff": 1}}}])
def test_a_lone_surrogate_in_a_field_name_is_refused(
    store: SessionStore, fields: dict[str, Any]
) -> None:
    # A name UTF-8 cannot carry would be acknowledged and then be unreadable everywhere.
    with pytest.raises(InvalidEntry, match="surrogate") as caught:
        store.upsert("main", {"sessionId": "s1", "updatedAt": 1, **fields})
    str(caught.value).encode()  # the message itself can be printed
    assert len(store) == 0
    transcript = store.transcript("other")
    with pytest.raises(InvalidEntry, match="surrogate"):
        transcript.append({"type": "custom", **fields})
    assert transcript.tail(5) == ()


def test_hard_numbers_read_back_after_reopening(open_store: StoreFactory) -> None:
    hard = {"big": 2**80, "float": 1.5e300, "neg0": -0.0, "one": 1.0, "enum": Level.LOW}
    with open_store() as writer:
        writer.patch("main", {"v": hard})
        assert same(writer.get("main")["v"], {**hard, "enum": 1})
    assert same(open_store().get("main")["v"], {**hard, "enum": 1})


@pytest.mark.parametrize(
    ("value", "where", "says"),
    [
        (float("nan"), "v", "nan"),
        ({"x": [1, float("inf")]}, "v.x[1]", "inf"),
        ({"x": -float("inf")}, "v.x", "-inf"),
        (b"raw", "v", "bytes"),
        ({1: "one"}, "v", "key 1"),
        ({"s": {1, 2}}, "v.s", "set"),
        ({"k": {99}}, "v.k", "set"),
        ("cut \ud83d", "v", "surrogate"),
        (object(), "v", "object"),
    ],
)
def test_values_json_cannot_carry_are_refused_naming_where(
    store: SessionStore, value: Any, where: str, says: str
) -> None:
    store.patch("main", {"v": "before"})
    with pytest.raises(InvalidEntry) as caught:
        store.patch("main", {"v": value})
    assert caught.value.key == "agent:main:main"
    assert caught.value.problem.startswith(f"{where}:") and says in caught.value.problem
    assert store.get("main")["v"] == "before"
    with pytest.raises(InvalidEntry):
        store.upsert("agent:main:other", {"v": value})
    assert store.get("agent:main:other") is None


def test_a_nested_value_is_immutable_through_a_shared_read(store: SessionStore) -> None:
    store.patch("main", {"v": {"k": [1, {"deep": [2]}]}})
    shared = store.get("main")["v"]
    with pytest.raises((TypeError, AttributeError)):
        shared["k"].append(3)
    with pytest.raises((TypeError, AttributeError)):
        shared["k"][1]["deep"].append(3)
    with pytest.raises(TypeError):
        shared["k"][1]["new"] = 1


def nested(depth: int) -> Any:
    """A value with ``depth`` levels of arrays and objects, built without recursion."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 1_100, 100_000])
def test_nesting_past_the_limit_is_refused_without_recursion_error(
    store: SessionStore, depth: int
) -> None:
    with pytest.raises(InvalidEntry) as caught:
        store.patch("main", {"v": nested(depth - 1)})  # the entry itself is one level
    assert f"deeper than {MAX_DEPTH}" in caught.value.problem
    assert store.get("main") is None


def test_nesting_up_to_the_limit_is_stored(open_store: StoreFactory) -> None:
    store = open_store()
    value = nested(MAX_DEPTH - 1)
    store.patch("main", {"v": value})
    assert same(open_store().get("main")["v"], value)


@pytest.mark.parametrize("updated", [2**63, 2**70, -(2**63) - 1, 1e300])
def test_updated_at_beyond_int64_is_kept_on_every_backend(
    open_store: StoreFactory, updated: int | float
) -> None:
    store = open_store()
    store.upsert("main", {"sessionId": "s1", "updatedAt": updated})
    assert same(store.get("main").updated_at, updated)
    assert same(open_store().get("main").updated_at, updated)
    assert list(store.keys()) == ["agent:main:main"]


def test_a_lone_surrogate_in_a_key_is_refused(store: SessionStore) -> None:
    with pytest.raises(InvalidSessionKey, match="surrogate"):
        store.patch("agent:main:cut\ud83d", {"v": 1})
    assert len(store) == 0
