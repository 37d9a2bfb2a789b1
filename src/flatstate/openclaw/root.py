"""An OpenClaw 2026.9 state directory: finding its agents, who holds them, their auth profiles.

    <root>/agents/<id>/agent/openclaw-agent.sqlite   one database per agent
    <root>/state/openclaw.sqlite                     shared: auth profiles and their
                                                     usage, the registry of agent
                                                     databases, the gateway's leases

A gateway that opens an agent database records a row in the state database's
``agent_database_leases`` (pid, start time, when) and deletes it at an orderly
close; every SQLite connection also holds a lock on the database's ``-shm``
file while it is open. Either one means that another process may be writing.

Auth profiles are split in two: the shared store (the state database's
``config_machine_state`` rows ``authProfiles.store`` and ``authProfiles.state``,
or the main agent's own rows when ``auth.sharedStore`` does not say
``state-db``) and each agent's own rows, which win per profile id and per
provider. :func:`auth_document` lays them out as one ``auth-profiles.json``
document as OpenClaw 2026.3 kept it (the main agent's holding the shared store,
since the other agents inherit from it).
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from typing import Any

import msgspec

from flatstate.errors import StoreInUse
from flatstate.frozen import decode_json
from flatstate.keys import DEFAULT_AGENT_ID
from flatstate.locks import pid_alive
from flatstate.openclaw.agent import AGENT_DB_NAME, AgentDatabase
from flatstate.openclaw.database import Database, damaged, text, wal_state

__all__ = [
    "STATE_DB",
    "Lease",
    "StateDatabase",
    "agent_auth",
    "agent_database",
    "agent_databases",
    "auth_document",
    "check_not_in_use",
    "find_root",
    "holders",
    "locate",
    "open_state",
    "overlay",
    "shared_auth",
]

STATE_DB = os.path.join("state", "openclaw.sqlite")


def agent_database(root: str, agent_id: str) -> str:
    """Where OpenClaw keeps ``agent_id``'s database under ``root``."""
    return os.path.join(root, "agents", agent_id, "agent", AGENT_DB_NAME)


def find_root(path: str) -> str | None:
    """The OpenClaw 2026.9 root that ``path`` (a root, or an agent database in it) is part of."""
    path = os.path.abspath(path)
    if os.path.basename(path) == AGENT_DB_NAME:
        parts = path.split(os.sep)
        if len(parts) >= 5 and parts[-2] == "agent" and parts[-4] == "agents":
            return os.sep.join(parts[:-4]) or os.sep
        return None
    if os.path.isfile(os.path.join(path, STATE_DB)):
        return path
    with contextlib.suppress(OSError):
        for name in os.listdir(os.path.join(path, "agents")):
            if os.path.isfile(agent_database(path, name)):
                return path
    return None


def locate(path: str, agent_id: str | None) -> tuple[str | None, str, str] | None:
    """(root, agent id, database) for an OpenClaw 2026.9 agent database or root; None for a
    path that is neither. Raises FileNotFoundError for a root without that agent."""
    path = os.path.abspath(path)
    root = find_root(path)
    if os.path.basename(path) == AGENT_DB_NAME and os.path.isfile(path):
        named = path.split(os.sep)[-3] if root is not None else DEFAULT_AGENT_ID
        return root, agent_id or named, path
    if root != path:
        return None
    agent_id = agent_id or DEFAULT_AGENT_ID
    if os.path.isfile(agent_database(root, agent_id)):
        return root, agent_id, agent_database(root, agent_id)
    state = open_state(root)  # the registry may name a database elsewhere
    try:
        found = agent_databases(root, state)
    finally:
        if state is not None:
            state.close()
    if agent_id not in found:
        raise FileNotFoundError(
            f"{root}: OpenClaw keeps no database for agent {agent_id!r} here "
            f"(agents: {', '.join(found) or 'none'}); pass agent_id= one of them"
        )
    return root, agent_id, found[agent_id]


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A gateway's claim on an agent database, from ``agent_database_leases``."""

    agent_id: str
    pid: int
    process: str | None
    """The process's name now (``node``, ``openclaw``), to tell a reused pid."""
    opened_at: str
    live: bool


def _process_name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _iso(ms: object) -> str:
    if not isinstance(ms, int):
        return "an unknown time"
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


