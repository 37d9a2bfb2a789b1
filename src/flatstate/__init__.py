"""flatstate: the state of AI-agent gateways, with reads that share and memory that stays flat."""

from flatstate import errors
from flatstate._open import open_store
from flatstate.aio import AsyncSessionStore, AsyncTranscript, open_async_store
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
