"""Moving a whole OpenClaw state directory to SQLite state directories and back.

OpenClaw 2026.3 keeps one agent per ``agents/<id>/``: the session store
``sessions/sessions.json``, the transcripts beside it, and
``agent/auth-profiles.json``. OpenClaw 2026.8 and later keep each agent in
``agents/<id>/agent/openclaw-agent.sqlite`` and the shared auth profiles in
``state/openclaw.sqlite`` (see :mod:`flatstate.openclaw`). Import reads either
era, per agent (its database when it has one), into one layout: a flatstate
state directory per agent (``DEST/<id>/``, or ``DEST`` itself for a single
sessions.json or agent database) with the sessions in ``sessions.sqlite``, the
transcripts (and their archives) in ``transcripts/``, and
``auth-profiles.json``. Export writes the 2026.3 layout back, which OpenClaw
2026.9's own doctor imports. Every entry and field survives the round trip.

The source is only ever read. A destination that already holds state is
refused, since an import would overwrite what changed there since, unless
``force`` (the source wins) or ``merge`` (per session the fresher
``updatedAt`` wins and its transcript goes with it; auth profiles, order and
usage the destination has are kept).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec

from flatstate._open import open_store
from flatstate.auth.document import decode_document, encode_document
from flatstate.backends.openclaw import OpenClawBackend
from flatstate.backends.sqlite import DB_FILENAME
from flatstate.errors import (
    DestinationExists,
    ExtraMissing,
    InvalidEntry,
    InvalidSessionKey,
    StoreCorrupt,
    TranscriptNotEmpty,
)
from flatstate.files import atomic_write
from flatstate.model import validate_session_id
from flatstate.openclaw.agent import AGENT_DB_NAME, AgentDatabase, Window
from flatstate.openclaw.root import (
    StateDatabase,
    agent_auth,
    agent_databases,
    auth_document,
    check_not_in_use,
    find_root,
    open_state,
    overlay,
    shared_auth,
)
from flatstate.places import (
    AUTH_FILENAME,
    Lines,
    Place,
    destinations,
    has_transcripts,
    is_postgres,
    read_auth,
    read_transcripts,
    sources,
    transcript_files,
    write_auth,
    write_transcript,
)
from flatstate.snapshot import Draft
from flatstate.store import SessionStore
from flatstate.transcripts import archive_name

__all__ = ["AgentTransfer", "Damage", "TransferReport", "export_openclaw", "import_openclaw"]

BATCH = 500
Progress = Callable[[str, int, int], None]
"""Called as (agent id, items done, items in all) while sessions and transcripts are copied."""


class Damage(msgspec.Struct, frozen=True):
    """Something of the source that could not be read, and was left out of the import."""

    path: str
    problem: str


class AgentTransfer(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: str
    source: str
    destination: str
    sessions: int
    transcripts: int
    auth_profiles: bool
    skipped_keys: list[str]
    """Stored keys that are not valid session keys (left behind; see doctor)."""
    kept_keys: list[str] = []
    """With ``merge``: sessions whose destination entry was as fresh or fresher, and stayed."""
    damage: list[Damage] = []
    notes: list[str] = []


class TransferReport(msgspec.Struct, frozen=True, kw_only=True):
    agents: list[AgentTransfer]
    damage: list[Damage] = []
    """What could not be read outside any one agent (the shared state database)."""

    @property
    def sessions(self) -> int:
        return sum(a.sessions for a in self.agents)

    @property
    def damaged(self) -> bool:
        """Whether anything of the source was left out because it could not be read."""
        return bool(self.damage) or any(a.damage for a in self.agents)


@dataclass
class _Agent:
    agent_id: str
    sessions_json: str
    auth_file: str | None
    database: str | None = None
    """OpenClaw 2026.9's database of this agent, when it has one (then read instead)."""


class Ticker:
    """Counts copied items for a progress callback."""

    def __init__(self, agent_id: str, total: int, progress: Progress | None) -> None:
        self.agent_id, self.total, self.progress, self.done = agent_id, total, progress, 0

    def __call__(self, count: int = 1) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.agent_id, self.done, self.total)


