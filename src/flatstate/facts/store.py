"""``FactStore``: durable facts, deduplicated, ranked, decaying, on SQLite or PostgreSQL.

The logic lives here once; the statements live in a backend
(:mod:`~flatstate.facts.backend`): a state directory's ``facts.sqlite``
(:mod:`~flatstate.facts.sqlite`) or a namespace of a PostgreSQL database
(:mod:`~flatstate.facts.postgres`). Every write is one transaction of the
backend's, serialized with every other writer of the same facts, so that the
duplicate check and the insert see the same state: two processes (or hosts)
adding the same fact store it once, and two adding different facts lose
neither. Reads build immutable :class:`Fact` objects from the rows they
select and keep nothing: no cache to copy from or to invalidate, and a
process's memory does not grow with how often it recalls. Only the access
counters of recent recalls wait in memory, bounded, for about a second
(``access``).
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import msgspec

from flatstate.errors import FactNotFound, InvalidFact, ReadOnlyStore, StoreClosed
from flatstate.facts.access import AccessLog
from flatstate.facts.backend import FILLED, FactsBackend, Row, VectorSearch
from flatstate.facts.model import (
    DECAY_TTL_MS,
    DecayReport,
    Fact,
    Hit,
    NewFact,
    checked_import,
    longer_class,
    ttl_of,
    validated,
)
from flatstate.facts.recall import Ranked, choose, pool_size, rank
from flatstate.facts.vectors import DUPLICATE_SIMILARITY, Embed
from flatstate.files import check_location
from flatstate.frozen import NotJSON, check_text
from flatstate.model import Clock, now_ms

__all__ = ["FactStats", "FactStore", "open_facts"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# Confidence under this is not worth recalling: decay() deletes the fact.
CONFIDENCE_FLOOR = 0.1
# Past this share of its TTL a fact's confidence halves (once per TTL window).
DECAY_HALVE_AT = 0.75
# How far from 1 an imported vector's length may be (float32 rounding of a unit vector).
UNIT_TOLERANCE = 1e-3

# Positions in a backend row (see backend.FIELDS).
_RECALLS, _ACCESSED, _SUPERSEDED_AT, _TAGS = 16, 17, 18, 20

_UPDATABLE = frozenset(NewFact.__struct_fields__) - {"supersedes"}

_tags_decoder = msgspec.json.Decoder(tuple[str, ...])
_encode = msgspec.json.encode


def _tags_text(tags: Sequence[str]) -> str | None:
    return _encode(tuple(tags)).decode() if tags else None


class FactStats(msgspec.Struct, frozen=True, gc=False):
    """Counts and sizes of one facts store, for ``flatstate facts stats``."""

    path: str
    schema_version: int
    live: int
    superseded: int
    expired: int
    total: int
    by_class: tuple[tuple[str, int], ...]
    vectors: int
    disk_bytes: int


class FactStore:
    """Durable facts on a backend. Open with :func:`open_facts`.

    Thread-safe: one lock serializes this object's use of its backend (one
    connection). Several processes, on one host (SQLite) or many
    (PostgreSQL), may open the same facts.
    """

    def __init__(
        self,
        backend: FactsBackend,
        *,
        embed: Embed | None = None,
        embed_model: str = "default",
        clock: Clock | None = None,
    ) -> None:
        self.backend = backend
        self.path = backend.location
        self.readonly = backend.readonly
        self._clock: Clock = clock or now_ms
        self._lock = threading.RLock()
        self._closed = False
        self._access = AccessLog()
        self._vectors: VectorSearch | None = None
        if embed is not None:
            try:
                self._vectors = backend.read(lambda: backend.vectors(embed, embed_model))
            except BaseException:
                backend.close()
                raise

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        """Write the waiting access counters and close the database."""
        with self._lock:
            if not self._closed:
                try:
                    self.flush()
                finally:
                    self._closed = True
                    self.backend.close()

    def __enter__(self) -> FactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FactStore {self.path}{' (closed)' if self._closed else ''}>"

    @property
    def vectors(self) -> bool:
        """Whether vector search is on (an embedding function was given)."""
        return self._vectors is not None

    def _check_open(self, write: bool = False) -> None:
        if self._closed:
            raise StoreClosed(self.path)
        if write and self.readonly:
            raise ReadOnlyStore(self.path, "the facts were opened read-only")

    def _build(self, row: Row) -> Fact:
        """A Fact from a backend row, with this process's waiting recalls counted in."""
        values = list(row)
        tags = values[_TAGS]
        values[_TAGS] = _tags_decoder.decode(tags) if tags else ()
        if self._access.waiting:
            values[_RECALLS], values[_ACCESSED] = self._access.apply(
                values[0], values[_RECALLS], values[_ACCESSED]
            )
        return Fact(*values[1:])

    def _by_seq(self, seq: int) -> Fact:
        return self._build(self.backend.by_seq(seq))

    # -- writes ------------------------------------------------------------------
    def add(self, text: str, **fields: Any) -> Fact:
        """Store a fact, or return the live fact it duplicates (confirmed anew).

        ``fields`` are those of :class:`NewFact`. A duplicate is a fact in the
        same scope that is not superseded and has the same text, the same
        normalized text (case, spacing, edge punctuation), or, with vectors on,
        an embedding at least 0.95 cosine-similar. Restating a fact confirms
        it: ``last_confirmed_at`` becomes now, its TTL starts over, and it
        keeps the higher confidence and importance and the longer-lived decay
        class of the two; fields it lacked are filled in.

        Raises InvalidFact (nothing written) and FactNotFound (``supersedes``
        names no fact).
        """
        return self.add_many([NewFact(text=text, **fields)])[0]

    def add_many(self, facts: Iterable[NewFact | str]) -> tuple[Fact, ...]:
        """Add several facts in one transaction: all are stored, or none. See :meth:`add`."""
        self._check_open(write=True)
        items = [validated(NewFact(text=f) if isinstance(f, str) else f) for f in facts]
        with self._lock:
            self._check_open(write=True)
            vectors = self._vectors
            # Embed before the write transaction: a model call may be slow.
            blobs = (
                self.backend.read(lambda: [vectors.encode(new.text) for new, _ in items])
                if vectors
                else None
            )
            now = self._clock()
            return self.backend.write(
                lambda: tuple(
                    self._add_one(new, digest, now, blobs[i] if blobs else None)
                    for i, (new, digest) in enumerate(items)
                )
            )

    def _add_one(self, new: NewFact, digest: str, now: int, blob: Any) -> Fact:
        backend = self.backend
        assert new.decay_class is not None  # settled by validated()
        seq = backend.find_duplicate(digest, new.scope, new.scope_target, new.text)
        if seq is None and blob is not None and self._vectors is not None:
            for near, _similarity in self._vectors.nearest(blob, now, 1, DUPLICATE_SIMILARITY):
                seq = near
        if seq is not None:
            fact = self._confirm(seq, new, now)
        else:
            ttl = ttl_of(new.decay_class)
            fact = Fact(
                str(uuid.uuid4()),
                new.text,
                new.why,
                new.category,
                float(new.importance),
                new.entity,
                new.key,
                new.value,
                new.source,
                now,
                new.decay_class,
                None if ttl is None else now + ttl,
                None,
                float(new.confidence),
                digest,
                0,
                None,
                None,
                None,
                tuple(new.tags),
                new.scope,
                new.scope_target,
                new.session_key,
                new.entry_id,
            )
            row = list(msgspec.structs.astuple(fact))
            del row[15:17]  # the counters live in fact_access
            row[17] = _tags_text(fact.tags)
            seq = backend.insert(row)
            if blob is not None and self._vectors is not None:
                self._vectors.put(seq, blob)
        if new.supersedes is not None and new.supersedes != fact.id:
            self._supersede(new.supersedes, fact.id, now)
        return fact

    def _confirm(self, seq: int, new: NewFact, now: int) -> Fact:
        """Renew the fact at ``seq`` because ``new`` restated it; return it as it now is."""
        assert new.decay_class is not None
        decay_class = longer_class(self.backend.decay_class_of(seq), new.decay_class)
        ttl = ttl_of(decay_class)
        filled = [_tags_text(new.tags) if name == "tags" else getattr(new, name) for name in FILLED]
        self.backend.confirm(
            seq,
            now,
            decay_class,
            None if ttl is None else now + ttl,
            new.confidence,
            new.importance,
            filled,
        )
        return self._by_seq(seq)

    def _supersede(self, old_id: str, new_id: str, now: int) -> Fact:
        seq = self.backend.supersede(old_id, new_id, now)
        if seq is not None:
            return self._by_seq(seq)
        exists, by = self.backend.superseded_by(old_id)
        if not exists:
            raise FactNotFound(old_id, self.path)
        raise InvalidFact(f"fact {old_id!r} was already superseded by {by!r}")

    def supersede(self, old: Fact | str, new: Fact | str) -> Fact:
        """Mark ``old`` as replaced by ``new`` (facts or ids); return ``old`` as it now is.

        A superseded fact is kept, with ``superseded_at`` and ``superseded_by``
        set, but recall, search, list and count skip it and it leaves the
        full-text index. Raises FactNotFound, or InvalidFact if ``old`` is
        already superseded or is ``new``.
        """
        old_id = old.id if isinstance(old, Fact) else old
        new_id = new.id if isinstance(new, Fact) else new
        if old_id == new_id:
            raise InvalidFact("a fact cannot supersede itself")

        def write() -> Fact:
            if not self.backend.exists(new_id):
                raise FactNotFound(new_id, self.path)
            return self._supersede(old_id, new_id, self._clock())

        with self._lock:
            self._check_open(write=True)
            return self.backend.write(write)

    def update(self, fact_id: str, **changes: Any) -> Fact:
        """Correct fields of a fact in place (no history: use supersede for that).

        ``changes`` are fields of :class:`NewFact` but ``supersedes``. A new
        ``text`` gets a new normalized hash (and loses its vector until
        :meth:`embed_missing`); a new ``decay_class`` moves the expiry to the
        new TTL from the last confirmation. Raises FactNotFound and InvalidFact.
        """
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise InvalidFact(f"cannot update {', '.join(sorted(unknown))}")

        def write() -> Fact:
            current = self._get(fact_id)
            if current is None:
                raise FactNotFound(fact_id, self.path)
            fields = {name: getattr(current, name) for name in _UPDATABLE}
            fields.update(changes)
            new, digest = validated(NewFact(**fields))
            sets: dict[str, Any] = {name: getattr(new, name) for name in changes}
            sets["normalized_hash"] = digest
            if "tags" in sets:
                sets["tags"] = _tags_text(new.tags)
            if "decay_class" in sets:
                ttl = ttl_of(str(new.decay_class))
                anchor = current.last_confirmed_at or current.created_at
                sets["expires_at"] = None if ttl is None else anchor + ttl
                sets["decayed_at"] = None
            return self._by_seq(self.backend.update(fact_id, sets))

        with self._lock:
            self._check_open(write=True)
            return self.backend.write(write)

    def forget(self, fact_id: str) -> bool:
        """Delete a fact for good (its index entry, counters and vector too); False if none."""
        with self._lock:
            self._check_open(write=True)
            return self.backend.write(lambda: self.backend.delete(fact_id))

    def decay(self) -> DecayReport:
        """Age the facts by the clock: delete the expired, halve the fading, drop the faint.

        - a fact whose ``expires_at`` has passed is deleted (permanent facts
          have none);
        - a fact past 75% of its class's TTL has its confidence halved, once
          per TTL window (a restatement starts a new window);
        - a fact whose confidence is below 0.1 is deleted.

        The outcome depends on the clock, not on how often this runs.
        """
        backend = self.backend

        def write() -> DecayReport:
            expired = backend.expire(now)
            halved = 0
            for name, ttl in DECAY_TTL_MS.items():
                if ttl is None:
                    continue
                # Past 75% of the TTL means under 25% of it left before
                # expires_at. The window began one TTL before expires_at; a
                # halving at or before that instant belongs to the last one.
                halved += backend.halve(name, now + round(ttl * (1 - DECAY_HALVE_AT)), ttl, now)
            dropped = backend.drop_faint(CONFIDENCE_FLOOR)
            return DecayReport(expired=expired, halved=halved, dropped=dropped)

        with self._lock:
            self._check_open(write=True)
            self.flush()
            now = self._clock()
            return backend.write(write)

    def vacuum(self) -> None:
        """Compact the database: on SQLite merge the full-text index's segments, rebuild the
        file and truncate the WAL (holding the write lock meanwhile); on PostgreSQL
        ``VACUUM (ANALYZE)`` the facts tables."""
        with self._lock:
            self._check_open(write=True)
            self.flush()
            self.backend.vacuum()

    def embed_missing(self, batch: int = 256) -> int:
        """Embed the facts that lack a vector of this store's model; return how many.

        Facts added by a process without vectors, or whose text was edited,
        have none until this runs. Without vectors on, it does nothing.
        """
        vectors = self._vectors
        if vectors is None:
            return 0
        backend = self.backend
        done = 0
        while True:
            with self._lock:
                self._check_open(write=True)
                todo = backend.read(lambda: vectors.missing(batch))
                if not todo:
                    return done
                done += backend.write(self._embedder(vectors, todo))

    def _embedder(
        self, vectors: VectorSearch, todo: Sequence[tuple[int, str]]
    ) -> Callable[[], int]:
        """The write that stores the vectors of ``todo``, embedded now (before the write)."""
        backend = self.backend
        blobs = backend.read(lambda: [(seq, vectors.encode(text)) for seq, text in todo])

        def write() -> int:
            stored = 0
            for seq, blob in blobs:
                # The fact may have gone or been superseded since it was read.
                if backend.is_live(seq):
                    vectors.put(seq, blob)
                    stored += 1
            return stored

        return write

    def flush(self) -> None:
        """Write the access counters of recent recalls now (see ``access``).

        Recall does this about once a second; close(), decay(), vacuum() and
        stats() do it too.
        """
        with self._lock:
            if not self._closed and not self.readonly:
                self._flush_access()

    def _flush_access(self) -> None:
        backend = self.backend
        backend.wait_access()
        self._access.flush(lambda rows: backend.write(lambda: backend.write_access(rows)))

    def _flush_access_soon(self) -> None:
        """The waiting counters written without making the caller wait, where the backend
        can (``access``); else now."""
        backend = self.backend
        if not backend.background_access:
            self._flush_access()
            return
        rows = self._access.hand_off()
        if rows:
            backend.write_access_later(rows, self._access.settle)

    # -- reads -------------------------------------------------------------------
    def _get(self, fact_id: str) -> Fact | None:
        found = self.backend.by_id(fact_id)
        return self._build(found) if found else None

    def get(self, fact_id: str) -> Fact | None:
        """The fact with this id, live or not; None if there is none."""
        with self._lock:
            self._check_open()
            return self.backend.read(lambda: self._get(fact_id))

    def resolve(self, ref: str) -> Fact:
        """The fact whose id is ``ref``, or the only one whose id starts with it (4+ chars).

        For people, who copy the 8 characters a table shows. Raises FactNotFound
        when no fact, or more than one, matches.
        """

        def read() -> Fact | None:
            fact = self._get(ref)
            if fact is None and len(ref) >= 4:
                rows = self.backend.by_prefix(ref)
                if len(rows) == 1:
                    fact = self._build(rows[0])
            return fact

        with self._lock:
            self._check_open()
            found = self.backend.read(read)
        if found is None:
            raise FactNotFound(ref, self.path)
        return found

    def list(self, n: int = 20) -> tuple[Fact, ...]:
        """The ``n`` newest live facts, newest first."""
        with self._lock:
            self._check_open()
            count = _count("n", n)
            rows = self.backend.read(lambda: self.backend.newest(self._clock(), count))
            return tuple(map(self._build, rows))

    def export(self, batch: int = 500) -> Iterator[Fact]:
        """Every fact, live, superseded and expired alike, oldest first, read a page at a
        time: a whole store to hand to :meth:`import_facts` of another."""
        if _count("batch", batch) < 1:
            raise ValueError(f"batch is at least 1, not {batch}")
        after = 0
        while True:
            with self._lock:
                self._check_open()
                rows = self.backend.read(partial(self.backend.page, after, batch))
                facts = [self._build(row) for row in rows]
            yield from facts
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def import_facts(self, facts: Iterable[Fact]) -> int:
        """Store ``facts`` exactly as they are (ids, times, counters, supersessions), in one
        transaction; a fact whose id is here already is left as it is. How many were stored.
        Their vectors travel apart: :meth:`export_vectors` and :meth:`import_vectors`."""
        self._check_open(write=True)
        items = [checked_import(fact) for fact in facts]
        with self._lock:
            self._check_open(write=True)

            def store() -> int:
                backend, stored, counters = self.backend, 0, []
                for fact in items:
                    if backend.exists(fact.id):
                        continue
                    row = list(msgspec.structs.astuple(fact))
                    del row[15:17]  # the counters live in fact_access
                    row[17] = _tags_text(fact.tags)
                    seq = backend.insert(row)
                    if fact.recall_count or fact.last_accessed_at:
                        counters.append((seq, fact.recall_count, fact.last_accessed_at or 0))
                    stored += 1
                if counters:
                    backend.write_access(counters)
                return stored

            return self.backend.write(store)

    def vector_models(self) -> dict[str, int]:
        """Every embedding model that has vectors stored here, with their length."""
        with self._lock:
            self._check_open()
            return self.backend.read(self.backend.vector_models)

    def export_vectors(self, batch: int = 500) -> Iterator[tuple[str, str, Sequence[float]]]:
        """Every stored vector as (fact id, model, unit vector), a page at a time: what
        :meth:`import_vectors` of another store takes. Needs no embedding function and no
        vector extension (the vectors are plain columns)."""
        after = 0
        while True:
            with self._lock:
                self._check_open()
                rows = self.backend.read(partial(self.backend.vector_page, after, batch))
            for _seq, fact_id, model, vector in rows:
                yield fact_id, model, vector
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def import_vectors(self, vectors: Iterable[tuple[str, str, Sequence[float]]]) -> int:
        """Store vectors another store exported, in one transaction, for the facts here with
        those ids that are not superseded and have no vector yet (one that has is left as it
        is); how many were stored. The numbers are kept as they are, so a search here ranks
        as it did there. Raises InvalidFact, storing none, for a vector that is not finite
        and of unit length, or whose length differs from its model's vectors here."""
        self._check_open(write=True)
        items = [_exported_vector(item) for item in vectors]
        with self._lock:
            self._check_open(write=True)

            def store() -> int:
                backend, stored = self.backend, 0
                dims: dict[str, int | None] = {}
                for fact_id, model, vector in items:
                    if model not in dims:
                        dims[model] = backend.vector_dims(model)
                    if dims[model] is None:
                        dims[model] = len(vector)
                    elif dims[model] != len(vector):
                        raise InvalidFact(
                            f"the {model!r} vector of fact {fact_id} has {len(vector)} "
                            f"dimensions but that model's vectors here have {dims[model]}"
                        )
                    row = backend.by_id(fact_id)
                    if row is None or row[_SUPERSEDED_AT] is not None:
                        continue
                    stored += backend.put_vector_as_is(row[0], model, vector)
                return stored

            return self.backend.write(store)

    def lookup(self, entity: str, key: str | None = None, *, limit: int = 50) -> tuple[Fact, ...]:
        """Live facts about ``entity`` (and ``key``, if given), newest first; case-insensitive."""
        if not _storable(entity) or (key is not None and not _storable(key)):
            return ()  # text no fact can hold (adds refuse a lone surrogate)
        with self._lock:
            self._check_open()
            count = _count("limit", limit)
            rows = self.backend.read(lambda: self.backend.lookup(entity, key, self._clock(), count))
            return tuple(map(self._build, rows))

    def count(self) -> int:
        """How many live facts there are (not superseded, not expired): one COUNT query."""
        with self._lock:
            self._check_open()
            return self.backend.read(lambda: self.backend.count_live(self._clock()))

    def _rank(self, query: str, now: int, pool: int) -> Ranked:
        return self.backend.read(
            lambda: rank(self.backend, self._vectors, query, now, pool, self._build)
        )

    def search(self, query: str, *, limit: int = 10) -> tuple[Hit, ...]:
        """Live facts ranked for ``query``, with their scores; a read (no counters change).

        ``query`` may be any text: it is split into words and never parsed
        as query syntax (see ``query``).
        """
        with self._lock:
            self._check_open()
            count = _count("limit", limit)
            ranked = self._rank(query, self._clock(), max(count, 1))
        return tuple(hit for _, hit in ranked[:count])

    def recall(
        self,
        query: str,
        *,
        budget_tokens: int = 800,
        limit: int | None = None,
        preview_chars: int = 300,
    ) -> tuple[Fact, ...]:
        """The best live facts for ``query`` that fit ``budget_tokens``, best first.

        Each fact costs the tokens of its prompt line
        (:func:`~flatstate.facts.model.render_fact` with ``preview_chars``)
        plus one for its newline. Recalled facts are returned with
        ``recall_count`` + 1 and ``last_accessed_at`` = now; the database has
        those counts within about a second (see :meth:`flush`).
        """
        with self._lock:
            self._check_open()
            now = self._clock()
            limit = None if limit is None else _count("limit", limit)
            ranked = self._rank(query, now, pool_size(limit))
            chosen = choose(ranked, budget_tokens, limit, preview_chars)
            if self.readonly:
                return tuple(hit.fact for _, hit in chosen)
            access = self._access
            replace = msgspec.structs.replace
            out = []
            for seq, hit in chosen:
                access.record(seq, now)
                fact = hit.fact
                out.append(replace(fact, recall_count=fact.recall_count + 1, last_accessed_at=now))
            if access.due():
                self._flush_access_soon()
            return tuple(out)

    def stats(self) -> FactStats:
        """Counts by state and decay class, vectors stored, and bytes on disk."""
        with self._lock:
            self._check_open()
            self.flush()
            backend = self.backend
            now = self._clock()
            total, superseded, expired, by_class, vectors = backend.read(lambda: backend.stats(now))
            disk = backend.read(backend.disk_bytes)
        return FactStats(
            path=self.path,
            schema_version=backend.schema_version,
            live=total - superseded - expired,
            superseded=superseded,
            expired=expired,
            total=total,
            by_class=by_class,
            vectors=vectors,
            disk_bytes=disk,
        )


