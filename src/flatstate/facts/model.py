"""Facts as values: the immutable :class:`Fact`, decay classes, dedup hashing, token estimates.

Everything here is pure; the store decides when to call it. Times are epoch
milliseconds throughout, like the session store's ``updatedAt`` (the
hybrid-memory plugin used seconds; one unit across flatstate wins).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import msgspec

from flatstate.errors import InvalidFact
from flatstate.frozen import NotJSON, check_text

__all__ = [
    "DAY_MS",
    "DECAY_CLASSES",
    "DECAY_TTL_MS",
    "DecayReport",
    "Fact",
    "Hit",
    "NewFact",
    "checked_import",
    "classify_decay",
    "estimate_tokens",
    "longer_class",
    "normalize_decay_class",
    "normalized_hash",
    "render_fact",
    "ttl_of",
    "validated",
]

MAX_TEXT_CHARS = 10_000
MAX_FIELD_CHARS = 1_000

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# How long a fact of each class lives without being restated. None: forever.
DECAY_TTL_MS: dict[str, int | None] = {
    "permanent": None,
    "stable": 90 * DAY_MS,
    "normal": 14 * DAY_MS,
    "short": 2 * DAY_MS,
    "session": 24 * HOUR_MS,
    "ephemeral": 4 * HOUR_MS,
}
DECAY_CLASSES = tuple(DECAY_TTL_MS)

# Names the hybrid-memory plugin used for the same classes, so its exports load.
_DECAY_ALIASES = {"durable": "stable", "active": "normal", "checkpoint": "ephemeral"}


class Fact(msgspec.Struct, frozen=True, gc=False):
    """One durable fact, as stored. Immutable: share it freely, never copy it.

    ``gc=False``: a fact holds only strings, numbers and a tuple of strings, so
    it can never be part of a reference cycle, and the collector need not
    track the thousands a recall-heavy process holds.

    Times are epoch milliseconds. ``expires_at`` is None for permanent facts;
    ``superseded_at``/``superseded_by`` are set once a newer fact replaced this
    one; ``session_key`` and ``entry_id`` name the session and the transcript
    entry the fact was taken from, when known.
    """

    id: str
    text: str
    why: str | None
    category: str
    importance: float
    entity: str | None
    key: str | None
    value: str | None
    source: str | None
    created_at: int
    decay_class: str
    expires_at: int | None
    last_confirmed_at: int | None
    confidence: float
    normalized_hash: str
    recall_count: int
    last_accessed_at: int | None
    superseded_at: int | None
    superseded_by: str | None
    tags: tuple[str, ...]
    scope: str
    scope_target: str | None
    session_key: str | None
    entry_id: str | None


class Hit(msgspec.Struct, frozen=True, gc=False):
    """A fact with the parts of its ranking score (see ``ranking``), for search and debugging."""

    fact: Fact
    score: float
    keyword: float
    vector: float
    freshness: float


class DecayReport(msgspec.Struct, frozen=True, gc=False):
    """What one ``decay()`` run did."""

    expired: int
    """Facts deleted because their TTL ran out."""
    halved: int
    """Facts whose confidence was halved (past 75% of their TTL)."""
    dropped: int
    """Facts deleted because their confidence fell below the floor."""


def normalize_decay_class(name: str) -> str | None:
    """The canonical class for ``name`` (aliases included), or None if unknown."""
    name = name.strip().lower()
    name = _DECAY_ALIASES.get(name, name)
    return name if name in DECAY_TTL_MS else None


_SESSION_WORDS = re.compile(
    r"\b(right now|at the moment|this session|this conversation|today|tonight)\b", re.I
)
_SHORT_WORDS = re.compile(r"\b(for now|temporar\w*|this week|until|tomorrow|currently)\b", re.I)
_EPHEMERAL_WORDS = re.compile(r"\b(checkpoint|in progress|working on|wip)\b", re.I)
_STABLE_CATEGORIES = frozenset({"preference", "decision", "entity", "identity", "contact"})


def classify_decay(text: str, category: str) -> str:
    """The decay class for a fact added without one: a small keyword heuristic.

    Time words win (a preference "for now" is short-lived); then preferences,
    decisions and entities are ``stable``; everything else is ``normal``.
    Nothing is made ``permanent`` by guessing: that is the caller's call.

    >>> classify_decay("Working on the parser refactor", "other")
    'ephemeral'
    >>> classify_decay("Prefers dark mode", "preference")
    'stable'
    >>> classify_decay("Use the staging database for now", "decision")
    'short'
    """
    if _EPHEMERAL_WORDS.search(text):
        return "ephemeral"
    if _SESSION_WORDS.search(text):
        return "session"
    if _SHORT_WORDS.search(text):
        return "short"
    if category.lower() in _STABLE_CATEGORIES:
        return "stable"
    return "normal"


_SPACES = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n.,;:!?\"'`()[]{}"


def normalized_hash(text: str) -> str:
    """SHA-256 of ``text`` with case, Unicode form, spacing and edge punctuation folded.

    Two statements of one fact that differ only in those ways dedup to one row.

    >>> normalized_hash("Prefers  Dark mode.") == normalized_hash("prefers dark mode")
    True
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = _SPACES.sub(" ", folded).strip(_EDGE_PUNCT)
    return hashlib.sha256(folded.encode()).hexdigest()


