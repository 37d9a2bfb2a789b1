"""Moving a whole OpenClaw state directory to SQLite state directories and back.

An OpenClaw state directory holds one agent per ``agents/<id>/``: the session
store ``sessions/sessions.json``, the transcripts beside it, and
``agent/auth-profiles.json``. Import makes one flatstate state directory per
agent (``DEST/<id>/`` — or ``DEST`` itself for a single sessions.json): the
sessions in ``sessions.sqlite``, the transcripts (and their archives) in
``transcripts/``, and ``auth-profiles.json`` copied as it is. Export writes the
same OpenClaw layout back. Every entry and field survives the round trip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec

from flatstate._open import open_store
from flatstate.backends.jsonfile import JsonFileBackend
from flatstate.backends.sqlite import DB_FILENAME, TRANSCRIPTS_DIRNAME
from flatstate.errors import InvalidSessionKey
from flatstate.snapshot import Draft
from flatstate.store import SessionStore

__all__ = ["AgentTransfer", "TransferReport", "export_openclaw", "import_openclaw"]

AUTH_FILENAME = "auth-profiles.json"
BATCH = 500
Progress = Callable[[str, int, int], None]
"""Called as (agent id, entries done, entries in all) while entries are copied."""


class AgentTransfer(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: str
    source: str
    destination: str
    sessions: int
    transcripts: int
    auth_profiles: bool
    skipped_keys: list[str]
    """Stored keys that are not valid session keys (left behind; see doctor)."""


class TransferReport(msgspec.Struct, frozen=True, kw_only=True):
    agents: list[AgentTransfer]

    @property
    def sessions(self) -> int:
        return sum(a.sessions for a in self.agents)


@dataclass
class _Agent:
    agent_id: str
    sessions_json: str
    auth_file: str | None
    transcripts: list[str] = field(default_factory=list)


def _openclaw_agents(source: str) -> tuple[list[_Agent], bool]:
    """The agents under an OpenClaw source, and whether it named a single store."""
    source = os.path.abspath(os.path.expanduser(source))
    if source.endswith(".json"):
        sessions_dir = os.path.dirname(source)
        agent_dir = os.path.dirname(sessions_dir)
        agent_id = (
            os.path.basename(agent_dir) if os.path.basename(sessions_dir) == "sessions" else "main"
        )
        auth = os.path.join(agent_dir, "agent", AUTH_FILENAME)
        return [_Agent(agent_id, source, auth if os.path.isfile(auth) else None)], True
    agents_root = os.path.join(source, "agents")
    if os.path.isdir(os.path.join(source, "sessions")):  # an agents/<id> directory
        agents_root, names = os.path.dirname(source), [os.path.basename(source)]
    elif os.path.isdir(agents_root):
        names = sorted(os.listdir(agents_root))
    else:
        raise FileNotFoundError(
            f"{source}: not an OpenClaw state directory (no agents/ inside) nor a sessions.json"
        )
    found = []
    for name in names:
        sessions_json = os.path.join(agents_root, name, "sessions", "sessions.json")
        auth = os.path.join(agents_root, name, "agent", AUTH_FILENAME)
        if os.path.isfile(sessions_json) or os.path.isfile(auth):
            found.append(_Agent(name, sessions_json, auth if os.path.isfile(auth) else None))
    return found, False


def _transcript_files(directory: str, exclude: str) -> Iterator[str]:
    """Transcripts and their archives in a sessions directory (not the store, locks or temps)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(directory, name)
        if path == exclude or name.endswith((".lock", ".tmp")) or name.startswith("."):
            continue
        if ".jsonl" in name and os.path.isfile(path):
            yield path


def _copy_private(source: str, target: str) -> None:
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


def _copy_entries(
    source: SessionStore, target: SessionStore, agent_id: str, progress: Progress | None
) -> int:
    keys = list(source.keys())
    for start in range(0, len(keys), BATCH):
        batch = keys[start : start + BATCH]

        def write(draft: Draft, batch: list[str] = batch) -> None:
            for key in batch:
                entry = source.get(key)
                if entry is not None:
                    # Copied as stored: a transfer keeps even what a new write
                    # would refuse (doctor reports such entries).
                    draft._set(key, entry)

        target.update(write)
        if progress is not None:
            progress(agent_id, min(start + BATCH, len(keys)), len(keys))
    return len(keys)


