"""The contract between :class:`~flatstate.facts.FactStore` and the database under it.

The store holds the logic (validation, dedup, confirmation, supersede, decay,
recall and its ranking, access counters); a backend holds the statements. Two
implement it: :mod:`~flatstate.facts.sqlite` (a state directory's
``facts.sqlite``) and :mod:`~flatstate.facts.postgres` (a namespace of a
PostgreSQL database). Every method but :meth:`FactsBackend.read`,
:meth:`~FactsBackend.write`, :meth:`~FactsBackend.close` and
:meth:`~FactsBackend.vacuum` runs inside one of the first two; the store's
lock serializes all of them.

Rows travel as tuples: :data:`FIELDS` for reads (``seq`` first, then a
:class:`~flatstate.facts.Fact`'s fields in order, ``tags`` as JSON text) and
:data:`STORED` for inserts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

__all__ = ["FIELDS", "STORED", "FactsBackend", "Row", "VectorSearch"]

# The stored columns of a fact, in Fact's field order, without the counters.
STORED = (
    "id, text, why, category, importance, entity, key, value, source, created_at, "
    "decay_class, expires_at, last_confirmed_at, confidence, normalized_hash, "
    "superseded_at, superseded_by, tags, scope, scope_target, session_key, entry_id"
)
STORED_COUNT = len(STORED.split(", "))
# Every read selects seq, then a Fact's fields in order, counters joined in.
FIELDS = (
    "f.seq, f.id, f.text, f.why, f.category, f.importance, f.entity, f.key, f.value, "
    "f.source, f.created_at, f.decay_class, f.expires_at, f.last_confirmed_at, f.confidence, "
    "f.normalized_hash, coalesce(a.recall_count, 0), a.last_accessed_at, f.superseded_at, "
    "f.superseded_by, f.tags, f.scope, f.scope_target, f.session_key, f.entry_id"
)
# The fields a restatement may fill in when the fact lacks them (see FactsBackend.confirm).
FILLED = ("why", "entity", "key", "value", "source", "session_key", "entry_id", "tags")

Row = Sequence[Any]
T = TypeVar("T")


class VectorSearch(Protocol):
    """Embeddings of one model for one store's facts (SQLite: sqlite-vec; PostgreSQL: pgvector)."""

    model: str

    def encode(self, text: str) -> Any:
        """``text``'s embedding in the form :meth:`put` and :meth:`nearest` take.

        Raises InvalidFact when the function gives no usable vector, or one of
        another length than this model's stored vectors.
        """

    def put(self, seq: int, vector: Any) -> None:
        """Store a fact's vector; inside a write."""

    def nearest(
        self, vector: Any, now: int, k: int, min_similarity: float = ...
    ) -> list[tuple[int, float]]:
        """Up to ``k`` (seq, cosine similarity) of live facts, most similar first."""

    def missing(self, limit: int) -> list[tuple[int, str]]:
        """(seq, text) of facts not superseded that have no vector of this model."""


