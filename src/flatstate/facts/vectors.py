"""Optional vector search over facts, with sqlite-vec (the ``flatstate[vec]`` extra).

The caller supplies the embedding function (text -> sequence of floats);
flatstate never loads a model. Vectors are stored unit-length as float32
BLOBs in ``fact_vectors`` (see ``schema``) and searched with sqlite-vec's
``vec_distance_cosine``: an exact scan, which is what sqlite-vec 0.1 offers
for its own tables too, at a cost linear in the number of facts.

sqlite-vec is a loadable extension. Python builds without extension loading
(pyenv's default among them) cannot use it through the standard ``sqlite3``;
there ``pysqlite3`` (``pysqlite3-binary``, part of the extra on Linux x86-64)
is used instead, a drop-in driver with its own SQLite.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from array import array
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import cast

from flatstate.errors import InvalidFact, VectorsUnavailable
from flatstate.facts.query import query_terms

__all__ = [
    "Embed",
    "HashingEmbedder",
    "VectorIndex",
    "fact_driver",
    "load_sqlite_vec",
    "vector_driver",
]

Embed = Callable[[str], Sequence[float]]
"""A user-supplied embedding function: text to a fixed-length sequence of floats."""

# Cosine similarity at or above which a new fact restates an existing one.
DUPLICATE_SIMILARITY = 0.95
# Vector matches below this similarity are noise, not recall candidates.
MIN_SIMILARITY = 0.3


def fact_driver() -> ModuleType:
    """The DB-API sqlite module every facts connection of this process uses.

    The standard ``sqlite3`` if it can load extensions or if ``pysqlite3`` is
    not installed; else ``pysqlite3``. One choice for the whole process, with
    or without vectors: two copies of SQLite in one process must never open
    the same file (closing a descriptor in one drops the POSIX locks the
    other holds on it, and concurrent writers can then corrupt it).
    """
    if hasattr(sqlite3.Connection, "enable_load_extension"):
        return sqlite3
    try:
        import pysqlite3.dbapi2 as driver
    except ImportError:
        return sqlite3
    return cast(ModuleType, driver)  # the package ships no type information


def vector_driver() -> ModuleType:
    """:func:`fact_driver`, if it can load sqlite-vec; else VectorsUnavailable."""
    driver = fact_driver()
    if not hasattr(driver.Connection, "enable_load_extension"):
        raise VectorsUnavailable(
            "this Python's sqlite3 cannot load extensions and pysqlite3 is not installed"
        )
    return driver


def load_sqlite_vec(conn: sqlite3.Connection) -> str:
    """Load sqlite-vec into ``conn``; return its version. Raises VectorsUnavailable."""
    try:
        import sqlite_vec
    except ImportError as exc:
        raise VectorsUnavailable("the sqlite-vec package is not installed") from exc
    try:
        conn.enable_load_extension(True)
        try:
            sqlite_vec.load(conn)
        finally:
            conn.enable_load_extension(False)
        version: str = conn.execute("SELECT vec_version()").fetchone()[0]
    except Exception as exc:  # the driver's own error classes differ; all mean "cannot load"
        raise VectorsUnavailable(f"sqlite-vec did not load ({exc})") from exc
    return version


def pack_vector(values: Sequence[float]) -> bytes:
    """A vector as the float32 BLOB that ``fact_vectors`` holds."""
    return array("f", values).tobytes()


def stored_dims(conn: sqlite3.Connection, model: str) -> int | None:
    """The length of ``model``'s vectors in ``fact_vectors``, or None when it has none."""
    row = conn.execute(
        "SELECT length(embedding) FROM fact_vectors WHERE model = ? LIMIT 1", (model,)
    ).fetchone()
    return None if row is None else int(row[0]) // 4


def unpack_vector(blob: bytes) -> list[float] | None:
    """A ``fact_vectors`` BLOB as numbers; None when its length is no whole float32s."""
    if len(blob) % 4:
        return None
    values = array("f")
    values.frombytes(blob)
    return values.tolist()


