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

The value is serialized once, whole, by the saver's serializer; when that gives msgpack,
the bytes are cut at element boundaries (a light walk over the msgpack headers finds
them), so the pieces are consecutive runs of exactly those bytes: a read joins them and
decodes the whole value in one call, as the serializer wrote it. Any other serialization
(pickle, an encrypted serializer) is stored whole, still by content.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from langgraph.checkpoint.serde.base import SerializerProtocol

from flatstate.integrations.langgraph._flat import unchanged_check

__all__ = [
    "CUT",
    "INLINE",
    "INLINE_MAX",
    "LISTED",
    "PIECES_TYPE",
    "WHOLE",
    "Encoded",
    "RecentEncodings",
    "assemble",
    "decode_value",
    "digest_of",
    "encode_value",
    "expand",
    "layout",
    "listing",
    "manifest_digests",
    "pack_manifest",
    "refs_manifests",
    "unpack_manifest",
]

# A serialized value this small stays in the checkpoint row (no blob, no lookup).
INLINE_MAX = 256
# Values smaller than this are stored whole.
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
# value's msgpack is the pieces joined in order) | [LISTED, digest]: a CUT whose digests,
# being many, are a piece themselves (their 16-byte digests end to end), so that a checkpoint
# and the write that made it, which hold the same value, share that list too.
INLINE, WHOLE, CUT, LISTED = 0, 1, 2, 3
LIST_AFTER = 8
DIGEST_BYTES = 16
# Large values whose layout a saver remembers (RecentEncodings).
RECENT = 16

_encode = msgspec.msgpack.Encoder().encode
_decode_manifest = msgspec.msgpack.Decoder().decode


def digest_of(body: bytes) -> bytes:
    """The 16-byte content address of a piece (sha256, which CPUs accelerate, cut short)."""
    return hashlib.sha256(body).digest()[:16]


class Encoded:
    """One channel value as stored: its manifest, the pieces it refers to, and its stored
    bytes whole (None when inline)."""

    __slots__ = ("data", "manifest", "pieces")

    def __init__(
        self, manifest: list[Any], pieces: list[tuple[bytes, bytes]], data: bytes | None
    ) -> None:
        self.manifest = manifest
        self.pieces = pieces  # (digest, body)
        self.data = data


