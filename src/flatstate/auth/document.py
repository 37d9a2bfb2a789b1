"""One ``auth-profiles.json``, parsed into frozen values; and the overlay of two of them.

:class:`AuthDocument` is what one file says: its valid profiles, order,
lastGood and usageStats, the problems found, and the whole document frozen as
read (invalid profiles and unknown fields included) so that a write can start
from it without losing anything. :class:`AuthSnapshot` is what a store
serves: an agent's document laid over the main agent's, with every provider's
candidates ranked in advance.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from flatstate.auth.profiles import (
    AuthProblem,
    AuthProfile,
    ProfileStats,
    check_profile,
    normalize_document,
)
from flatstate.auth.rotation import Plan, build_plans, pick, provider_key
from flatstate.errors import InvalidProfile, StoreCorrupt
from flatstate.frozen import FrozenMap, NotJSON, decode_json, escape_surrogates, freeze

__all__ = [
    "AuthDocument",
    "AuthSnapshot",
    "check_writable",
    "decode_document",
    "encode_document",
]

log = logging.getLogger("flatstate.auth")

_FIX_JSON = (
    "Repair it by hand (or restore a backup); flatstate will not overwrite it, "
    "and every write to it is refused until then."
)
_EMPTY = FrozenMap()


def decode_document(path: str, data: bytes | None) -> dict[str, Any]:
    """The plain, normalized document in ``data``; an empty one for a missing file.

    Raises :class:`~flatstate.errors.StoreCorrupt` for invalid JSON, a
    top level that is not an object, or ``profiles`` that is not an object:
    nothing of such a file can be used or safely rewritten. The message gives
    the position of the damage, never the file's text.
    """
    if data is None or not data.strip():
        return {"version": 1, "profiles": {}}
    try:
        doc = decode_json(data)
    except Exception as exc:  # msgspec.DecodeError; its message has positions only
        raise StoreCorrupt(path, f"invalid JSON ({exc})", _FIX_JSON) from None
    if not isinstance(doc, dict):
        raise StoreCorrupt(path, f"the top level is a JSON {_kind(doc)}, not an object", _FIX_JSON)
    profiles = doc.setdefault("profiles", {})
    if not isinstance(profiles, dict):
        problem = f"'profiles' is a JSON {_kind(profiles)}, not an object"
        raise StoreCorrupt(path, problem, _FIX_JSON)
    normalize_document(doc)
    return doc


_SECTIONS = {"profiles": "", "usageStats": "its usage stats, "}


def check_writable(doc: Mapping[str, Any]) -> None:
    """InvalidProfile for a changed document JSON cannot carry as it is (NaN, an infinity, a
    key that is not a string, bytes, a set, ...), before anything is written: such a file
    would not read back (NaN is no JSON), or would read back changed (``{1: ...}``)."""
    try:
        freeze(doc, decoded=True)  # lone surrogates are kept: written as escapes, as read
    except NotJSON as exc:
        path = exc.path
        if len(path) >= 2 and path[0] in _SECTIONS and isinstance(path[1], str):
            inner = NotJSON(exc.problem, path[2:])
            where = f"{_SECTIONS[str(path[0])]}{inner.where()}"
            raise InvalidProfile(path[1], f"{where}: {exc.problem}") from None
        raise InvalidProfile(None, f"{exc.where()}: {exc.problem}") from None


def encode_document(doc: Mapping[str, Any]) -> bytes:
    """The document as OpenClaw writes it: 2-space indent, non-ASCII kept, a final newline.
    Raises InvalidProfile for what JSON cannot carry (see :func:`check_writable`)."""
    check_writable(doc)
    return (escape_surrogates(json.dumps(doc, indent=2, ensure_ascii=False)) + "\n").encode()


def _kind(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


class AuthDocument:
    """One file's content, frozen; built once per change of the file.

    A profile that cannot be used is skipped and reported, and kept as read:

    >>> data = b'{"profiles": {"openai:default": {"type": "api_key", "provider": "openai"},'
    >>> doc = AuthDocument("auth-profiles.json", decode_document("", data + b' "bad": 3}}'))
    >>> list(doc.profiles), [problem.kind for problem in doc.problems], doc.raw["profiles"]["bad"]
    (['openai:default'], ['non_object'], 3)
    """

    __slots__ = (
        "corrupt",
        "last_good",
        "order",
        "path",
        "problems",
        "profiles",
        "raw",
        "usage",
    )

    def __init__(self, path: str, doc: dict[str, Any] | None, corrupt: StoreCorrupt | None = None):
        self.path = path
        self.corrupt = corrupt
        problems: list[AuthProblem] = []
        if corrupt is not None:
            message = str(corrupt)
            problems.append(
                AuthProblem(kind="corrupt_file", subject=path, path=path, message=message)
            )
            doc = {"version": 1, "profiles": {}}
        assert doc is not None
        try:
            raw: FrozenMap = freeze(doc, decoded=True)
        except NotJSON as exc:
            raise StoreCorrupt(path, f"{exc.where()}: {exc.problem}", _FIX_JSON) from None
        self.raw = raw
        self.profiles: dict[str, AuthProfile] = {}
        for profile_id, value in _section(raw, "profiles", path, problems).pairs():
            reason = check_profile(value)
            if reason is None:
                self.profiles[profile_id] = AuthProfile.of(profile_id, value)
            else:
                problems.append(
                    AuthProblem(
                        kind=reason,
                        subject=profile_id,
                        path=path,
                        message=f"profile {profile_id!r} skipped: {_REASONS[reason]}",
                    )
                )
        self.order: dict[str, tuple[str, ...]] = {}
        for provider, ids in _section(raw, "order", path, problems).pairs():
            if isinstance(ids, tuple):
                self.order[provider] = ids
            else:
                problems.append(_bad_section(path, f"order.{provider}", "an array of profile ids"))
        self.last_good: dict[str, str] = {}
        for provider, profile_id in _section(raw, "lastGood", path, problems).pairs():
            if isinstance(profile_id, str):
                self.last_good[provider] = profile_id
            else:
                problems.append(_bad_section(path, f"lastGood.{provider}", "a profile id"))
        self.usage: dict[str, ProfileStats] = {}
        for profile_id, stats in _section(raw, "usageStats", path, problems).pairs():
            if isinstance(stats, FrozenMap):
                self.usage[profile_id] = ProfileStats.of(stats)
            else:
                problems.append(_bad_section(path, f"usageStats.{profile_id}", "an object"))
        self.problems = tuple(problems)

    @classmethod
    def empty(cls, path: str) -> AuthDocument:
        return cls(path, {"version": 1, "profiles": {}})

    @property
    def version(self) -> Any:
        return self.raw.get("version", 1)


_REASONS = {
    "non_object": "it is not a JSON object",
    "invalid_type": "its type is missing or not one of api_key, oauth, token",
    "missing_provider": "it has no provider",
}


def _section(raw: FrozenMap, name: str, path: str, problems: list[AuthProblem]) -> FrozenMap:
    value = raw.get(name)
    if value is None:
        return _EMPTY
    if isinstance(value, FrozenMap):
        return value
    problems.append(_bad_section(path, name, "an object"))
    return _EMPTY


def _bad_section(path: str, where: str, expected: str) -> AuthProblem:
    return AuthProblem(
        kind="invalid_section",
        subject=where,
        path=path,
        message=f"{where} ignored: it is not {expected} (kept as is in the file)",
    )


class AuthSnapshot:
    """The auth state one store serves: immutable, shared by every reader.

    ``profiles``, ``order``, ``last_good`` and ``usage_stats`` are frozen maps;
    the agent's own file wins over the inherited (main agent's) one per key.
    ``owners`` says which file each profile comes from, so that a token
    refresh goes where the profile lives.
    """

    __slots__ = (
        "agent",
        "inherited",
        "last_good",
        "order",
        "owners",
        "plans",
        "problems",
        "profiles",
        "usage_stats",
        "version",
    )

    def __init__(self, agent: AuthDocument, inherited: AuthDocument | None) -> None:
        self.agent = agent
        self.inherited = inherited
        base = inherited if inherited is not None else AuthDocument.empty("")
        profiles = {**base.profiles, **agent.profiles}
        self.profiles: FrozenMap = FrozenMap._wrap(profiles)
        self.order: FrozenMap = FrozenMap._wrap({**base.order, **agent.order})
        self.last_good: FrozenMap = FrozenMap._wrap({**base.last_good, **agent.last_good})
        usage = {**base.usage, **agent.usage}
        self.usage_stats: FrozenMap = FrozenMap._wrap(usage)
        self.version = agent.version
        self.owners: dict[str, AuthDocument] = {
            pid: agent if pid in agent.profiles else base for pid in profiles
        }
        self.plans: dict[str, Plan] = build_plans(profiles, self.order, self.last_good, usage)
        self.problems: tuple[AuthProblem, ...] = agent.problems + base.problems

    def get(self, profile_id: str) -> AuthProfile | None:
        profile: AuthProfile | None = self.profiles.get(profile_id)
        return profile

    def stats(self, profile_id: str) -> ProfileStats | None:
        stats: ProfileStats | None = self.usage_stats.get(profile_id)
        return stats

    def select(self, provider: str, now: int) -> AuthProfile | None:
        plan = self.plans.get(provider)
        if plan is None:
            plan = self.plans.get(provider_key(provider))
            if plan is None:
                return None
        return pick(plan, now)
