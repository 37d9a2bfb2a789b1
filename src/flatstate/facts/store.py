"""``FactStore``: durable facts in SQLite, deduplicated, ranked, decaying.

Every write is one ``BEGIN IMMEDIATE`` transaction: the duplicate check and
the insert see the same database, so two processes adding the same fact
store it once and two adding different facts lose neither. The full-text
index and the vectors follow the rows inside that transaction (triggers, see
``schema``). Reads build immutable :class:`Fact` objects from the rows they
select and keep nothing: no cache to copy from or to invalidate, and a
process's memory does not grow with how often it recalls. Only the access
counters of recent recalls wait in memory, bounded, for about a second
(``access``).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import threading
import uuid
from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import msgspec

from flatstate._sqlite import Checkpointer, Translate
from flatstate.errors import FactNotFound, InvalidFact, ReadOnlyStore, StoreClosed
from flatstate.facts.access import AccessLog
from flatstate.facts.model import (
    DECAY_TTL_MS,
    DecayReport,
    Fact,
    Hit,
    NewFact,
    estimate_tokens,
    longer_class,
    render_fact,
    ttl_of,
    validated,
)
from flatstate.facts.query import QueryPlanner
from flatstate.facts.ranking import fill_budget, keyword_scores, score_hit
from flatstate.facts.schema import DB_FILENAME, SCHEMA_VERSION, WHAT, connect
from flatstate.facts.vectors import (
    DUPLICATE_SIMILARITY,
    Embed,
    VectorIndex,
    fact_driver,
    vector_driver,
)
from flatstate.model import Clock, now_ms

__all__ = ["FactStats", "FactStore", "open_facts"]

# Confidence under this is not worth recalling: decay() deletes the fact.
CONFIDENCE_FLOOR = 0.1
# Past this share of its TTL a fact's confidence halves (once per TTL window).
DECAY_HALVE_AT = 0.75
# bm25 weights of the indexed columns: text, category, entity, key, value.
# An entity or key named in the query is a strong hint; a category word is weak.
BM25_WEIGHTS = (1.0, 0.5, 2.0, 1.5, 1.0)
# Recall ranks at least this many keyword (and vector) candidates to fill its budget.
MIN_CANDIDATES = 48

# The stored columns of a fact, in Fact's field order, without the counters.
_STORED = (
    "id, text, why, category, importance, entity, key, value, source, created_at, "
    "decay_class, expires_at, last_confirmed_at, confidence, normalized_hash, "
    "superseded_at, superseded_by, tags, scope, scope_target, session_key, entry_id"
)
_INSERT = f"INSERT INTO facts ({_STORED}) VALUES ({', '.join('?' * 22)}) RETURNING seq"
# Every read selects seq, then a Fact's fields in order, counters joined in.
_FIELDS = (
    "f.seq, f.id, f.text, f.why, f.category, f.importance, f.entity, f.key, f.value, "
    "f.source, f.created_at, f.decay_class, f.expires_at, f.last_confirmed_at, f.confidence, "
    "f.normalized_hash, coalesce(a.recall_count, 0), a.last_accessed_at, f.superseded_at, "
    "f.superseded_by, f.tags, f.scope, f.scope_target, f.session_key, f.entry_id"
)
_SELECT = f"SELECT {_FIELDS} FROM facts AS f LEFT JOIN fact_access AS a ON a.seq = f.seq"
# A filter, never an index choice: "+" keeps SQLite from driving a query by the
# facts_live index (list() then sorted every live fact instead of reading the
# newest few by seq). count() alone wants that index: _LIVE_INDEXED.
_LIVE = "+f.superseded_at IS NULL AND (+f.expires_at IS NULL OR +f.expires_at > ?)"
_LIVE_INDEXED = "f.superseded_at IS NULL AND (f.expires_at IS NULL OR f.expires_at > ?)"
# Positions in a _SELECT row.
_RECALLS, _ACCESSED, _TAGS = 16, 17, 20

_UPDATABLE = frozenset(NewFact.__struct_fields__) - {"supersedes"}

_tags_decoder = msgspec.json.Decoder(tuple[str, ...])
_encode = msgspec.json.encode


def _tags_text(tags: Sequence[str]) -> str | None:
    return _encode(tuple(tags)).decode() if tags else None


class FactStats(msgspec.Struct, frozen=True, gc=False):
    """Counts and sizes of one facts database, for ``flatstate facts stats``."""

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
    """Durable facts in ``<state_dir>/facts.sqlite``. Open with :func:`open_facts`.

    Thread-safe: one lock serializes this object's use of its connection.
    Several processes may open the same database; SQLite's locks (WAL mode,
    ``BEGIN IMMEDIATE``, a busy timeout) order their writes.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        embed: Embed | None = None,
        embed_model: str = "default",
        clock: Clock | None = None,
        lock_timeout: float = 30.0,
        synchronous: str = "normal",
        readonly: bool = False,
        create: bool = True,
    ) -> None:
        self.path = os.path.join(os.fspath(state_dir), DB_FILENAME)
        self.readonly = readonly
        self.lock_timeout = lock_timeout
        self._clock: Clock = clock or now_ms
        driver: ModuleType = vector_driver() if embed is not None else fact_driver()
        self._errors = Translate(self.path, lock_timeout, driver, WHAT)
        self._conn = connect(
            self.path,
            driver=driver,
            lock_timeout=lock_timeout,
            readonly=readonly,
            create=create,
            synchronous=synchronous,
        )
        self._lock = threading.RLock()
        self._closed = False
        self._access = AccessLog()
        self._planner = QueryPlanner(self._conn)
        self._vectors: VectorIndex | None = None
        if embed is not None:
            try:
                self._vectors = VectorIndex(self._conn, embed, embed_model)
            except BaseException:
                self._conn.close()
                raise
        self._checkpointer = (
            None
            if readonly
            else Checkpointer(
                self.path, driver=driver, every_commits=256, name="flatstate-facts-checkpoint"
            )
        )

    # -- lifecycle ---------------------------------------------------------------
    def close(self) -> None:
        """Write the waiting access counters and close the database."""
        with self._lock:
            if not self._closed:
                try:
                    self.flush()
                finally:
                    self._closed = True
                    if self._checkpointer is not None:
                        self._checkpointer.close()
                        with contextlib.suppress(Exception):
                            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    self._conn.close()

    def __enter__(self) -> FactStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def vectors(self) -> bool:
        """Whether vector search is on (an embedding function was given)."""
        return self._vectors is not None

    def _check_open(self, write: bool = False) -> None:
        if self._closed:
            raise StoreClosed(self.path)
        if write and self.readonly:
            raise ReadOnlyStore(self.path, "the facts were opened read-only")

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def _finish(self, ok: bool) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT" if ok else "ROLLBACK")
            if ok and self._checkpointer is not None:
                self._checkpointer.committed()

    def _build(self, row: Sequence[Any]) -> Fact:
        """A Fact from a ``_SELECT`` row, with this process's waiting recalls counted in."""
        values = list(row)
        tags = values[_TAGS]
        values[_TAGS] = _tags_decoder.decode(tags) if tags else ()
        if self._access.pending:
            values[_RECALLS], values[_ACCESSED] = self._access.apply(
                values[0], values[_RECALLS], values[_ACCESSED]
            )
        return Fact(*values[1:])

    def _by_seq(self, seq: int) -> Fact:
        return self._build(self._conn.execute(f"{_SELECT} WHERE f.seq = ?", (seq,)).fetchone())

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
        with self._lock, self._errors:
            self._check_open(write=True)
            vectors = self._vectors
            # Embed before taking the database's write lock: a model call may be slow.
            blobs = [vectors.encode(new.text) for new, _ in items] if vectors else None
            now = self._clock()
            self._begin()
            ok = False
            try:
                out = tuple(
                    self._add_one(new, digest, now, blobs[i] if blobs else None)
                    for i, (new, digest) in enumerate(items)
                )
                ok = True
            finally:
                self._finish(ok)
        return out

    def _add_one(self, new: NewFact, digest: str, now: int, blob: bytes | None) -> Fact:
        conn = self._conn
        assert new.decay_class is not None  # settled by validated()
        # Exact text and normalized text both land on the hash index; an exact
        # match is preferred when both exist.
        found = conn.execute(
            "SELECT seq FROM facts WHERE normalized_hash = ? AND superseded_at IS NULL "
            "AND scope = ? AND scope_target IS ? ORDER BY text = ? DESC, seq LIMIT 1",
            (digest, new.scope, new.scope_target, new.text),
        ).fetchone()
        seq: int | None = found[0] if found else None
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
            seq = conn.execute(_INSERT, row).fetchone()[0]
            if blob is not None and self._vectors is not None:
                self._vectors.put(seq, blob)
        if new.supersedes is not None and new.supersedes != fact.id:
            self._supersede(new.supersedes, fact.id, now)
        return fact

    def _confirm(self, seq: int, new: NewFact, now: int) -> Fact:
        """Renew the fact at ``seq`` because ``new`` restated it; return it as it now is."""
        assert new.decay_class is not None
        current = self._conn.execute("SELECT decay_class FROM facts WHERE seq = ?", (seq,))
        decay_class = longer_class(current.fetchone()[0], new.decay_class)
        ttl = ttl_of(decay_class)
        self._conn.execute(
            "UPDATE facts SET last_confirmed_at = ?, decay_class = ?, expires_at = ?, "
            "confidence = max(confidence, ?), importance = max(importance, ?), "
            "why = coalesce(why, ?), entity = coalesce(entity, ?), key = coalesce(key, ?), "
            "value = coalesce(value, ?), source = coalesce(source, ?), "
            "session_key = coalesce(session_key, ?), entry_id = coalesce(entry_id, ?), "
            "tags = coalesce(tags, ?) WHERE seq = ?",
            (
                now,
                decay_class,
                None if ttl is None else now + ttl,
                new.confidence,
                new.importance,
                new.why,
                new.entity,
                new.key,
                new.value,
                new.source,
                new.session_key,
                new.entry_id,
                _tags_text(new.tags),
                seq,
            ),
        )
        return self._by_seq(seq)

    def _supersede(self, old_id: str, new_id: str, now: int) -> Fact:
        row = self._conn.execute(
            "UPDATE facts SET superseded_at = ?, superseded_by = ? "
            "WHERE id = ? AND superseded_at IS NULL RETURNING seq",
            (now, new_id, old_id),
        ).fetchone()
        if row is not None:
            return self._by_seq(row[0])
        found = self._conn.execute(
            "SELECT superseded_by FROM facts WHERE id = ?", (old_id,)
        ).fetchone()
        if found is None:
            raise FactNotFound(old_id, self.path)
        raise InvalidFact(f"fact {old_id!r} was already superseded by {found[0]!r}")

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
        with self._lock, self._errors:
            self._check_open(write=True)
            self._begin()
            ok = False
            try:
                if not self._conn.execute("SELECT 1 FROM facts WHERE id = ?", (new_id,)).fetchone():
                    raise FactNotFound(new_id, self.path)
                fact = self._supersede(old_id, new_id, self._clock())
                ok = True
            finally:
                self._finish(ok)
        return fact

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
        with self._lock, self._errors:
            self._check_open(write=True)
            self._begin()
            ok = False
            try:
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
                assignments = ", ".join(f"{name} = ?" for name in sets)
                seq = self._conn.execute(
                    f"UPDATE facts SET {assignments} WHERE id = ? RETURNING seq",
                    (*sets.values(), fact_id),
                ).fetchone()[0]
                fact = self._by_seq(seq)
                ok = True
            finally:
                self._finish(ok)
        return fact

    def forget(self, fact_id: str) -> bool:
        """Delete a fact for good (its index entry, counters and vector too); False if none."""
        with self._lock, self._errors:
            self._check_open(write=True)
            self._begin()
            ok = False
            try:
                cursor = self._conn.execute("DELETE FROM facts WHERE id = ?", (fact_id,))
                ok = True
            finally:
                self._finish(ok)
            return cursor.rowcount > 0

    def decay(self) -> DecayReport:
        """Age the facts by the clock: delete the expired, halve the fading, drop the faint.

        - a fact whose ``expires_at`` has passed is deleted (permanent facts
          have none);
        - a fact past 75% of its class's TTL has its confidence halved, once
          per TTL window (a restatement starts a new window);
        - a fact whose confidence is below 0.1 is deleted.

        The outcome depends on the clock, not on how often this runs.
        """
        with self._lock, self._errors:
            self._check_open(write=True)
            self.flush()
            now = self._clock()
            conn = self._conn
            self._begin()
            ok = False
            try:
                expired = conn.execute(
                    "DELETE FROM facts WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
                ).rowcount
                halved = 0
                for name, ttl in DECAY_TTL_MS.items():
                    if ttl is None:
                        continue
                    # Past 75% of the TTL means under 25% of it left before
                    # expires_at. The window began one TTL before expires_at; a
                    # halving at or before that instant belongs to the last one.
                    halved += conn.execute(
                        "UPDATE facts SET confidence = confidence / 2, decayed_at = ? "
                        "WHERE decay_class = ? AND expires_at IS NOT NULL AND expires_at <= ? "
                        "AND (decayed_at IS NULL OR decayed_at <= expires_at - ?)",
                        (now, name, now + round(ttl * (1 - DECAY_HALVE_AT)), ttl),
                    ).rowcount
                dropped = conn.execute(
                    "DELETE FROM facts WHERE confidence < ?", (CONFIDENCE_FLOOR,)
                ).rowcount
                ok = True
            finally:
                self._finish(ok)
        return DecayReport(expired=expired, halved=halved, dropped=dropped)

    def vacuum(self) -> None:
        """Merge the full-text index's segments, rebuild the file compactly, truncate the WAL.

        Holds the database's write lock for as long as the rebuild lasts.
        """
        with self._lock, self._errors:
            self._check_open(write=True)
            self.flush()
            self._conn.execute("INSERT INTO facts_fts (facts_fts) VALUES ('optimize')")
            self._conn.execute("VACUUM")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def embed_missing(self, batch: int = 256) -> int:
        """Embed the facts that lack a vector of this store's model; return how many.

        Facts added by a process without vectors, or whose text was edited,
        have none until this runs. Without vectors on, it does nothing.
        """
        vectors = self._vectors
        if vectors is None:
            return 0
        done = 0
        while True:
            with self._lock, self._errors:
                self._check_open(write=True)
                todo = vectors.missing(batch)
                if not todo:
                    return done
                blobs = [(seq, vectors.encode(text)) for seq, text in todo]
                self._begin()
                ok = False
                try:
                    for seq, blob in blobs:
                        # The fact may have gone or been superseded since it was read.
                        if self._conn.execute(
                            "SELECT 1 FROM facts WHERE seq = ? AND superseded_at IS NULL", (seq,)
                        ).fetchone():
                            vectors.put(seq, blob)
                            done += 1
                    ok = True
                finally:
                    self._finish(ok)

    def flush(self) -> None:
        """Write the access counters of recent recalls now (see ``access``).

        Recall does this about once a second; close(), decay(), vacuum() and
        stats() do it too.
        """
        with self._lock, self._errors:
            if not self._closed and not self.readonly:
                self._flush_access()

    def _flush_access(self) -> None:
        if self._access.flush(self._conn) and self._checkpointer is not None:
            self._checkpointer.committed()

    # -- reads -------------------------------------------------------------------
    def _get(self, fact_id: str) -> Fact | None:
        found = self._conn.execute(f"{_SELECT} WHERE f.id = ?", (fact_id,)).fetchone()
        return self._build(found) if found else None

    def get(self, fact_id: str) -> Fact | None:
        """The fact with this id, live or not; None if there is none."""
        with self._lock, self._errors:
            self._check_open()
            return self._get(fact_id)

    def resolve(self, ref: str) -> Fact:
        """The fact whose id is ``ref``, or the only one whose id starts with it (4+ chars).

        For people, who copy the 8 characters a table shows. Raises FactNotFound
        when no fact, or more than one, matches.
        """
        with self._lock, self._errors:
            self._check_open()
            fact = self._get(ref)
            if fact is None and len(ref) >= 4:
                # A range scan of the unique index on id.
                rows = self._conn.execute(
                    f"{_SELECT} WHERE f.id >= ? AND f.id < ? LIMIT 2", (ref, ref + "\U0010ffff")
                ).fetchall()
                if len(rows) == 1:
                    fact = self._build(rows[0])
        if fact is None:
            raise FactNotFound(ref, self.path)
        return fact

    def list(self, n: int = 20) -> tuple[Fact, ...]:
        """The ``n`` newest live facts, newest first."""
        with self._lock, self._errors:
            self._check_open()
            rows = self._conn.execute(
                f"{_SELECT} WHERE {_LIVE} ORDER BY f.seq DESC LIMIT ?",
                (self._clock(), max(0, n)),
            ).fetchall()
            return tuple(map(self._build, rows))

    def lookup(self, entity: str, key: str | None = None, *, limit: int = 50) -> tuple[Fact, ...]:
        """Live facts about ``entity`` (and ``key``, if given), newest first; case-insensitive."""
        sql = f"{_SELECT} WHERE f.entity = ? COLLATE NOCASE"
        args: builtins.list[Any] = [entity]
        if key is not None:
            sql += " AND f.key = ? COLLATE NOCASE"
            args.append(key)
        sql += f" AND {_LIVE} ORDER BY f.seq DESC LIMIT ?"
        with self._lock, self._errors:
            self._check_open()
            rows = self._conn.execute(sql, (*args, self._clock(), limit)).fetchall()
            return tuple(map(self._build, rows))

    def count(self) -> int:
        """How many live facts there are (not superseded, not expired): one COUNT query."""
        with self._lock, self._errors:
            self._check_open()
            row = self._conn.execute(
                f"SELECT count(*) FROM facts AS f WHERE {_LIVE_INDEXED}", (self._clock(),)
            ).fetchone()
            return int(row[0])

    def search(self, query: str, *, limit: int = 10) -> tuple[Hit, ...]:
        """Live facts ranked for ``query``, with their scores; a read (no counters change).

        ``query`` may be any text: it is split into words and never parsed
        as FTS5 syntax (see ``query``).
        """
        with self._lock, self._errors:
            self._check_open()
            ranked = self._rank(query, self._clock(), max(limit, 1))
        return tuple(hit for _, hit in ranked[: max(0, limit)])

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
        with self._lock, self._errors:
            self._check_open()
            now = self._clock()
            ranked = self._rank(query, now, max(MIN_CANDIDATES, 4 * (limit or 0)))
            chosen = fill_budget(
                ranked,
                lambda item: estimate_tokens(render_fact(item[1].fact, preview_chars)) + 1,
                budget_tokens,
                limit,
            )
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
                self._flush_access()
            return tuple(out)

    def _rank(self, query: str, now: int, pool: int) -> builtins.list[tuple[int, Hit]]:
        """(seq, hit) of the candidates from the keyword index (and vectors), best first."""
        conn = self._conn
        keyword: dict[int, tuple[Fact, float]] = {}
        plan = self._planner.plan(query)
        if plan is not None:
            match, floor = plan
            weights = ", ".join(map(str, BM25_WEIGHTS))
            # bm25 ranks inside the index alone; only its top rows are joined
            # to their facts. Superseded facts are not indexed; expired ones
            # wait for decay() and are filtered here, from twice the pool.
            rows = conn.execute(
                f"SELECT m.b, {_FIELDS} FROM "
                f"(SELECT rowid, bm25(facts_fts, {weights}) AS b FROM facts_fts "
                "WHERE facts_fts MATCH ? AND rowid >= ? ORDER BY b, rowid DESC LIMIT ?) AS m "
                "JOIN facts AS f ON f.seq = m.rowid "
                "LEFT JOIN fact_access AS a ON a.seq = f.seq "
                f"WHERE {_LIVE} ORDER BY m.b, m.rowid DESC LIMIT ?",
                (match, floor, 2 * pool, now, pool),
            ).fetchall()
            scores = keyword_scores([row[0] for row in rows])
            for row, kw in zip(rows, scores, strict=True):
                keyword[row[1]] = (self._build(row[1:]), kw)
        similar: dict[int, float] = {}
        vectors = self._vectors
        if vectors is not None and query.strip():
            try:
                blob = vectors.encode(query)
            except InvalidFact:
                blob = None  # no usable embedding for this text: keywords alone
            if blob is not None:
                similar = dict(vectors.nearest(blob, now, pool))
        off = 0.0 if vectors is not None else None  # a vector part of 0, or none at all
        ranked = [
            (seq, score_hit(fact, kw, similar.get(seq, off), now))
            for seq, (fact, kw) in keyword.items()
        ]
        only_vector = [seq for seq in similar if seq not in keyword]
        if only_vector:
            rows = conn.execute(
                f"{_SELECT} WHERE f.seq IN (SELECT value FROM json_each(?))",
                (_encode(only_vector).decode(),),
            ).fetchall()
            ranked.extend(
                (row[0], score_hit(self._build(row), 0.0, similar[row[0]], now)) for row in rows
            )
        # Ties go to the newest fact (the highest seq).
        ranked.sort(key=lambda item: (-item[1].score, -item[0]))
        return ranked

    def stats(self) -> FactStats:
        """Counts by state and decay class, vectors stored, and bytes on disk."""
        with self._lock, self._errors:
            self._check_open()
            self.flush()
            now = self._clock()
            conn = self._conn
            conn.execute("BEGIN")
            try:
                total, superseded, expired = conn.execute(
                    "SELECT count(*), count(superseded_at), "
                    "count(CASE WHEN superseded_at IS NULL AND expires_at <= ? THEN 1 END) "
                    "FROM facts",
                    (now,),
                ).fetchone()
                by_class = tuple(
                    (str(name), int(n))
                    for name, n in conn.execute(
                        f"SELECT f.decay_class, count(*) FROM facts AS f WHERE {_LIVE} "
                        "GROUP BY f.decay_class ORDER BY f.decay_class",
                        (now,),
                    )
                )
                vectors = conn.execute("SELECT count(*) FROM fact_vectors").fetchone()[0]
            finally:
                conn.execute("COMMIT")
        disk = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                disk += os.path.getsize(self.path + suffix)
        return FactStats(
            path=self.path,
            schema_version=SCHEMA_VERSION,
            live=total - superseded - expired,
            superseded=superseded,
            expired=expired,
            total=total,
            by_class=by_class,
            vectors=int(vectors),
            disk_bytes=disk,
        )


