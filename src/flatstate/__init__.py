"""flatstate: the state of AI-agent gateways, with reads that share and memory that stays flat."""

from typing import TYPE_CHECKING, Any

from flatstate import errors
from flatstate._open import open_store
from flatstate.frozen import FrozenMap
from flatstate.model import SessionEntry
from flatstate.snapshot import Draft, Snapshot
from flatstate.store import SessionStore, StoreStats

__all__ = [
    "AsyncSessionStore",
    "AsyncTranscript",
    "Draft",
    "FrozenMap",
    "SessionEntry",
    "SessionStore",
    "Snapshot",
    "StoreStats",
    "errors",
    "open_async_store",
    "open_store",
]

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flatstate.aio import AsyncSessionStore, AsyncTranscript, open_async_store

_ASYNC = ("AsyncSessionStore", "AsyncTranscript", "open_async_store")


def __getattr__(name: str) -> Any:
    """The async API, imported on first use: asyncio alone costs a sync-only program
    ~35 ms of start-up here."""
    if name in _ASYNC:
        from flatstate import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'flatstate' has no attribute {name!r}")