class NewFact(msgspec.Struct, frozen=True, kw_only=True):
    """A fact to add; every field but ``text`` is optional.

    ``decay_class`` None picks one from the text and category
    (:func:`~flatstate.facts.model.classify_decay`). ``supersedes`` names a
    fact this one replaces, in the same transaction.
    """

    text: str
    why: str | None = None
    category: str = "other"
    importance: float = 0.5
    entity: str | None = None
    key: str | None = None
    value: str | None = None
    source: str | None = None
    decay_class: str | None = None
    confidence: float = 1.0
    tags: tuple[str, ...] = ()
    scope: str = "global"
    scope_target: str | None = None
    session_key: str | None = None
    entry_id: str | None = None
    supersedes: str | None = None


def _check_text(name: str, value: str | None, limit: int = MAX_FIELD_CHARS) -> None:
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise InvalidFact(f"{name} must be text of at most {limit:,} characters")
    if value is not None:
        _check_whole_characters(name, value)


def _check_whole_characters(name: str, value: str) -> None:
    if value.isascii():
        return
    try:
        check_text(value)
    except NotJSON as exc:
        raise InvalidFact(f"{name}: {exc.problem}") from None


_INT64 = range(-(2**63), 2**63)
_TIMES = ("created_at", "expires_at", "last_confirmed_at", "last_accessed_at", "superseded_at")


def checked_import(item: object) -> Fact:
    """A fact to import as it is (what ``export()`` gives), checked as an add would be and
    for its stored fields; raises InvalidFact naming the first that cannot be stored."""
    if not isinstance(item, Fact):
        raise InvalidFact(f"import_facts takes Fact objects, as export() gives, not {item!r:.60}")
    try:
        msgspec.convert(msgspec.structs.asdict(item), Fact)
    except msgspec.ValidationError as exc:
        raise InvalidFact(f"fact {item.id!r:.60}: {exc}") from None
    if not item.id:
        raise InvalidFact("a fact to import needs its id")
    _check_text("id", item.id)
    fields = {f: getattr(item, f) for f in NewFact.__struct_fields__ if f != "supersedes"}
    validated(NewFact(**fields))
    for name in (*_TIMES, "recall_count"):
        value = getattr(item, name)
        if value is not None and value not in _INT64:
            raise InvalidFact(f"fact {item.id!r:.60}: {name} {value} does not fit 64 bits")
    return item


def _check_unit(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidFact(f"{name} must be a number from 0 to 1, not {value!r}")
    return float(value)


def validated(new: NewFact) -> tuple[NewFact, str]:
    """``new`` with its decay class settled, and its normalized hash. Raises InvalidFact."""
    if not isinstance(new.text, str) or not new.text.strip():
        raise InvalidFact("text must be a non-empty string")
    _check_text("text", new.text, MAX_TEXT_CHARS)
    for name in ("why", "entity", "key", "value", "source", "scope_target", "session_key"):
        _check_text(name, getattr(new, name))
    _check_text("entry_id", new.entry_id)
    _check_text("supersedes", new.supersedes)
    if not new.category or not isinstance(new.category, str) or len(new.category) > 64:
        raise InvalidFact("category must be a non-empty name of at most 64 characters")
    if not new.scope or not isinstance(new.scope, str) or len(new.scope) > 64:
        raise InvalidFact("scope must be a non-empty name of at most 64 characters")
    if not isinstance(new.tags, tuple | list) or any(
        not isinstance(t, str) or not t or len(t) > 64 for t in new.tags
    ):
        raise InvalidFact("tags must be a list of non-empty strings of at most 64 characters")
    for name, text in (
        ("category", new.category),
        ("scope", new.scope),
        *(("tags", t) for t in new.tags),
    ):
        _check_whole_characters(name, text)
    _check_unit("importance", new.importance)
    _check_unit("confidence", new.confidence)
    if new.decay_class is None:
        decay_class = classify_decay(new.text, new.category)
    else:
        found = normalize_decay_class(new.decay_class) if isinstance(new.decay_class, str) else None
        if found is None:
            raise InvalidFact(
                f"unknown decay class {new.decay_class!r}; use one of {', '.join(DECAY_TTL_MS)}"
            )
        decay_class = found
    if decay_class != new.decay_class:
        new = msgspec.structs.replace(new, decay_class=decay_class)
    return new, normalized_hash(new.text)


def ttl_of(decay_class: str) -> int | None:
    """The TTL of a class in milliseconds (None: permanent); unknown names count as normal."""
    return DECAY_TTL_MS.get(decay_class, DECAY_TTL_MS["normal"])


def longer_class(a: str, b: str) -> str:
    """Of two decay classes, the one that lives longer (permanent beats all)."""
    ta, tb = ttl_of(a), ttl_of(b)
    if ta is None:
        return a
    if tb is None:
        return b
    return a if ta >= tb else b


def estimate_tokens(text: str) -> int:
    """Tokens ``text`` costs in a prompt, estimated as OpenClaw does: characters / 4, rounded up."""
    return (len(text) + 3) // 4


def render_fact(fact: Fact, max_chars: int = 300) -> str:
    """One prompt line for ``fact``: its category and text, long text cut with an ellipsis.

    >>> from flatstate.facts.model import _example_fact
    >>> render_fact(_example_fact("The deploy target is fly.io"))
    '- [decision] The deploy target is fly.io'
    """
    text = " ".join(fact.text.split())
    if len(text) > max_chars:
        text = text[: max(1, max_chars - 1)].rstrip() + "…"
    return f"- [{fact.category}] {text}"


def _example_fact(text: str) -> Fact:
    """A fact for examples and doctests; the store builds real ones."""
    return Fact(
        "example",
        text,
        None,
        "decision",
        0.5,
        None,
        None,
        None,
        None,
        0,
        "normal",
        None,
        None,
        1.0,
        normalized_hash(text),
        0,
        None,
        None,
        None,
        (),
        "global",
        None,
        None,
        None,
    )
