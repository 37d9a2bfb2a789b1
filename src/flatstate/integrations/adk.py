"""Google ADK's session service on flatstate: :class:`FlatstateSessionService`.

Install with ``pip install 'flatstate[adk]'``. Importing this module registers the
``flatstate`` URI scheme with ADK's service registry, so that
``adk web --session_service_uri flatstate:///path/to/state`` finds it (see docs/integrations.md).

What goes where, in the store's own terms (keys are scoped to the store's agent):

- a session is the entry ``adk:s:<app>:<user>:<id>``; its ``adk`` field holds the session's
  own state, ``lastUpdateTime``, ``revision`` (how many events are applied) and ``applied``
  (the transcript id of the last event applied to the state);
- ``app:`` state is the entry ``adk:app:<app>``, ``user:`` state ``adk:user:<app>:<user>``;
- events are the session's transcript, a line ``{"type": "adk.event", "event": {...}}``
  each, the event as ADK's own model dumps it to JSON.

ADK's ids are case-sensitive and flatstate's keys are not, so each part of a key is
escaped: ``a-z``, ``0-9``, ``.``, ``_`` and ``-`` stay, every other UTF-8 byte becomes ``~hh``.

An append writes the event to the transcript first, under the transcript's lock and only
if the caller's session is current, then applies its state delta to the entries in one
``store.update``. The transcript is the log: a crash between the two leaves an event whose
delta is not applied yet, which reads replay in memory and the next append applies for
good, so an event once written is neither lost nor applied twice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from flatstate._open import open_store
from flatstate.aio import AsyncSessionStore
from flatstate.errors import ConflictError, ExtraMissing, InvalidLocation
from flatstate.frozen import FrozenMap, thaw
from flatstate.snapshot import Draft
from flatstate.transcripts import TranscriptLike

try:
    from google.adk.cli.service_registry import get_service_registry
    from google.adk.errors import StaleSessionError
    from google.adk.errors.already_exists_error import AlreadyExistsError
    from google.adk.errors.session_not_found_error import SessionNotFoundError
    from google.adk.events.event import Event
    from google.adk.sessions.base_session_service import (
        BaseSessionService,
        GetSessionConfig,
        ListSessionsResponse,
    )
    from google.adk.sessions.session import Session
    from google.adk.sessions.state import State
    from pydantic_core import to_jsonable_python
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ExtraMissing("flatstate.integrations.adk", "adk") from exc

__all__ = [
    "SCHEME",
    "FlatstateListSessionsResponse",
    "FlatstateSessionService",
    "location_from_uri",
]

log = logging.getLogger("flatstate.integrations.adk")

SCHEME = "flatstate"
EVENT_TYPE = "adk.event"
# An append that finds unapplied events applies them and tries again; each round can
# only be lost to another writer's append, so a bound this size means a livelock.
MAX_ROUNDS = 64
TRANSCRIPTS_KEPT = 1024
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def _escape(part: str) -> str:
    """One key part, case and separators kept apart (see the module docstring)."""
    out: list[str] = []
    for char in part:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend(f"~{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _session_key(app_name: str, user_id: str, session_id: str) -> str:
    return f"adk:s:{_escape(app_name)}:{_escape(user_id)}:{_escape(session_id)}"


def _app_key(app_name: str) -> str:
    return f"adk:app:{_escape(app_name)}"


def _user_key(app_name: str, user_id: str) -> str:
    return f"adk:user:{_escape(app_name)}:{_escape(user_id)}"


def _normal_id(session_id: str) -> str:
    """ADK's in-memory and SQLite services strip a session id; so do we."""
    return session_id.strip() if session_id else session_id


def _json_safe(state: Mapping[str, Any]) -> dict[str, Any]:
    """State as JSON: rich values (datetimes, models) faithfully, others by their ``str``,
    as ADK's database services store them."""
    safe = to_jsonable_python(dict(state), fallback=str)
    assert isinstance(safe, dict)
    return safe