def _source_root(source: str) -> str | None:
    """The OpenClaw 2026.9 root of a source: itself, or the root of an agent dir or database."""
    if os.path.isfile(os.path.join(source, "agent", AGENT_DB_NAME)):
        return find_root(os.path.join(source, "agent", AGENT_DB_NAME))
    return find_root(source)


def _openclaw_agents(source: str, state: StateDatabase | None) -> tuple[list[_Agent], bool]:
    """The agents under an OpenClaw source, and whether it named a single store."""
    if source.endswith(".json"):
        sessions_dir = os.path.dirname(source)
        agent_dir = os.path.dirname(sessions_dir)
        agent_id = (
            os.path.basename(agent_dir) if os.path.basename(sessions_dir) == "sessions" else "main"
        )
        auth = os.path.join(agent_dir, "agent", AUTH_FILENAME)
        return [_Agent(agent_id, source, auth if os.path.isfile(auth) else None)], True
    if os.path.basename(source) == AGENT_DB_NAME and os.path.isfile(source):
        agent_dir = os.path.dirname(os.path.dirname(source))
        agent_id = os.path.basename(agent_dir) if find_root(source) is not None else "main"
        sessions_json = os.path.join(agent_dir, "sessions", "sessions.json")
        return [_Agent(agent_id, sessions_json, None, source)], True
    agents_root = os.path.join(source, "agents")
    databases: dict[str, str] = {}
    if os.path.isdir(os.path.join(source, "sessions")) or os.path.isdir(
        os.path.join(source, "agent")
    ):  # an agents/<id> directory
        agents_root, names = os.path.dirname(source), [os.path.basename(source)]
    elif os.path.isdir(agents_root):
        databases = agent_databases(source, state)
        names = sorted({*os.listdir(agents_root), *databases})
    else:
        raise FileNotFoundError(
            f"{source}: not an OpenClaw state directory (no agents/ inside), "
            f"an agent database ({AGENT_DB_NAME}) nor a sessions.json"
        )
    found = []
    for name in names:
        sessions_json = os.path.join(agents_root, name, "sessions", "sessions.json")
        auth = os.path.join(agents_root, name, "agent", AUTH_FILENAME)
        database = databases.get(name, os.path.join(agents_root, name, "agent", AGENT_DB_NAME))
        agent = _Agent(
            name,
            sessions_json,
            auth if os.path.isfile(auth) else None,
            database if os.path.isfile(database) else None,
        )
        if agent.database or os.path.isfile(sessions_json) or agent.auth_file:
            found.append(agent)
    return found, False


def copy_private(source: str, target: str) -> None:
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    shutil.copyfile(source, target)
    os.chmod(target, 0o600)


def _skipped(source: SessionStore) -> list[str]:
    valid = set(source.keys())
    return [
        raw for raw in source.backend.scan_keys() if raw not in valid and not _folds(source, raw)
    ]


def _folds(store: SessionStore, raw: str) -> bool:
    """Whether ``raw`` is a legacy alias that folds into a stored canonical key."""
    try:
        return store.canonical_key(raw) in store
    except InvalidSessionKey:
        return False


def copy_entries(
    source: SessionStore, target: SessionStore, tick: Ticker, *, merge: bool = False
) -> tuple[int, list[str]]:
    """Copy every entry; with ``merge`` an entry of ``target`` at least as fresh stays.

    Returns the number of entries read and the keys whose ``target`` entry stayed.
    """
    keys = list(source.keys())
    kept: list[str] = []
    for start in range(0, len(keys), BATCH):
        batch = keys[start : start + BATCH]

        def write(draft: Draft, batch: list[str] = batch) -> None:
            for key in batch:
                entry = source.get(key)
                if entry is None:
                    continue
                existing = draft.get(key) if merge else None
                if existing is not None and (existing.updated_at or 0) >= (entry.updated_at or 0):
                    if existing != entry:
                        kept.append(key)
                    continue
                # Copied as stored: a transfer keeps even what a new write
                # would refuse (doctor reports such entries).
                draft._set(key, entry)

        target.update(write)
        tick(len(batch))
    return len(keys), kept


