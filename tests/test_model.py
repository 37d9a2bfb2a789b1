"""Entry rules that are pure functions: migrations, route sync, merge."""

from __future__ import annotations

from typing import Any

import pytest

from flatstate.errors import InvalidEntry
from flatstate.frozen import freeze
from flatstate.model import SessionEntry, build_entry, merge_patch, normalize_fields


def test_normal_entries_are_left_exactly_as_they_are() -> None:
    entry: dict[str, Any] = {
        "sessionId": "s",
        "updatedAt": 1,
        "deliveryContext": freeze({"channel": "telegram", "to": "telegram:1"}),
        "lastChannel": "telegram",
        "lastTo": "telegram:1",
        "model": "m",
    }
    before = list(entry.items())
    assert normalize_fields(entry) is False
    assert list(entry.items()) == before


def test_channels_that_disagree_keep_the_last_fields_whole() -> None:
    entry: dict[str, Any] = {
        "lastChannel": "slack",
        "lastTo": "c:1",
        "deliveryContext": freeze({"channel": "discord", "to": "x", "accountId": "a"}),
    }
    normalize_fields(entry)
    assert entry["deliveryContext"] == {"channel": "slack", "to": "c:1"}
    assert "lastAccountId" not in entry


def test_an_empty_model_drops_the_provider() -> None:
    entry: dict[str, Any] = {"model": "  ", "modelProvider": "anthropic"}
    assert normalize_fields(entry)
    assert "model" not in entry and "modelProvider" not in entry


def test_load_keeps_what_is_stored_even_if_a_write_would_refuse_it() -> None:
    loaded = build_entry("k", {"sessionId": "../x", "updatedAt": "bad"}, on_load=True)
    assert loaded.session_id == "../x" and loaded.updated_at == 0
    with pytest.raises(InvalidEntry):
        build_entry("k", {"sessionId": "../x"})


def test_merge_shares_untouched_values() -> None:
    existing = build_entry("k", {"sessionId": "s", "updatedAt": 1, "origin": {"a": 1}})
    merged = merge_patch("k", existing, {"label": "x"}, clock=lambda: 10)
    assert merged["origin"] is existing["origin"]
    assert merged.updated_at == 10 and isinstance(merged, SessionEntry)


def test_a_new_session_id_renames_the_transcript_file() -> None:
    existing = build_entry(
        "k", {"sessionId": "old", "updatedAt": 1, "sessionFile": "old-topic-7.jsonl"}
    )
    merged = merge_patch("k", existing, {"sessionId": "new"}, clock=lambda: 5)
    assert merged.session_file == "new-topic-7.jsonl" and merged.session_started_at == 5


def test_patches_must_be_objects() -> None:
    with pytest.raises(InvalidEntry, match="JSON object"):
        merge_patch("k", None, ["x"])  # type: ignore[arg-type]
