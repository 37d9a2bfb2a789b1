"""Immutable JSON values that many readers can share without copying.

A decoded JSON document becomes nested :class:`FrozenMap` objects (for JSON
objects) and tuples (for arrays); strings, numbers, booleans and ``None`` are
immutable already. Every mutation attempt raises ``TypeError``, so one object
can be handed to every caller: the cure for the copy-per-read cache that made
OpenClaw's gateway grow by a gigabyte a minute.

Memory: a FrozenMap is not a dict. Its keys live in a *shape* shared by every
map with the same keys in the same order (all 20 tool records of a
system-prompt report, every session entry of one kind), and the map itself
holds only a tuple of values: about a third of a dict's size. Large strings
(skills prompts) repeat across entries; :class:`StringPool` keeps one copy of
each while it is in use.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import TYPE_CHECKING, Any, NoReturn, Self, cast

import msgspec

__all__ = [
    "MAX_DEPTH",
    "FrozenMap",
    "NotJSON",
    "SizeAccount",
    "StringPool",
    "check_text",
    "decode_json",
    "encode_json",
    "escape_surrogates",
    "freeze",
    "json_size",
    "strict_decoder",
    "thaw",
]


class _Shape:
    """The ordered keys of a family of maps, and where each key's value sits."""

    __slots__ = ("index", "keys")

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.index = {key: i for i, key in enumerate(keys)}


# Shapes are shared through this table. Data with ever-new key sets (maps keyed
# by ids) must not grow it without bound: past the limit a new key set gets a
# shape of its own, which costs what a dict would.
_shapes: dict[tuple[str, ...], _Shape] = {}
SMALL_JSON = 256
_MAX_SHAPES = 16_384


def _shape_of(keys: tuple[str, ...]) -> _Shape:
    shape = _shapes.get(keys)
    if shape is None:
        shape = _Shape(keys)
        if len(_shapes) < _MAX_SHAPES:
            _shapes[keys] = shape
    return shape


if TYPE_CHECKING:
    _MappingBase = Mapping[str, Any]
else:
    # Registered as a Mapping below rather than inherited: an ABC subclass pays
    # ABCMeta.__instancecheck__ on every isinstance test, and the write path
    # makes dozens of those per entry.
    _MappingBase = object


class FrozenMap(_MappingBase):
    """A read-only JSON object whose values are frozen too.

    >>> m = freeze({"a": {"b": [1, 2]}})
    >>> m["a"]["b"]
    (1, 2)
    >>> m["a"] = 1
    Traceback (most recent call last):
    ...
    TypeError: FrozenMap is immutable; call .to_dict() for a private mutable copy
    """

    __slots__ = ("_digest", "_shape", "_values")
    _shape: _Shape
    _values: tuple[Any, ...]
    _digest: tuple[int, str, bytes | None] | None

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        frozen: FrozenMap = freeze(dict(data or {}))
        object.__setattr__(self, "_shape", frozen._shape)
        object.__setattr__(self, "_values", frozen._values)
        object.__setattr__(self, "_digest", None)

    @classmethod
    def _wrap(
        cls, data: dict[str, Any], digest: tuple[int, str, bytes | None] | None = None
    ) -> Self:
        """Adopt ``data`` whose values are already frozen (no checks)."""
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_shape", _shape_of(tuple(data)))
        object.__setattr__(obj, "_values", tuple(data.values()))
        object.__setattr__(obj, "_digest", digest)
        return obj

    def _as_dict(self) -> dict[str, Any]:
        """A new shallow dict of this map (values stay frozen and shared)."""
        return dict(zip(self._shape.keys, self._values, strict=True))

    def json_digest(self) -> tuple[int, str, bytes | None]:
        """(length, sha256 hex, the JSON itself if short) of this value's compact JSON.

        Computed once: immutability makes the memo safe. Backends use it to
        store a large value once, by content, and to re-emit a small one
        without encoding it again (text is kept below ``SMALL_JSON`` bytes).
        """
        digest = self._digest
        if digest is None:
            text = encode_json(self)
            digest = (
                len(text),
                hashlib.sha256(text).hexdigest(),
                text if len(text) < SMALL_JSON else None,
            )
            object.__setattr__(self, "_digest", digest)
        return digest

    # -- reads ---------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._values[self._shape.index[key]]

    def get(self, key: str, default: Any = None) -> Any:
        i = self._shape.index.get(key)
        return default if i is None else self._values[i]

    def __contains__(self, key: object) -> bool:
        return key in self._shape.index

    def __iter__(self) -> Iterator[str]:
        return iter(self._shape.keys)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> KeysView[str]:
        return KeysView(self)

    def values(self) -> ValuesView[Any]:
        return ValuesView(self)

    def items(self) -> ItemsView[str, Any]:
        return ItemsView(self)

    def pairs(self) -> Iterator[tuple[str, Any]]:
        """(key, value) pairs, the fastest way to walk a map."""
        return zip(self._shape.keys, self._values, strict=True)

    def dropped_values(self, previous: FrozenMap) -> Iterator[Any]:
        """The values of ``previous`` that this map does not hold, by identity, under the
        same key: for a map patched from ``previous``, just the replaced ones."""
        if previous._shape is self._shape:
            for old, value in zip(previous._values, self._values, strict=True):
                if old is not value:
                    yield old
            return
        for key, old in previous.pairs():
            if self.get(key, _MISSING) is not old:
                yield old

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            if self._shape.keys == other._shape.keys:
                return self._values == other._values
            return self._as_dict() == other._as_dict()
        if isinstance(other, Mapping):
            # JSON equality: a frozen array (tuple) equals a plain list.
            return bool(thaw(self) == thaw(other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # unhashable, as a dict is; mypy wants a method

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._as_dict()!r})"

    def to_dict(self) -> dict[str, Any]:
        """A fresh, mutable deep copy: dicts and lists all the way down."""
        return cast("dict[str, Any]", thaw(self))

    # -- immutability --------------------------------------------------------
    def __copy__(self) -> FrozenMap:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenMap:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self)._wrap, (self._as_dict(), self._digest))

    def _immutable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            f"{type(self).__name__} is immutable; call .to_dict() for a private mutable copy"
        )

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _immutable
    pop = popitem = clear = update = setdefault = __ior__ = _immutable


