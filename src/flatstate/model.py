"""Session entries: immutable, JSON-shaped, with OpenClaw's merge and load rules.

A :class:`SessionEntry` is a :class:`~flatstate.frozen.FrozenMap` whose keys
are the JSON field names as stored on disk (``sessionId``, ``updatedAt``,
``deliveryContext`` ...). Fields flatstate does not know are kept and written
back unchanged. The functions here are pure: they take entries and return new
ones, and the store decides when to call them.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

from flatstate.errors import InvalidEntry
from flatstate.frozen import FrozenMap, NotJSON, StringPool, check_text, freeze

__all__ = [
    "SessionEntry",
    "build_entry",
    "merge_patch",
    "normalize_fields",
    "validate_session_id",
]

Clock = Callable[[], int]
"""Returns the current time in epoch milliseconds."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# OpenClaw: a session id names a transcript file, so it must be a safe file name.
_SESSION_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}", re.IGNORECASE)


class SessionEntry(FrozenMap):
    """One session's metadata: an immutable mapping of its JSON fields.

    >>> e = SessionEntry({"sessionId": "abc", "updatedAt": 1, "model": "m"})
    >>> e.session_id, e.updated_at, e["model"]
    ('abc', 1, 'm')
    >>> e.to_dict()["model"]
    'm'
    """

    __slots__ = ()

    @property
    def session_id(self) -> str:
        return cast("str", self.get("sessionId", ""))

    @property
    def updated_at(self) -> int | None:
        return cast("int | None", self.get("updatedAt"))

    @property
    def session_started_at(self) -> int | None:
        return cast("int | None", self.get("sessionStartedAt"))

    @property
    def session_file(self) -> str | None:
        return cast("str | None", self.get("sessionFile"))

    @property
    def chat_type(self) -> str | None:
        return cast("str | None", self.get("chatType"))

    @property
    def channel(self) -> str | None:
        return cast("str | None", self.get("channel"))

    @property
    def display_name(self) -> str | None:
        return cast("str | None", self.get("displayName"))

    @property
    def label(self) -> str | None:
        return cast("str | None", self.get("label"))

    @property
    def model(self) -> str | None:
        return cast("str | None", self.get("model"))

    @property
    def model_provider(self) -> str | None:
        return cast("str | None", self.get("modelProvider"))

    @property
    def delivery_context(self) -> FrozenMap | None:
        return cast("FrozenMap | None", self.get("deliveryContext"))

    @property
    def origin(self) -> FrozenMap | None:
        return cast("FrozenMap | None", self.get("origin"))

    @property
    def last_channel(self) -> str | None:
        return cast("str | None", self.get("lastChannel"))

    @property
    def last_to(self) -> str | None:
        return cast("str | None", self.get("lastTo"))

    @property
    def input_tokens(self) -> int | None:
        return cast("int | None", self.get("inputTokens"))

    @property
    def output_tokens(self) -> int | None:
        return cast("int | None", self.get("outputTokens"))

    @property
    def total_tokens(self) -> int | None:
        return cast("int | None", self.get("totalTokens"))

    @property
    def context_tokens(self) -> int | None:
        return cast("int | None", self.get("contextTokens"))

    @property
    def compaction_count(self) -> int:
        return cast(int, self.get("compactionCount") or 0)

    @property
    def skills_snapshot(self) -> FrozenMap | None:
        return cast("FrozenMap | None", self.get("skillsSnapshot"))


def validate_session_id(session_id: object, key: str | None = None) -> str:
    """Refuse a sessionId that is not a safe transcript file name."""
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        raise InvalidEntry(
            key,
            f"sessionId {session_id!r} is not a safe id (1-128 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit; no slashes)",
        )
    if ".checkpoint." in session_id.lower() or session_id in {".", ".."}:
        raise InvalidEntry(key, f"sessionId {session_id!r} looks like a checkpoint file name")
    return session_id


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _clean_str(value: object) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    return None