class VectorIndex:
    """Embeddings of one model for the facts of one connection; the store serializes access."""

    def __init__(self, conn: sqlite3.Connection, embed: Embed, model: str) -> None:
        self._conn = conn
        self._embed = embed
        self.model = model
        self.version = load_sqlite_vec(conn)

    def encode(self, text: str) -> bytes:
        """``text``'s embedding as a unit-length float32 BLOB.

        Raises InvalidFact if the function returns no numbers, a zero vector,
        or a length different from the vectors already stored for this model.
        """
        values = array("f", (float(x) for x in self._embed(text)))
        norm = math.sqrt(math.fsum(x * x for x in values))
        if not values or not math.isfinite(norm) or norm == 0.0:
            raise InvalidFact(f"the embedding function returned no usable vector for {text[:40]!r}")
        unit = array("f", (x / norm for x in values))
        stored = stored_dims(self._conn, self.model)
        if stored is not None and stored != len(unit):
            raise InvalidFact(
                f"the embedding has {len(unit)} dimensions but model {self.model!r} stored "
                f"{stored}; pass a different embed_model for a different function"
            )
        return unit.tobytes()

    def put(self, seq: int, blob: bytes) -> None:
        """Store a fact's vector; inside the caller's write transaction."""
        self._conn.execute(
            "INSERT OR REPLACE INTO fact_vectors (seq, model, embedding) VALUES (?, ?, ?)",
            (seq, self.model, blob),
        )

    def nearest(
        self, blob: bytes, now: int, k: int, min_similarity: float = MIN_SIMILARITY
    ) -> list[tuple[int, float]]:
        """Up to ``k`` (seq, cosine similarity) of live facts, most similar first."""
        rows = self._conn.execute(
            "SELECT v.seq, 1.0 - vec_distance_cosine(v.embedding, ?) AS sim "
            "FROM fact_vectors AS v JOIN facts AS f ON f.seq = v.seq "
            "WHERE v.model = ? AND f.superseded_at IS NULL "
            "AND (f.expires_at IS NULL OR f.expires_at > ?) "
            "ORDER BY sim DESC LIMIT ?",
            (blob, self.model, now, k),
        ).fetchall()
        return [(seq, sim) for seq, sim in rows if sim >= min_similarity]

    def missing(self, limit: int) -> list[tuple[int, str]]:
        """(seq, text) of facts that are not superseded and have no vector of this model."""
        rows: list[tuple[int, str]] = self._conn.execute(
            "SELECT f.seq, f.text FROM facts AS f "
            "LEFT JOIN fact_vectors AS v ON v.seq = f.seq AND v.model = ? "
            "WHERE f.superseded_at IS NULL AND v.seq IS NULL LIMIT ?",
            (self.model, limit),
        ).fetchall()
        return rows


class HashingEmbedder:
    """A deterministic bag-of-words embedding, for tests, benchmarks and examples.

    Each content word adds 1 to one of ``dimensions`` buckets picked by its
    hash (and a sign by another bit), so texts that share words point the
    same way. It knows no synonyms: it stands in for a model, it is not one.

    >>> embed = HashingEmbedder(8)
    >>> embed("dark mode") == embed("Dark  MODE!")
    True
    """

    def __init__(self, dimensions: int = 64) -> None:
        self.dimensions = dimensions
        self._buckets: dict[str, tuple[int, float]] = {}

    def _bucket(self, word: str) -> tuple[int, float]:
        found = self._buckets.get(word)
        if found is None:
            digest = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "big")
            found = (digest % self.dimensions, 1.0 if digest >> 63 else -1.0)
            if len(self._buckets) < 65_536:
                self._buckets[word] = found
        return found

    def __call__(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in query_terms(text):
            index, sign = self._bucket(word)
            vector[index] += sign
        if not any(vector):
            # No content words ("?!"): a direction of its own, so that such
            # texts are not all duplicates of each other.
            index, sign = self._bucket(text)
            vector[index] = sign
        return vector
