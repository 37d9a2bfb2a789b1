"""``open_store``: one entry point that picks the backend from the path."""

from __future__ import annotations

import os
from typing import Any

from agentstate.frozen import StringPool
from agentstate.keys import DEFAULT_AGENT_ID
from agentstate.model import Clock
from agentstate.store import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CHECK_INTERVAL,
    DEFAULT_MAX_ENTRY_BYTES,
    SessionStore,
)

__all__ = ["open_store"]


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
    clock: Clock | None = None,
    **backend_options: Any,
) -> SessionStore:
    """Open (or create) a session store.

    ``path`` picks the backend: a path ending in ``.json`` is an OpenClaw
    ``sessions.json``; anything else is a state directory holding the SQLite
    database, created if missing.

    Options:

    - ``cache_bytes`` (256 MiB): bound on the memory the entry cache may hold;
      beyond it the least recently used entries are dropped.
    - ``max_entry_bytes`` (4 MiB): larger entries are refused.
    - ``lock_timeout`` (10 s): how long a writer waits for another writer.
    - ``agent_id``: the agent that bare keys such as ``main`` belong to
      (default ``main``).
    - ``readonly``: refuse every write.
    - ``synchronous`` (SQLite): ``"normal"`` survives a crash of the process;
      ``"full"`` also survives a power loss, at the cost of an fsync per commit.
    - ``check_interval`` (0.25 s): how often a reader looks for changes made by
      programs other than agentstate (agentstate's own writes are seen at once).

    >>> import tempfile
    >>> with open_store(tempfile.mkdtemp()) as store:
    ...     entry = store.patch("main", {"model": "claude-opus-4-5"})
    ...     store.get("agent:main:main")["model"]
    'claude-opus-4-5'
    """
    location = os.fspath(path)
    pool = StringPool()
    from agentstate.backends.sqlite import SQLiteBackend

    backend = SQLiteBackend(
        location,
        pool=pool,
        lock_timeout=lock_timeout,
        synchronous=synchronous,
        readonly=readonly,
        **backend_options,
    )
    try:
        return SessionStore(
            backend,
            agent_id=agent_id or DEFAULT_AGENT_ID,
            cache_bytes=cache_bytes,
            max_entry_bytes=max_entry_bytes,
            check_interval=check_interval,
            clock=clock,
        )
    except BaseException:
        backend.close()
        raise