def _split(delta: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A state delta split by scope (app, user, session), prefixes removed, ``temp:`` gone."""
    app: dict[str, Any] = {}
    user: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for key, value in delta.items():
        if key.startswith(State.APP_PREFIX):
            app[key.removeprefix(State.APP_PREFIX)] = value
        elif key.startswith(State.USER_PREFIX):
            user[key.removeprefix(State.USER_PREFIX)] = value
        elif not key.startswith(State.TEMP_PREFIX):
            own[key] = value
    return app, user, own


def _delta_of(record: Mapping[str, Any]) -> Mapping[str, Any]:
    actions = record["event"].get("actions")
    delta = actions.get("state_delta") if isinstance(actions, Mapping) else None
    return delta if isinstance(delta, Mapping) else {}


def _timestamp_of(record: Mapping[str, Any]) -> float:
    return float(record["event"]["timestamp"])


@dataclass
class _View:
    """One session as stored (plain values), before or after replaying events."""

    entry_id: str  # flatstate's sessionId: new for every creation under the same key
    fields: dict[str, Any]  # the entry's ``adk`` field
    app_state: dict[str, Any]
    user_state: dict[str, Any]

    @property
    def marker(self) -> str:
        """The revision an ADK ``Session`` carries to prove it is current."""
        return f"{self.entry_id}:{self.fields['revision']}"

    def replay(self, records: Sequence[Mapping[str, Any]]) -> tuple[bool, bool]:
        """Apply events' state deltas in order; whether app and user state changed."""
        app_changed = user_changed = False
        for record in records:
            app, user, own = _split(thaw(_delta_of(record)))
            self.app_state.update(app)
            self.user_state.update(user)
            self.fields["state"].update(own)
            self.fields["lastUpdateTime"] = _timestamp_of(record)
            self.fields["revision"] += 1
            self.fields["applied"] = record["id"]
            app_changed = app_changed or bool(app)
            user_changed = user_changed or bool(user)
        return app_changed, user_changed

    def session(self, events: list[Event]) -> Session:
        fields = self.fields
        state = dict(fields["state"])
        state.update({State.APP_PREFIX + k: v for k, v in self.app_state.items()})
        state.update({State.USER_PREFIX + k: v for k, v in self.user_state.items()})
        session = Session(
            id=fields["id"],
            app_name=fields["app"],
            user_id=fields["user"],
            state=state,
            events=events,
            last_update_time=fields["lastUpdateTime"],
        )
        session._storage_update_marker = self.marker
        return session


def _state_of(entry: Mapping[str, Any] | None) -> dict[str, Any]:
    if entry is None:
        return {}
    state = thaw(entry["adk"]["state"])
    assert isinstance(state, dict)
    return state


def _view(lookup: Mapping[str, Any], key: str, app_name: str, user_id: str) -> _View | None:
    """The stored view of session ``key``, read through ``lookup`` (a draft or the store)."""
    entry = lookup.get(key)
    if entry is None:
        return None
    return _View(
        entry["sessionId"],
        thaw(entry["adk"]),
        _state_of(lookup.get(_app_key(app_name))),
        _state_of(lookup.get(_user_key(app_name, user_id))),
    )


def _event_records(entries: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        e for e in entries if e.get("type") == EVENT_TYPE and isinstance(e.get("event"), Mapping)
    ]


def _position(records: Sequence[Mapping[str, Any]], applied: str | None) -> int | None:
    """The index just after the record ``applied`` names, searching from the end."""
    for index in range(len(records) - 1, -1, -1):
        if records[index].get("id") == applied:
            return index + 1
    return None


def _read_window(
    transcript: TranscriptLike, applied: str | None, limit: int | None, after: float | None
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(the events to return, the events after ``applied``) read from the end of the
    transcript, only as far back as ``limit`` and ``after`` need (``None``: everything)."""
    if limit is None and after is None:
        records = _event_records(list(transcript.iter_entries()))
        start = _position(records, applied)
        return records, records[start:] if start is not None else _unknown(records, applied)
    size = (limit if limit is not None else 16) + 1  # one more: the entry before the window
    while True:
        entries = transcript.tail_plain(size)  # validated into Events next: no frozen copy
        whole = len(entries) < size
        records = _event_records(entries)
        start = _position(records, applied)
        enough = whole or (
            len(records) > limit
            if limit is not None
            else any(_timestamp_of(r) < after for r in records)  # type: ignore[operator]
        )
        if (start is not None or whole) and enough:
            pending = records[start:] if start is not None else _unknown(records, applied)
            events = records[-limit:] if limit else ([] if limit == 0 else records)
            if after is not None:
                # ADK keeps the run of events at or after ``after`` that ends the history.
                cut = len(events)
                while cut > 0 and _timestamp_of(events[cut - 1]) >= after:
                    cut -= 1
                events = events[cut:]
            return events, pending
        size *= 4


def _unknown(records: list[Mapping[str, Any]], applied: str | None) -> list[Mapping[str, Any]]:
    """The pending events when the transcript does not hold the last applied one."""
    if applied is None:
        return records  # nothing applied yet: every event is pending
    return []  # the transcript was replaced under the session (see _catch_up): trust its state


def _to_event(record: Mapping[str, Any]) -> Event:
    event = record["event"]
    return Event.model_validate(thaw(event) if isinstance(event, FrozenMap) else event)


@dataclass
class _Written:
    """What one attempt to append found or did."""

    anchor: str | None  # the applied event the records follow
    records: list[Mapping[str, Any]]  # to apply after ``anchor``
    appended: bool  # False: ``records`` are another writer's, to apply before trying again
    marker: str = ""  # the session's revision once our event is applied
    adopt: str | None = None  # a leaf to take as applied when the log lost ``anchor``


def _apply(
    key: str, app_name: str, user_id: str, written: _Written
) -> Any:  # the update function for store.update
    def apply(draft: Draft) -> None:
        view = _view(draft, key, app_name, user_id)
        if view is None:
            raise SessionNotFoundError(f"Session {key} was deleted while an event was appended.")
        applied = view.fields["applied"]
        if written.adopt is not None:
            if applied == written.anchor:
                log.warning("%s: its transcript lost event %s; continuing from it", key, applied)
                view.fields["applied"] = written.adopt
                draft.patch(key, {"adk": view.fields})
            return
        ids = [written.anchor, *(r["id"] for r in written.records)]
        if applied not in ids:
            return  # another writer applied these and more
        todo = written.records[ids.index(applied) :]
        if not todo:
            return
        app_changed, user_changed = view.replay(todo)
        draft.patch(key, {"adk": view.fields})
        if app_changed:
            draft.patch(_app_key(app_name), {"adk": {"app": app_name, "state": view.app_state}})
        if user_changed:
            draft.patch(
                _user_key(app_name, user_id),
                {"adk": {"app": app_name, "user": user_id, "state": view.user_state}},
            )

    return apply


class _Closed:
    """What :meth:`FlatstateSessionService.close` returns: it closed already, and ADK code
    that awaits ``close()`` (as its own services' ``close`` are async) may await it."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class FlatstateListSessionsResponse(ListSessionsResponse):
    """ADK's listing, plus the token of the next page when ``page_size`` was given."""

    next_page_token: str | None = None


class FlatstateSessionService(BaseSessionService):
    """ADK's ``BaseSessionService`` on a flatstate store.

    ``location`` is anything :func:`flatstate.open_async_store` takes (a state directory,
    a ``postgresql://`` URL), with ``options`` passed on to it, or an open
    :class:`~flatstate.AsyncSessionStore` to share: closing the service then leaves that
    store open.

    >>> import asyncio, tempfile
    >>> async def main() -> list[str]:
    ...     async with FlatstateSessionService(tempfile.mkdtemp()) as service:
    ...         session = await service.create_session(app_name="app", user_id="ada")
    ...         await service.append_event(session, Event(author="user"))
    ...         again = await service.get_session(app_name="app", user_id="ada",
    ...                                           session_id=session.id)
    ...         return [event.author for event in again.events]
    >>> asyncio.run(main())
    ['user']
    """

    def __init__(self, location: str | os.PathLike[str] | AsyncSessionStore, **options: Any):
        super().__init__()
        if isinstance(location, AsyncSessionStore):
            if options:
                raise TypeError(
                    f"options {sorted(options)} apply to a store the service opens, not to the "
                    "open store it was given; pass them to open_async_store instead"
                )
            self._store, self._owned = location, False
        else:
            self._store, self._owned = AsyncSessionStore(open_store(location, **options)), True
        self._closed = False
        # Transcripts by (key, sessionId): finding one through the store checks its path
        # (realpath, makedirs) on every call, a tenth of a millisecond an append.
        self._transcripts: OrderedDict[tuple[str, str], TranscriptLike] = OrderedDict()
        self._transcripts_lock = threading.Lock()

    def _transcript(self, key: str, entry: Mapping[str, Any]) -> TranscriptLike:
        """The transcript of session ``key`` as its current ``entry`` names it."""
        found_key = (key, entry["sessionId"])
        with self._transcripts_lock:  # worker threads share the table
            found = self._transcripts.get(found_key)
            if found is not None:
                self._transcripts.move_to_end(found_key)
                return found
        found = self._store.sync.transcript(key, create=False, reconcile=False)
        with self._transcripts_lock:
            self._transcripts[found_key] = found
            while len(self._transcripts) > TRANSCRIPTS_KEPT:
                self._transcripts.popitem(last=False)
        return found

    @property
    def store(self) -> AsyncSessionStore:
        """The store underneath (shared with whoever opened it, when it was given)."""
        return self._store

    def _canonical(self, key: str) -> str:
        return self._store.sync.canonical_key(key)

    # -- creating --------------------------------------------------------------
    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        """A new session; ``AlreadyExistsError`` when this user has one with that id."""
        session_id = _normal_id(session_id or "") or str(uuid.uuid4())
        app, user, own = _split(_json_safe(state or {}))
        key = _session_key(app_name, user_id, session_id)
        fields = {
            "app": app_name,
            "user": user_id,
            "id": session_id,
            "state": own,
            "lastUpdateTime": time.time(),
            "revision": 0,
            "applied": None,
        }

        def create(draft: Draft) -> _View:
            if key in draft:
                raise AlreadyExistsError(f"Session with id {session_id} already exists.")
            app_state = _state_of(draft.get(_app_key(app_name)))
            user_state = _state_of(draft.get(_user_key(app_name, user_id)))
            if app:
                app_state.update(app)
                draft.patch(_app_key(app_name), {"adk": {"app": app_name, "state": app_state}})
            if user:
                user_state.update(user)
                draft.patch(
                    _user_key(app_name, user_id),
                    {"adk": {"app": app_name, "user": user_id, "state": user_state}},
                )
            draft[key] = {"adk": fields}
            return _View(draft[key]["sessionId"], thaw(draft[key]["adk"]), app_state, user_state)

        view = await self._store.update(create)
        return view.session([])

    # -- reading ---------------------------------------------------------------
    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> Session | None:
        """The session with its events (all, or as ``config`` narrows them), or None."""
        limit = config.num_recent_events if config is not None else None
        after = config.after_timestamp if config is not None else None
        if limit is not None and limit < 0:
            # GetSessionConfig checks this when it is built, but not when the field is set.
            raise ValueError(f"num_recent_events must be >= 0 or None, not {limit}")
        key = _session_key(app_name, user_id, _normal_id(session_id))
        return await asyncio.to_thread(self._read, key, app_name, user_id, limit, after)

    def _read(
        self, key: str, app_name: str, user_id: str, limit: int | None, after: float | None
    ) -> Session | None:
        lookup = _Lookup(self._store.sync)
        view = _view(lookup, key, app_name, user_id)
        if view is None:
            return None
        transcript = self._transcript(key, lookup[key])
        events, pending = _read_window(transcript, view.fields["applied"], limit, after)
        view.replay(pending)  # in memory only: a read writes nothing
        return view.session([_to_event(record) for record in events])

    async def list_sessions(
        self,
        *,
        app_name: str,
        user_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> FlatstateListSessionsResponse:
        """The sessions of an app (of one user, or of all), least recently updated first,
        with their state and without events. With ``page_size``, one page of them and the
        ``next_page_token`` to pass as ``page_token`` for the next (None after the last)."""
        if page_size is not None and (not isinstance(page_size, int) or page_size < 1):
            raise ValueError(f"page_size is a positive integer or None, not {page_size!r}")
        start = _decode_token(page_token) if page_token is not None else None
        snapshot = await self._store.snapshot()
        prefix = f"adk:s:{_escape(app_name)}:" + (
            f"{_escape(user_id)}:" if user_id is not None else ""
        )
        canon_prefix = self._canonical(prefix + "x")[:-1]
        keys = snapshot.sorted_keys()
        app_state = _state_of(snapshot.get(self._canonical(_app_key(app_name))))
        user_states: dict[str, dict[str, Any]] = {}
        found: list[Session] = []
        for index in range(bisect.bisect_left(keys, canon_prefix), len(keys)):
            key = keys[index]
            if not key.startswith(canon_prefix):
                break
            fields = thaw(snapshot[key]["adk"])
            owner = fields["user"]
            if owner not in user_states:
                user_key = self._canonical(_user_key(app_name, owner))
                user_states[owner] = _state_of(snapshot.get(user_key))
            view = _View(snapshot[key]["sessionId"], fields, app_state, user_states[owner])
            found.append(view.session([]))
        found.sort(key=_order)
        if start is not None:
            found = found[bisect.bisect_right([_order(s) for s in found], start) :]
        next_token = None
        if page_size is not None and len(found) > page_size:
            found = found[:page_size]
            next_token = _encode_token(_order(found[-1]))
        return FlatstateListSessionsResponse(sessions=found, next_page_token=next_token)

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The ``user:`` state of one user of an app, keys without the prefix."""
        entry = await self._store.get(_user_key(app_name, user_id))
        return _state_of(entry)

    # -- deleting --------------------------------------------------------------
    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete a session (its transcript is archived, as flatstate's deletes do);
        deleting one that does not exist does nothing."""
        await self._store.delete(_session_key(app_name, user_id, _normal_id(session_id)))

    # -- appending -------------------------------------------------------------
    async def append_event(self, session: Session, event: Event) -> Event:
        """Store ``event`` and apply its state delta, unless it is partial.

        Raises ``SessionNotFoundError`` for a session that is not stored and
        ``StaleSessionError`` when ``session`` is older than the stored one (another
        append came first: get the session again and retry).
        """
        if event.partial:
            return event
        self._apply_temp_state(session, event)
        event = self._trim_temp_delta_state(event)
        key = _session_key(session.app_name, session.user_id, session.id)
        dumped = event.model_dump(mode="json", exclude_none=True)
        actions = dumped.get("actions")
        if isinstance(actions, dict) and "state_delta" in actions:
            actions["state_delta"] = _json_safe(actions["state_delta"])
        record = {"type": EVENT_TYPE, "event": dumped}
        marker = getattr(session, "_storage_update_marker", None)
        for _ in range(MAX_ROUNDS):
            written = await asyncio.to_thread(
                self._write, key, record, marker, session.last_update_time
            )
            await self._store.update(_apply(key, session.app_name, session.user_id, written))
            if written.appended:
                break
        else:
            raise ConflictError(key, f"no append succeeded in {MAX_ROUNDS} rounds")
        session.last_update_time = event.timestamp
        session._storage_update_marker = written.marker
        return self._commit_event_to_session(session, event)

    def _write(
        self, key: str, record: dict[str, Any], marker: str | None, last_update_time: float
    ) -> _Written:
        """On a worker thread: append ``record`` if the session is current and every
        earlier event applied; otherwise say which events to apply first."""
        sync = self._store.sync
        entry = sync.get(key)
        if entry is None:
            raise SessionNotFoundError(f"Session not found: {key}")
        transcript = self._transcript(key, entry)
        found: dict[str, Any] = {}

        def current() -> bool:  # runs under the transcript's lock
            entry = sync.get(key)
            if entry is None:
                raise SessionNotFoundError(f"Session not found: {key}")
            fields = entry["adk"]
            leaf = transcript.leaf_id
            found["applied"], found["leaf"] = fields["applied"], leaf
            if leaf != fields["applied"]:
                return False
            stored = f"{entry['sessionId']}:{fields['revision']}"
            if (marker is not None and marker != stored) or (
                marker is None and fields["lastUpdateTime"] > last_update_time
            ):
                raise StaleSessionError(
                    f"Session {fields['id']} was modified in storage after this copy was read "
                    f"(stored revision {stored}, this copy's {marker or last_update_time}); "
                    "get the session again and retry the append"
                )
            found["marker"] = f"{entry['sessionId']}:{fields['revision'] + 1}"
            return True

        ids = transcript.append_many([record], guard=current)
        if ids:
            return _Written(found["leaf"], [dict(record, id=ids[0])], True, found["marker"])
        return _catch_up(transcript, found["applied"], found["leaf"])

    # -- closing ---------------------------------------------------------------
    async def aclose(self) -> None:
        """Close the store, if the service opened it (a shared store stays open)."""
        if self._owned and not self._closed:
            self._closed = True
            await self._store.aclose()
        self._closed = True

    def close(self) -> _Closed:
        """Close at once, from sync code; ``await service.close()`` works as well."""
        if self._owned and not self._closed:
            self._store.sync.close()
        self._closed = True
        return _Closed()

    async def __aenter__(self) -> FlatstateSessionService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<FlatstateSessionService {self._store.sync.location}>"


class _Lookup(Mapping[str, Any]):
    """The sync store read as a mapping of bare keys (what :func:`_view` reads through)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getitem__(self, key: str) -> Any:
        entry = self._store.get(key)
        if entry is None:
            raise KeyError(key)
        return entry

    def get(self, key: str, default: Any = None) -> Any:
        entry = self._store.get(key)
        return default if entry is None else entry

    def __iter__(self) -> Any:
        raise TypeError("not iterable")

    def __len__(self) -> int:
        raise TypeError("no length")


def _catch_up(transcript: TranscriptLike, applied: str | None, leaf: str | None) -> _Written:
    """The events after ``applied``, to apply before appending (a crash or a concurrent
    writer left them); when the transcript no longer holds ``applied``, adopt its leaf."""
    _, pending = _read_window(transcript, applied, 0, None)
    if pending or applied is None:
        return _Written(applied, list(pending), False)
    if _position(_event_records(list(transcript.iter_entries())), applied) is None:
        return _Written(applied, [], False, adopt=leaf)
    return _Written(applied, [], False)


def _order(session: Session) -> tuple[float, str, str]:
    return (session.last_update_time, session.user_id, session.id)


def _encode_token(order: tuple[float, str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(order)).encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[float, str, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        when, user, session_id = raw
        if isinstance(when, int | float) and isinstance(user, str) and isinstance(session_id, str):
            return (float(when), user, session_id)
    except (ValueError, TypeError, binascii.Error):
        pass
    raise ValueError(
        f"page_token {token[:40]!r} is not one this service issued; pass the "
        "next_page_token of the page before, or None for the first page"
    )


def location_from_uri(uri: str) -> str:
    """The store location a service URI names: ``flatstate:///abs/path`` (the path;
    ``%``-escapes decoded) or ``flatstate+postgresql://...`` (the PostgreSQL URL)."""
    parts = urlsplit(uri)
    if parts.scheme == f"{SCHEME}+postgresql":
        return uri[len(SCHEME) + 1 :]
    shown = _redacted(uri)
    if parts.scheme != SCHEME:
        raise InvalidLocation(shown, f"the scheme is {SCHEME}:// or {SCHEME}+postgresql://")
    if parts.netloc not in ("", "localhost"):
        raise InvalidLocation(
            shown,
            f"{urlsplit(shown).netloc!r} stands where a host would; an absolute path takes three "
            f"slashes, as in {SCHEME}:///var/lib/agent-state",
        )
    if parts.query or parts.fragment:
        raise InvalidLocation(shown, "a flatstate URI takes no query or fragment")
    path = unquote(parts.path)
    if not path.startswith("/") or path == "/":
        raise InvalidLocation(shown, f"name a state directory, as in {SCHEME}:///path/to/state")
    return path


def _redacted(uri: str) -> str:
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    userinfo, _, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.split(':', 1)[0]}@{host}").geturl()


def _from_uri(uri: str, **kwargs: Any) -> FlatstateSessionService:
    """ADK's registry calls this for ``--session_service_uri flatstate:///...``."""
    kwargs.pop("agents_dir", None)  # the CLI passes its agents directory to every factory
    return FlatstateSessionService(location_from_uri(uri), **kwargs)


for _scheme in (SCHEME, f"{SCHEME}+postgresql"):
    get_service_registry().register_session_service(_scheme, _from_uri)