class StateDatabase:
    """``state/openclaw.sqlite``, read-only: the registry, the leases, the shared auth store."""

    def __init__(self, path: str) -> None:
        # Its WAL is always replayed: a running gateway's lease is most likely still in it.
        self.db = Database(path, "the OpenClaw state database")
        self.path = self.db.path

    def registry(self) -> list[tuple[str, str]]:
        """(agent id, database path as registered: relative to the root or absolute)."""
        if not self.db.has_table("agent_databases"):
            return []
        rows = self.db.query("SELECT agent_id, path FROM agent_databases ORDER BY 1, 2")
        return [(text(agent), text(path)) for agent, path in rows]

    def leases(self, agent_id: str) -> list[Lease]:
        """The leases on ``agent_id``'s databases; a lease is live while its pid runs.

        The pid alone decides: a lease of a pid that another program reuses
        counts as live too (its ``process`` name tells), since reading a
        database that a gateway writes is the worse mistake.
        """
        if not self.db.has_table("agent_database_leases"):
            return []
        rows = self.db.query(
            "SELECT owner_pid, opened_at FROM agent_database_leases WHERE agent_id = ? "
            "ORDER BY opened_at",
            (agent_id,),
        )
        return [
            Lease(
                agent_id=agent_id,
                pid=pid,
                process=_process_name(pid),
                opened_at=_iso(opened),
                live=pid > 0 and pid_alive(pid),
            )
            for pid, opened in rows
        ]

    def machine_state(self, key: str) -> Any:
        """One ``config_machine_state`` value, parsed (None when absent).

        A value that is not JSON raises :class:`StoreCorrupt` giving the
        position only: these rows hold secrets.
        """
        if not self.db.has_table("config_machine_state"):
            return None
        rows = self.db.query(
            "SELECT value_json FROM config_machine_state WHERE state_key = ?", (key,)
        )
        return _parse(self.path, f"config_machine_state {key!r}", rows[0][0]) if rows else None

    def close(self) -> None:
        self.db.close()


def _parse(path: str, where: str, data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return decode_json(data)
    except Exception as exc:  # msgspec's message gives a position, never the text
        raise damaged(path, "OpenClaw auth state", f"{where} is not JSON ({exc})") from None


def agent_databases(root: str, state: StateDatabase | None) -> dict[str, str]:
    """agent id -> database path: the agents found under ``agents/`` and those registered."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(os.path.join(root, "agents"))):
            if os.path.isfile(agent_database(root, name)):
                found[name] = agent_database(root, name)
    for agent_id, path in state.registry() if state is not None else ():
        found.setdefault(agent_id, os.path.join(root, path))
    return found


def holders(path: str, agent_id: str, state: StateDatabase | None) -> list[str]:
    """Who holds the database at ``path`` now, in words; empty when nobody does."""
    found = [
        f"a live OpenClaw gateway (pid {lease.pid}, {lease.process or 'unknown process'}) "
        f"holds its lease since {lease.opened_at}"
        for lease in (state.leases(agent_id) if state is not None else ())
        if lease.live
    ]
    wal = wal_state(path)
    if wal is not None and wal.open_by is not None:
        name = _process_name(wal.open_by) or "unknown process"
        found.append(f"pid {wal.open_by} ({name}) has it open (its lock on {path}-shm says so)")
    return found


def check_not_in_use(path: str, agent_id: str, state: StateDatabase | None) -> None:
    """Raise :class:`~flatstate.errors.StoreInUse` when someone holds the database at ``path``."""
    found = holders(path, agent_id, state)
    if found:
        raise StoreInUse(
            path,
            "; ".join(found),
            "Stop the gateway first (openclaw gateway stop), or pass --force (force=True) to "
            "read it anyway: what is read while it writes may be torn.",
        )


def open_state(root: str | None) -> StateDatabase | None:
    """The root's state database, or None where it has none."""
    if root is None or not os.path.isfile(os.path.join(root, STATE_DB)):
        return None
    return StateDatabase(os.path.join(root, STATE_DB))


def overlay(base: dict[str, Any], top: Any) -> dict[str, Any]:
    """``top`` laid over ``base``: objects merge one level deep, ``top`` winning per key
    (per profile id in ``profiles`` and ``usageStats``, per provider in ``order``)."""
    merged = dict(base)
    for name, value in top.items() if isinstance(top, dict) else ():
        below = merged.get(name)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[name] = {**below, **value}
        else:
            merged[name] = value
    return merged


def shared_auth(state: StateDatabase | None, main_database: str | None) -> dict[str, Any]:
    """The shared auth store: the state database's rows when ``auth.sharedStore`` says
    ``state-db``, else the main agent's own rows (OpenClaw's ``legacy-main``)."""
    location = state.machine_state("auth.sharedStore") if state is not None else None
    if state is not None and isinstance(location, dict) and location.get("location") == "state-db":
        return overlay(
            overlay({}, state.machine_state("authProfiles.store")),
            state.machine_state("authProfiles.state"),
        )
    if main_database is None:
        return {}
    main = AgentDatabase(main_database)
    try:
        return agent_auth(main)
    finally:
        main.close()


def agent_auth(agent: AgentDatabase) -> dict[str, Any]:
    """The agent's own auth rows: its profiles, and its state (the auth order set for it)."""
    store, state = agent.auth_rows()
    return overlay(
        overlay({}, _parse(agent.path, "auth_profile_store 'primary'", store)),
        _parse(agent.path, "auth_profile_state 'primary'", state),
    )


def auth_document(shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any] | None:
    """An agent's own auth rows laid over ``shared`` as one 2026.3-style document
    (``version``, ``profiles``, ``order``, ``usageStats``...); None when it holds nothing."""
    doc = overlay(overlay({"version": 1, "profiles": {}}, shared), own)
    doc["version"] = 1
    return doc if any(value for name, value in doc.items() if name != "version") else None
