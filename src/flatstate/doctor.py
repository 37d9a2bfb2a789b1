"""``flatstate doctor``: check a store without trusting it, and repair a damaged sessions.json.

:func:`diagnose` opens nothing for writing: it reads the files, reports sizes,
corruption, stale locks, stray temp files, oversized entries, unsafe session
ids, keys that cannot be normalized and auth files open to other users. A
PostgreSQL store is read through its backend, opened read-only, and named by
its location without the password. :func:`repair` moves a damaged
sessions.json aside as ``sessions.json.corrupt.<time>``, salvages every entry
it can parse, writes those as the new store, and says what was kept and what
was lost; :func:`repair_all` also narrows the auth files' modes.
"""

from __future__ import annotations

import contextlib
import os
import time
from shlex import quote
from typing import Any

import msgspec

from flatstate._open import POSTGRES_SCHEMES, check_files, open_store
from flatstate.auth.disk import loose_modes
from flatstate.backends.jsonfile import format_store, load_entry
from flatstate.errors import InvalidEntry, InvalidSessionKey, StoreCorrupt
from flatstate.files import TEMP_STALE_SECONDS, atomic_write, check_place
from flatstate.frozen import decode_json, encode_json, strict_decoder
from flatstate.keys import DEFAULT_AGENT_ID, normalize_key
from flatstate.locks import FileLock, inspect_lock
from flatstate.model import validate_session_id
from flatstate.openclaw.agent import AGENT_DB_NAME, KNOWN_SCHEMA, AgentDatabase
from flatstate.openclaw.database import FileFacts, Reader, file_facts, wal_state
from flatstate.openclaw.root import (
    STATE_DB,
    Lease,
    StateDatabase,
    agent_auth,
    agent_databases,
    auth_document,
    find_root,
    shared_auth,
)
from flatstate.transcripts import archive_name

__all__ = [
    "DoctorReport",
    "Finding",
    "ImportPreview",
    "OpenClawAgentReport",
    "OpenClawReport",
    "RepairReport",
    "diagnose",
    "diagnose_openclaw",
    "repair",
    "repair_all",
    "salvage",
]

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
    transcripts_dir: str | None
    """Where the transcript files are; None where the database keeps the transcripts."""
    transcript_files: int
    """Transcript files, or transcripts in the database (live and archived)."""
    transcript_bytes: int
    findings: list[Finding]
    repaired: RepairReport | None = None
    modes_fixed: list[str] = msgspec.field(default_factory=list)


def diagnose(
    location: str,
    *,
    max_entry_bytes: int = 4 << 20,
    agent_id: str | None = None,
    auth_dir: str | None = None,
) -> DoctorReport:
    """Everything wrong with the store at ``location`` (and, given ``auth_dir``, with the
    modes of its auth profiles), without changing anything."""
    agent_id = agent_id or DEFAULT_AGENT_ID
    if location.startswith(POSTGRES_SCHEMES):
        report = _diagnose_backend(location, agent_id, max_entry_bytes)
    else:
        report = _diagnose_files(location, agent_id, max_entry_bytes)
    store = "" if location.startswith(POSTGRES_SCHEMES) else f" --store {quote(location)}"
    for path, mode, limit in loose_modes(auth_dir) if auth_dir else ():
        report.findings.append(
            Finding(
                "permissions",
                path,
                f"mode {mode:04o} lets other users read secrets (at most {limit:04o}). "
                f"Repair with: flatstate doctor --repair{store}",
            )
        )
    return report


def _diagnose_backend(location: str, agent_id: str, max_entry_bytes: int) -> DoctorReport:
    """A database store, read through its backend: every row checked as a file's entries."""
    findings: list[Finding] = []
    entries = 0
    with open_store(location, readonly=True, agent_id=agent_id) as store:
        backend = store.backend
        try:
            for key, entry in backend.scan()[1]:
                entries += 1
                _check_entry(key, encode_json(entry), agent_id, max_entry_bytes, findings)
        except StoreCorrupt as exc:
            findings.append(Finding("corrupt", backend.location, f"{exc.problem}. {exc.fix}"))
        directory = backend.transcripts_dir
        _check_leftovers(directory, findings)
        files, size = backend.transcript_usage() or _directory_usage(directory, exclude="")
        return DoctorReport(
            store=backend.location,
            backend=type(backend).__name__.removesuffix("Backend").lower(),
            entries=entries,
            store_bytes=backend.disk_bytes(),
            wal_bytes=backend.wal_bytes(),
            transcripts_dir=None if backend.keeps_transcripts else directory,
            transcript_files=files,
            transcript_bytes=size,
            findings=findings,
        )