def _container(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(entries, items per entry, where the first item starts) of the array or map whose
    msgpack starts at ``pos``, or None for any other value."""
    b = data[pos]
    if 0x90 <= b <= 0x9F:
        return b & 0x0F, 1, pos + 1
    if 0x80 <= b <= 0x8F:
        return b & 0x0F, 2, pos + 1
    if b in (0xDC, 0xDE):
        return int.from_bytes(data[pos + 1 : pos + 3], "big"), 1 if b == 0xDC else 2, pos + 3
    if b in (0xDD, 0xDF):
        return int.from_bytes(data[pos + 1 : pos + 5], "big"), 1 if b == 0xDD else 2, pos + 5
    return None


# Bytes after the type byte that hold a length (str, bin, ext: +1 for the ext's type).
_SIZED = {0xD9: 1, 0xDA: 2, 0xDB: 4, 0xC4: 1, 0xC5: 2, 0xC6: 4}
_EXT = {0xC7: 1, 0xC8: 2, 0xC9: 4}
_FIXED = {
    0xC0: 1, 0xC2: 1, 0xC3: 1, 0xCA: 5, 0xCB: 9, 0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9,
    0xD0: 2, 0xD1: 3, 0xD2: 5, 0xD3: 9, 0xD4: 3, 0xD5: 4, 0xD6: 6, 0xD7: 10, 0xD8: 18,
}  # fmt: skip


def _skip(data: bytes, pos: int) -> int:
    """Where the msgpack value starting at ``pos`` ends."""
    b = data[pos]
    if b <= 0x7F or b >= 0xE0:
        return pos + 1
    if 0xA0 <= b <= 0xBF:
        return pos + 1 + (b & 0x1F)
    size = _FIXED.get(b)
    if size is not None:
        return pos + size
    width = _SIZED.get(b)
    if width is not None:
        return pos + 1 + width + int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
    width = _EXT.get(b)
    if width is not None:
        return pos + 2 + width + int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
    shape = _container(data, pos)
    if shape is None:
        raise ValueError(f"not msgpack: byte {b:#x} at {pos}")
    count, per, pos = shape
    for _ in range(count * per):
        pos = _skip(data, pos)
    return pos


def _atoms(data: bytes, pos: int, out: list[tuple[int, int]]) -> int:
    """Append (start, end) of the container at ``pos`` as atoms: its header, then each
    element (with its key, in a map); an element large enough for several pieces that is a
    container itself is cut the same way. Returns where the container ends."""
    shape = _container(data, pos)
    assert shape is not None
    count, per, first = shape
    out.append((pos, first))
    pos = first
    for _ in range(count):
        start = pos
        if per == 2:
            pos = _skip(data, pos)
        value = pos
        end = _skip(data, value)
        if end - value >= 2 * PIECE_TARGET and _container(data, value) is not None:
            if value > start:
                out.append((start, value))
            _atoms(data, value, out)
        else:
            out.append((start, end))
        pos = end
    return pos


def _cut(data: bytes, atoms: list[tuple[int, int]]) -> list[bytes]:
    """Pieces of ``data``: consecutive runs of atoms, cut where content says (see above)."""
    pieces: list[bytes] = []
    begin = end = atoms[0][0]
    for start, stop in atoms:
        if stop - start >= PIECE_TARGET:
            if end > begin:
                pieces.append(data[begin:end])
            pieces.append(data[start:stop])
            begin = end = stop
            continue
        end = stop
        size = end - begin
        if size >= PIECE_MAX or (
            size >= PIECE_TARGET and zlib.crc32(data[start:stop]) % CUT_ODDS == 0
        ):
            pieces.append(data[begin:end])
            begin = end
    if end > begin:
        pieces.append(data[begin:end])
    return pieces


def encode_value(serde: SerializerProtocol, value: Any) -> Encoded:
    """Lay ``value`` out as a manifest and pieces (see the module's docstring)."""
    type_, raw = serde.dumps_typed(value)
    return layout(type_, bytes(raw))


def layout(type_: str, data: bytes) -> Encoded:
    """Serialized bytes as a manifest and pieces."""
    if type_ == "msgpack" and len(data) >= SPLIT_MIN and _container(data, 0) is not None:
        atoms: list[tuple[int, int]] = []
        if _atoms(data, 0, atoms) == len(data):
            pieces = [(digest_of(body), body) for body in _cut(data, atoms)]
            digests = [d for d, _ in pieces]
            if len(digests) <= LIST_AFTER:
                return Encoded([CUT, digests], pieces, data)
            listing = b"".join(digests)
            listed = digest_of(listing)
            return Encoded([LISTED, listed], [*pieces, (listed, listing)], data)
    return _whole(type_, data)


class RecentEncodings:
    """The layouts of the last few large values, by the value object.

    A node's write is usually the very value the next checkpoint holds (a channel without a
    reducer takes what the node returned), so the checkpoint's put finds the layout the
    write's put_writes made, and skips cutting and hashing it again. The value is found by
    identity (hashing 64 KiB of serialized bytes would cost more than the lookup saves) and
    trusted only if it is unchanged since, so a value changed in place in between is laid
    out afresh: a flat value (:mod:`._flat`) is checked leaf by leaf, without serializing
    it again; any other one must still serialize to the same bytes. The memo holds the
    values it names, so no id is reused.
    """

    def __init__(self, size: int = RECENT) -> None:
        self.size = size
        # id -> (value, its check when flat, type, layout)
        self._memo: OrderedDict[int, tuple[Any, Callable[[], bool] | None, str, Encoded]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def encode(self, serde: SerializerProtocol, value: Any) -> Encoded:
        key = id(value)
        with self._lock:
            found = self._memo.get(key)
            if found is not None and found[0] is not value:
                found = None
            if found is not None and found[1] is not None and found[1]():
                self._memo.move_to_end(key)
                return found[3]
        check = unchanged_check(value)  # before serializing: a change after it is seen
        type_, raw = serde.dumps_typed(value)
        data = bytes(raw)
        if len(data) < SPLIT_MIN:
            return layout(type_, data)
        if found is not None and found[1] is None and found[2] == type_ and found[3].data == data:
            with self._lock:
                self._memo.move_to_end(key)
            return found[3]
        encoded = layout(type_, data)
        entry = (value, check, type_, encoded)
        with self._lock:
            self._memo[key] = entry
            self._memo.move_to_end(key)
            while len(self._memo) > self.size:
                self._memo.popitem(last=False)
        return encoded


def _whole(type_: str, data: bytes) -> Encoded:
    if len(data) <= INLINE_MAX:
        return Encoded([INLINE, type_, data], [], None)
    digest = digest_of(data)
    return Encoded([WHOLE, type_, digest], [(digest, data)], data)


def listing(body: bytes) -> list[bytes]:
    """The digests a LISTED manifest's list piece holds."""
    return [body[i : i + DIGEST_BYTES] for i in range(0, len(body), DIGEST_BYTES)]


def expand(manifest: list[Any], body: Callable[[bytes], bytes]) -> list[Any]:
    """A LISTED manifest as the CUT one it stands for (any other as it is)."""
    if manifest[0] == LISTED:
        return [CUT, listing(body(manifest[1]))]
    return manifest


def assemble(manifest: list[Any], body: Callable[[bytes], bytes]) -> tuple[str, bytes]:
    """The (type, bytes) the serializer decodes for a stored value; ``body(digest)``
    returns a stored piece."""
    kind = manifest[0]
    if kind == INLINE:
        return manifest[1], manifest[2]
    if kind == WHOLE:
        return manifest[1], body(manifest[2])
    return "msgpack", b"".join(body(d) for d in expand(manifest, body)[1])


def decode_value(
    serde: SerializerProtocol, manifest: list[Any], body: Callable[[bytes], bytes]
) -> Any:
    """The value a manifest stands for."""
    return serde.loads_typed(assemble(manifest, body))


def manifest_digests(manifest: list[Any]) -> list[bytes]:
    """The pieces a manifest names itself (of a LISTED one, its list piece only)."""
    kind = manifest[0]
    if kind == INLINE:
        return []
    if kind == WHOLE:
        return [manifest[2]]
    if kind == LISTED:
        return [manifest[1]]
    return list(manifest[1])


def refs_manifests(refs: bytes) -> Iterable[list[Any]]:
    """Every manifest of a checkpoint row's packed refs."""
    for _version, manifest in _decode_manifest(refs).values():
        yield manifest


def pack_manifest(manifest: list[Any]) -> bytes:
    return _encode(manifest)


def unpack_manifest(packed: bytes) -> list[Any]:
    manifest: list[Any] = _decode_manifest(packed)
    return manifest
