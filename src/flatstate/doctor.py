"""``flatstate doctor``: check a store without trusting it, and repair a damaged sessions.json.

:func:`diagnose` opens nothing for writing: it reads the files, reports sizes,
corruption, stale locks, stray temp files, oversized entries, unsafe session
ids and keys that cannot be normalized. :func:`repair` moves a damaged
sessions.json aside as ``sessions.json.corrupt.<time>``, salvages every entry
it can parse, writes those as the new store, and says what was kept and what
was lost.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from typing import Any

import msgspec

from flatstate._sqlite import file_uri
from flatstate.backends.jsonfile import entry_problem, format_store, load_entry, parse_store
from flatstate.backends.sqlite import DB_FILENAME, TRANSCRIPTS_DIRNAME
from flatstate.errors import InvalidEntry, InvalidSessionKey, StoreCorrupt
from flatstate.files import TEMP_STALE_SECONDS, atomic_write
from flatstate.frozen import decode_json, strict_decoder
from flatstate.keys import normalize_key
from flatstate.locks import FileLock, inspect_lock
from flatstate.model import validate_session_id
from flatstate.transcripts import archive_name

__all__ = ["DoctorReport", "Finding", "RepairReport", "diagnose", "repair", "salvage"]

LOCK_STALE_SECONDS = 30.0


class Finding(msgspec.Struct, frozen=True):
    """One problem: what kind, about what, and what to do."""

    kind: str
    subject: str
    detail: str


class RepairReport(msgspec.Struct, frozen=True, kw_only=True):
    moved_to: str
    kept: list[str]
    lost: list[str]


class DoctorReport(msgspec.Struct, kw_only=True):
    store: str
    backend: str
    entries: int
    store_bytes: int
    wal_bytes: int
    """The SQLite write-ahead log alone (0 for JSON): checkpoints keep it bounded."""
    transcripts_dir: str
    transcript_files: int
    transcript_bytes: int
    findings: list[Finding]
    repaired: RepairReport | None = None


def _store_file(location: str) -> tuple[str, str]:
    """(backend name, the file holding the entries) for a store location."""
    if location.endswith(".json"):
        return "jsonfile", os.path.abspath(location)
    return "sqlite", os.path.join(os.path.abspath(location), DB_FILENAME)


def diagnose(
    location: str, *, max_entry_bytes: int = 4 << 20, agent_id: str = "main"
) -> DoctorReport:
    """Everything wrong with the store at ``location``, without changing it."""
    backend, path = _store_file(location)
    directory = (
        os.path.dirname(path)
        if backend == "jsonfile"
        else os.path.join(location, TRANSCRIPTS_DIRNAME)
    )
    findings: list[Finding] = []
    if not os.path.exists(path):
        findings.append(
            Finding("missing", path, "no store here yet (it is created on first write)")
        )
        entries: dict[str, Any] = {}
    elif backend == "jsonfile":
        entries = _read_json_entries(path, findings)
    else:
        entries = _read_sqlite_entries(path, findings)
    for key, text in entries.items():
        _check_entry(key, text, agent_id, max_entry_bytes, findings)
    _check_leftovers(os.path.dirname(path), findings)
    if directory != os.path.dirname(path):
        _check_leftovers(directory, findings)
    files, size = _directory_usage(directory, exclude=path)
    wal = _size(path + "-wal") if backend == "sqlite" else 0
    return DoctorReport(
        store=path,
        backend=backend,
        entries=len(entries),
        store_bytes=_size(path) + wal,
        wal_bytes=wal,
        transcripts_dir=directory,
        transcript_files=files,
        transcript_bytes=size,
        findings=findings,
    )


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_json_entries(path: str, findings: list[Finding]) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = f.read()
    try:
        raw, problems = parse_store(path, data)
    except StoreCorrupt as exc:
        findings.append(Finding("corrupt", path, f"{exc.problem}. {exc.fix}"))
        return {}
    entries = {
        key: bytes(value) for key, value in raw.items() if bytes(value).lstrip().startswith(b"{")
    }
    for key, text in entries.items():
        try:
            load_entry(key, text)
        except (msgspec.MsgspecError, InvalidEntry) as exc:
            problems.append(entry_problem(data, key, text, exc))
    for problem in problems:
        findings.append(
            Finding("corrupt", path, f"{problem}. Repair with: flatstate doctor --repair")
        )
    return entries


def _read_sqlite_entries(path: str, findings: list[Finding]) -> dict[str, Any]:
    try:
        conn = sqlite3.connect(file_uri(path, readonly=True), uri=True)
        try:
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                findings.append(Finding("corrupt", path, f"quick_check says: {check}"))
            rows = conn.execute(
                "SELECT key, length(CAST(entry AS BLOB)), entry FROM sessions"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        findings.append(
            Finding(
                "corrupt", path, f"{exc}. Inspect it with: sqlite3 {path} 'PRAGMA integrity_check'"
            )
        )
        return {}
    return {key: text.encode() for key, _, text in rows}


def _check_entry(key: str, text: bytes, agent_id: str, limit: int, findings: list[Finding]) -> None:
    try:
        normalize_key(key, agent_id)
    except InvalidSessionKey as exc:
        findings.append(Finding("invalid-key", key, exc.problem))
    if len(text) > limit:
        findings.append(
            Finding("oversized", key, f"{len(text):,} bytes of JSON, over the {limit:,}-byte limit")
        )
    try:
        entry = decode_json(text)
    except msgspec.MsgspecError:
        return
    session_id = entry.get("sessionId") if isinstance(entry, dict) else None
    if session_id is not None:
        try:
            validate_session_id(session_id, key)
        except InvalidEntry as exc:
            findings.append(Finding("unsafe-session-id", key, exc.problem))


def _check_leftovers(directory: str, findings: list[Finding]) -> None:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    now = time.time()
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(".lock"):
            info = inspect_lock(path, LOCK_STALE_SECONDS)
            if info is not None and info.stale:
                findings.append(Finding("stale-lock", path, ", ".join(info.stale_reasons)))
        elif name.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                if os.path.getmtime(path) < now - TEMP_STALE_SECONDS:
                    findings.append(Finding("stale-temp", path, "left by an interrupted write"))


def _directory_usage(directory: str, exclude: str) -> tuple[int, int]:
    count = size = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False) and entry.path != exclude:
                count += 1
                size += entry.stat().st_size
    return count, size


def salvage(data: bytes) -> tuple[dict[str, Any], list[str]]:
    """Every entry of a damaged sessions.json that still parses, and what was lost.

    Members are read one at a time; after a damaged one the reader skips to
    the next line that starts a top-level member (OpenClaw indents by two
    spaces), so entries before and after the damage both survive.
    """
    text = data.decode("utf-8", errors="replace")
    decoder = strict_decoder
    kept: dict[str, Any] = {}
    lost: list[str] = []
    i = _skip(text, 0)
    if i >= len(text) or text[i] != "{":
        return kept, [
            "the whole file: it is not a JSON object"
            if text.strip()
            else "nothing: the file is empty"
        ]
    i += 1
    while True:
        i = _skip(text, i, ",")
        if i >= len(text) or text[i] == "}":
            if i >= len(text):
                lost.append("the end of the file (it is truncated)")
            break
        key: Any = None
        try:
            key, j = decoder.raw_decode(text, i)
            j = _skip(text, j)
            if not isinstance(key, str) or text[j : j + 1] != ":":
                raise ValueError("not a member")
            value, i = decoder.raw_decode(text, _skip(text, j + 1))
        except (ValueError, RecursionError):
            resume = text.find('\n  "', i + 1)
            why = "damaged" if resume >= 0 else "cut off: the file ends inside it"
            lost.append(f"{key!r} ({why})" if isinstance(key, str) else f"bytes from {i} ({why})")
            if resume < 0:
                break
            i = resume + 1
            continue
        if isinstance(value, dict):
            kept[key] = value
        else:
            lost.append(f"{key!r} (not an object)")
    return kept, lost


def _skip(text: str, i: int, also: str = "") -> int:
    while i < len(text) and (text[i].isspace() or text[i] in also):
        i += 1
    return i


def repair(location: str) -> RepairReport:
    """Move a damaged sessions.json aside and write back every entry that can be saved."""
    backend, path = _store_file(location)
    if backend != "jsonfile":
        raise StoreCorrupt(
            path,
            "automatic repair covers sessions.json files only",
            f"For SQLite, recover with: sqlite3 {path} '.recover' | sqlite3 recovered.sqlite",
        )
    with FileLock(path):
        with open(path, "rb") as f:
            data = f.read()
        kept, lost = salvage(data)
        aside = archive_name(path, "corrupt", int(time.time() * 1000))
        os.link(path, aside)  # the damaged original stays, under a new name
        os.chmod(aside, 0o600)  # as private as the store it was, whatever its mode had been
        atomic_write(path, format_store(kept), mode=0o600)
    return RepairReport(moved_to=aside, kept=list(kept), lost=lost)
