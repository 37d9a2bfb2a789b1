"""OpenClaw's sessions.json: read and written as OpenClaw does, never lost when damaged."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import flatstate
from flatstate.backends.jsonfile import JsonFileBackend
from flatstate.errors import ReadOnlyStore, UnsafePath
from flatstate.locks import FileLock
from tests.processes import START_TIMEOUT, ctx, join_all, running, wait_for_content
from tests.test_store_processes import COUNTER_KEY, _increment


def sessions_json(openclaw_dir: Path) -> Path:
    return openclaw_dir / "agents" / "main" / "sessions" / "sessions.json"


def backend_of(store: flatstate.SessionStore) -> JsonFileBackend:
    backend = store.backend
    assert isinstance(backend, JsonFileBackend)
    return backend


# -- the real OpenClaw fixture ---------------------------------------------------


def test_the_fixture_loads_with_every_field(openclaw_dir: Path) -> None:
    path = sessions_json(openclaw_dir)
    original = json.loads(path.read_text())
    with flatstate.open_store(path) as store:
        assert store.agent_id == "main"
        assert store.corruption is None
        assert sorted(store.keys()) == sorted(original)
        for key, entry in original.items():
            assert store.get(key).to_dict() == entry  # type: ignore[union-attr]


def test_a_read_only_store_adds_no_file_to_openclaws_directory(openclaw_dir: Path) -> None:
    """Reading OpenClaw's sessions leaves its directory as it was: no change-signal file (a
    writer makes it; until then a reader relies on its periodic check)."""
    path = sessions_json(openclaw_dir)
    before = sorted(os.listdir(path.parent))
    with flatstate.open_store(path, readonly=True) as reader:
        assert len(reader) == 5
        assert sorted(os.listdir(path.parent)) == before
        with flatstate.open_store(path, check_interval=0) as writer:
            writer.patch("main", {"label": "seen"})
        time.sleep(0.3)  # past the reader's check_interval
        assert reader.get("main")["label"] == "seen"  # type: ignore[index]
    with flatstate.open_store(path, readonly=True) as reader:  # now the file exists: shared
        with flatstate.open_store(path) as writer:
            writer.patch("main", {"label": "at once"})
        assert reader.get("main")["label"] == "at once"  # type: ignore[index]


def test_a_save_that_changes_nothing_writes_nothing(openclaw_dir: Path) -> None:
    path = sessions_json(openclaw_dir)
    before = path.stat()
    with flatstate.open_store(path) as store:
        key = "agent:main:discord:channel:987654"
        store.upsert(key, store.get(key))  # type: ignore[arg-type]
        assert backend_of(store).file_writes == 0
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_writes_use_openclaws_formatting_and_keep_other_entries_byte_for_byte(
    openclaw_dir: Path,
) -> None:
    path = sessions_json(openclaw_dir)
    original = json.loads(path.read_text())
    with flatstate.open_store(path) as store:
        store.patch("agent:main:main", {"compactionCount": 2}, preserve_activity=True)
    text = path.read_text()
    written = json.loads(text)
    assert text == json.dumps(written, indent=2, ensure_ascii=False)  # JSON.stringify(x, null, 2)
    assert not text.endswith("\n")
    assert list(written) == list(original)  # key order kept
    for key in original:
        if key != "agent:main:main":
            assert written[key] == original[key]
    assert written["agent:main:main"] == {**original["agent:main:main"], "compactionCount": 2}
    assert path.stat().st_mode & 0o777 == 0o600


def test_legacy_fields_and_keys_are_migrated_and_unknown_fields_kept(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    legacy = {
        "Agent:Main:Main": {"sessionId": "old", "updatedAt": 1, "provider": "telegram"},
        "main": {"sessionId": "new", "updatedAt": 5, "room": "#ops", "futureField": {"x": [1]}},
        "agent:main:discord:channel:1": {
            "sessionId": "d",
            "updatedAt": 2,
            "lastProvider": "discord",
        },
    }
    path.write_text(json.dumps(legacy, indent=2))
    with flatstate.open_store(path) as store:
        entry = store.get("agent:main:main")
        assert entry is not None and entry.session_id == "new"  # the freshest alias wins
        assert entry["groupChannel"] == "#ops" and entry["futureField"] == {"x": [1]}
        assert store.get("agent:main:discord:channel:1")["lastChannel"] == "discord"  # type: ignore[index]
        store.patch("main", {"label": "folded"})
    written = json.loads(path.read_text())
    assert sorted(written) == ["agent:main:discord:channel:1", "agent:main:main"]
    assert written["agent:main:main"]["futureField"] == {"x": [1]}
    assert "room" not in written["agent:main:main"]


# -- processes -------------------------------------------------------------------


def test_two_processes_patching_one_file_lose_no_update(tmp_path: Path) -> None:
    location = str(tmp_path / "sessions.json")
    with flatstate.open_store(location) as store:
        store.upsert(COUNTER_KEY, {"count": 0})
    barrier = ctx.Barrier(2)
    with running(_increment, [(location, barrier, 150)] * 2) as procs:
        assert join_all(procs) == [0, 0]
    with flatstate.open_store(location) as store:
        assert store.get(COUNTER_KEY)["count"] == 300  # type: ignore[index]


def _hold_lock_forever(target: str, ready: Any) -> None:
    FileLock(target).acquire()
    ready.set()
    time.sleep(600)


def test_a_writer_killed_while_holding_the_lock_does_not_block_the_next(tmp_path: Path) -> None:
    location = tmp_path / "sessions.json"
    ready = ctx.Event()
    with running(_hold_lock_forever, [(str(location), ready)]) as procs:
        assert ready.wait(START_TIMEOUT)
        os.kill(procs[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
        procs[0].join(10)
    assert Path(f"{location}.lock").exists()
    started = time.monotonic()
    with flatstate.open_store(location, lock_timeout=5) as store:
        store.patch("main", {"label": "after the crash"})
    assert time.monotonic() - started < 5
    assert not Path(f"{location}.lock").exists()


def _write_json_until_killed(location: str, ack_path: str, start: int) -> None:
    with flatstate.open_store(location) as store:
        ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        i = start
        while True:
            i += 1
            store.patch(f"agent:main:k{i % 7}", {"n": i, "pad": "x" * (i % 5000)})
            os.write(ack, f"{i}\n".encode())


def test_kill_9_during_writes_never_leaves_a_torn_or_empty_file(tmp_path: Path) -> None:
    location = tmp_path / "sessions.json"
    ack_path = tmp_path / "acks"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for round_ in range(5):
        base = round_ * 1_000_000
        with running(_write_json_until_killed, [(str(location), str(ack_path), base)]) as procs:
            wait_for_content(str(ack_path))
            time.sleep(rng.uniform(0.0, 0.5))
            os.kill(procs[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
            procs[0].join(10)
        data = json.loads(location.read_text())  # never torn, never empty
        assert isinstance(data, dict) and data, f"seed {seed}"
        acked = [int(x) for x in ack_path.read_text().split()] if ack_path.exists() else []
        if acked:
            last = acked[-1]
            assert data[f"agent:main:k{last % 7}"]["n"] >= last, f"seed {seed}: lost {last}"
        ack_path.unlink(missing_ok=True)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) <= 5  # at most one torn temp file per kill, swept after 5 minutes


# -- damaged files ---------------------------------------------------------------

DAMAGED = {
    "invalid": (
        b'{\n  "agent:main:a": {"sessionId": "a", "updatedAt": 1},\n  "agent:main:b": {,\n}',
        "line 3",
    ),
    "truncated": (b'{\n  "agent:main:a": {\n    "sessionId": "a",\n    "upd', "line 4"),
    "array": (b"[1, 2, 3]", "not a JSON object"),
    "non-object entries": (
        b'{"agent:main:a": {"sessionId": "a"}, "agent:main:b": 5}',
        "'agent:main:b'",
    ),
    "empty": (b"", "empty"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_file_opens_read_only_and_is_never_overwritten(tmp_path: Path, case: str) -> None:
    data, detail = DAMAGED[case]
    path = tmp_path / "sessions.json"
    path.write_bytes(data)
    with flatstate.open_store(path) as store:
        assert store.corruption is not None
        message = str(store.corruption)
        assert str(path) in message and detail in message and "flatstate doctor --repair" in message
        with pytest.raises(ReadOnlyStore) as info:
            store.patch("main", {"label": "x"})
        assert "doctor --repair" in str(info.value)
        if case == "non-object entries":
            assert store.get("agent:main:a") is not None  # what is valid stays readable
    assert path.read_bytes() == data


def test_a_symlink_out_of_the_directory_is_refused_unless_allowed(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}")
    sessions = tmp_path / "agents" / "main" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "sessions.json").symlink_to(outside)
    with pytest.raises(UnsafePath, match="outside"):
        flatstate.open_store(sessions / "sessions.json")
    with flatstate.open_store(sessions / "sessions.json", allow_symlink=True) as store:
        assert len(store) == 0


# -- freshness and coalescing -----------------------------------------------------


def test_writes_by_other_programs_are_seen_within_the_check_interval(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    store = flatstate.open_store(path, check_interval=0.05)
    store.upsert("main", {"sessionId": "a", "updatedAt": 1})
    assert store.get("main").session_id == "a"  # type: ignore[union-attr]
    data = json.loads(path.read_text())
    data["agent:main:main"]["sessionId"] = "edited-by-openclaw"
    path.write_text(json.dumps(data, indent=2))  # an in-place write, as an editor would
    time.sleep(0.1)
    assert store.get("main").session_id == "edited-by-openclaw"  # type: ignore[union-attr]
    store.close()


def test_entries_unchanged_by_an_outside_write_keep_their_objects(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    path.write_text(
        json.dumps({"agent:main:a": {"sessionId": "a"}, "agent:main:b": {"sessionId": "b"}})
    )
    store = flatstate.open_store(path, check_interval=0)
    a, b = store.get("agent:main:a"), store.get("agent:main:b")
    path.write_text(
        json.dumps({"agent:main:a": {"sessionId": "a"}, "agent:main:b": {"sessionId": "b2"}})
    )
    assert store.get("agent:main:a") is a
    assert store.get("agent:main:b") is not b and store.get("agent:main:b").session_id == "b2"  # type: ignore[union-attr]
    store.close()


def test_coalesced_patches_share_file_replaces(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    store = flatstate.open_store(path)
    barrier = threading.Barrier(100)
    errors: list[BaseException] = []

    def patch(i: int) -> None:
        try:
            barrier.wait()
            result = store.patch(f"agent:main:k{i}", {"n": i})
            assert result is not None and result["n"] == i
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=patch, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    writes = backend_of(store).file_writes
    assert writes < 20, writes
    data = json.loads(path.read_text())
    assert all(data[f"agent:main:k{i}"]["n"] == i for i in range(100))
    store.close()


def test_a_failing_write_in_a_coalesced_batch_fails_alone(tmp_path: Path) -> None:
    store = flatstate.open_store(tmp_path / "sessions.json", max_entry_bytes=2000)
    results: dict[int, Any] = {}
    barrier = threading.Barrier(3)

    def write(i: int) -> None:
        barrier.wait()
        try:
            results[i] = store.patch(f"agent:main:k{i}", {"note": "x" * (5000 if i == 1 else 10)})
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(results[1], flatstate.errors.EntryTooLarge)
    assert store.get("agent:main:k0") is not None and store.get("agent:main:k2") is not None
    assert store.get("agent:main:k1") is None
    store.close()
