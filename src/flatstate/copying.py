"""``flatstate copy``: a whole state (sessions, transcripts, auth profiles, facts) from any
location to any other, then a check that both sides hold the same.

Locations are those of :mod:`flatstate.places` (a state directory, a directory of them, a
``postgresql://`` URL), plus an OpenClaw state directory as a source, read as
:func:`flatstate.transfer.import_openclaw` reads it. The source is only read. A destination
that holds state is refused unless ``force``. The check (``verify``) reopens both sides and
compares, per agent, the number and a SHA-256 digest of the session entries, of the
transcript files and of the auth profiles (a file, or rows in PostgreSQL), and the number
of facts.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import msgspec

from flatstate._open import open_store
from flatstate._sqlite import open_file
from flatstate.auth.document import encode_document
from flatstate.errors import (
    CopyIncomplete,
    DestinationExists,
    FlatstateError,
    InvalidFact,
    InvalidLocation,
    ReadOnlyStore,
)
from flatstate.frozen import encode_json
from flatstate.places import (
    Place,
    destinations,
    is_postgres,
    read_auth,
    read_transcripts,
    sources,
    write_auth,
    write_transcript,
)

if TYPE_CHECKING:
    from flatstate.facts import FactStore

from flatstate.transfer import (
    AgentTransfer,
    Progress,
    Ticker,
    copy_entries,
    copy_private,
    holds,
    import_into,
)

__all__ = ["AgentCopy", "CopyReport", "Tally", "copy_state", "tally"]

FACTS_BATCH = 500
T = TypeVar("T")


class Tally(msgspec.Struct, frozen=True):
    """How many of one kind of thing an agent's state holds, and a digest of them all."""

    count: int
    digest: str


