"""Auth profiles and their usage stats: immutable, shared, and never printed with a secret.

A profile is one credential from OpenClaw's ``auth-profiles.json`` (an
``api_key``, a ``token`` or an ``oauth`` grant). :class:`AuthProfile` is a
:class:`~flatstate.frozen.FrozenMap` of the JSON fields exactly as stored,
unknown ones included, plus the profile id and typed accessors. Its ``repr``
shows secrets only as their last four characters, so a profile can go into a
log line or a traceback safely; ``to_dict()`` and item access still give the
real values, because using them is the point of the store.

The functions here are pure: they check and normalize plain JSON documents,
and the store decides when to call them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, cast

import msgspec

from flatstate.frozen import FrozenMap

__all__ = [
    "FAILURE_REASONS",
    "PROFILE_TYPES",
    "AuthProblem",
    "AuthProfile",
    "ProfileStats",
    "check_profile",
    "normalize_credential",
    "normalize_document",
    "redact",
    "secret_hint",
    "strip_plaintext",
]

PROFILE_TYPES = ("api_key", "oauth", "token")
"""Credential types OpenClaw writes; a profile of any other type is reported, not loaded."""

FAILURE_REASONS = ("auth", "billing", "format", "rate_limit", "timeout", "unknown")
"""Why a call with a profile failed, as OpenClaw records it in ``failureCounts``."""

# A field holds a secret when its name says so (an Authorization header, a cookie, a
# password by any short name), or its text does (an HTTP credential scheme). Refs (keyRef,
# tokenRef) name where a secret lives, which is not itself secret.
_SECRET_NAME = re.compile(
    r"key|token|secret|pass|pwd|access|refresh|cred|auth|cookie|bearer|jwt|signature|private",
    re.IGNORECASE,
)
_SECRET_TEXT = re.compile(r"\s*(bearer|basic|digest|token)\s", re.IGNORECASE)
_NOT_SECRET = frozenset({"keyRef", "tokenRef", "expires", "type", "provider"})
_HINT_MIN = 12


def _is_secret_field(name: str) -> bool:
    return name not in _NOT_SECRET and _SECRET_NAME.search(name) is not None


def secret_hint(value: object) -> str:
    """``…`` plus the last four characters of a long secret; ``…`` alone for a short one.

    A short secret would lose too much of itself to four characters, so it is
    hidden entirely.

    >>> secret_hint("sk-ant-0123456789abcd")
    '…abcd'
    >>> secret_hint("short")
    '…'
    """
    if isinstance(value, str) and len(value) >= _HINT_MIN:
        return "…" + value[-4:]
    return "…"


def redact(value: Any, name: str = "", *, inside_secret: bool = False) -> Any:
    """A plain copy of ``value`` with every secret-named string replaced by its hint.

    Everything nested under a secret-named field counts as secret too.

    >>> redact({"type": "api_key", "key": "sk-ant-0123456789abcd", "keyRef": "env:K"})
    {'type': 'api_key', 'key': '…abcd', 'keyRef': 'env:K'}
    """
    secret = inside_secret or (bool(name) and _is_secret_field(name))
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k), inside_secret=secret) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, name, inside_secret=secret) for v in value]
    if isinstance(value, str) and (secret or _SECRET_TEXT.match(value)):
        return secret_hint(value)
    return value


class AuthProfile(FrozenMap):
    """One credential: the JSON fields as stored, the profile id, and typed accessors.

    >>> p = AuthProfile.of("openai:default", {"type": "api_key", "provider": "openai",
    ...                                       "key": "sk-0123456789abcdef"})
    >>> p.id, p.type, p.provider, p["key"][:3]
    ('openai:default', 'api_key', 'openai', 'sk-')
    >>> p
    AuthProfile('openai:default', {'type': 'api_key', 'provider': 'openai', 'key': '…cdef'})
    """

    __slots__ = ("_id",)
    _id: str

    @classmethod
    def of(cls, profile_id: str, data: Mapping[str, Any]) -> AuthProfile:
        """Wrap ``data`` (frozen or plain) as the profile ``profile_id``, sharing its values."""
        frozen = data if isinstance(data, FrozenMap) else FrozenMap(data)
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_shape", frozen._shape)
        object.__setattr__(obj, "_values", frozen._values)
        object.__setattr__(obj, "_digest", None)
        object.__setattr__(obj, "_id", profile_id)
        return obj

    @property
    def id(self) -> str:
        return self._id

    @property
    def type(self) -> str:
        return cast("str", self.get("type", ""))

    @property
    def provider(self) -> str:
        return cast("str", self.get("provider", ""))

    @property
    def email(self) -> str | None:
        return cast("str | None", self.get("email"))

    @property
    def expires(self) -> int | None:
        """Epoch milliseconds; a fractional one (another writer's) counts to the millisecond."""
        value = self.get("expires")
        if isinstance(value, float) and value - value == 0.0:
            return int(value)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def key_ref(self) -> Any:
        return self.get("keyRef")

    @property
    def token_ref(self) -> Any:
        return self.get("tokenRef")

    @property
    def ref(self) -> Any:
        """The keyRef or tokenRef that names where this profile's secret lives, if any."""
        return self.get("keyRef") if self.type == "api_key" else self.get("tokenRef")

    @property
    def access(self) -> str | None:
        return cast("str | None", self.get("access"))

    @property
    def refresh(self) -> str | None:
        return cast("str | None", self.get("refresh"))

    @property
    def account_id(self) -> str | None:
        return cast("str | None", self.get("accountId"))

    @property
    def project_id(self) -> str | None:
        return cast("str | None", self.get("projectId"))

    @property
    def client_id(self) -> str | None:
        return cast("str | None", self.get("clientId"))

    @property
    def plaintext(self) -> str | None:
        """The secret stored in the file itself (key, token or access), if any."""
        field = {"api_key": "key", "token": "token", "oauth": "access"}.get(self.type)
        value = self.get(field) if field else None
        return value if isinstance(value, str) and value else None

    @property
    def hint(self) -> str:
        """What may be shown of the secret: its ref, or ``…`` and its last four characters."""
        ref = self.ref
        if ref is not None:
            return f"ref {_ref_label(ref)}"
        plain = self.plaintext
        return secret_hint(plain) if plain else "-"

    def redacted(self) -> dict[str, Any]:
        """A plain dict of the fields with every secret replaced by its hint."""
        return cast("dict[str, Any]", redact(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._id!r}, {self.redacted()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self).of, (self._id, FrozenMap._wrap(self._as_dict())))


def _ref_label(ref: Any) -> str:
    if isinstance(ref, str):
        return ref
    if isinstance(ref, Mapping):
        return f"{ref.get('source', '?')}:{ref.get('id', '?')}"
    return "?"


class ProfileStats(FrozenMap):
    """A profile's usage stats as OpenClaw stores them (times in epoch ms).

    >>> s = ProfileStats({"errorCount": 1, "cooldownUntil": 2000, "disabledUntil": 1000})
    >>> s.error_count, s.unusable_until
    (1, 2000)
    """

    __slots__ = ()

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> ProfileStats:
        """Wrap ``data`` (frozen or plain) as stats, sharing its values."""
        frozen = data if isinstance(data, FrozenMap) else FrozenMap(data)
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_shape", frozen._shape)
        object.__setattr__(obj, "_values", frozen._values)
        object.__setattr__(obj, "_digest", None)
        return obj

    def _int(self, name: str) -> int | None:
        value = self.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        return None

    @property
    def last_used(self) -> int | None:
        return self._int("lastUsed")

    @property
    def cooldown_until(self) -> int | None:
        return self._int("cooldownUntil")

    @property
    def disabled_until(self) -> int | None:
        return self._int("disabledUntil")

    @property
    def disabled_reason(self) -> str | None:
        return cast("str | None", self.get("disabledReason"))

    @property
    def error_count(self) -> int:
        return self._int("errorCount") or 0

    @property
    def last_failure_at(self) -> int | None:
        return self._int("lastFailureAt")

    @property
    def failure_counts(self) -> FrozenMap:
        value = self.get("failureCounts")
        return value if isinstance(value, FrozenMap) else _EMPTY

    @property
    def unusable_until(self) -> int:
        """The later of cooldownUntil and disabledUntil; 0 when neither is set."""
        return max(self.cooldown_until or 0, self.disabled_until or 0)


_EMPTY = FrozenMap()


class AuthProblem(msgspec.Struct, frozen=True, kw_only=True):
    """Something wrong found while loading: reported, logged, and never fatal to reads.

    ``kind`` is one of ``non_object``, ``invalid_type``, ``missing_provider``
    (a profile, named by ``subject``), ``invalid_section`` (order, lastGood or
    usageStats of the wrong shape), ``corrupt_file`` (invalid JSON: the file
    contributes nothing and every write to it is refused), ``legacy`` (an
    ``auth.json`` credential that could not be migrated) and ``permissions``
    (a file or directory readable by others).
    """

    kind: str
    subject: str
    path: str
    message: str


def check_profile(value: Any) -> str | None:
    """Why ``value`` is not a loadable profile (OpenClaw's reason names), or None if it is."""
    if not isinstance(value, Mapping):
        return "non_object"
    if value.get("type") not in PROFILE_TYPES:
        return "invalid_type"
    provider = value.get("provider")
    if not isinstance(provider, str) or not provider.strip():
        return "missing_provider"
    return None


def normalize_document(doc: dict[str, Any]) -> bool:
    """Apply OpenClaw's load-time fixes to a plain document, in place; True if it changed.

    ``mode`` becomes ``type`` and ``apiKey`` becomes ``key`` (older writers),
    and order lists lose blank and non-string ids. Invalid profiles are left
    exactly as they are, so that saving never loses them.
    """
    changed = False
    profiles = doc.get("profiles")
    if isinstance(profiles, dict):
        for value in profiles.values():
            if isinstance(value, dict):
                changed |= normalize_credential(value)
    order = doc.get("order")
    if isinstance(order, dict):
        for provider, ids in order.items():
            if isinstance(ids, list):
                trimmed = [i.strip() for i in ids if isinstance(i, str) and i.strip()]
                if trimmed != ids:
                    order[provider] = trimmed
                    changed = True
    return changed


def normalize_credential(value: dict[str, Any]) -> bool:
    """OpenClaw's renames for one credential: ``mode`` -> ``type``, ``apiKey`` -> ``key``."""
    changed = False
    if "type" not in value and "mode" in value:
        value["type"] = value.pop("mode")
        changed = True
    if value.get("type") == "api_key" and "key" not in value and "apiKey" in value:
        value["key"] = value.pop("apiKey")
        changed = True
    return changed


def strip_plaintext(doc: dict[str, Any]) -> None:
    """Drop ``key``/``token`` where a ``keyRef``/``tokenRef`` says where the secret lives.

    OpenClaw does this on every save, so a secret moved to the environment or a
    file stops living in ``auth-profiles.json`` too.
    """
    profiles = doc.get("profiles")
    if not isinstance(profiles, dict):
        return
    for value in profiles.values():
        if not isinstance(value, dict):
            continue
        if value.get("keyRef") is not None:
            value.pop("key", None)
        if value.get("tokenRef") is not None:
            value.pop("token", None)