def _diagnose_files(location: str, agent_id: str, max_entry_bytes: int) -> DoctorReport:
    """A store on disk, read from its files (a damaged one may not open as a store)."""
    check_place(location, directory=not location.endswith((".json", ".sqlite")))
    check = check_files(location, agent_id)
    if check is None:  # OpenClaw 2026.9's databases: see diagnose_openclaw
        return _diagnose_backend(location, agent_id, max_entry_bytes)
    path, directory = check.store_file, check.transcripts_dir
    findings = [Finding("corrupt", path, problem) for problem in check.problems]
    if not os.path.exists(path):
        findings.append(
            Finding("missing", path, "no store here yet (it is created on first write)")
        )
    for key, text in check.entries.items():
        _check_entry(key, text, agent_id, max_entry_bytes, findings)
    _check_leftovers(os.path.dirname(path), findings)
    if directory != os.path.dirname(path):
        _check_leftovers(directory, findings)
    files, size = _directory_usage(directory, exclude=path)
    return DoctorReport(
        store=path,
        backend="jsonfile" if path.endswith(".json") else "sqlite",
        entries=len(check.entries),
        store_bytes=_size(path) + check.wal_bytes,
        wal_bytes=check.wal_bytes,
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


def repair_all(
    location: str,
    report: DoctorReport,
    *,
    agent_id: str | None = None,
    auth_dir: str | None = None,
) -> DoctorReport:
    """Repair what ``report`` found that can be: a damaged sessions.json (:func:`repair`) and
    auth files open to others (their modes narrowed); then diagnose again."""
    kinds = {finding.kind for finding in report.findings}
    repaired = None
    if "corrupt" in kinds and not location.startswith(POSTGRES_SCHEMES):
        repaired = repair(location)
    fixed = []
    for path, mode, limit in loose_modes(auth_dir) if auth_dir and "permissions" in kinds else ():
        os.chmod(path, mode & limit)
        fixed.append(path)
    after = diagnose(location, agent_id=agent_id, auth_dir=auth_dir)
    after.repaired, after.modes_fixed = repaired, fixed
    return after


def repair(location: str) -> RepairReport:
    """Move a damaged sessions.json aside and write back every entry that can be saved."""
    check = check_files(location)
    path = check.store_file if check is not None else location
    if not path.endswith(".json"):
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


# -- OpenClaw 2026.9: its databases, read-only ------------------------------------------------

LARGE_WAL_BYTES = 64 << 20
"""A WAL past this size is reported (OpenClaw's users see WALs of gigabytes)."""
PINNED_FRAMES = 1024
"""A reader keeping this many WAL frames (4 MiB of 4 KiB pages) from checkpoints is reported."""
FREE_SHARE = 0.25
FREE_BYTES = 64 << 20


class ImportPreview(msgspec.Struct, frozen=True, kw_only=True):
    """What ``flatstate import-openclaw`` would write for one agent (into ``DEST/<agent>/``)."""

    sessions: int
    skipped_keys: list[str]
    transcripts: int
    events: int
    compressed_events: int
    auth_profiles: list[str]
    """Profile ids; never their secrets."""
    auth_order: list[str]
    """Providers with an auth order."""
    usage_stats: list[str]
    cooldowns: list[str]
    """Profiles resting now (``cooldownUntil`` ahead), which stay resting after the import."""


class OpenClawAgentReport(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: str
    database: FileFacts
    schema_version: int | None
    app_version: str | None
    leases: list[Lease]
    open_by: int | None
    """A process that holds the database open now (from its lock on the -shm file)."""
    wal_frames: int | None
    wal_backfilled: int | None
    oldest_reader: Reader | None
    counts_exclude_wal: bool
    """The counts are as of the last checkpoint: what is still in the WAL is not counted."""
    would_import: ImportPreview | None


class OpenClawReport(msgspec.Struct, kw_only=True):
    root: str
    state_database: FileFacts | None
    agents: list[OpenClawAgentReport]
    findings: list[Finding]


def diagnose_openclaw(location: str, *, now_ms: int | None = None) -> OpenClawReport:
    """Inspect an OpenClaw 2026.9 root (or one agent database) without writing anything.

    Per agent: the database's and WAL's sizes, free pages, leases and who holds
    it open, the oldest reader of the WAL, and what an import would bring
    over. The counts read each agent database file alone, never a copy of a
    WAL that may be gigabytes long.
    """
    location = os.path.abspath(location)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    root = find_root(location) or location
    findings: list[Finding] = []
    state_path = os.path.join(root, STATE_DB)
    state_facts = _facts(state_path, "the OpenClaw state database", findings)
    state = _open_quietly(lambda: StateDatabase(state_path), findings)
    try:
        if os.path.basename(location) == AGENT_DB_NAME:
            databases = {location.split(os.sep)[-3] if find_root(location) else "main": location}
        else:
            databases = agent_databases(root, state)
        shared: dict[str, Any] = {}
        with contextlib.suppress(StoreCorrupt):
            shared = shared_auth(state, None)
        agents = [
            _diagnose_agent(
                agent_id, path, state, shared if agent_id == "main" else {}, now, findings
            )
            for agent_id, path in databases.items()
        ]
    finally:
        if state is not None:
            state.close()
    if not databases:
        findings.append(Finding("missing", root, "no OpenClaw agent database here"))
    return OpenClawReport(root=root, state_database=state_facts, agents=agents, findings=findings)


def _facts(path: str, what: str, findings: list[Finding]) -> FileFacts | None:
    if not os.path.isfile(path):
        return None
    try:
        facts = file_facts(path, what)
    except StoreCorrupt as exc:
        findings.append(Finding("corrupt", path, exc.problem))
        return None
    if facts.wal_bytes >= LARGE_WAL_BYTES:
        findings.append(
            Finding(
                "large-wal",
                path + "-wal",
                f"{facts.wal_bytes:,} bytes. OpenClaw truncates it when the gateway closes "
                "the database in order (openclaw gateway stop); a reader that never ends its "
                "read keeps checkpoints from copying it back (see oldest_reader)",
            )
        )
    free = facts.free_pages * facts.page_size
    if free >= FREE_BYTES and facts.free_pages >= FREE_SHARE * max(facts.pages, 1):
        findings.append(
            Finding(
                "free-pages",
                path,
                f"{facts.free_pages:,} of {facts.pages:,} pages ({free:,} bytes) are free; "
                f"with the gateway stopped, sqlite3 {path} VACUUM gives them back",
            )
        )
    return facts


def _open_quietly(opener: Any, findings: list[Finding]) -> Any:
    try:
        return opener()
    except FileNotFoundError:
        return None
    except StoreCorrupt as exc:
        findings.append(Finding("corrupt", exc.path, exc.problem))
        return None


def _diagnose_agent(
    agent_id: str,
    path: str,
    state: StateDatabase | None,
    shared: dict[str, Any],
    now: int,
    findings: list[Finding],
) -> OpenClawAgentReport:
    if not os.path.isfile(path):
        findings.append(Finding("missing", path, "registered in the state database, not on disk"))
    facts = _facts(path, "an OpenClaw agent database", findings) or FileFacts(
        path=path,
        bytes=0,
        wal_bytes=0,
        shm_bytes=0,
        page_size=0,
        pages=0,
        free_pages=0,
        wal_mode=False,
    )
    leases = state.leases(agent_id) if state is not None else []
    for lease in leases:
        if lease.live:
            findings.append(
                Finding(
                    "in-use",
                    path,
                    f"pid {lease.pid} ({lease.process or 'unknown process'}) holds its lease "
                    f"since {lease.opened_at}: stop the gateway before importing, or import "
                    "with --force",
                )
            )
        else:
            findings.append(
                Finding(
                    "stale-lease",
                    path,
                    f"the lease of pid {lease.pid} (gone) from {lease.opened_at} remains; "
                    "OpenClaw clears it at its next start, and it does not stop an import",
                )
            )
    wal = wal_state(path)
    oldest = wal.readers[0] if wal is not None and wal.readers else None
    if oldest is not None and oldest.behind >= PINNED_FRAMES:
        findings.append(
            Finding(
                "pinned-reader",
                path,
                f"pid {oldest.pid} reads a snapshot {oldest.behind:,} WAL frames old; no "
                "checkpoint can copy those frames back until that read ends, so the WAL grows",
            )
        )
    if wal is not None and wal.open_by is not None and not any(lease.live for lease in leases):
        findings.append(
            Finding("in-use", path, f"pid {wal.open_by} has it open (its lock on {path}-shm)")
        )
    version = app = None
    preview = None
    database = _open_quietly(lambda: AgentDatabase(path, replay_wal=False), findings)
    if database is not None:
        try:
            version, app = database.schema()
            preview = _preview(database, agent_id, shared, now, findings)
            _quick_check(database, findings)
        except StoreCorrupt as exc:
            findings.append(Finding("corrupt", exc.path, exc.problem))
        finally:
            database.close()
    if version is not None and version > KNOWN_SCHEMA:
        findings.append(
            Finding(
                "newer-schema",
                path,
                f"agent schema {version} is newer than {KNOWN_SCHEMA} (OpenClaw 2026.9.6), the "
                "newest flatstate knows; it reads the tables it knows and keeps every field",
            )
        )
    leftover = os.path.join(os.path.dirname(os.path.dirname(path)), "sessions", "sessions.json")
    if os.path.isfile(leftover):
        findings.append(
            Finding(
                "leftover-sessions-json",
                leftover,
                "OpenClaw 2026.8 and later refuse to start while it remains: its own "
                "`openclaw doctor` moves it into the database; flatstate imports the database",
            )
        )
    return OpenClawAgentReport(
        agent_id=agent_id,
        database=facts,
        schema_version=version,
        app_version=app,
        leases=leases,
        open_by=wal.open_by if wal is not None else None,
        wal_frames=wal.frames if wal is not None else None,
        wal_backfilled=wal.backfilled if wal is not None else None,
        oldest_reader=oldest,
        counts_exclude_wal=facts.wal_bytes > 0,
        would_import=preview,
    )


def _preview(
    database: AgentDatabase,
    agent_id: str,
    shared: dict[str, Any],
    now: int,
    findings: list[Finding],
) -> ImportPreview:
    sessions = 0
    skipped: list[str] = []
    for page in database.entry_pages():
        for key, data in page:
            try:
                normalize_key(key, agent_id)
            except InvalidSessionKey as exc:
                skipped.append(key)
                findings.append(Finding("invalid-key", key, exc.problem))
                continue
            try:
                load_entry(key, data)
            except (msgspec.MsgspecError, InvalidEntry) as exc:
                findings.append(
                    Finding("corrupt", database.path, f"session_nodes entry {key!r}: {exc}")
                )
                continue
            sessions += 1
    windows = database.windows()
    compressed = sum(w.compressed for w in windows)
    if compressed:
        try:
            import zstandard  # noqa: F401 - only whether it is there
        except ImportError:
            findings.append(
                Finding(
                    "zstd-missing",
                    database.path,
                    f"{compressed} transcript events are zstd-compressed; an import needs the "
                    "zstd extra: pip install 'flatstate[zstd]'",
                )
            )
    auth: dict[str, Any] = {}
    with contextlib.suppress(StoreCorrupt):
        auth = auth_document(shared, agent_auth(database)) or {}
    usage = auth.get("usageStats")
    stats: dict[str, Any] = usage if isinstance(usage, dict) else {}
    return ImportPreview(
        sessions=sessions,
        skipped_keys=skipped,
        transcripts=len(windows),
        events=sum(w.events for w in windows),
        compressed_events=compressed,
        auth_profiles=sorted(auth.get("profiles") or {}),
        auth_order=sorted(auth.get("order") or {}),
        usage_stats=sorted(stats),
        cooldowns=sorted(
            profile
            for profile, usage in stats.items()
            if isinstance(usage, dict)
            and isinstance(usage.get("cooldownUntil"), int)
            and usage["cooldownUntil"] > now
        ),
    )


def _quick_check(database: AgentDatabase, findings: list[Finding]) -> None:
    result = database.db.query("PRAGMA quick_check")
    problems = [bytes(row[0]).decode(errors="replace") for row in result]
    if problems != ["ok"]:
        findings.append(
            Finding("corrupt", database.path, "quick_check: " + "; ".join(problems[:5]))
        )