Mapping.register(FrozenMap)

_new_map = FrozenMap.__new__
# The slot descriptors' setters, which FrozenMap's own __setattr__ refuses.
_slots: Any = vars(FrozenMap)
_set_shape = _slots["_shape"].__set__
_set_values = _slots["_values"].__set__
_set_digest = _slots["_digest"].__set__

MAX_DEPTH = 64
"""How deeply objects and arrays may nest inside one value (the value itself is level 1).

Session entries nest four or five levels; the limit keeps every walk over a value (freezing,
encoding, comparing) far inside Python's recursion limit, whatever a file or a caller holds.
"""


class NotJSON(ValueError):
    """A value JSON cannot carry, found by :func:`freeze`; ``path`` says where inside it."""

    def __init__(self, problem: str, path: list[str | int] | None = None) -> None:
        self.problem = problem
        self.path = path if path is not None else []
        super().__init__(problem)

    def where(self) -> str:
        """The path as people write it: ``v.k[2]``, or ``the value`` at the top."""
        text = ""
        for step in self.path[:8]:
            if isinstance(step, str):
                step = escape_surrogates(step)
            text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
        return (text + ("..." if len(self.path) > 8 else "")) or "the value"


def freeze(value: Any, pool: StringPool | None = None, *, decoded: bool = False) -> Any:
    """Return ``value`` with every dict made a FrozenMap and every list a tuple.

    Already-frozen parts are returned as they are, so freezing is cheap to repeat. Raises
    :class:`NotJSON` for anything that would not read back as it was written: NaN and
    infinities, bytes, sets, non-string keys, objects of other types, nesting deeper than
    :data:`MAX_DEPTH`, and text with a lone surrogate. ``decoded`` says the value was just
    decoded from JSON text, where a lone surrogate is a faithful ``\\udXXXX`` escape (Node
    writes one when it cuts a string mid-emoji) and is kept.
    """
    return _freeze(value, pool, MAX_DEPTH, not decoded)


