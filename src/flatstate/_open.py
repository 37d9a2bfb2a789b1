"""``open_store``: one entry point that picks the backend from the path."""

from __future__ import annotations

import logging
import os
import urllib.parse
from typing import Any

from flatstate.backends.base import Backend, FileCheck
from flatstate.errors import InvalidSessionKey
from flatstate.files import check_location
from flatstate.frozen import StringPool
from flatstate.keys import DEFAULT_AGENT_ID, normalize_agent_id
from flatstate.maintenance import MaintenanceConfig
from flatstate.model import Clock
from flatstate.openclaw.root import locate
from flatstate.store import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CHECK_INTERVAL,
    DEFAULT_MAX_ENTRY_BYTES,
    SessionStore,
)
from flatstate.transcripts import FsyncPolicy

__all__ = ["backend_kind", "check_files", "open_store"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
MEMORY_SCHEME = "memory://"

log = logging.getLogger("flatstate")


def open_store(
    path: str | os.PathLike[str],
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    lock_timeout: float = 10.0,
    agent_id: str | None = None,
    readonly: bool = False,
    synchronous: str = "normal",
    check_interval: float = DEFAULT_CHECK_INTERVAL,
    maintenance: MaintenanceConfig | None = None,
    transcript_fsync: FsyncPolicy | None = None,
    clock: Clock | None = None,
    **backend_options: Any,
) -> SessionStore:
    """Open (or create) a session store.

    ``path`` picks the backend: a ``postgresql://`` (or ``postgres://``) URL is
    a PostgreSQL database shared by many processes and hosts (see
    :mod:`flatstate.backends.postgres` and docs/postgres.md); ``memory://NAME`` is a
    store in this process's memory, shared by every store opened under that name (for
    tests; ``?state_dir=DIR`` for its transcripts); a path ending in
    ``.json`` is an OpenClaw ``sessions.json`` (its agent id is taken from
    ``agents/<id>/sessions/``); OpenClaw 2026.9's ``openclaw-agent.sqlite`` (or
    an OpenClaw root holding one per agent, with ``agent_id``) is served
    read-only from OpenClaw's own database (see
    :mod:`flatstate.backends.openclaw`); anything else is a state directory
    holding the SQLite database, created if missing. A damaged sessions.json
    opens read-only (``store.corruption`` says why) and is never overwritten.

    Options:

    - ``cache_bytes`` (256 MiB): bound on the memory the entry cache may hold;
      beyond it the least recently used entries are dropped.
    - ``max_entry_bytes`` (4 MiB): larger entries are refused.
    - ``lock_timeout`` (10 s): how long a writer waits for another writer (for
      SQLite, its busy timeout: another process holding the write lock); then
      LockTimeout. Never 0, which would fail a write at the first contention.
    - ``agent_id``: the agent that bare keys such as ``main`` belong to
      (default ``main``).
    - ``readonly``: refuse every write.
    - ``synchronous`` (SQLite): ``"normal"`` survives a crash of the process;
      ``"full"`` also survives a power loss, at the cost of an fsync per commit.
      (PostgreSQL: ``"normal"`` keeps the server's ``synchronous_commit``,
      ``"full"`` forces it on, ``"off"`` turns it off.)
    - ``check_interval`` (0.25 s): how often a reader looks for changes made by
      programs other than flatstate (flatstate's own writes are seen at once).
    - Writes from every thread (and task, see :func:`flatstate.open_async_store`) go
      through one writer thread, which commits all the writes waiting in one
      transaction (group commit, one file replace for JSON); a write returns after
      the commit that holds it.
    - ``maintenance``: the :class:`~flatstate.maintenance.MaintenanceConfig`
      that ``store.maintain()`` uses by default (OpenClaw's defaults, warn mode).
    - ``transcript_fsync``: a :class:`~flatstate.transcripts.FsyncPolicy` for
      transcript appends (default: fsync every append).
    - ``allow_symlink`` (JSON): accept a sessions.json that links outside its
      directory.
    - ``force`` (OpenClaw 2026.9): read a database that a live gateway holds
      (otherwise :class:`~flatstate.errors.StoreInUse`).
    - PostgreSQL: ``namespace`` (default: the agent id), ``schema``
      (``flatstate``) and ``state_dir`` (the local directory; default
      ``~/.flatstate/<namespace>``), also as URL parameters;
      ``pool_size`` (4), ``prepare_threshold`` (5; ``None`` for PgBouncer in
      transaction mode), ``listen_dsn`` (LISTEN past a pooler),
      ``connect_timeout`` (10 s). The password never appears in
      ``store.location`` or in messages.

    >>> import tempfile
    >>> with open_store(tempfile.mkdtemp()) as store:
    ...     entry = store.patch("main", {"model": "claude-opus-4-5"})
    ...     store.get("agent:main:main")["model"]
    'claude-opus-4-5'
    """
    location = os.fspath(path)
    check_location(location)
    location = _expand(location)
    kind = backend_kind(location, agent_id)
    pool = StringPool()
    backend: Backend
    if kind == "postgres":
        from flatstate.backends.postgres import PostgresBackend

        backend = PostgresBackend(
            location,
            pool=pool,
            agent_id=agent_id,
            lock_timeout=lock_timeout,
            synchronous=synchronous,
            readonly=readonly,
            **backend_options,
        )
    elif kind == "memory":
        from flatstate.backends.memory import MemoryBackend, database

        name, _, query = location[len(MEMORY_SCHEME) :].partition("?")
        state_dir = dict(urllib.parse.parse_qsl(query)).get("state_dir")
        backend = MemoryBackend(
            database(name, state_dir), pool=pool, lock_timeout=lock_timeout, readonly=readonly
        )
    elif kind == "jsonfile":
        from flatstate.backends.jsonfile import JsonFileBackend

        backend = JsonFileBackend(
            location, pool=pool, lock_timeout=lock_timeout, readonly=readonly, **backend_options
        )
        agent_id = agent_id or _agent_of_openclaw_path(location)
    elif kind == "openclaw" and (openclaw := locate(location, agent_id)) is not None:
        from flatstate.backends.openclaw import OpenClawBackend

        root, agent_id, agent_db = openclaw
        backend = OpenClawBackend(
            agent_db, pool=pool, root=root, agent_id=agent_id, **backend_options
        )
    else:
        from flatstate.backends.sqlite import SQLiteBackend

        backend = SQLiteBackend(
            location,
            pool=pool,
            lock_timeout=lock_timeout,
            synchronous=synchronous,
            readonly=readonly,
            **backend_options,
        )
    try:
        store = SessionStore(
            backend,
            agent_id=agent_id or DEFAULT_AGENT_ID,
            cache_bytes=cache_bytes,
            max_entry_bytes=max_entry_bytes,
            check_interval=check_interval,
            maintenance=maintenance,
            transcript_fsync=transcript_fsync,
            clock=clock,
        )
    except BaseException:
        backend.close()
        raise
    if backend.corruption is not None:
        log.error("%s; opened read-only", backend.corruption)
    return store


def _expand(location: str) -> str:
    """``~`` expanded in a path ("~/.flatstate/main", as the docs write it), not in a URL."""
    if location.startswith((*POSTGRES_SCHEMES, MEMORY_SCHEME)):
        return location
    return os.path.expanduser(location)


def backend_kind(location: str, agent_id: str | None = None) -> str:
    """Which backend :func:`open_store` picks for ``location``: ``"postgres"``, ``"memory"``,
    ``"jsonfile"``, ``"openclaw"`` (OpenClaw 2026.9's databases) or ``"sqlite"``."""
    if location.startswith(POSTGRES_SCHEMES):
        return "postgres"
    if location.startswith(MEMORY_SCHEME):
        return "memory"
    if location.endswith(".json"):
        return "jsonfile"
    if locate(_expand(location), agent_id) is not None:
        return "openclaw"
    return "sqlite"


def check_files(location: str, agent_id: str | None = None) -> FileCheck | None:
    """What the files of the store at ``location`` hold, read without opening it (see
    :meth:`Backend.check_files`); None for a store that is not plain files."""
    location = _expand(location)
    kind = backend_kind(location, agent_id)
    if kind == "jsonfile":
        from flatstate.backends.jsonfile import JsonFileBackend

        return JsonFileBackend.check_files(location)
    if kind == "sqlite":
        from flatstate.backends.sqlite import SQLiteBackend

        return SQLiteBackend.check_files(location)
    return None


def _agent_of_openclaw_path(path: str) -> str | None:
    """``main`` for ``.../agents/main/sessions/sessions.json``, else None."""
    parts = os.path.abspath(path).split(os.sep)
    if len(parts) >= 4 and parts[-2] == "sessions" and parts[-4] == "agents":
        try:
            return normalize_agent_id(parts[-3])
        except InvalidSessionKey:
            return None
    return None
