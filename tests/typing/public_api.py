"""Checked by mypy, never run: what the public API's types are, as a caller sees them.

Each ``reveal_type`` is followed by the type mypy must print (tests/test_typing.py)."""

from __future__ import annotations

from typing import reveal_type

import flatstate
from flatstate.facts import open_facts

with flatstate.open_store("~/.flatstate/main") as store:
    entry = store.get("main")
    reveal_type(entry)  # flatstate.model.SessionEntry | None
    if entry is not None:
        reveal_type(entry.updated_at)  # int | None
        reveal_type(entry.session_id)  # str
        reveal_type(entry.compaction_count)  # int
        reveal_type(entry["model"])  # Any
    reveal_type(store.patch("main", {"model": "m"}))  # flatstate.model.SessionEntry | None
    reveal_type(store.upsert("main", {}))  # flatstate.model.SessionEntry
    reveal_type(store.delete("main"))  # bool
    reveal_type(store.snapshot())  # flatstate.snapshot.Snapshot
    reveal_type(store.keys())  # tuple[str, ...]
    reveal_type(store.update(lambda draft: len(draft)))  # int
    reveal_type(store.canonical_key("main"))  # str
    reveal_type(store.transcript("main").tail(3))  # tuple[flatstate.frozen.FrozenMap, ...]
    reveal_type(store.stats().entries)  # int

with open_facts("~/.flatstate/main") as facts:
    reveal_type(facts.add("the sky is blue"))  # flatstate.facts.model.Fact
    reveal_type(facts.recall("sky"))  # tuple[flatstate.facts.model.Fact, ...]
