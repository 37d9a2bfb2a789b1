"""Channel values stored by content: a value becomes a small *manifest* and a few *pieces*.

A LangGraph channel holds the whole value at every step (a message list, a dict of
documents), and the official savers store it whole each time it changes. Here a large list
or dict is cut at element boundaries into pieces of about a KiB, each stored once under its
digest: appending one message, or rewriting one entry of a 64 KiB dict, adds one new piece
and a manifest of digests, not another copy of the value.

Cuts depend on content only (an element ends a piece when it is large, or when its hash
says so and the piece is big enough), so the pieces before and after a changed element are
the same bytes as before and dedupe. Large elements that are lists or dicts themselves
(a state dict holding a document dict) are cut the same way, at any depth.

Pieces are consecutive runs of the serializer's own msgpack encoding (container headers,
keys, elements), so a read joins them and decodes the whole value in one call, exactly as
the serializer would have decoded it whole. Only values the standard
:class:`JsonPlusSerializer` turns into msgpack are cut; any other value (or serializer) is
stored whole, still by content.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

__all__ = [
    "INLINE_MAX",
    "PIECES_TYPE",
    "Encoded",
    "decode_value",
    "digest_of",
    "encode_value",
    "manifest_digests",
    "pack_manifest",
    "refs_digests",
    "unpack_manifest",
]

# A serialized value this small stays in the checkpoint row (no blob, no lookup).
INLINE_MAX = 256
# Lists and dicts smaller than this are stored whole.
SPLIT_MIN = 2048
# A piece ends after an atom (a header, a key, an element) at least this large, after any
# atom once it holds this much and the atom's hash says so (1 in CUT_ODDS), and always at
# PIECE_MAX. An element of two targets or more that is itself a list or dict is cut too.
PIECE_TARGET = 1024
CUT_ODDS = 4
PIECE_MAX = 16 << 10

# The type a pending write is stored under when its value went to pieces (its value
# column then holds the packed manifest).
PIECES_TYPE = "flatstate-pieces"

# Manifest kinds: [INLINE, type, bytes] | [WHOLE, type, digest] | [CUT, digests] (the
# value's msgpack is the pieces joined in order).
INLINE, WHOLE, CUT = 0, 1, 2
LIST, DICT = 0x90, 0x80

_NIL = b"\xc0"
_encode = msgspec.msgpack.Encoder().encode
_decode_manifest = msgspec.msgpack.Decoder().decode


def digest_of(body: bytes) -> bytes:
    """The 16-byte content address of a piece."""
    return hashlib.blake2b(body, digest_size=16).digest()


class Encoded:
    """One channel value as stored: its manifest and the pieces it refers to."""

    __slots__ = ("manifest", "pieces")

    def __init__(self, manifest: list[Any], pieces: list[tuple[bytes, bytes]]) -> None:
        self.manifest = manifest
        self.pieces = pieces  # (digest, body)


def _splittable(serde: SerializerProtocol) -> bool:
    kind = type(serde)
    return (
        isinstance(serde, JsonPlusSerializer)
        and kind.dumps_typed is JsonPlusSerializer.dumps_typed
        and kind.loads_typed is JsonPlusSerializer.loads_typed
    )


def _fragment(serde: SerializerProtocol, value: Any) -> bytes | None:
    """The msgpack bytes ``value`` has inside a container, or None when it has none."""
    type_, data = serde.dumps_typed(value)
    if type_ == "msgpack":
        return bytes(data)
    if type_ == "null":
        return _NIL
    if type_ == "bytes":
        return _encode(data)
    return None


def _container(value: Any) -> int | None:
    """LIST or DICT for a value whose elements can be cut apart, else None."""
    if type(value) is list and value:
        return LIST
    if type(value) is dict and value and all(type(k) is str for k in value):
        return DICT
    return None


def _atoms(serde: SerializerProtocol, value: Any, kind: int, out: list[bytes]) -> bool:
    """Append the msgpack encoding of a container as atoms (its header, then each key and
    element); an element large enough to hold several pieces is cut the same way. False
    when some element has no msgpack form (then the value is stored whole)."""
    out.append(_header(kind, len(value)))
    pairs: Iterable[tuple[str | None, Any]] = (
        value.items() if kind == DICT else ((None, item) for item in value)
    )
    for key, item in pairs:
        if key is not None:
            out.append(_encode(key))
        fragment = _fragment(serde, item)
        if fragment is None:
            return False
        inner = _container(item)
        if inner is not None and len(fragment) >= 2 * PIECE_TARGET:
            if not _atoms(serde, item, inner, out):
                return False
        else:
            out.append(fragment)
    return True


def _cut(atoms: Iterable[bytes]) -> list[bytes]:
    pieces: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for atom in atoms:
        if len(atom) >= PIECE_TARGET:
            if current:
                pieces.append(b"".join(current))
                current, size = [], 0
            pieces.append(atom)
            continue
        current.append(atom)
        size += len(atom)
        if size >= PIECE_MAX or (size >= PIECE_TARGET and zlib.crc32(atom) % CUT_ODDS == 0):
            pieces.append(b"".join(current))
            current, size = [], 0
    if current:
        pieces.append(b"".join(current))
    return pieces


def encode_value(serde: SerializerProtocol, value: Any) -> Encoded:
    """Lay ``value`` out as a manifest and pieces (see the module's docstring)."""
    type_, data = serde.dumps_typed(value)
    data = bytes(data)
    if len(data) <= INLINE_MAX:
        return Encoded([INLINE, type_, data], [])
    kind = _container(value)
    if kind is not None and len(data) >= SPLIT_MIN and type_ == "msgpack" and _splittable(serde):
        atoms: list[bytes] = []
        if _atoms(serde, value, kind, atoms):
            pieces = [(digest_of(body), body) for body in _cut(atoms)]
            return Encoded([CUT, [d for d, _ in pieces]], pieces)
    digest = digest_of(data)
    return Encoded([WHOLE, type_, digest], [(digest, data)])


def _header(kind: int, count: int) -> bytes:
    if kind == LIST:
        small, short, long_ = 0x90, 0xDC, 0xDD
    else:
        small, short, long_ = 0x80, 0xDE, 0xDF
    if count < 16:
        return bytes((small | count,))
    if count < 1 << 16:
        return bytes((short,)) + struct.pack(">H", count)
    return bytes((long_,)) + struct.pack(">I", count)


def decode_value(
    serde: SerializerProtocol, manifest: list[Any], body: Callable[[bytes], bytes]
) -> Any:
    """The value a manifest stands for; ``body(digest)`` returns a stored piece."""
    kind = manifest[0]
    if kind == INLINE:
        return serde.loads_typed((manifest[1], manifest[2]))
    if kind == WHOLE:
        return serde.loads_typed((manifest[1], body(manifest[2])))
    return serde.loads_typed(("msgpack", b"".join(body(d) for d in manifest[1])))


def manifest_digests(manifest: list[Any]) -> list[bytes]:
    kind = manifest[0]
    if kind == INLINE:
        return []
    if kind == WHOLE:
        return [manifest[2]]
    return list(manifest[1])


def refs_digests(refs: bytes) -> Iterable[bytes]:
    """Every digest a checkpoint row's packed refs name."""
    for _version, manifest in _decode_manifest(refs).values():
        yield from manifest_digests(manifest)


def pack_manifest(manifest: list[Any]) -> bytes:
    return _encode(manifest)


def unpack_manifest(packed: bytes) -> list[Any]:
    manifest: list[Any] = _decode_manifest(packed)
    return manifest
