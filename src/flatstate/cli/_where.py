"""Where the state is: one ``--store`` (or ``$FLATSTATE_STORE``) for every command.

``--store`` takes any of the places an agent's state lives in, and every command finds
its part there: the sessions, the transcripts beside them, ``auth-profiles.json`` and
``facts.sqlite``.

- a flatstate state directory (the default, ``~/.flatstate/main``): ``sessions.sqlite``,
  ``transcripts/``, ``auth-profiles.json`` and ``facts.sqlite`` all in it; this is also
  what ``import-openclaw`` writes per agent;
- an OpenClaw ``sessions.json``: the transcripts beside it, and the agent's
  ``auth-profiles.json`` and ``facts.sqlite`` in ``../../agent/`` (OpenClaw's
  ``agents/<id>/sessions/sessions.json`` and ``agents/<id>/agent/``);
- an OpenClaw agent directory (``agents/<id>``, or its ``agent/`` directory): as above;
- an OpenClaw root (``~/.openclaw``, holding ``agents/``) or a directory of state
  directories (what ``import-openclaw`` writes): the agent ``--agent ID`` (default
  ``main``), or every agent with ``--all-agents``;
- a ``postgresql://`` URL: the sessions, the auth profiles and the facts in the database,
  the rest in the store's local state directory (the URL's ``state_dir``, else
  ``~/.flatstate/<namespace>``).

A command that only reads opens everything read-only and refuses a store that is not
there or is damaged, so that nothing it shows is an empty stand-in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from shlex import quote
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from flatstate._open import POSTGRES_SCHEMES, open_store
from flatstate.cli._output import warn
from flatstate.errors import InvalidSessionKey
from flatstate.files import check_location
from flatstate.keys import DEFAULT_AGENT_ID, normalize_agent_id

if TYPE_CHECKING:
    from flatstate.auth import AuthStore
    from flatstate.facts import FactStore
    from flatstate.store import SessionStore

ENV_STORE = "FLATSTATE_STORE"
DEFAULT_STORE = "~/.flatstate/main"
SESSIONS_DB = "sessions.sqlite"  # flatstate.backends.sqlite.DB_FILENAME, without the import
AUTH_FILE = "auth-profiles.json"

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        envvar=ENV_STORE,
        metavar="PATH|URL",
        help="Where the state is: a state directory, a sessions.json, an OpenClaw agent "
        "directory (agents/ID), an OpenClaw root (~/.openclaw, with --agent) or a "
        "postgresql:// URL. Give a URL with a password in FLATSTATE_STORE, where the "
        "process list does not show it.",
    ),
]
AgentOption = Annotated[
    str | None,
    typer.Option(
        "--agent",
        metavar="ID",
        help="The agent: in an OpenClaw root or a directory of state directories, whose "
        "state to use; elsewhere, the agent that bare keys such as 'main' belong to. "
        "Default: main.",
        show_default=False,
    ),
]
AllAgentsOption = Annotated[
    bool,
    typer.Option(
        "--all-agents",
        help="Every agent of an OpenClaw root or of a directory of state directories.",
    ),
]


@dataclass(frozen=True)
class Place:
    """One agent's state, as a ``--store`` value resolves."""

    agent_id: str | None
    """The agent, where the layout or ``--agent`` says (else the store's default, main)."""
    sessions: str = field(repr=False)  # a URL's password stays out of every repr
    """What :func:`flatstate.open_store` takes: a state directory, a sessions.json, a URL."""
    agent_dir: str
    """The directory of ``auth-profiles.json`` and ``facts.sqlite``."""
    shown: str
    """The store for messages: its path, or its URL without the password."""

    @property
    def is_url(self) -> bool:
        return self.sessions.startswith(POSTGRES_SCHEMES)

    def describe(self) -> dict[str, Any]:
        return {"agentId": self.agent_id or DEFAULT_AGENT_ID, "store": self.shown}


def _agent(value: str | None) -> str | None:
    """An ``--agent`` value, checked: a bad one is an error."""
    return normalize_agent_id(value) if value else None


def _agent_named(directory: str) -> str | None:
    """The agent a directory's name is, if it is a valid agent id (a layout is not checked
    for the user's sake: a stray directory there is skipped, not an error)."""
    try:
        return normalize_agent_id(os.path.basename(directory))
    except InvalidSessionKey:
        return None


def _openclaw_agent(directory: str, agent_id: str | None) -> Place:
    """``agents/<id>``: ``sessions/sessions.json`` and ``agent/`` inside."""
    sessions_json = os.path.join(directory, "sessions", "sessions.json")
    if agent_id is None and os.path.basename(os.path.dirname(directory)) == "agents":
        agent_id = _agent_named(directory)
    return Place(agent_id, sessions_json, os.path.join(directory, "agent"), sessions_json)