def _stays(target: SessionStore, kept: list[str]) -> set[str]:
    """Transcript names of the destination's sessions that a merge kept: they are not replaced."""
    names = set()
    for key in kept:
        entry = target.get(key)
        if entry is not None:
            session_file = entry.get("sessionFile")
            named = session_file if isinstance(session_file, str) and session_file else None
            names.add(os.path.basename(named or f"{entry.session_id}.jsonl"))
    return names


@dataclass
class _Copied:
    tick: Ticker
    sessions: int
    skipped: list[str]
    kept: list[str]
    stays: set[str]


def _copy_sessions(
    src: SessionStore, target: Place, files: int, progress: Progress | None, *, merge: bool
) -> _Copied:
    """The sessions of ``src`` into ``target``, counting them and the ``files`` transcripts
    that follow on one progress ticker."""
    tick = Ticker(src.agent_id, len(src) + files, progress)
    skipped = _skipped(src)
    with open_store(target.location, agent_id=target.agent_id) as dst:
        sessions, kept = copy_entries(src, dst, tick, merge=merge)
        return _Copied(tick, sessions, skipped, kept, _stays(dst, kept))


def _has_sessions(target: Place) -> bool:
    """Whether a session store is there to look in (reading none into existence)."""
    if is_postgres(target.location):
        from flatstate.backends.postgres.catalog import namespaces
        from flatstate.backends.postgres.dsn import split_dsn

        return split_dsn(target.location)[1]["namespace"] in namespaces(target.location)
    return os.path.isfile(os.path.join(target.location, DB_FILENAME))


def holds(target: Place) -> str | None:
    """What a destination already holds that a copy would overwrite, in words."""
    found = []
    if _has_sessions(target):
        with open_store(target.location, readonly=True, agent_id=target.agent_id) as existing:
            if len(existing):
                found.append(f"{len(existing)} sessions")
            if has_transcripts(existing, target):
                found.append("transcripts")
    elif any(transcript_files(target.transcripts_dir)):
        found.append("transcripts")
    if read_auth(target) is not None:
        found.append("auth profiles")
    return ", ".join(found) or None


def _write_auth(target: Place, doc: dict[str, Any], merge: bool) -> None:
    """Write ``doc`` as the destination's auth profiles (its file, or its rows in the
    database); with ``merge`` what it has stays."""
    if merge:
        existing = read_auth(target)
        if existing is not None:
            doc = overlay(doc, existing)
    write_auth(target, doc)


def import_openclaw(
    source: str,
    destination: str,
    *,
    progress: Progress | None = None,
    force: bool = False,
    merge: bool = False,
) -> TransferReport:
    """Copy an OpenClaw state directory (2026.3 files or 2026.9 databases, found by looking)
    into flatstate state directories or a PostgreSQL database; the source is never written.

    ``destination`` is a directory (a state directory per agent, ``DEST/<id>``, or ``DEST``
    itself for a single store) or a ``postgresql://`` URL (a namespace per agent, see
    :func:`flatstate.places.destinations`).

    - ``force``: let the source win over what the destination holds, and read
      a database that a live gateway holds.
    - ``merge``: for a destination that holds state, keep per session the
      entry with the fresher ``updatedAt`` (the destination's on a tie).

    Raises, before anything is written: :class:`~flatstate.errors.DestinationExists`
    for a destination that holds state (without ``force`` or ``merge``),
    :class:`~flatstate.errors.StoreInUse` for a database a live gateway holds
    (without ``force``), :class:`~flatstate.errors.ExtraMissing` for
    compressed transcript events without the zstd extra. A damaged sessions.json
    raises :class:`~flatstate.errors.StoreCorrupt` (repair it first); damage in a
    2026.9 database is reported in ``damage`` and everything else is imported.
    """
    return import_into(source, destination, progress=progress, force=force, merge=merge)[0]


