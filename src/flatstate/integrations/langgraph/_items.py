"""The LangGraph store's database and the encoding of its items.

Schema (version 1), in ``<state_dir>/langgraph-store.sqlite``, a database of its own
beside the facts' (whose ``facts`` table is keyed by fact id, not by namespace and key):

- ``items``: one row per item. ``namespace`` holds the labels in UTF-8 joined by a zero
  byte, a BLOB: labels cannot hold a zero byte, and such a BLOB sorts exactly as
  LangGraph's tuples do (``("a", "b")`` before ``("a-",)``), so namespace order and prefix
  ranges come straight from the unique index. ``value`` is the item's JSON;
  ``ttl_minutes`` and ``expires_at`` (epoch ms) are set for items with a TTL.
- ``items_fts``: FTS5 (porter stemming over unicode61) over each item's indexed text,
  rowid = ``items.seq``, for the keyword ``query``.
- ``item_vectors``: one unit-length float32 embedding per indexed field of an item, for
  semantic search with sqlite-vec.

Deleting an item deletes its index entry and vectors by trigger, whoever deletes it
(a put of None, a TTL sweep, the ``sqlite3`` shell).
"""

from __future__ import annotations

import math
import sqlite3
from array import array
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import msgspec

from flatstate import _sqlite
from flatstate.errors import InvalidStoreItem

__all__ = [
    "DB_FILENAME",
    "MIGRATIONS",
    "check_value",
    "connect",
    "decode_namespace",
    "encode_namespace",
    "keyword_text",
    "unit_vector",
]

DB_FILENAME = "langgraph-store.sqlite"
WHAT = "LangGraph store database"
SEPARATOR = b"\x00"
# As for session entries: deep enough for any real value, far from the recursion limit.
MAX_DEPTH = 64

MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE items (
            seq INTEGER PRIMARY KEY,
            namespace BLOB NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            ttl_minutes REAL,
            expires_at INTEGER,
            UNIQUE (namespace, key)
        )""",
        # Search without a query reads the newest first: this index gives that order, so a
        # page is read, not every match sorted (4x at 2,000 items; a put costs ~5% more).
        "CREATE INDEX items_recent ON items (updated_at DESC, namespace, key)",
        # The sweep's index, holding only the items that can expire.
        "CREATE INDEX items_expiry ON items (expires_at) WHERE expires_at IS NOT NULL",
        "CREATE VIRTUAL TABLE items_fts USING fts5(doc, tokenize='porter unicode61')",
        """CREATE TABLE item_vectors (
            seq INTEGER NOT NULL,
            field TEXT NOT NULL,
            embedding BLOB NOT NULL,
            PRIMARY KEY (seq, field)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER items_delete AFTER DELETE ON items BEGIN
            DELETE FROM items_fts WHERE rowid = old.seq;
            DELETE FROM item_vectors WHERE seq = old.seq;
        END""",
    ),
]

PAGE_CACHE_KIB = 8192


def connect(
    path: str, *, driver: ModuleType, lock_timeout: float, synchronous: str
) -> sqlite3.Connection:
    """Open ``path`` (created 0600 in a 0700 directory) and migrate it; StoreCorrupt if it
    is not a LangGraph store database (the file is never replaced)."""
    conn: sqlite3.Connection = _sqlite.connect(
        path,
        MIGRATIONS,
        what=WHAT,
        lock_timeout=lock_timeout,
        readonly=False,
        synchronous=synchronous,
        page_cache_kib=PAGE_CACHE_KIB,
        driver=driver,
    )
    return conn


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise InvalidStoreItem(
            f"{what} {text!r} is not valid Unicode text ({exc.reason}); remove the lone surrogate"
        ) from exc


def encode_namespace(namespace: Sequence[str]) -> bytes:
    """The namespace's labels as the ``items.namespace`` BLOB."""
    return SEPARATOR.join(_utf8(label, "namespace label") for label in namespace)


def decode_namespace(blob: bytes) -> tuple[str, ...]:
    return tuple(label.decode() for label in bytes(blob).split(SEPARATOR)) if blob else ()


def check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise InvalidStoreItem(f"an item key is a string, not {type(key).__name__} {key!r}")
    _utf8(key, "key")
    return key


def check_value(value: Any, where: str = "value", depth: int = 1) -> None:
    """Raise InvalidStoreItem unless ``value`` comes back from JSON as it went in: string
    keys, finite floats, no other types, at most MAX_DEPTH levels. (A tuple is taken as a
    JSON array: a list on read.)"""
    if depth > MAX_DEPTH and isinstance(value, Mapping | list | tuple):
        raise InvalidStoreItem(f"{where} nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _utf8(value, f"the string at {where}")
    elif value is None or isinstance(value, bool | int):
        return
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidStoreItem(f"{where} is {value}, which JSON cannot hold")
    elif isinstance(value, Mapping):
        for key, sub in value.items():
            if not isinstance(key, str):
                raise InvalidStoreItem(f"{where} has the key {key!r}: JSON object keys are strings")
            check_value(sub, f"{where}.{key}", depth + 1)
    elif isinstance(value, list | tuple):
        for i, sub in enumerate(value):
            check_value(sub, f"{where}[{i}]", depth + 1)
    else:
        raise InvalidStoreItem(
            f"{where} is a {type(value).__name__}, which is not JSON: store strings, "
            "numbers, booleans, None, lists and dicts (convert dates to ISO strings)"
        )


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, Mapping):
        for sub in value.values():
            _strings(sub, out)
    elif isinstance(value, list | tuple):
        for sub in value:
            _strings(sub, out)


def keyword_text(value: Mapping[str, Any]) -> str:
    """What the keyword index holds for a whole value: its strings, not its field names."""
    out: list[str] = []
    _strings(value, out)
    return "\n".join(out)


def unit_vector(values: Sequence[float], dims: int, what: str) -> bytes | None:
    """A vector as unit-length float32 (sqlite-vec's BLOB); None for a zero vector.

    Raises InvalidStoreItem when its length is not ``dims`` or it holds a non-finite number.
    """
    vector = array("f", (float(x) for x in values))
    if len(vector) != dims:
        raise InvalidStoreItem(
            f"the embedding function returned {len(vector)} numbers for {what}, but the "
            f"index says dims={dims}; pass the dims of the model"
        )
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if not math.isfinite(norm):
        raise InvalidStoreItem(f"the embedding of {what} holds a number that is not finite")
    if norm == 0.0:
        return None
    return array("f", (x / norm for x in vector)).tobytes()


def _as_json(value: Any) -> Any:
    """msgspec's hook for what it does not encode itself; check_value let only Mappings by."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


encode_json = msgspec.json.Encoder(enc_hook=_as_json).encode
decode_json = msgspec.json.Decoder().decode