def _route(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    """The delivery route an entry implies: last* fields first, then deliveryContext.

    As in OpenClaw, when the two name different channels the last* fields win
    whole; fields are never mixed across channels.
    """

    def norm(channel: Any, to: Any, account: Any, thread: Any) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        ch = _clean_str(channel)
        if ch:
            out["channel"] = ch.lower()
        t = _clean_str(to)
        if t:
            out["to"] = t
        acc = _clean_str(account)
        if acc:
            out["accountId"] = acc
        if _is_number(thread):
            out["threadId"] = int(thread)
        elif _clean_str(thread):
            out["threadId"] = _clean_str(thread)
        return out or None

    primary = norm(
        entry.get("lastChannel") or entry.get("channel"),
        entry.get("lastTo"),
        entry.get("lastAccountId"),
        entry.get("lastThreadId"),
    )
    ctx = entry.get("deliveryContext")
    fallback = (
        norm(ctx.get("channel"), ctx.get("to"), ctx.get("accountId"), ctx.get("threadId"))
        if isinstance(ctx, Mapping)
        else None
    )
    if primary is None or fallback is None:
        return primary or fallback
    if "channel" in primary and "channel" in fallback and primary["channel"] != fallback["channel"]:
        return primary
    merged = dict(fallback)
    merged.update(primary)
    return {k: merged[k] for k in ("channel", "to", "accountId", "threadId") if k in merged}


_ROUTE_MIRROR = (
    ("channel", "lastChannel"),
    ("to", "lastTo"),
    ("accountId", "lastAccountId"),
    ("threadId", "lastThreadId"),
)


def normalize_fields(entry: dict[str, Any], *, on_load: bool = False) -> bool:
    """Apply OpenClaw's load-time migrations to ``entry`` in place.

    ``provider``→``channel``, ``lastProvider``→``lastChannel``,
    ``room``→``groupChannel``, ``skillsSnapshot.resolvedSkills`` stripped, an
    empty ``model`` dropped with its provider, and ``deliveryContext`` kept in
    step with the ``last*`` route fields. Already-normal entries are left
    exactly as they are (same keys, same order). With ``on_load``, a bad
    ``updatedAt`` becomes 0 instead of being refused. Returns whether anything
    changed.
    """
    changed = False
    for old, new in (("provider", "channel"), ("lastProvider", "lastChannel")):
        if old in entry:
            value = entry.pop(old)
            if new not in entry and value is not None:
                entry[new] = value
            changed = True
    if "room" in entry:
        room = entry.pop("room")
        if "groupChannel" not in entry and room is not None:
            entry["groupChannel"] = room
        changed = True
    skills = entry.get("skillsSnapshot")
    if isinstance(skills, Mapping) and "resolvedSkills" in skills:
        entry["skillsSnapshot"] = FrozenMap._wrap(
            {k: v for k, v in skills.items() if k != "resolvedSkills"}
        )
        changed = True
    if "model" in entry:
        model = _clean_str(entry["model"])
        if model is None:
            entry.pop("model")
            entry.pop("modelProvider", None)
            changed = True
        elif model != entry["model"]:
            entry["model"] = model
            changed = True
    if "modelProvider" in entry and isinstance(entry["modelProvider"], str):
        provider = entry["modelProvider"].strip()
        if provider != entry["modelProvider"]:
            entry["modelProvider"] = provider
            changed = True
    if on_load and "updatedAt" in entry and not _is_number(entry["updatedAt"]):
        entry["updatedAt"] = 0
        changed = True
    return _sync_route(entry) or changed


def _sync_route(entry: dict[str, Any]) -> bool:
    route = _route(entry)
    changed = False
    if route is None:
        for field in ("deliveryContext", *(m for _, m in _ROUTE_MIRROR)):
            if field in entry:
                del entry[field]
                changed = True
        return changed
    ctx = entry.get("deliveryContext")
    if not isinstance(ctx, Mapping) or dict(ctx) != route:
        entry["deliveryContext"] = FrozenMap._wrap(route)
        changed = True
    for field, mirror in _ROUTE_MIRROR:
        if field in route:
            if entry.get(mirror) != route[field]:
                entry[mirror] = route[field]
                changed = True
        elif mirror in entry:
            del entry[mirror]
            changed = True
    return changed


def build_entry(
    key: str | None,
    value: object,
    *,
    clock: Clock = now_ms,
    pool: StringPool | None = None,
    on_load: bool = False,
) -> SessionEntry:
    """Validate, migrate and freeze a whole entry (a plain dict or a SessionEntry).

    A missing ``sessionId`` gets a fresh UUID and a missing ``updatedAt`` the
    current time, except ``on_load``, where entries are taken as stored.
    """
    if isinstance(value, SessionEntry) and not on_load:
        data = value._as_dict()
    elif isinstance(value, Mapping):
        data = _frozen_fields(key, value, pool, decoded=on_load)
    else:
        raise InvalidEntry(key, f"an entry is a JSON object, not {type(value).__name__}")
    if not on_load:
        # Stored entries load as they are (doctor reports unsafe ids); new
        # ones must name a safe transcript file.
        data.setdefault("sessionId", str(uuid.uuid4()))
        validate_session_id(data["sessionId"], key)
        updated = data.get("updatedAt")
        if updated is None:
            data["updatedAt"] = clock()
        elif not _is_number(updated):
            raise InvalidEntry(key, f"updatedAt must be epoch milliseconds, not {updated!r}")
    normalize_fields(data, on_load=on_load)
    return SessionEntry._wrap(data)


def merge_patch(
    key: str,
    existing: SessionEntry | None,
    patch: Mapping[str, Any],
    *,
    preserve_activity: bool = False,
    clock: Clock = now_ms,
    pool: StringPool | None = None,
) -> SessionEntry:
    """OpenClaw's ``mergeSessionEntry``: the entry ``patch`` turns ``existing`` into.

    - ``sessionId``: the patch's, else the existing one, else a new UUID.
    - ``updatedAt``: max(existing, patch, now) with each clamped to now; with
      ``preserve_activity`` the existing value is kept.
    - ``sessionStartedAt``: set on creation and whenever ``sessionId`` changes.
    - patching ``model`` without ``modelProvider`` drops the old provider.
    - a field patched to ``None`` is removed (JavaScript's ``undefined``).

    Only the changed top-level fields are new objects; the rest are shared
    with ``existing``.
    """
    if not isinstance(patch, Mapping):
        raise InvalidEntry(key, f"a patch is a JSON object, not {type(patch).__name__}")
    now = clock()
    if existing is not None:
        quick = _merge_in_place(key, existing, patch, now, preserve_activity, pool)
        if quick is not None:
            return quick
    data: dict[str, Any] = existing._as_dict() if existing is not None else {}
    if "model" in patch and "modelProvider" not in patch:
        data.pop("modelProvider", None)
    if "deliveryContext" in patch and not any(m in patch for _, m in _ROUTE_MIRROR):
        # A new route given as deliveryContext replaces the old last* mirror,
        # which would otherwise win the re-derivation below.
        for _, mirror in _ROUTE_MIRROR:
            data.pop(mirror, None)
    for field, value in _frozen_fields(key, patch, pool).items():
        if value is None:
            data.pop(field, None)
        else:
            data[field] = value

    old_id = existing.get("sessionId") if existing is not None else None
    session_id = patch.get("sessionId") or old_id or str(uuid.uuid4())
    if session_id != old_id:
        validate_session_id(session_id, key)
    data["sessionId"] = session_id

    old_updated = existing.get("updatedAt") if existing is not None else None
    if preserve_activity and _is_number(old_updated):
        data["updatedAt"] = old_updated
    else:
        candidates = [now]
        for value in (old_updated, patch.get("updatedAt")):
            if isinstance(value, int | float) and not isinstance(value, bool):
                candidates.append(min(int(value), now))
        data["updatedAt"] = max(candidates)

    if session_id != old_id:
        if "sessionStartedAt" not in patch:
            data["sessionStartedAt"] = now
        session_file = data.get("sessionFile")
        if old_id and isinstance(session_file, str) and session_file.startswith(old_id):
            data["sessionFile"] = session_id + session_file[len(old_id) :]
    if existing is None or not _NORMALIZED_BY_PATCH.isdisjoint(patch):
        normalize_fields(data)
    return SessionEntry._wrap(data)


def _frozen_fields(
    key: str | None, fields: Mapping[Any, Any], pool: StringPool | None, *, decoded: bool = False
) -> dict[str, Any]:
    """``fields`` frozen, or :class:`InvalidEntry` naming the field that JSON cannot carry."""
    out: dict[str, Any] = {}
    for field, value in fields.items():
        if type(field) is not str:
            raise InvalidEntry(
                key, f"the field name {field!r} is not a string, as JSON keys must be"
            )
        if not decoded and not field.isascii():
            try:
                check_text(field)
            except NotJSON as exc:
                raise InvalidEntry(key, f"the field name {field!r}: {exc.problem}") from None
        out[field] = _freeze_field(key, field, value, pool, decoded)
    return out


def _freeze_field(
    key: str | None, field: str, value: Any, pool: StringPool | None, decoded: bool = False
) -> Any:
    try:
        return freeze(value, pool, decoded=decoded)
    except NotJSON as exc:
        exc.path.insert(0, field)
        raise InvalidEntry(key, f"{exc.where()}: {exc.problem}") from None


def _merge_in_place(
    key: str,
    existing: SessionEntry,
    patch: Mapping[str, Any],
    now: int,
    preserve_activity: bool,
    pool: StringPool | None,
) -> SessionEntry | None:
    """The common patch (counters, timestamps) without building a dict: same keys, new values.

    Returns None, and the general path runs, whenever a rule beyond "replace
    these values" could apply: a new or removed field, a field that
    normalization or the sessionId rules look at.
    """
    index = existing._shape.index
    if not _NORMALIZED_BY_PATCH.isdisjoint(patch) or "sessionId" in patch:
        return None
    if "updatedAt" not in index or "sessionId" not in index:
        return None
    values = list(existing._values)
    for field, value in patch.items():
        at = index.get(field)
        if at is None or value is None:
            return None
        values[at] = _freeze_field(key, field, value, pool)
    slot = index["updatedAt"]
    old_updated = existing._values[slot]
    if not (preserve_activity and _is_number(old_updated)):
        candidates = [now]
        for value in (old_updated, patch.get("updatedAt")):
            if isinstance(value, int | float) and not isinstance(value, bool):
                candidates.append(min(int(value), now))
        values[slot] = max(candidates)
    entry = SessionEntry.__new__(SessionEntry)
    object.__setattr__(entry, "_shape", existing._shape)
    object.__setattr__(entry, "_values", tuple(values))
    object.__setattr__(entry, "_digest", None)
    return entry


# A stored entry is already normal; only a patch of one of these fields can
# make it otherwise, so other patches skip the normalization pass.
_NORMALIZED_BY_PATCH = frozenset(
    {
        "provider",
        "lastProvider",
        "room",
        "skillsSnapshot",
        "model",
        "modelProvider",
        "channel",
        "deliveryContext",
        *(mirror for _, mirror in _ROUTE_MIRROR),
    }
)