class AgentCopy(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: str
    source: str
    destination: str
    sessions: Tally
    transcripts: Tally
    auth_profiles: Tally
    facts: int
    vectors: int = 0
    """The facts' stored vectors (their embeddings travel with them)."""
    verified: bool | None
    """True when the destination was reread and matched; None when not checked."""
    mismatches: list[str] = []


class CopyReport(msgspec.Struct, frozen=True, kw_only=True):
    agents: list[AgentCopy]

    @property
    def verified(self) -> bool:
        return all(a.verified for a in self.agents)

    @property
    def mismatched(self) -> bool:
        return any(a.mismatches for a in self.agents)


@dataclass
class _Side:
    sessions: Tally
    transcripts: Tally
    auth_profiles: Tally
    facts: int
    vectors: int


def _is_openclaw(location: str) -> bool:
    if is_postgres(location):
        return False
    path = os.path.abspath(os.path.expanduser(location))
    return (
        path.endswith(".json")
        or os.path.basename(path) == "openclaw-agent.sqlite"
        or os.path.isdir(os.path.join(path, "agents"))
        or os.path.isdir(os.path.join(path, "sessions"))
    )


def tally(place: Place) -> tuple[Tally, Tally, Tally, int, int]:
    """Sessions, transcript files, auth profiles, live facts and their stored vectors of
    ``place``, read only."""
    h = hashlib.sha256()
    with open_store(place.location, readonly=True, agent_id=place.agent_id) as store:
        keys = sorted(store.keys())
        for key in keys:
            entry = store.get(key)
            h.update(encode_json(key) + b"\0" + encode_json(entry) + b"\n")
        sessions = Tally(len(keys), h.hexdigest())
        h = hashlib.sha256()
        found = sorted(read_transcripts(store, place), key=lambda named: named[0])
        for name, lines in found:
            h.update(name.encode() + b"\0")
            for line in lines():
                h.update(line)
        transcripts = Tally(len(found), h.hexdigest())
    profiles = 0
    h = hashlib.sha256()
    doc = read_auth(place)
    if doc is not None:
        profiles = len(doc.get("profiles") or {})
        # Top-level keys sorted: rows in the database give them back in an order of their own.
        h.update(encode_document({name: doc[name] for name in sorted(doc)}))
    auth = Tally(profiles, h.hexdigest())
    return sessions, transcripts, auth, *_facts_counts(place)


def _facts_counts(place: Place) -> tuple[int, int]:
    facts = _read_facts(place)
    if facts is None:
        return 0, 0
    with facts:
        return facts.count(), facts.stats().vectors


def _read_facts(place: Place) -> FactStore | None:
    """The agent's facts opened read-only, or None when it has none (no facts.sqlite, or no
    facts tables in the database)."""
    from flatstate.facts import open_facts

    if not is_postgres(place.location):
        if not os.path.isfile(place.facts_file):
            return None
        return open_facts(place.state_dir, readonly=True, create=False)
    try:
        return open_facts(place.location, readonly=True, create=False)
    except (ReadOnlyStore, FileNotFoundError):  # never created there
        return None


def _copy_facts(source: Place, target: Place) -> None:
    """Every fact: between two state directories the database file as one consistent
    snapshot (SQLite's online backup), else fact by fact, ids and times kept."""
    if is_postgres(source.location) or is_postgres(target.location):
        from flatstate.facts import open_facts

        src = _read_facts(source)
        if src is None:
            return
        where = target.location if is_postgres(target.location) else target.state_dir
        with src, open_facts(where) as dst:
            _in_batches(src.export(), dst.import_facts)
            _in_batches(src.export_vectors(), dst.import_vectors)
        return
    if not os.path.isfile(source.facts_file):
        return
    os.makedirs(target.state_dir, mode=0o700, exist_ok=True)
    partial = target.facts_file + ".copying"
    src_db = open_file(source.facts_file, readonly=True)
    try:
        dst_db = sqlite3.connect(partial)
        try:
            src_db.backup(dst_db)
        finally:
            dst_db.close()
    finally:
        src_db.close()
    os.chmod(partial, 0o600)
    os.replace(partial, target.facts_file)


def _check_vectors_fit(source: Place, target: Place) -> None:
    """Under ``force`` the destination may already hold vectors: every model the source has
    vectors of must have the same length there. Checked before anything is copied, since
    the vectors go in last; raises InvalidFact naming the model."""
    src = _read_facts(source)
    if src is None:
        return
    with src:
        theirs = src.vector_models()
    dst = _read_facts(target) if theirs else None
    if dst is None:
        return
    with dst:
        ours = dst.vector_models()
    for model, dims in sorted(theirs.items()):
        if ours.get(model, dims) != dims:
            raise InvalidFact(
                f"cannot copy into {target.shown}: the source's {model!r} vectors have {dims} "
                f"dimensions and the destination's have {ours[model]}. Copy into an empty "
                "destination, or delete the destination's facts first."
            )


def _same_place(source: Place, target: Place) -> bool:
    if is_postgres(source.location) or is_postgres(target.location):
        return source.shown == target.shown and source.agent_id == target.agent_id
    return os.path.realpath(source.state_dir) == os.path.realpath(target.state_dir)


def _in_batches(items: Iterable[T], store: Callable[[list[T]], object]) -> None:
    """Hand ``items`` to ``store`` FACTS_BATCH at a time (one transaction each)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= FACTS_BATCH:
            store(batch)
            batch = []
    if batch:
        store(batch)


def _copy_agent(source: Place, target: Place, progress: Progress | None) -> None:
    with open_store(source.location, readonly=True, agent_id=source.agent_id) as src:
        found = read_transcripts(src, source)
        tick = Ticker(source.agent_id, len(src) + len(found), progress)
        with open_store(target.location, agent_id=target.agent_id) as dst:
            copy_entries(src, dst, tick)
            for name, lines in found:
                write_transcript(dst, target, name, lines)
                tick()
    if is_postgres(source.location) or is_postgres(target.location):
        doc = read_auth(source)  # the profiles' rows, on PostgreSQL
        if doc is not None:
            write_auth(target, doc)
    elif os.path.isfile(source.auth_file):
        copy_private(source.auth_file, target.auth_file)
    _copy_facts(source, target)


def _compare(source: _Side, target: _Side) -> list[str]:
    problems = []
    for what in ("sessions", "transcripts", "auth_profiles"):
        mine, theirs = getattr(source, what), getattr(target, what)
        if mine != theirs:
            problems.append(
                f"{what.replace('_', ' ')}: {mine.count} in the source, {theirs.count} in the "
                f"destination{', with different contents' if mine.count == theirs.count else ''}"
            )
    for what in ("facts", "vectors"):
        mine, theirs = getattr(source, what), getattr(target, what)
        if mine != theirs:
            problems.append(f"{what}: {mine} in the source, {theirs} in the destination")
    return problems


def copy_state(
    source: str,
    destination: str,
    *,
    progress: Progress | None = None,
    force: bool = False,
    verify: bool = True,
) -> CopyReport:
    """Copy every agent's state at ``source`` to ``destination`` (see the module docstring).

    Raises :class:`~flatstate.errors.DestinationExists` before writing anything when a
    destination agent already holds state (without ``force``), and ``FileNotFoundError``
    for a source with no state in it. An error after the first write is raised as
    :class:`~flatstate.errors.CopyIncomplete`, naming the agent and the cause.
    """
    if _is_openclaw(source):
        imported, places = import_into(source, destination, progress=progress, force=force)
        return CopyReport(
            agents=[
                _imported(agent, target, verify and not force)
                for agent, target in zip(imported.agents, places, strict=True)
            ]
        )
    found = sources(source)
    single = len(found) == 1 and not _is_directory_of_states(source)
    targets = destinations(destination, [p.agent_id for p in found], single=single)
    for place, target in zip(found, targets, strict=True):
        if _same_place(place, target):
            raise InvalidLocation(
                target.shown,
                "is the source itself: a copy onto it would rewrite it from itself",
                "Copy to another location.",
            )
        if not force:
            facts, _ = _facts_counts(target)
            held = ", ".join(filter(None, [holds(target), f"{facts} facts" if facts else None]))
            if held:
                raise DestinationExists(target.shown, held, can_merge=False)
        else:
            _check_vectors_fit(place, target)
    for place, target in zip(found, targets, strict=True):
        try:
            _copy_agent(place, target, progress)
        except (FlatstateError, OSError) as exc:
            # The cause speaks of its own write; the copy around it may have written more.
            # (Both kinds name paths and ids only, never a secret.)
            cause = str(exc).replace(" Nothing was written.", "")
            raise CopyIncomplete(target.shown, target.agent_id, cause) from exc
    return CopyReport(
        agents=[
            _report(place, target, verify) for place, target in zip(found, targets, strict=True)
        ]
    )


def _report(source: Place, target: Place, verify: bool) -> AgentCopy:
    after = _Side(*tally(target))
    mismatches = []
    if verify:
        before = _Side(*tally(source))
        if before.transcripts != after.transcripts and _holds_every_transcript(source, target):
            before.transcripts = after.transcripts  # and older ones of its own besides
        mismatches = _compare(before, after)
    return _agent(source.shown, target, after, (not mismatches) if verify else None, mismatches)


def _transcript_digests(place: Place) -> dict[str, str]:
    with open_store(place.location, readonly=True, agent_id=place.agent_id) as store:
        digests = {}
        for name, lines in read_transcripts(store, place):
            h = hashlib.sha256()
            for line in lines():
                h.update(line)
            digests[name] = h.hexdigest()
        return digests


def _holds_every_transcript(source: Place, target: Place) -> bool:
    """Whether the destination holds each of the source's transcripts as it is there (a copy
    with ``force`` keeps the transcripts it replaced in the database, moved aside)."""
    theirs = _transcript_digests(target)
    return all(theirs.get(name) == digest for name, digest in _transcript_digests(source).items())


def _imported(agent: AgentTransfer, target: Place, verify: bool) -> AgentCopy:
    """An agent imported from OpenClaw: what the import wrote, reread from the destination."""
    after = _Side(*tally(target))
    mismatches = []
    if verify:
        for what, wrote, found in (
            ("sessions", agent.sessions, after.sessions.count),
            ("transcripts", agent.transcripts, after.transcripts.count),
        ):
            if wrote != found:
                mismatches.append(f"{what}: {wrote} written, {found} read back")
    return _agent(agent.source, target, after, (not mismatches) if verify else None, mismatches)


def _agent(
    source: str, target: Place, after: _Side, verified: bool | None, mismatches: list[str]
) -> AgentCopy:
    return AgentCopy(
        agent_id=target.agent_id,
        source=source,
        destination=target.shown,
        sessions=after.sessions,
        transcripts=after.transcripts,
        auth_profiles=after.auth_profiles,
        facts=after.facts,
        vectors=after.vectors,
        verified=verified,
        mismatches=mismatches,
    )


def _is_directory_of_states(location: str) -> bool:
    if is_postgres(location):
        from flatstate.backends.postgres.dsn import split_dsn

        return "namespace" not in split_dsn(location)[1]
    from flatstate.backends.sqlite import DB_FILENAME

    path = os.path.abspath(os.path.expanduser(location))
    return not os.path.isfile(os.path.join(path, DB_FILENAME))