class FactsBackend(ABC):
    """Where one store's facts live, and the statements that read and change them."""

    location: str
    """The database for messages: a file path, or a URL without its password."""
    readonly: bool
    schema_version: int

    # -- transactions ------------------------------------------------------------
    @abstractmethod
    def read(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (which calls this backend's reading methods) and return its result."""

    @abstractmethod
    def write(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside one write transaction, serialized with every other writer of
        these facts, and commit; roll back if it raises.

        ``fn`` may run more than once (after a lost connection, when the first
        run surely did not commit), so it must act only through this backend.
        """

    @abstractmethod
    def close(self) -> None: ...

    # -- writes (inside write) -------------------------------------------------
    @abstractmethod
    def find_duplicate(
        self, digest: str, scope: str, scope_target: str | None, text: str
    ) -> int | None:
        """The seq of a live fact of this scope with this normalized hash (the exact text
        first, then the oldest), or None."""

    @abstractmethod
    def insert(self, values: Sequence[Any]) -> int:
        """Insert a fact's :data:`STORED` values; return its seq."""

    @abstractmethod
    def decay_class_of(self, seq: int) -> str: ...

    @abstractmethod
    def confirm(
        self,
        seq: int,
        now: int,
        decay_class: str,
        expires_at: int | None,
        confidence: float,
        importance: float,
        filled: Sequence[Any],
    ) -> None:
        """Renew a restated fact: confirmed now, with this class and expiry, the higher
        confidence and importance, and the :data:`FILLED` fields it lacked."""

    @abstractmethod
    def supersede(self, old_id: str, new_id: str, now: int) -> int | None:
        """Mark a live fact superseded; its seq, or None if none was live with that id."""

    @abstractmethod
    def superseded_by(self, fact_id: str) -> tuple[bool, str | None]:
        """Whether the fact exists, and what superseded it."""

    @abstractmethod
    def exists(self, fact_id: str) -> bool: ...

    @abstractmethod
    def update(self, fact_id: str, sets: dict[str, Any]) -> int:
        """Set columns of one fact; return its seq."""

    @abstractmethod
    def delete(self, fact_id: str) -> bool: ...

    @abstractmethod
    def expire(self, now: int) -> int:
        """Delete the facts whose expiry has passed; return how many."""

    @abstractmethod
    def halve(self, decay_class: str, until: int, ttl: int, now: int) -> int:
        """Halve the confidence of the facts of a class expiring by ``until``, at most once
        per TTL window (``decayed_at``); return how many."""

    @abstractmethod
    def drop_faint(self, floor: float) -> int:
        """Delete the facts whose confidence is under ``floor``; return how many."""

    @abstractmethod
    def write_access(self, rows: list[tuple[int, int, int]]) -> None:
        """Add (seq, recalls, last access) to the access counters of facts that still exist."""

    @abstractmethod
    def put_vector_as_is(self, seq: int, model: str, vector: list[float]) -> bool:
        """Store another store's vector for the fact at ``seq`` if it has none (the
        extension is not needed: vectors are plain columns); whether it was stored."""

    # -- access counters in the background (optional) --------------------------
    background_access = False
    """Whether :meth:`write_access_later` writes in the background (else the store
    writes the counters itself, in the recall that finds them due)."""

    def write_access_later(
        self, rows: list[tuple[int, int, int]], settle: Callable[[bool], None]
    ) -> None:
        """Write ``rows`` as :meth:`write_access` does, in a transaction of its own on
        another connection, and call ``settle`` with whether it committed, so that no
        read of this backend sees them both stored and not yet settled. Only when
        :attr:`background_access`; outside read and write."""
        raise NotImplementedError

    def wait_access(self) -> None:
        """Wait until the background write of access counters, if any, has settled."""
        return None

    @abstractmethod
    def vacuum(self) -> None:
        """Compact the tables and their indexes (outside any transaction)."""

    # -- reads (inside read or write) ------------------------------------------
    @abstractmethod
    def by_seq(self, seq: int) -> Row: ...

    @abstractmethod
    def by_id(self, fact_id: str) -> Row | None: ...

    @abstractmethod
    def by_prefix(self, prefix: str) -> Sequence[Row]:
        """At most two rows whose id starts with ``prefix``."""

    @abstractmethod
    def newest(self, now: int, n: int) -> Sequence[Row]: ...

    @abstractmethod
    def lookup(self, entity: str, key: str | None, now: int, limit: int) -> Sequence[Row]:
        """Live facts about ``entity`` (and ``key``), newest first, case-insensitive."""

    @abstractmethod
    def count_live(self, now: int) -> int: ...

    @abstractmethod
    def page(self, after: int, limit: int) -> Sequence[Row]:
        """Up to ``limit`` facts, live or not, of ``seq`` past ``after``, in ``seq`` order."""

    @abstractmethod
    def by_seqs(self, seqs: list[int]) -> Sequence[Row]: ...

    @abstractmethod
    def vector_page(self, after: int, limit: int) -> list[tuple[int, str, str, list[float]]]:
        """Up to ``limit`` stored vectors as (seq, fact id, model, vector), of ``seq`` past
        ``after``, in ``seq`` order."""

    @abstractmethod
    def vector_dims(self, model: str) -> int | None:
        """The length of ``model``'s stored vectors, or None when none is stored."""

    @abstractmethod
    def vector_models(self) -> dict[str, int]:
        """Every model that has stored vectors, with their length."""

    @abstractmethod
    def is_live(self, seq: int) -> bool:
        """Whether the fact at ``seq`` exists and is not superseded."""

    @abstractmethod
    def keyword(self, query: str, now: int, pool: int) -> list[tuple[float, Row]]:
        """Up to ``pool`` live facts matching ``query``'s words, best first, each with its
        keyword score: negative, lower is better (bm25's convention). ``query`` is any
        text and is never parsed as query syntax."""

    @abstractmethod
    def stats(self, now: int) -> tuple[int, int, int, tuple[tuple[str, int], ...], int]:
        """(total, superseded, expired, live facts by class, vectors stored), from one
        snapshot."""

    @abstractmethod
    def disk_bytes(self) -> int: ...

    @abstractmethod
    def vectors(self, embed: Callable[[str], Sequence[float]], model: str) -> VectorSearch:
        """Vector search for this store; raises VectorsUnavailable."""
