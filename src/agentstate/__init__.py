"""agentstate: the state of AI-agent gateways, with reads that share and memory that stays flat."""

from agentstate import errors
from agentstate._open import open_store
from agentstate.frozen import FrozenMap
from agentstate.model import SessionEntry
from agentstate.store import Draft, SessionStore, Snapshot, StoreStats

__all__ = [
    "Draft",
    "FrozenMap",
    "SessionEntry",
    "SessionStore",
    "Snapshot",
    "StoreStats",
    "errors",
    "open_store",
]

__version__ = "0.1.0"
