"""Where each agent's flatstate state lives, for the commands that move whole states.

A flatstate location holds one agent or several: a state directory (``sessions.sqlite``
inside) is one agent; a directory of state directories (what ``import-openclaw`` writes) is
one per subdirectory; a ``postgresql://`` URL that names a ``namespace`` is one store (of
the default agent, ``main``), and one that names none is every namespace of its schema, each
the agent of its name. Each agent is a
:class:`Place`: the session store's location, and the local directory of the transcripts,
``auth-profiles.json`` and ``facts.sqlite`` that stay beside it. On PostgreSQL the auth
profiles are in the database instead: :func:`read_auth` and :func:`write_auth` move an
agent's auth document whichever of the two holds it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from flatstate._open import POSTGRES_SCHEMES
from flatstate.backends.sqlite import DB_FILENAME, TRANSCRIPTS_DIRNAME
from flatstate.errors import TranscriptNotEmpty
from flatstate.files import atomic_write, check_location
from flatstate.keys import DEFAULT_AGENT_ID, normalize_agent_id

if TYPE_CHECKING:
    from flatstate.backends.postgres.transcripts import PgTranscripts
    from flatstate.store import SessionStore

__all__ = [
    "AUTH_FILENAME",
    "FACTS_FILENAME",
    "Lines",
    "Place",
    "destinations",
    "has_transcripts",
    "is_postgres",
    "read_auth",
    "read_transcripts",
    "sources",
    "transcript_files",
    "write_auth",
    "write_transcript",
]

AUTH_FILENAME = "auth-profiles.json"
FACTS_FILENAME = "facts.sqlite"


@dataclass(frozen=True)
class Place:
    """One agent's state: ``location`` opens its sessions (``open_store(location)``), and
    ``state_dir`` holds what is kept beside them."""

    agent_id: str
    location: str
    state_dir: str
    shown: str
    """``location`` for messages: a URL without its password."""

    @property
    def transcripts_dir(self) -> str:
        return os.path.join(self.state_dir, TRANSCRIPTS_DIRNAME)

    @property
    def auth_file(self) -> str:
        return os.path.join(self.state_dir, AUTH_FILENAME)

    @property
    def facts_file(self) -> str:
        return os.path.join(self.state_dir, FACTS_FILENAME)


def is_postgres(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES)


def _url_with(location: str, **params: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}{urlencode(params, quote_via=quote)}"


def _postgres_place(location: str, agent_id: str) -> Place:
    from flatstate.backends.postgres.dsn import resolve, split_dsn

    where = resolve(location, agent_id=agent_id, namespace=None, schema=None, state_dir=None)
    if "namespace" not in split_dsn(location)[1]:
        location = _url_with(location, namespace=where.namespace)
    return Place(agent_id, location, where.state_dir, where.redacted)


def _state_dir_place(state_dir: str, agent_id: str) -> Place:
    return Place(agent_id, state_dir, state_dir, state_dir)


def sources(location: str) -> list[Place]:
    """The agents a flatstate location holds (none is an error: nothing to read)."""
    check_location(location)
    if is_postgres(location):
        from flatstate.backends.postgres.catalog import namespaces
        from flatstate.backends.postgres.dsn import split_dsn

        if split_dsn(location)[1].get("namespace"):  # one store, of the default agent
            return [_postgres_place(location, DEFAULT_AGENT_ID)]
        return [
            _postgres_place(_url_with(location, namespace=ns), ns) for ns in namespaces(location)
        ]
    location = os.path.abspath(os.path.expanduser(location))
    if os.path.isfile(os.path.join(location, DB_FILENAME)):
        return [_state_dir_place(location, _agent_of(location))]
    try:
        names = sorted(os.listdir(location))
    except (FileNotFoundError, NotADirectoryError):
        names = []
    found = [
        _state_dir_place(os.path.join(location, name), name)
        for name in names
        if os.path.isfile(os.path.join(location, name, DB_FILENAME))
    ]
    if not found:
        raise FileNotFoundError(
            f"{location}: no flatstate state here (no {DB_FILENAME} in it or in a directory "
            "inside it); give a state directory, a directory of them or a postgresql:// URL"
        )
    return found


def _agent_of(state_dir: str) -> str:
    """The agent a lone state directory belongs to: the one its store was opened with."""
    from flatstate._open import open_store

    with open_store(state_dir, readonly=True) as store:
        return store.agent_id


def destinations(location: str, agent_ids: list[str], *, single: bool) -> list[Place]:
    """Where the agents ``agent_ids`` go in a flatstate location.

    ``single`` (the source named one store): the location itself is the one agent's place.
    Otherwise a directory gets a state directory per agent (``DEST/<id>``), and a
    PostgreSQL URL a namespace per agent, each with its own local state directory; a URL
    that names a namespace or a ``state_dir`` takes one agent only.
    """
    check_location(location)
    if is_postgres(location):
        from flatstate.backends.postgres.dsn import split_dsn

        own = split_dsn(location)[1]
        if len(agent_ids) > 1 and ({"namespace", "state_dir"} & own.keys()):
            named = " and ".join(sorted({"namespace", "state_dir"} & own.keys()))
            raise ValueError(
                f"the source holds {len(agent_ids)} agents but the destination URL names one "
                f"{named}: leave it out (each agent then gets namespace <agent id>) or copy "
                "one agent at a time"
            )
        if single and own.get("namespace"):
            return [_postgres_place(location, agent_ids[0])]
        return [_postgres_place(location, normalize_agent_id(a)) for a in agent_ids]
    location = os.path.abspath(os.path.expanduser(location))
    if single:
        return [_state_dir_place(location, agent_ids[0] if agent_ids else DEFAULT_AGENT_ID)]
    return [_state_dir_place(os.path.join(location, a), a) for a in agent_ids]


_EMPTY_AUTH = {"version": 1, "profiles": {}}


def read_auth(place: Place) -> dict[str, Any] | None:
    """The agent's auth document as stored (plain values), or None when it has none: no
    ``auth-profiles.json``, or no rows in the database (nor its auth tables)."""
    if not is_postgres(place.location):
        if not os.path.isfile(place.auth_file):
            return None
        from flatstate.auth.document import decode_document

        with open(place.auth_file, "rb") as f:
            return decode_document(place.auth_file, f.read())
    from flatstate.auth import open_auth_store
    from flatstate.errors import ReadOnlyStore
    from flatstate.frozen import thaw

    try:
        store = open_auth_store(place.location, agent_id=place.agent_id, readonly=True)
    except ReadOnlyStore:  # the auth tables were never created: nothing stored
        return None
    with store:
        doc = store.snapshot().agent
        if doc.corrupt is not None:
            raise doc.corrupt
        plain: dict[str, Any] = thaw(doc.raw)
    return None if plain == _EMPTY_AUTH else plain


def write_auth(place: Place, doc: dict[str, Any]) -> None:
    """Make ``doc`` the agent's whole auth document: the file (0600, atomically), or the
    rows of its namespace (one transaction)."""
    if not is_postgres(place.location):
        from flatstate.auth.document import encode_document
        from flatstate.files import atomic_write

        os.makedirs(place.state_dir, mode=0o700, exist_ok=True)
        atomic_write(place.auth_file, encode_document(doc), mode=0o600)
        return
    from flatstate.auth import open_auth_store
    from flatstate.frozen import thaw

    def replace(current: dict[str, Any]) -> bool:
        current.clear()
        current.update(thaw(doc))
        return True

    with open_auth_store(place.location, agent_id=place.agent_id, migrate=False) as store:
        store.update(replace)


Lines = Callable[[], Iterable[bytes]]
"""A transcript's JSONL lines (header first, each ending in a newline), read when called."""