def import_into(
    source: str,
    destination: str,
    *,
    progress: Progress | None = None,
    force: bool = False,
    merge: bool = False,
) -> tuple[TransferReport, list[Place]]:
    """:func:`import_openclaw`, and where each agent of the report went."""
    source = os.path.abspath(os.path.expanduser(source))
    root = _source_root(source)
    damage: list[Damage] = []
    state: StateDatabase | None = None
    try:
        try:
            state = open_state(root)
        except StoreCorrupt as exc:
            damage.append(Damage(exc.path, exc.problem))
        agents, single = _openclaw_agents(source, state)
        targets = destinations(destination, [a.agent_id for a in agents], single=single)
        _preflight(agents, targets, state, force=force, merge=merge)
        shared: dict[str, Any] = {}
        if any(agent.database for agent in agents):
            main = next((a.database for a in agents if a.agent_id == "main"), None)
            try:
                shared = shared_auth(state, main)
            except StoreCorrupt as exc:
                damage.append(Damage(exc.path, exc.problem))
        reports = []
        for agent, target in zip(agents, targets, strict=True):
            if agent.database is not None:
                with_shared = single or agent.agent_id == "main"
                reports.append(
                    _import_database(
                        agent, target, shared if with_shared else {}, progress, merge=merge
                    )
                )
            else:
                reports.append(_import_files(agent, target, progress, merge=merge))
    finally:
        if state is not None:
            state.close()
    return TransferReport(agents=reports, damage=damage), targets


def _preflight(
    agents: list[_Agent],
    targets: list[Place],
    state: StateDatabase | None,
    *,
    force: bool,
    merge: bool,
) -> None:
    """Every refusal that can be known in advance, so that a refused import writes nothing."""
    if not (force or merge):
        for target in targets:
            found = holds(target)
            if found is not None:
                raise DestinationExists(target.shown, found)
    databases = [(agent.agent_id, agent.database) for agent in agents if agent.database]
    if not force:
        for agent_id, database in databases:
            check_not_in_use(database, agent_id, state)
    try:
        import zstandard  # noqa: F401 - only whether it is there
    except ImportError:
        for _, database in databases:
            with contextlib.suppress(StoreCorrupt):  # reported when it is imported
                opened = AgentDatabase(database)
                try:
                    if opened.has_compressed_events():
                        raise ExtraMissing(
                            f"importing OpenClaw's compressed transcript events (in {database})",
                            "zstd",
                        ) from None
                finally:
                    opened.close()


def _import_files(
    agent: _Agent, target: Place, progress: Progress | None, *, merge: bool
) -> AgentTransfer:
    """One agent of OpenClaw 2026.3: its sessions.json, transcripts and auth-profiles.json."""
    sessions = transcripts = 0
    skipped: list[str] = []
    kept: list[str] = []
    if os.path.isfile(agent.sessions_json):
        sessions_dir = os.path.dirname(agent.sessions_json)
        files = list(transcript_files(sessions_dir, exclude=agent.sessions_json))
        with open_store(agent.sessions_json, readonly=True, agent_id=agent.agent_id) as src:
            if src.corruption is not None:
                raise src.corruption
            copied = _copy_sessions(src, target, len(files), progress, merge=merge)
        sessions, skipped, kept = copied.sessions, copied.skipped, copied.kept
        with open_store(target.location, agent_id=target.agent_id) as dst:
            for path in files:
                if _put_transcript(dst, target, os.path.basename(path), copied.stays, path):
                    transcripts += 1
                copied.tick()
    if agent.auth_file:
        if merge or is_postgres(target.location):
            with open(agent.auth_file, "rb") as f:
                _write_auth(target, decode_document(agent.auth_file, f.read()), merge)
        else:
            copy_private(agent.auth_file, target.auth_file)  # the file, byte for byte
    return AgentTransfer(
        agent_id=agent.agent_id,
        source=agent.sessions_json,
        destination=target.shown,
        sessions=sessions,
        transcripts=transcripts,
        auth_profiles=agent.auth_file is not None,
        skipped_keys=skipped,
        kept_keys=kept,
    )