def open_facts(
    state_dir: str | os.PathLike[str],
    *,
    embed: Embed | None = None,
    embed_model: str = "default",
    clock: Clock | None = None,
    lock_timeout: float = 30.0,
    synchronous: str = "normal",
    readonly: bool = False,
    create: bool = True,
) -> FactStore:
    """Open (or create) the facts database of a state directory.

    - ``embed``: turns on vector search (needs ``flatstate[vec]``); a function
      from text to a fixed-length sequence of floats. ``embed_model`` names it:
      vectors of another name are not compared with its vectors.
    - ``clock``: the current time in epoch milliseconds (tests pass a fake).
    - ``lock_timeout``: seconds a write waits for another writer (SQLite's
      busy timeout) before LockTimeout; 30 s, as the hybrid-memory plugin.
    - ``synchronous``: "normal" (a commit survives a crash of the process) or
      "full" (also of the machine).
    - ``readonly``: refuse writes; recall then does not bump counters.
    - ``create``: False raises FileNotFoundError when there is no database yet.

    Raises StoreCorrupt (the file is not a facts database; it is never
    replaced) and VectorsUnavailable.

    >>> import tempfile
    >>> with open_facts(tempfile.mkdtemp()) as facts:
    ...     fact = facts.add("The deploy target is fly.io", category="decision")
    ...     facts.add("the deploy target is fly.io.") is not None, facts.count()
    (True, 1)
    """
    return FactStore(
        os.path.expanduser(state_dir),
        embed=embed,
        embed_model=embed_model,
        clock=clock,
        lock_timeout=lock_timeout,
        synchronous=synchronous,
        readonly=readonly,
        create=create,
    )