_MOST = 2**31 - 1  # any count past this is "all": SQL takes it, no store holds more


def _count(name: str, value: Any) -> int:
    """A count argument as a query takes it: an int, below 0 counting as 0 (none)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} is a whole number, not {value!r:.40}")
    return min(max(value, 0), _MOST)


def _storable(text: Any) -> bool:
    """Whether ``text`` is text a fact could hold: a str that UTF-8 can carry."""
    if not isinstance(text, str):
        raise InvalidFact(f"an entity or key to look up is text, not {type(text).__name__}")
    if text.isascii():
        return True
    try:
        check_text(text)
    except NotJSON:
        return False
    return True


def _exported_vector(item: Any) -> tuple[str, str, list[float]]:
    """One (fact id, model, vector) of :meth:`FactStore.export_vectors`, checked; raises
    InvalidFact naming what is wrong."""
    try:
        fact_id, model, numbers = item
        vector = [float(x) for x in numbers]
    except (TypeError, ValueError) as exc:
        raise InvalidFact(
            f"a vector to import must be (fact id, model, numbers), not {item!r:.80}"
        ) from exc
    if not isinstance(fact_id, str) or not isinstance(model, str) or "\x00" in model:
        raise InvalidFact(
            f"a vector to import needs a fact id and a model name as text, got "
            f"{fact_id!r:.40} and {model!r:.40}"
        )
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if not vector or not math.isfinite(norm) or abs(norm - 1.0) > UNIT_TOLERANCE:
        raise InvalidFact(
            f"the {model!r} vector of fact {fact_id} is not a finite unit vector; "
            "import vectors that export_vectors() gave"
        )
    return fact_id, model, vector


def open_facts(
    location: str | os.PathLike[str],
    *,
    embed: Embed | None = None,
    embed_model: str = "default",
    clock: Clock | None = None,
    lock_timeout: float = 30.0,
    synchronous: str = "normal",
    readonly: bool = False,
    create: bool = True,
    **postgres: Any,
) -> FactStore:
    """Open (or create) the facts of a state directory, or of a PostgreSQL namespace.

    ``location`` is a state directory (its ``facts.sqlite``) or a
    ``postgresql://`` URL (the facts of one namespace in that database: see
    :mod:`~flatstate.facts.postgres`, whose options ``agent_id``,
    ``namespace``, ``schema`` and ``connect_timeout`` are accepted here).

    - ``embed``: turns on vector search (sqlite-vec from ``flatstate[vec]``;
      pgvector on the server); a function from text to a fixed-length
      sequence of floats. ``embed_model`` names it: vectors of another name
      are not compared with its vectors.
    - ``clock``: the current time in epoch milliseconds (tests pass a fake).
    - ``lock_timeout``: seconds a write waits for another writer before
      LockTimeout; 30 s, as the hybrid-memory plugin.
    - ``synchronous``: "normal" (a commit survives a crash of the process) or
      "full" (also of the machine).
    - ``readonly``: refuse writes; recall then does not bump counters.
    - ``create``: False raises FileNotFoundError when there are no facts yet.

    Raises StoreCorrupt (the file is not a facts database; it is never
    replaced), StoreUnavailable (a server that cannot be reached) and
    VectorsUnavailable.

    >>> import tempfile
    >>> with open_facts(tempfile.mkdtemp()) as facts:
    ...     fact = facts.add("The deploy target is fly.io", category="decision")
    ...     facts.add("the deploy target is fly.io.") is not None, facts.count()
    (True, 1)
    """
    backend: FactsBackend
    check_location(os.fspath(location))
    if isinstance(location, str) and location.startswith(POSTGRES_SCHEMES):
        from flatstate.facts.postgres import PostgresFacts

        backend = PostgresFacts(
            location,
            lock_timeout=lock_timeout,
            synchronous=synchronous,
            readonly=readonly,
            create=create,
            **postgres,
        )
    else:
        if postgres:
            raise TypeError(
                f"open_facts() got options for PostgreSQL ({', '.join(sorted(postgres))}) "
                "with a state directory; they apply to a postgresql:// URL only"
            )
        from flatstate.facts.sqlite import SQLiteFacts

        backend = SQLiteFacts(
            os.path.expanduser(os.fspath(location)),
            vectors=embed is not None,
            lock_timeout=lock_timeout,
            synchronous=synchronous,
            readonly=readonly,
            create=create,
        )
    return FactStore(backend, embed=embed, embed_model=embed_model, clock=clock)