def _import_database(
    agent: _Agent,
    target: Place,
    shared: dict[str, Any],
    progress: Progress | None,
    *,
    merge: bool,
) -> AgentTransfer:
    """One agent of OpenClaw 2026.9: its database's sessions, transcripts and auth rows.

    What cannot be read is reported in ``damage``, and the rest is imported.
    """
    assert agent.database is not None
    damage: list[Damage] = []
    notes: list[str] = []
    sessions = transcripts = 0
    skipped: list[str] = []
    kept: list[str] = []
    own: dict[str, Any] = {}
    if os.path.isfile(agent.sessions_json):
        notes.append(
            f"{agent.sessions_json} remains from before the move to SQLite; it was not imported "
            "(OpenClaw 2026.8 and later refuse to start while it is there: see flatstate doctor)"
        )
    try:
        # The gateway's leases were checked before anything was written; no change check
        # either: the import reads one view of the database from start to end.
        with open_store(
            agent.database, agent_id=agent.agent_id, force=True, check_interval=float("inf")
        ) as src:
            backend = src.backend
            assert isinstance(backend, OpenClawBackend)
            database = backend.database
            if backend.corruption is not None:
                damage.append(Damage(backend.corruption.path, backend.corruption.problem))
            if database.db.copied_wal_bytes:
                notes.append(f"replayed {database.db.copied_wal_bytes:,} bytes of WAL")
            windows = database.windows()
            copied = _copy_sessions(src, target, len(windows), progress, merge=merge)
            sessions, skipped, kept = copied.sessions, copied.skipped, copied.kept
            with open_store(target.location, agent_id=target.agent_id) as dst:
                for window in windows:
                    if _write_transcript(database, window, dst, target, copied.stays, damage):
                        transcripts += 1
                    copied.tick()
            own = agent_auth(database)
    except StoreCorrupt as exc:
        damage.append(Damage(exc.path, exc.problem))
    doc = auth_document(shared, own)
    if doc is not None:
        _write_auth(target, doc, merge)
    return AgentTransfer(
        agent_id=agent.agent_id,
        source=agent.database,
        destination=target.shown,
        sessions=sessions,
        transcripts=transcripts,
        auth_profiles=doc is not None,
        skipped_keys=skipped,
        kept_keys=kept,
        damage=damage,
        notes=notes,
    )


def _write_transcript(
    database: AgentDatabase,
    window: Window,
    dst: SessionStore,
    target: Place,
    stays: set[str],
    damage: list[Damage],
) -> bool:
    """Write one transcript generation as the JSONL file OpenClaw 2026.3 kept: the current one
    as ``<sessionId>.jsonl``, an ended one as its reset archive. Whether it was written."""
    try:
        validate_session_id(window.session_id, window.session_key)
    except InvalidEntry as exc:
        damage.append(Damage(database.path, f"transcript of {window.session_key!r}: {exc.problem}"))
        return False
    name = f"{window.session_id}.jsonl"
    if not window.current:
        name = os.path.basename(archive_name(name, "reset", window.updated_at))

    def lines() -> Iterator[bytes]:
        for event in database.events(window.session_id):
            if event.damage is not None:
                damage.append(Damage(event.damage.path, event.damage.problem))
            else:
                yield event.data + b"\n"

    return _put_transcript(dst, target, name, stays, lines)


def _put_transcript(
    dst: SessionStore, target: Place, name: str, stays: set[str], lines: str | Lines
) -> bool:
    """Write one transcript (a file's lines, or lines made on call) unless a merge keeps the
    destination's; whether it was written."""
    made = partial(_lines_of, lines) if isinstance(lines, str) else lines
    try:
        write_transcript(dst, target, name, made, replace=name not in stays)
    except TranscriptNotEmpty:  # a merge kept the destination's session, and its transcript
        return False
    return True


