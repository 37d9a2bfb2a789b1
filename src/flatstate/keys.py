"""Session keys: the canonical form OpenClaw stores, and the aliases it folds.

A stored key is lowercase and either ``global`` or ``agent:<agentId>:<rest>``.
Anything else a caller passes (``main``, ``Agent:Main:Main``, a bare
``cron:nightly``) is an alias of the canonical key it normalizes to; writes
fold such legacy keys into the canonical one.
"""

from __future__ import annotations

import re
from functools import lru_cache

from flatstate.errors import InvalidSessionKey

__all__ = [
    "DEFAULT_AGENT_ID",
    "MAX_KEY_LENGTH",
    "agent_id_of",
    "normalize_agent_id",
    "normalize_key",
]

DEFAULT_AGENT_ID = "main"
MAX_KEY_LENGTH = 512
_AGENT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Control characters (including newlines and NUL) never belong in a key: they
# break logs, lock names and the JSON tools people point at sessions.json.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def normalize_agent_id(agent_id: str) -> str:
    """Lowercase and validate an agent id (``main``, ``coder``, ``ops-bot``)."""
    value = agent_id.strip().lower()
    if not _AGENT_ID.fullmatch(value):
        raise InvalidSessionKey(
            agent_id,
            "an agent id is 1-64 characters of a-z, 0-9, '_' and '-', "
            "starting with a letter or digit",
        )
    return value


@lru_cache(maxsize=65536)
def normalize_key(key: str, agent_id: str = DEFAULT_AGENT_ID) -> str:
    """The canonical stored form of ``key``.

    ``main`` and bare legacy keys are scoped to ``agent_id``:

    >>> normalize_key("main")
    'agent:main:main'
    >>> normalize_key(" Agent:Main:Telegram:DM:42 ")
    'agent:main:telegram:dm:42'
    >>> normalize_key("cron:nightly", agent_id="ops")
    'agent:ops:cron:nightly'

    Raises :class:`~flatstate.errors.InvalidSessionKey` for an empty, overlong,
    control-character or malformed ``agent:`` key.
    """
    if not isinstance(key, str):
        raise InvalidSessionKey(key, f"a key is a string, not {type(key).__name__}")
    value = key.strip().lower()
    if not value:
        raise InvalidSessionKey(key, "the key is empty")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidSessionKey(key[:40] + "...", f"longer than {MAX_KEY_LENGTH} characters")
    if _CONTROL.search(value):
        raise InvalidSessionKey(key, "it contains control characters")
    if _SURROGATE.search(value):
        raise InvalidSessionKey(key, "it holds a lone surrogate, which UTF-8 cannot carry")
    if value == "global":
        return value
    if value.startswith("agent:"):
        parts = value.split(":", 2)
        if len(parts) < 3 or not parts[2].strip(":"):
            raise InvalidSessionKey(
                key, "an 'agent:' key needs an agent id and a rest, as in 'agent:main:main'"
            )
        if not _AGENT_ID.fullmatch(parts[1]):
            raise InvalidSessionKey(key, f"{parts[1]!r} is not a valid agent id")
        return value
    scoped = f"agent:{normalize_agent_id(agent_id)}:{value}"
    if len(scoped) > MAX_KEY_LENGTH:  # the stored key is what must fit, prefix included
        raise InvalidSessionKey(
            key[:40] + "...",
            f"longer than {MAX_KEY_LENGTH} characters once scoped to its agent "
            f"({len(scoped)} as {scoped[:20]}...)",
        )
    return scoped


def agent_id_of(key: str) -> str | None:
    """The agent id of a canonical key, or None for ``global``."""
    if key.startswith("agent:"):
        return key.split(":", 2)[1]
    return None
