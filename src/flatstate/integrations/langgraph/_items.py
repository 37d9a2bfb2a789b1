"""The LangGraph store's items, whichever database holds them: how a namespace, a key and a
value are checked and encoded, and the text and vectors an item is indexed by.

A namespace is stored as its labels in UTF-8 joined by a zero byte (labels cannot hold
one): such bytes sort exactly as LangGraph's tuples do (``("a", "b")`` before ``("a-",)``),
so namespace order and prefix ranges come straight from a unique index, on SQLite (a BLOB)
and on PostgreSQL (``bytea``) alike. A value is stored as its JSON text.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from flatstate.errors import InvalidStoreItem

__all__ = [
    "check_key",
    "check_value",
    "decode_json",
    "decode_namespace",
    "encode_json",
    "encode_namespace",
    "keyword_text",
    "unit_vector",
]

SEPARATOR = b"\x00"
# As for session entries: deep enough for any real value, far from the recursion limit.
MAX_DEPTH = 64


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