def _lines_of(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from f


def export_openclaw(
    source: str, destination: str, *, progress: Progress | None = None, force: bool = False
) -> TransferReport:
    """Write flatstate state (a state directory, a directory of them, or every namespace of
    a ``postgresql://`` URL, see :func:`flatstate.places.sources`) back as an OpenClaw 2026.3
    state directory.

    ``destination`` ending in ``.json`` receives a single sessions.json (its
    transcripts beside it); otherwise it is an OpenClaw root and each agent
    goes to ``agents/<id>/``. OpenClaw 2026.9 imports this layout itself
    (``openclaw doctor`` moves a sessions.json and its transcripts into SQLite).

    Raises :class:`~flatstate.errors.DestinationExists` before writing anything when an
    agent's place there already holds sessions, transcripts or auth profiles (what changed
    there since would be overwritten), unless ``force``.
    """
    destination = os.path.abspath(os.path.expanduser(destination))
    found = sources(source)
    targets = [_openclaw_target(destination, place.agent_id) for place in found]
    for sessions_json, agent_dir in targets if not force else ():
        held = _openclaw_holds(sessions_json, agent_dir)
        if held:
            raise DestinationExists(os.path.dirname(sessions_json), held, can_merge=False)
    reports = []
    for place, (sessions_json, agent_dir) in zip(found, targets, strict=True):
        with open_store(place.location, readonly=True, agent_id=place.agent_id) as src:
            files = read_transcripts(src, place)
            agent_id = place.agent_id
            tick = Ticker(agent_id, len(src) + len(files), progress)
            skipped = _skipped(src)
            with open_store(sessions_json, agent_id=agent_id) as dst:
                sessions, _ = copy_entries(src, dst, tick)
                sessions_dir = dst.backend.transcripts_dir
            for name, lines in files:  # each line as stored, header first
                atomic_write(os.path.join(sessions_dir, name), lines(), mode=0o600)
                tick()
        auth = os.path.join(agent_dir, "agent", AUTH_FILENAME)
        has_auth = _export_auth(place, auth)
        reports.append(
            AgentTransfer(
                agent_id=agent_id,
                source=place.shown,
                destination=sessions_json,
                sessions=sessions,
                transcripts=len(files),
                auth_profiles=has_auth,
                skipped_keys=skipped,
            )
        )
    return TransferReport(agents=reports)


def _openclaw_target(destination: str, agent_id: str) -> tuple[str, str]:
    """(sessions.json, agent directory) of an agent exported to ``destination``."""
    if destination.endswith(".json"):
        return destination, os.path.dirname(os.path.dirname(destination))
    agent_dir = os.path.join(destination, "agents", agent_id)
    return os.path.join(agent_dir, "sessions", "sessions.json"), agent_dir


def _openclaw_holds(sessions_json: str, agent_dir: str) -> str | None:
    """What an OpenClaw agent's place already holds that an export would overwrite."""
    found = []
    if os.path.isfile(sessions_json):
        with open_store(sessions_json, readonly=True) as existing:
            if len(existing):
                found.append(f"{len(existing)} sessions")
    if any(transcript_files(os.path.dirname(sessions_json), exclude=sessions_json)):
        found.append("transcripts")
    if os.path.isfile(os.path.join(agent_dir, "agent", AUTH_FILENAME)):
        found.append("auth profiles")
    return ", ".join(found) or None


def _export_auth(place: Place, path: str) -> bool:
    """The agent's auth profiles as OpenClaw's ``auth-profiles.json`` at ``path``: its
    file copied byte for byte, or its rows in the database written out; False if none."""
    if not is_postgres(place.location):
        if not os.path.isfile(place.auth_file):
            return False
        copy_private(place.auth_file, path)
        return True
    doc = read_auth(place)
    if doc is None:
        return False
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    atomic_write(path, encode_document(doc), mode=0o600)
    return True
