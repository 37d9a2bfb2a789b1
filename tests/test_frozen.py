"""Frozen values: immutable, shared, JSON-equal to what they were made from, cheap to account."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Mapping

import pytest

from flatstate.frozen import (
    FrozenMap,
    SizeAccount,
    StringPool,
    decode_json,
    encode_json,
    freeze,
    json_size,
    thaw,
)

DOC = {"a": 1, "b": [1, {"c": None, "d": "é"}], "e": {"f": True, "g": 1.5}, "h": []}


def test_freeze_and_thaw_round_trip() -> None:
    frozen = freeze(DOC)
    assert isinstance(frozen, FrozenMap) and isinstance(frozen, Mapping)
    assert isinstance(frozen["b"], tuple) and isinstance(frozen["b"][1], FrozenMap)
    assert thaw(frozen) == DOC and frozen == DOC and frozen.to_dict() == DOC
    assert decode_json(encode_json(frozen)) == DOC


def test_freezing_a_frozen_value_returns_it() -> None:
    frozen = freeze(DOC)
    assert freeze(frozen) is frozen
    assert copy.copy(frozen) is frozen and copy.deepcopy(frozen) is frozen


def test_maps_with_the_same_keys_share_their_shape() -> None:
    a, b = freeze({"x": 1, "y": 2}), freeze({"x": 3, "y": 4})
    assert a._shape is b._shape
    assert freeze({"y": 1, "x": 2})._shape is not a._shape
    assert a != b and a == {"x": 1, "y": 2} and freeze({"y": 2, "x": 1}) == a


def test_mapping_protocol() -> None:
    frozen = freeze(DOC)
    assert list(frozen) == list(DOC) and len(frozen) == len(DOC)
    assert list(frozen.keys()) == list(DOC) and "a" in frozen and "zz" not in frozen
    assert frozen.get("zz", 7) == 7 and dict(frozen.items())["a"] == 1
    assert next(iter(frozen.values())) == 1
    with pytest.raises(KeyError):
        frozen["zz"]


def test_pickling_keeps_the_value() -> None:
    frozen = freeze(DOC)
    assert pickle.loads(pickle.dumps(frozen)) == DOC


def test_json_digest_is_memoized_and_content_addressed() -> None:
    a, b = freeze({"k": "v" * 10}), freeze({"k": "v" * 10})
    assert a.json_digest() == b.json_digest()
    assert a.json_digest()[0] == len(encode_json({"k": "v" * 10}))
    assert a._digest is not None


def test_json_size_matches_the_encoding() -> None:
    entry = freeze(DOC)
    assert json_size(entry) == len(encode_json(entry))


def test_string_pool_folds_equal_large_strings_and_stays_bounded() -> None:
    pool = StringPool(min_length=10, max_strings=3)
    first = "x" * 20
    again = "".join(["x"] * 20)
    assert first is not again
    interned = pool.intern(first)
    assert pool.intern(again) is interned
    assert pool.intern("short") == "short"
    for i in range(10):
        pool.intern(f"{i}" * 20)
    assert len(pool) == 3 and pool.bytes == 60


def test_size_account_counts_shared_strings_once() -> None:
    prompt = "p" * 2000
    account = SizeAccount(shared_min=512)
    a, b = freeze({"prompt": prompt, "n": 1}), freeze({"prompt": prompt, "n": 2})
    account.add(a)
    one = account.bytes
    account.add(b)
    assert account.bytes - one < 200
    account.remove(a)
    assert account.bytes == one
    account.remove(b)
    assert account.bytes == 0


def test_size_account_replace_equals_remove_then_add() -> None:
    old = freeze({"a": "x" * 100, "b": [1, 2], "c": {"d": 1}})
    new = freeze({"a": old["a"], "b": [1, 2, 3], "e": "new"})
    by_replace, by_steps = SizeAccount(), SizeAccount()
    by_replace.add(old)
    by_replace.replace(old, new)
    by_steps.add(new)
    assert by_replace.bytes == by_steps.bytes
    same_shape = FrozenMap._wrap({"a": old["a"], "b": (9,), "c": old["c"]})
    by_replace.replace(new, same_shape)
    fresh = SizeAccount()
    fresh.add(same_shape)
    assert by_replace.bytes == fresh.bytes


def test_dropped_values_are_the_ones_not_carried_over_by_identity() -> None:
    before = freeze({"a": 1, "big": {"x": 1}, "keep": {"y": 2}})
    assert isinstance(before, FrozenMap)
    same_keys = FrozenMap._wrap({**before._as_dict(), "a": 2})
    assert list(same_keys.dropped_values(before)) == [1]
    fewer_keys = FrozenMap._wrap({"a": 1, "keep": before["keep"]})
    assert list(fewer_keys.dropped_values(before)) == [before["big"]]
    equal_copy = freeze({"a": 1, "big": {"x": 1}, "keep": {"y": 2}})
    assert isinstance(equal_copy, FrozenMap)
    # Equal but not the same objects: the old maps count as dropped.
    assert list(equal_copy.dropped_values(before)) == [before["big"], before["keep"]]
