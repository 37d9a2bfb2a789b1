"""What only the SQLite backend does: schema, migrations, corruption, the change log, blobs."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

import flatstate
from flatstate.backends import _blobs
from flatstate.backends import sqlite as sqlite_backend
from flatstate.errors import StoreCorrupt
from flatstate.model import build_entry


def db_path(location: Path) -> Path:
    return location / "sessions.sqlite"


def raw(location: Path) -> sqlite3.Connection:
    return sqlite3.connect(db_path(location), isolation_level=None)


def test_a_file_that_is_not_a_database_is_reported_and_left_alone(tmp_path: Path) -> None:
    tmp_path.joinpath("sessions.sqlite").write_bytes(b"this is not sqlite" * 100)
    before = db_path(tmp_path).read_bytes()
    with pytest.raises(StoreCorrupt) as info:
        flatstate.open_store(tmp_path)
    message = str(info.value)
    assert str(db_path(tmp_path)) in message and "PRAGMA integrity_check" in message
    assert isinstance(info.value, OSError)
    assert db_path(tmp_path).read_bytes() == before


def test_a_damaged_database_is_reported_and_never_emptied(tmp_path: Path) -> None:
    with flatstate.open_store(tmp_path) as store:
        for i in range(200):
            store.upsert(f"agent:main:k{i}", {"updatedAt": i, "note": "n" * 500})
    with raw(tmp_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db_path(tmp_path).read_bytes())
    for offset in range(4096 * 3, len(data), 4096):  # scribble over every page but the first two
        data[offset : offset + 200] = b"\xff" * 200
    db_path(tmp_path).write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt):
        flatstate.open_store(tmp_path)
    assert db_path(tmp_path).read_bytes() == bytes(data)


def test_a_schema_newer_than_ours_is_refused(tmp_path: Path) -> None:
    flatstate.open_store(tmp_path).close()
    with raw(tmp_path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreCorrupt, match="newer than this flatstate"):
        flatstate.open_store(tmp_path)


def test_migrations_run_in_place_and_keep_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with flatstate.open_store(tmp_path) as store:
        store.upsert("main", {"sessionId": "kept", "updatedAt": 1})
    step = ("ALTER TABLE sessions ADD COLUMN archived_at INTEGER",)
    monkeypatch.setattr(sqlite_backend, "MIGRATIONS", [*sqlite_backend.MIGRATIONS, step])
    with flatstate.open_store(tmp_path) as store:
        assert store.get("main").session_id == "kept"  # type: ignore[union-attr]
    with raw(tmp_path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone()[0] == 2
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sessions)")]
    assert "archived_at" in columns


def test_files_are_private(tmp_path: Path) -> None:
    location = tmp_path / "state"
    flatstate.open_store(location).close()
    assert os.stat(location).st_mode & 0o777 == 0o700
    assert os.stat(db_path(location)).st_mode & 0o777 == 0o600


def test_writes_by_other_programs_are_seen_within_the_check_interval(tmp_path: Path) -> None:
    store = flatstate.open_store(tmp_path, check_interval=0.05)
    store.upsert("main", {"sessionId": "a", "updatedAt": 1})
    assert store.get("main").session_id == "a"  # type: ignore[union-attr]
    with raw(tmp_path) as conn:
        conn.execute(
            "UPDATE sessions SET entry = ? WHERE key = 'agent:main:main'",
            (json.dumps({"sessionId": "changed-by-sqlite3", "updatedAt": 2}),),
        )
    time.sleep(0.1)
    assert store.get("main").session_id == "changed-by-sqlite3"  # type: ignore[union-attr]
    store.close()


def test_a_reader_behind_the_pruned_change_log_reloads_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "CHANGE_LOG_KEEP", 5)
    reader = flatstate.open_store(tmp_path)
    writer = flatstate.open_store(tmp_path)
    reloads = reader.stats().full_reloads
    for i in range(1100):  # the writer prunes its log every 1024 commits
        writer.patch(f"agent:main:k{i % 30}", {"n": i})
    assert reader.get("agent:main:k9")["n"] == 1089  # type: ignore[index]
    assert reader.stats().full_reloads == reloads + 1
    assert len(reader) == 30
    reader.close()
    writer.close()


def test_large_objects_are_stored_once_and_collected_when_unused(tmp_path: Path) -> None:
    skills = {"prompt": "skills " * 1000, "skills": [{"name": "a"}]}
    with flatstate.open_store(tmp_path) as store:
        for i in range(9):
            store.upsert(f"agent:main:s{i}", {"updatedAt": i, "skillsSnapshot": skills})
        with raw(tmp_path) as conn:
            assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
            row = conn.execute("SELECT entry, blobs FROM sessions LIMIT 1").fetchone()
            assert len(row[0]) < 200 and "skillsSnapshot" in json.loads(row[1])
        for i in range(9):
            store.patch(f"agent:main:s{i}", {"skillsSnapshot": {"prompt": "other " * 1000}})
        backend = store.backend
        assert isinstance(backend, sqlite_backend.SQLiteBackend)
        backend.begin()
        removed = backend.collect_blobs()
        backend.commit()
        assert removed == 1
    with flatstate.open_store(tmp_path) as store:
        assert store.get("agent:main:s3")["skillsSnapshot"]["prompt"].startswith("other")  # type: ignore[index]


def test_replaced_blobs_are_collected_on_their_own_and_counter_patches_do_not_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_blobs, "COLLECT_AFTER", 8)
    monkeypatch.setattr(_blobs, "SWEEP_AFTER_COMMITS", 1000)
    scans = 0
    find = sqlite_backend.SQLiteBackend._find_garbage

    def counted(backend: sqlite_backend.SQLiteBackend) -> list[str]:
        nonlocal scans
        scans += 1
        return find(backend)

    monkeypatch.setattr(sqlite_backend.SQLiteBackend, "_find_garbage", counted)
    with flatstate.open_store(tmp_path) as store:
        for i in range(4):
            store.upsert(f"agent:main:s{i}", {"skillsSnapshot": {"prompt": "first " * 100}})
        for n in range(200):
            store.patch(f"agent:main:s{n % 4}", {"inputTokens": n})
        assert scans == 0
        for n in range(60):
            store.patch(f"agent:main:s{n % 4}", {"skillsSnapshot": {"prompt": f"v{n} " * 100}})
        assert scans > 0
        with raw(tmp_path) as conn:
            stored = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
        # Four live blobs, plus at most the garbage of the writes since the last scan and
        # what that scan found (the next commit deletes it).
        assert 4 <= stored <= 4 + 2 * 8
        assert store.get("agent:main:s3")["skillsSnapshot"]["prompt"].startswith("v59 ")  # type: ignore[index]


def test_a_blob_reused_inside_the_collecting_transaction_is_kept(tmp_path: Path) -> None:
    first = {"prompt": "first " * 100}
    with flatstate.open_store(tmp_path) as store:
        store.upsert("agent:main:a", {"skillsSnapshot": first})
        store.patch("agent:main:a", {"skillsSnapshot": {"prompt": "second " * 100}})
        # "first" is unreferenced in the committed store; this transaction refers to it again.
        backend = store.backend
        assert isinstance(backend, sqlite_backend.SQLiteBackend)
        backend.begin()
        backend.put("agent:main:b", build_entry("agent:main:b", {"skillsSnapshot": first}), None)
        assert backend.collect_blobs() == 0
        backend.commit()
    with flatstate.open_store(tmp_path) as store:
        assert store.get("agent:main:b")["skillsSnapshot"]["prompt"] == first["prompt"]  # type: ignore[index]


def test_a_busy_store_sweeps_blobs_another_process_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_blobs, "SWEEP_AFTER_COMMITS", 50)
    with flatstate.open_store(tmp_path) as busy:
        busy.upsert("agent:main:busy", {"inputTokens": 0})
        # A short-lived writer (a CLI run) replaces a blob a few times and exits,
        # far below the count that would make it collect.
        with flatstate.open_store(tmp_path) as cli:
            for n in range(5):
                cli.upsert("agent:main:cli", {"skillsSnapshot": {"prompt": f"v{n} " * 100}})
        with raw(tmp_path) as conn:
            assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 5
        for n in range(60):
            busy.patch("agent:main:busy", {"inputTokens": n})
        with raw(tmp_path) as conn:
            assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
        assert busy.get("agent:main:cli")["skillsSnapshot"]["prompt"].startswith("v4 ")  # type: ignore[index]


def test_legacy_keys_written_by_others_fold_into_the_canonical_key(tmp_path: Path) -> None:
    flatstate.open_store(tmp_path).close()
    with raw(tmp_path) as conn:
        for key, session_id, updated in [
            ("Agent:Main:Main", "older", 1),
            ("main", "newest", 3),
            ("agent:main:main", "middle", 2),
        ]:
            conn.execute(
                "INSERT INTO sessions (key, session_id, updated_at, entry) VALUES (?, ?, ?, ?)",
                (
                    key,
                    session_id,
                    updated,
                    json.dumps({"sessionId": session_id, "updatedAt": updated}),
                ),
            )
    with flatstate.open_store(tmp_path) as store:
        assert list(store.keys()) == ["agent:main:main"]
        assert store.get("Agent:Main:Main").session_id == "newest"  # type: ignore[union-attr]
        store.patch("main", {"label": "folded"})
    with raw(tmp_path) as conn:
        rows = conn.execute("SELECT key, session_id FROM sessions").fetchall()
    assert rows == [("agent:main:main", "newest")]


def test_rows_with_keys_that_cannot_be_normalized_are_left_untouched(tmp_path: Path) -> None:
    flatstate.open_store(tmp_path).close()
    with raw(tmp_path) as conn:
        conn.execute(
            "INSERT INTO sessions (key, session_id, updated_at, entry) VALUES (?, ?, ?, ?)",
            ("agent:", "x", 1, json.dumps({"sessionId": "x", "updatedAt": 1})),
        )
    with flatstate.open_store(tmp_path) as store:
        assert len(store) == 0
        store.upsert("main", {"updatedAt": 1})
    with raw(tmp_path) as conn:
        assert conn.execute("SELECT count(*) FROM sessions WHERE key = 'agent:'").fetchone()[0] == 1


def test_power_loss_durability_is_an_option(tmp_path: Path) -> None:
    with flatstate.open_store(tmp_path, synchronous="full") as store:
        store.upsert("main", {"updatedAt": 1})
        backend = store.backend
        assert isinstance(backend, sqlite_backend.SQLiteBackend)
        assert backend._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(ValueError, match="synchronous"):
        flatstate.open_store(tmp_path, synchronous="sometimes")


def test_housekeeping_in_a_commit_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Change-log pruning and blob deletion take a bounded batch per commit, however much
    is due: a backlog is worked off by the commits that follow, and none of it is lost."""
    monkeypatch.setattr(sqlite_backend, "PRUNE_BATCH", 50)
    monkeypatch.setattr(sqlite_backend, "COLLECT_BATCH", 3)
    monkeypatch.setattr(sqlite_backend, "CHANGE_LOG_KEEP", 10)
    monkeypatch.setattr(sqlite_backend, "PRUNE_EVERY", 1_000_000)
    with flatstate.open_store(tmp_path) as store:
        store.update(lambda d: [d.__setitem__(f"k{i}", {"n": i}) for i in range(400)])
        for i in range(10):
            store.upsert(f"b{i}", {"skillsSnapshot": {"prompt": f"blob {i} " * 100}})
        for i in range(10):
            store.patch(f"b{i}", {"skillsSnapshot": None})  # ten blobs now unreferenced
        backend = store.backend
        assert isinstance(backend, sqlite_backend.SQLiteBackend)
        backend._prune_pending = True
        backend._garbage = backend._find_garbage()
        assert len(backend._garbage) == 10

        def counts() -> tuple[int, int]:
            with raw(tmp_path) as conn:
                changes = conn.execute("SELECT count(*) FROM changes").fetchone()[0]
                blobs = conn.execute("SELECT count(*) FROM blobs").fetchone()[0]
            return changes, blobs

        before = counts()
        store.patch("k0", {"n": -1})
        after = counts()
        assert before[0] + 1 - after[0] == 50  # one batch of the log, plus this write's row
        assert before[1] - after[1] == 3
        for i in range(20):
            store.patch("k0", {"n": i})
        changes, blobs = counts()
        assert changes <= 10 + 1 + 50 and blobs == 0
        assert len(store) == 410 and store.get("k0")["n"] == 19  # type: ignore[index]