def _freeze(value: Any, pool: StringPool | None, room: int, strict: bool) -> Any:
    kind = type(value)
    # Exact-type checks first, most common first: isinstance against the
    # Mapping ABC costs more than the rest of a small value's freezing.
    if kind is str:
        if strict and not value.isascii():
            check_text(value)
        return pool.intern(value) if pool is not None else value
    if kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if value - value != 0.0:  # NaN or an infinity: JSON has no such number
            raise NotJSON(f"{value!r} is not a number JSON can carry")
        return value
    if kind is dict:
        if room <= 1:
            raise _too_deep()
        values = []
        for key, item in value.items():
            if type(key) is not str:
                raise NotJSON(f"the key {key!r} is not a string, as JSON keys must be")
            try:
                if strict and not key.isascii():
                    check_text(key)
                values.append(_freeze(item, pool, room - 1, strict))
            except NotJSON as exc:
                exc.path.insert(0, key)
                raise
        obj = _new_map(FrozenMap)
        _set_shape(obj, _shape_of(tuple(value)))
        _set_values(obj, tuple(values))
        _set_digest(obj, None)
        return obj
    if kind is list or kind is tuple:
        if room <= 1:
            raise _too_deep()
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_freeze(item, pool, room - 1, strict))
            except NotJSON as exc:
                exc.path.insert(0, index)
                raise
        return tuple(items)
    if isinstance(value, FrozenMap):
        return value
    # Subclasses (str and int enums, numpy floats, OrderedDict): the plain value they equal.
    plain = _plain_scalar(value)
    if plain is not None:
        return _freeze(plain, pool, room, strict)
    if isinstance(value, Mapping):
        return _freeze(dict(value.items()), pool, room, strict)
    if isinstance(value, list | tuple):
        return _freeze(list(value), pool, room, strict)
    raise NotJSON(
        f"a {type(value).__name__} is not a JSON value "
        "(use str, int, float, bool, None, dict or list)"
    )


_PLAIN: dict[type, Any] = {str: str.__str__, int: int.__int__, float: float.__float__}


def _plain_scalar(value: Any) -> Any:
    """The str, int or float a subclass instance holds, by the base type's own conversion
    (an enum's ``str()`` says "Color.RED"); None for anything else."""
    for base, convert in _PLAIN.items():
        if isinstance(value, base):
            return convert(value)
    return None


def _too_deep() -> NotJSON:
    return NotJSON(f"objects and arrays nest deeper than {MAX_DEPTH} levels")


def escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (which UTF-8 cannot carry, nor a stream print) as
    its ``\\udXXXX`` escape: how Node writes one in JSON, and how a message shows one."""
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def check_text(text: str) -> None:
    """Raise NotJSON for text holding a lone surrogate (see :func:`freeze`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotJSON(
            f"the text holds a lone surrogate {text[exc.start]!r} at character {exc.start}, "
            "which UTF-8 cannot carry; pass whole characters"
        ) from None


class SizeAccount:
    """Estimated resident bytes of a set of frozen values, each large string counted once.

    Uses CPython's object sizes (a map 96 bytes plus 8 per value, a str 49
    bytes plus its characters, an int 28) rather than ``sys.getsizeof`` on
    every node, which would cost as much as the data is large. Strings of at
    least ``shared_min`` characters are reference-counted by content: nine
    entries sharing one pooled skills prompt pay for it once, and it stops
    counting when the last of them leaves.

    >>> account = SizeAccount()
    >>> a = freeze({"prompt": "x" * 1000, "n": 1})
    >>> b = freeze({"prompt": "x" * 1000, "n": 2})
    >>> account.add(a); one = account.bytes
    >>> account.add(b); account.bytes - one < 1000
    True
    """

    def __init__(self, shared_min: int = 512) -> None:
        self.shared_min = shared_min
        self.bytes = 0
        self._shared: dict[str, int] = {}

    def add(self, value: Any) -> None:
        self.bytes += self._walk(value, 1)

    def remove(self, value: Any) -> None:
        self.bytes -= self._walk(value, -1)

    def replace(self, old: FrozenMap, new: FrozenMap) -> None:
        """Account ``new`` in place of ``old``, visiting only the values that differ.

        A patch shares every untouched value with the entry it replaces, so
        this costs as much as the patch is large, not as the entry is.
        """
        self.bytes += 8 * (len(new._values) - len(old._values))
        if old._shape is new._shape:
            for previous, value in zip(old._values, new._values, strict=True):
                if previous is not value:
                    self.remove(previous)
                    self.add(value)
            return
        before = old._as_dict()
        for key, value in new.pairs():
            previous = before.pop(key, _MISSING)
            if previous is not value:
                if previous is not _MISSING:
                    self.remove(previous)
                self.add(value)
        for value in before.values():
            self.remove(value)

    def _walk(self, value: Any, sign: int) -> int:
        kind = type(value)
        if kind is str:
            if len(value) < self.shared_min:
                return 49 + len(value)
            shared = self._shared
            count = shared.get(value, 0)
            if sign > 0:
                shared[value] = count + 1
                return 49 + len(value) if count == 0 else 8
            if count <= 1:
                shared.pop(value, None)
                return 49 + len(value)
            shared[value] = count - 1
            return 8
        if kind is tuple:
            return 40 + sum(8 + self._walk(v, sign) for v in value)
        if kind is bool or value is None:
            return 0
        if isinstance(value, FrozenMap):
            return 96 + sum(8 + self._walk(v, sign) for v in value._values)
        return 28


_MISSING: Any = object()


def json_size(entry: FrozenMap) -> int:
    """Length of ``entry``'s compact JSON, reusing the memoized digests of nested maps."""
    size = 2 + max(0, len(entry) - 1)  # braces and commas
    for key, value in entry.pairs():
        size += len(encode_json(key)) + 1
        size += value.json_digest()[0] if isinstance(value, FrozenMap) else len(encode_json(value))
    return size


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`: plain dicts and lists, freshly allocated."""
    if isinstance(value, FrozenMap):
        return {k: thaw(v) for k, v in value.pairs()}
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw(v) for v in value]
    return value


class StringPool:
    """Keeps one shared copy of each large string seen recently.

    Strings shorter than ``min_length`` are not pooled (their hashing would
    cost more than it saves). The pool is bounded by count and by bytes and
    forgets the least recently seen first; a forgotten string stays alive in
    the entries that hold it, only later duplicates stop being folded into it.
    """

    def __init__(
        self, min_length: int = 512, max_strings: int = 4096, max_bytes: int = 64 << 20
    ) -> None:
        self.min_length = min_length
        self.max_strings = max_strings
        self.max_bytes = max_bytes
        # An OrderedDict: a dict's first key, once many were deleted before it, takes a scan
        # past their holes to find (3 us a write at 4,096 strings).
        self._strings: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def intern(self, s: str) -> str:
        if len(s) < self.min_length:
            return s
        with self._lock:  # threads of one store share the pool
            strings = self._strings
            found = strings.get(s)
            if found is not None:
                strings.move_to_end(found)  # most recently seen goes last
                return found
            strings[s] = s
            self.bytes += len(s)
            while len(strings) > self.max_strings or self.bytes > self.max_bytes:
                oldest, _ = strings.popitem(last=False)
                self.bytes -= len(oldest)
            return s

    def __len__(self) -> int:
        return len(self._strings)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, FrozenMap):
        return obj._as_dict()
    plain = _plain_scalar(obj)  # subclasses msgspec leaves to us: as freeze() has them
    if plain is not None:
        return plain
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.json.Decoder()
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_json(value: Any, *, indent: int | None = None) -> bytes:
    """JSON bytes of a plain or frozen value: compact, or indented as ``JSON.stringify`` does.

    Text holding a lone surrogate (kept from a file that had one) is written as Node writes
    it, a ``\\udXXXX`` escape, so such an entry reads back as it was.
    """
    try:
        compact = _encoder.encode(value)
        return compact if indent is None else msgspec.json.format(compact, indent=indent)
    except UnicodeEncodeError:
        separators = (",", ":") if indent is None else (",", ": ")
        text = json.dumps(
            value, ensure_ascii=False, indent=indent, separators=separators, default=_enc_hook
        )
        return escape_surrogates(text).encode()


def decode_json(data: bytes | str) -> Any:
    """Plain Python values (dicts and lists) from JSON text.

    Raises ``msgspec.DecodeError`` (or ``ValidationError`` for a number out of range) for text
    that is not JSON or nests past Python's recursion limit. A lone surrogate escape, which
    msgspec refuses, is valid JSON: such text is decoded by the standard library instead.
    """
    try:
        return _decoder.decode(data)
    except RecursionError:
        raise msgspec.DecodeError(
            f"objects and arrays nest deeper than {MAX_DEPTH} levels"
        ) from None
    except msgspec.DecodeError as exc:
        try:
            return strict_decoder.decode(data if isinstance(data, str) else data.decode())
        except (ValueError, RecursionError):
            raise exc from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:
        raise ValueError(f"the number {text} is out of range")
    return value


strict_decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
"""The standard library's decoder, refusing what JSON does not allow (NaN, 1e400) as msgspec
does, for the texts msgspec cannot read (lone surrogates) and for salvage member by member."""