def import_openclaw(
    source: str, destination: str, *, progress: Progress | None = None
) -> TransferReport:
    """Copy an OpenClaw state directory (or one sessions.json) into SQLite state directories.

    Raises :class:`~flatstate.errors.StoreCorrupt` (through ``ReadOnlyStore``
    on the first write) if a sessions.json is damaged: repair it first.
    """
    agents, single = _openclaw_agents(source)
    destination = os.path.abspath(os.path.expanduser(destination))
    reports = []
    for agent in agents:
        target_dir = destination if single else os.path.join(destination, agent.agent_id)
        sessions = transcripts = 0
        skipped: list[str] = []
        if os.path.isfile(agent.sessions_json):
            with open_store(agent.sessions_json, readonly=True, agent_id=agent.agent_id) as src:
                if src.corruption is not None:
                    raise src.corruption
                skipped = _skipped(src)
                with open_store(target_dir, agent_id=agent.agent_id) as dst:
                    sessions = _copy_entries(src, dst, agent.agent_id, progress)
            sessions_dir = os.path.dirname(agent.sessions_json)
            for path in _transcript_files(sessions_dir, exclude=agent.sessions_json):
                _copy_private(
                    path, os.path.join(target_dir, TRANSCRIPTS_DIRNAME, os.path.basename(path))
                )
                transcripts += 1
        if agent.auth_file:
            _copy_private(agent.auth_file, os.path.join(target_dir, AUTH_FILENAME))
        reports.append(
            AgentTransfer(
                agent_id=agent.agent_id,
                source=agent.sessions_json,
                destination=target_dir,
                sessions=sessions,
                transcripts=transcripts,
                auth_profiles=agent.auth_file is not None,
                skipped_keys=skipped,
            )
        )
    return TransferReport(agents=reports)


def _state_dirs(source: str) -> list[tuple[str | None, str]]:
    """(agent id or None, state dir) for one state directory or a directory of them."""
    source = os.path.abspath(os.path.expanduser(source))
    if os.path.isfile(os.path.join(source, DB_FILENAME)):
        return [(None, source)]
    found: list[tuple[str | None, str]] = [
        (name, os.path.join(source, name))
        for name in sorted(os.listdir(source))
        if os.path.isfile(os.path.join(source, name, DB_FILENAME))
    ]
    if not found:
        raise FileNotFoundError(f"{source}: no flatstate state directory here (no {DB_FILENAME})")
    return found


def export_openclaw(
    source: str, destination: str, *, progress: Progress | None = None
) -> TransferReport:
    """Write SQLite state directories back as an OpenClaw state directory.

    ``destination`` ending in ``.json`` receives a single sessions.json (its
    transcripts beside it); otherwise it is an OpenClaw root and each agent
    goes to ``agents/<id>/``.
    """
    destination = os.path.abspath(os.path.expanduser(destination))
    reports = []
    for name, state_dir in _state_dirs(source):
        with open_store(state_dir, readonly=True) as src:
            agent_id = name or src.agent_id
            skipped = _skipped(src)
            if destination.endswith(".json"):
                sessions_json = destination
                agent_dir = os.path.dirname(os.path.dirname(destination))
            else:
                agent_dir = os.path.join(destination, "agents", agent_id)
                sessions_json = os.path.join(agent_dir, "sessions", "sessions.json")
            with open_store(sessions_json, agent_id=agent_id) as dst:
                sessions = _copy_entries(src, dst, agent_id, progress)
                backend = dst.backend
                assert isinstance(backend, JsonFileBackend)
                sessions_dir = backend.directory
        transcripts = 0
        for path in _transcript_files(os.path.join(state_dir, TRANSCRIPTS_DIRNAME), exclude=""):
            _copy_private(path, os.path.join(sessions_dir, os.path.basename(path)))
            transcripts += 1
        auth = os.path.join(state_dir, AUTH_FILENAME)
        if os.path.isfile(auth):
            _copy_private(auth, os.path.join(agent_dir, "agent", AUTH_FILENAME))
        reports.append(
            AgentTransfer(
                agent_id=agent_id,
                source=state_dir,
                destination=sessions_json,
                sessions=sessions,
                transcripts=transcripts,
                auth_profiles=os.path.isfile(auth),
                skipped_keys=skipped,
            )
        )
    return TransferReport(agents=reports)