def _agent_home(path: str) -> str | None:
    """The OpenClaw agent directory ``path`` is, or is the ``agent/`` directory of."""

    def is_agent(candidate: str) -> bool:
        return os.path.isdir(os.path.join(candidate, "sessions")) or (
            os.path.basename(os.path.dirname(candidate)) == "agents"
        )

    if os.path.basename(path) == "agent" and is_agent(os.path.dirname(path)):
        return os.path.dirname(path)
    if os.path.isdir(os.path.join(path, "sessions")) or os.path.isdir(os.path.join(path, "agent")):
        return path
    return None


def _openclaw_database(path: str, agent_id: str | None) -> Place | None:
    """An OpenClaw 2026.9 root or agent database: the sessions are in the agent's database
    (opened read-only, as open_store serves it), the rest in its ``agent/`` directory."""
    from flatstate.openclaw.root import locate

    found = locate(path, agent_id)
    if found is None:
        return None
    _, agent, database = found
    return Place(agent, database, os.path.dirname(database), database)


def _root_agents(path: str) -> dict[str, Place] | None:
    """The agents of a root, by id (None if ``path`` is not one): an OpenClaw root's
    ``agents/<id>`` directories, or the state directories inside a directory of them."""
    agents_dir = os.path.join(path, "agents")
    openclaw = os.path.isdir(agents_dir)
    try:
        names = sorted(os.listdir(agents_dir if openclaw else path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    found = {}
    for name in names:
        directory = os.path.join(agents_dir if openclaw else path, name)
        agent_id = _agent_named(directory)
        if agent_id is None or not os.path.isdir(directory):
            continue
        if openclaw:
            found[agent_id] = _openclaw_agent(directory, agent_id)
        elif os.path.isfile(os.path.join(directory, SESSIONS_DB)):
            found[agent_id] = Place(agent_id, directory, directory, directory)
    return found if found or openclaw else None


def resolve(store: str, agent: str | None = None) -> Place:
    """The one agent's state that ``--store`` (and ``--agent``) name."""
    agent_id = _agent(agent)
    check_location(store)
    if store.startswith(POSTGRES_SCHEMES):
        from flatstate.backends.postgres import local_state_dir, redact_dsn

        return Place(agent_id, store, local_state_dir(store, agent_id=agent_id), redact_dsn(store))
    path = os.path.abspath(os.path.expanduser(store))
    openclaw = _openclaw_database(path, agent_id)
    if openclaw is not None:
        return openclaw
    if path.endswith(".json"):
        sessions_dir = os.path.dirname(path)
        home = os.path.dirname(sessions_dir)  # transfer.py's rule: the rest is in ../../agent/
        in_openclaw = os.path.basename(sessions_dir) == "sessions" and (
            os.path.basename(os.path.dirname(home)) == "agents"
        )
        if agent_id is None and in_openclaw:
            agent_id = _agent_named(home)
        return Place(agent_id, path, os.path.join(home, "agent"), path)
    if os.path.isfile(os.path.join(path, SESSIONS_DB)):
        return Place(agent_id, path, path, path)
    agents = _root_agents(path)
    if agents is not None:
        name = agent_id or DEFAULT_AGENT_ID
        if name in agents:
            return agents[name]
        if os.path.isdir(os.path.join(path, "agents")):  # a new agent of an OpenClaw root
            return _openclaw_agent(os.path.join(path, "agents", name), name)
        state_dir = os.path.join(path, name)
        return Place(name, state_dir, state_dir, state_dir)
    openclaw_agent = _agent_home(path)
    if openclaw_agent is not None:
        return _openclaw_agent(openclaw_agent, agent_id)
    return Place(agent_id, path, path, path)


def resolve_all(store: str, agent: str | None = None) -> list[Place]:
    """Every agent of the root that ``--store`` names (``--all-agents``, which names no
    single ``--agent``)."""
    if agent is not None:
        raise typer.BadParameter(
            "takes no --agent: it means every agent", param_hint="'--all-agents'"
        )
    is_url = store.startswith(POSTGRES_SCHEMES)
    agents = None if is_url else _root_agents(os.path.abspath(os.path.expanduser(store)))
    if agents is None:
        raise typer.BadParameter(
            "--all-agents takes an OpenClaw root (~/.openclaw) or a directory of state "
            f"directories; {'a URL' if is_url else store} is neither",
            param_hint="'--store'",
        )
    return list(agents.values())


def missing(place: Place) -> bool:
    """Whether the session store of ``place`` does not exist yet (a URL: unknown here)."""
    if place.is_url:
        return False
    if os.path.lexists(place.sessions):
        if place.sessions.endswith((".json", ".sqlite")) or not os.path.isdir(place.sessions):
            return False  # there, though maybe of the wrong kind: opening it says which
        return not os.path.isfile(os.path.join(place.sessions, SESSIONS_DB))
    return True


@contextmanager
def sessions(
    place: Place, *, write: bool = False, create: bool | None = None
) -> Iterator[SessionStore]:
    """The session store of ``place``; read-only unless ``write``. A write creates a missing
    store unless ``create`` is False (a command on sessions that must exist: it would fail
    and leave an empty store behind). A damaged store raises its StoreCorrupt (with the
    repair command) instead of opening as an empty one."""
    if not (write if create is None else create) and missing(place):
        raise FileNotFoundError(
            f"{place.shown}: no session store here (a write creates one); "
            "check --store or FLATSTATE_STORE"
        )
    with open_store(place.sessions, readonly=not write, agent_id=place.agent_id) as s:
        if s.corruption is not None:
            raise s.corruption
        yield s


def facts(place: Place, *, write: bool = False) -> FactStore:
    """The facts of ``place`` (a URL's in its database): created by a write, never by a read."""
    from flatstate.facts import open_facts

    if place.is_url:
        return open_facts(place.sessions, agent_id=place.agent_id, create=write, readonly=not write)
    return open_facts(place.agent_dir, create=write, readonly=not write)


def auth(place: Place, *, write: bool = False, inherit_from: str | None = None) -> AuthStore:
    """The auth store of ``place`` (read-only unless ``write``, so that a read leaves every
    file and mode as it was); its problems are printed as warnings, a damaged file raises."""
    from flatstate.auth import open_auth_store

    if place.is_url:
        return _database_auth(place, write=write, inherit_from=inherit_from)
    main = resolve(inherit_from).agent_dir if inherit_from else None
    store = open_auth_store(place.agent_dir, inherit_from=main, readonly=not write)
    _raise_if_damaged(store)
    paths = [store.path, *([store.inherited_path] if store.inherited_path else [])]
    if not write and not any(os.path.isfile(path) for path in paths):
        raise FileNotFoundError(
            f"{store.path}: no auth profiles here (`flatstate auth add` creates the file); "
            "check --store or FLATSTATE_STORE"
        )
    for problem in store.problems:
        hint = ""
        if problem.kind == "permissions" and not write:
            hint = f" (fix it with: flatstate doctor --repair --store {quote(place.shown)})"
        warn(f"{problem.path}: {problem.message}{hint}")
    return store


T = TypeVar("T")


def auth_change(
    place: Place, change: Callable[[AuthStore], T], *, inherit_from: str | None = None
) -> tuple[AuthStore, T]:
    """Open the auth store of ``place`` for writing and apply ``change`` to it.

    A writable open narrows modes open to other users, so in a directory ``change`` runs
    first on a read-only open, where it changes this process's view only: a change that
    raises there (a bad credential, a missing profile) leaves every file and mode as it was.
    """
    if not place.is_url:
        from flatstate.auth import open_auth_store

        main = resolve(inherit_from).agent_dir if inherit_from else None
        with open_auth_store(place.agent_dir, inherit_from=main, readonly=True) as trial:
            _raise_if_damaged(trial)
            change(trial)
    store = auth(place, write=True, inherit_from=inherit_from)
    return store, change(store)


def _raise_if_damaged(store: AuthStore) -> None:
    """A damaged auth file is an error, never an empty list of profiles."""
    snap = store.snapshot()
    for doc in (snap.agent, snap.inherited):
        if doc is not None and doc.corrupt is not None:
            raise doc.corrupt


def _database_auth(place: Place, *, write: bool, inherit_from: str | None) -> AuthStore:
    """The auth profiles of a ``postgresql://`` place, in the database; ``inherit_from`` is
    the main agent's URL or agent id (flatstate.auth.open_auth_store says which)."""
    from flatstate.auth import open_auth_store

    store = open_auth_store(
        place.sessions, agent_id=place.agent_id, inherit_from=inherit_from, readonly=not write
    )
    if not write and not store.profiles():
        store.close()
        raise FileNotFoundError(
            f"{store.path}: no auth profiles here (`flatstate auth add` creates them); "
            "check --store or FLATSTATE_STORE"
        )
    for problem in store.problems:
        warn(f"{problem.path}: {problem.message}")
    return store