def transcript_files(directory: str, exclude: str = "") -> Iterator[str]:
    """Transcripts and their archives in a sessions directory (not the store, locks or temps)."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(directory, name)
        if path == exclude or name.endswith((".lock", ".tmp")) or name.startswith("."):
            continue
        if ".jsonl" in name and os.path.isfile(path):
            yield path


def _rows(store: SessionStore, place: Place) -> PgTranscripts | None:
    """The transcripts a PostgreSQL store keeps in its rows (None for transcript files)."""
    if not is_postgres(place.location):
        return None
    from flatstate.backends.postgres import PostgresBackend

    backend = store.backend
    assert isinstance(backend, PostgresBackend)
    return backend.transcripts


def _file_lines(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from f


def read_transcripts(store: SessionStore, place: Place) -> list[tuple[str, Lines]]:
    """Every transcript of the agent at ``place`` (``store`` open on it), live and archived,
    as (file name, its lines): the files of its transcripts directory, or its rows."""
    rows = _rows(store, place)
    if rows is None:
        return [
            (os.path.basename(path), partial(_file_lines, path))
            for path in transcript_files(place.transcripts_dir)
        ]
    return [(row.name, rows.named(row.name, row.session_id).export_lines) for row in rows.listing()]


def write_transcript(
    store: SessionStore, place: Place, name: str, lines: Lines, *, replace: bool = True
) -> None:
    """Make ``lines`` the transcript ``name`` of the agent at ``place`` (``store`` open on
    it for writing): a file written atomically (0600), or rows filled in one transaction.
    One that is there already is replaced (the rows: moved aside under OpenClaw's backup
    name), or with ``replace`` false refused (TranscriptNotEmpty)."""
    rows = _rows(store, place)
    if rows is None:
        os.makedirs(place.transcripts_dir, mode=0o700, exist_ok=True)
        path = os.path.join(place.transcripts_dir, name)
        if not replace and os.path.exists(path):
            raise TranscriptNotEmpty(path, 0)
        atomic_write(path, lines(), mode=0o600)
        return
    try:
        rows.named(name).import_lines(lines())
    except TranscriptNotEmpty:
        if not replace:
            raise
        rows.archive(name, "bak", int(time.time() * 1000))
        rows.named(name).import_lines(lines())


def has_transcripts(store: SessionStore, place: Place) -> bool:
    rows = _rows(store, place)
    if rows is None:
        return any(transcript_files(place.transcripts_dir))
    return bool(rows.listing())
