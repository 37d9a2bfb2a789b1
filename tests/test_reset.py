"""A reset does what OpenClaw's /new does to the entry, and fails before it writes anything."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flatstate import SessionStore
from flatstate.cli import app
from flatstate.errors import ExtraMissing
from flatstate.store import RESET_CLEARS

RUN = {
    "inputTokens": 1200,
    "outputTokens": 300,
    "totalTokens": 1500,
    "totalTokensFresh": False,
    "contextTokens": 200_000,
    "cacheRead": 10,
    "estimatedCostUsd": 0.02,
    "compactionCount": 3,
    "model": "claude-opus-4-5",
    "modelProvider": "anthropic",
    "systemPromptReport": {"chars": 100},
    "skillsSnapshot": {"prompt": "p"},
    "abortedLastRun": True,
    "systemSent": True,
    "status": "done",
}
KEPT = {"label": "ops room", "thinkingLevel": "high", "modelOverride": "m", "custom": {"x": 1}}


def test_a_reset_starts_the_counters_afresh_and_keeps_the_rest(store: SessionStore) -> None:
    old = store.patch("main", {**RUN, **KEPT, "lastChannel": "telegram", "lastTo": "1001"})
    new = store.reset("main")
    assert new.session_id != old.session_id
    for field in RESET_CLEARS:
        assert field not in new, field
    assert (new["compactionCount"], new["totalTokens"], new["totalTokensFresh"]) == (0, 0, True)
    assert (new["systemSent"], new["abortedLastRun"]) == (False, False)
    assert {k: new[k] for k in KEPT} == KEPT
    assert new["deliveryContext"] == {"channel": "telegram", "to": "1001"}


@pytest.fixture
def no_zstd() -> Iterator[None]:
    """zstandard made unimportable, as on a machine without the zstd extra."""
    saved = sys.modules.get("zstandard")
    sys.modules["zstandard"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if saved is None:
            del sys.modules["zstandard"]
        else:
            sys.modules["zstandard"] = saved


def test_a_compressed_reset_without_the_extra_changes_nothing(
    store: SessionStore, no_zstd: None
) -> None:
    before = store.patch("main", {"totalTokens": 5})
    store.transcript("main").append({"type": "custom", "n": 1})
    with pytest.raises(ExtraMissing, match=r"pip install 'flatstate\[zstd\]'"):
        store.reset("main", compress=True)
    assert store.get("main") == before
    assert store.transcript("main").tail(1)[0]["n"] == 1


def test_the_cli_reset_fails_once_and_cleanly_without_the_extra(
    openclaw_dir: Path, no_zstd: None
) -> None:
    path = str(openclaw_dir / "agents" / "main" / "sessions" / "sessions.json")
    before = Path(path).read_bytes()
    runner = CliRunner()
    for _ in range(2):  # a retry finds the same state, not a second reset
        result = runner.invoke(app, ["sessions", "reset", "main", "--compress", "--store", path])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
        assert "flatstate[zstd]" in result.output
    assert Path(path).read_bytes() == before


@pytest.mark.parametrize("how", ["reset", "delete"])
def test_an_append_through_a_handle_from_before_a_reset_is_refused(
    store: SessionStore, how: str
) -> None:
    """The old handle's file was archived; an append recreated it under the old sessionId,
    acknowledged but in a file no session names (which the disk budget then deleted)."""
    from flatstate.errors import ConflictError

    if store.backend.keeps_transcripts:
        pytest.skip("the database keeps these transcripts: no file to recreate")
    old = store.transcript("main")
    old.append({"type": "message", "message": {"role": "user", "content": "before"}})
    store.reset("main") if how == "reset" else store.delete("main")
    before = sorted(p.name for p in Path(store.backend.transcripts_dir).iterdir())
    with pytest.raises(ConflictError, match="was archived"):
        old.append({"type": "message", "message": {"role": "user", "content": "after"}})
    assert sorted(p.name for p in Path(store.backend.transcripts_dir).iterdir()) == before
    fresh = store.transcript("main")
    fresh.append({"type": "message", "message": {"role": "user", "content": "new"}})
    assert [e["message"]["content"] for e in fresh.tail(5) if e["type"] == "message"] == ["new"]
