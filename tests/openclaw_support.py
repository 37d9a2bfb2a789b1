"""Helpers for the OpenClaw 2026.9 tests: the fixture, what its rows say, and changing a copy.

The expectations here are read from the fixture's raw rows with the sqlite3
module and zstandard alone, as the fixture's README describes them
(``entry_json`` parsed; ``coalesce(event_json, zstd_decompress(event_zstd))``
by ``seq``), never through the code under test.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import require_extra

FIXTURE = Path(__file__).parent / "fixtures" / "openclaw-2026.9.6"
AGENT_DB = Path("agents") / "main" / "agent" / "openclaw-agent.sqlite"
STATE_DB = Path("state") / "openclaw.sqlite"
SECRETS = (
    "sk-FAKE-ant-not-a-real-key-0001",
    "sk-FAKE-oauth-access-token-0002",
    "sk-FAKE-oauth-refresh-token-0003",
    "sk-FAKE-openai-token-0004",
)
# markAuthProfileFailure(rate_limit) in the fixture: a 30 s cooldown for the api_key profile.
FAILURE_AT = 1796106819494
COOLDOWN_UNTIL = 1796106849494


def copy_fixture(target: Path) -> Path:
    """A private, writable copy of the OpenClaw 2026.9.6 state directory."""
    if not FIXTURE.is_dir():
        pytest.fail(f"the OpenClaw 2026.9.6 fixture is missing at {FIXTURE}")
    shutil.copytree(FIXTURE, target)
    for path in target.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)
    return target


def tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under ``root`` with its mode and (for files) its bytes."""
    found: dict[str, tuple[int, bytes | None]] = {".": (root.stat().st_mode, None)}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        found[str(path.relative_to(root))] = (
            st.st_mode,
            path.read_bytes() if path.is_file() else None,
        )
    return found


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(path))}?immutable=1", uri=True)


def raw_entries(root: Path) -> dict[str, Any]:
    """Every session row's ``entry_json``, parsed."""
    with _raw(root / AGENT_DB) as conn:
        rows = conn.execute("SELECT session_key, entry_json FROM session_nodes").fetchall()
    return {key: json.loads(text) for key, text in rows}


def raw_lines(root: Path) -> dict[str, list[bytes]]:
    """session id -> its events' JSON texts by seq, the zstd ones decompressed."""
    zstandard = require_extra("zstandard", "zstd")
    lines: dict[str, list[bytes]] = {}
    with _raw(root / AGENT_DB) as conn:
        rows = conn.execute(
            "SELECT session_id, event_json, event_zstd FROM transcript_events "
            "ORDER BY session_id, seq"
        ).fetchall()
    for session_id, text, blob in rows:
        data = text.encode() if text is not None else zstandard.decompress(blob)
        lines.setdefault(session_id, []).append(data)
    return lines


def raw_events(root: Path) -> dict[str, list[dict[str, Any]]]:
    return {sid: [json.loads(line) for line in lines] for sid, lines in raw_lines(root).items()}


def compressed_count(root: Path) -> int:
    with _raw(root / AGENT_DB) as conn:
        rows = conn.execute("SELECT count(*) FROM transcript_events WHERE event_json IS NULL")
        return int(rows.fetchone()[0])


def octet_length(value: Any) -> int | None:
    if value is None:
        return None
    return len(value.encode() if isinstance(value, str) else value)


def change(path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run SQL on a copy the way OpenClaw's own writer would (its CHECKs need octet_length)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.create_function("octet_length", 1, octet_length, deterministic=True)
    try:
        for sql, params in statements:
            conn.execute(sql, params)
    finally:
        conn.close()


LABEL_MAIN = (
    "UPDATE session_nodes SET entry_json = json_set(entry_json, '$.label', ?) "
    "WHERE session_key = 'agent:main:main'"
)
_PRELUDE = """
import json, os, sqlite3, sys, time
def connect():
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.create_function(
        "octet_length", 1,
        lambda v: None if v is None else len(v.encode() if isinstance(v, str) else v))
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn
"""
# Write, then die as a killed gateway does: the WAL and -shm stay, never checkpointed.
_WRITE_AND_DIE = (
    _PRELUDE
    + """
connect().execute(sys.argv[2], json.loads(sys.argv[3]))
os._exit(0)
"""
)
# Write, start a read, write again, and keep reading the snapshot between the writes.
_HOLD = (
    _PRELUDE
    + """
writer = connect()
writer.execute(sys.argv[2], (sys.argv[3],))
reader = connect()
reader.execute("BEGIN")
reader.execute("SELECT count(*) FROM session_nodes").fetchone()
writer.execute(sys.argv[2], ("later",))
print("ready", flush=True)
time.sleep(60)
"""
)
ADD_LEASE = (
    "INSERT INTO agent_database_leases (lease_id, agent_id, path, owner_pid, owner_start_time, "
    "opened_at) VALUES ('lease-1', 'main', ?, ?, NULL, ?)"
)


def crash_after(database: Path, sql: str, *params: Any) -> None:
    """Run ``sql`` on ``database`` in a process that dies before any checkpoint."""
    subprocess.run(
        [sys.executable, "-c", _WRITE_AND_DIE, str(database), sql, json.dumps(params)],
        check=True,
        timeout=30,
    )


def hold_open(database: Path, label: str) -> subprocess.Popen[str]:
    """A process that wrote twice and still reads the snapshot between the writes."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(database), LABEL_MAIN, label],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        child.kill()
        child.wait()
        pytest.fail("the process holding the database did not start")
    return child


def add_lease(root: Path, pid: int) -> None:
    """A row as a gateway writes when it opens the main agent's database."""
    change(root / STATE_DB, (ADD_LEASE, (str(AGENT_DB), pid, FAILURE_AT)))
