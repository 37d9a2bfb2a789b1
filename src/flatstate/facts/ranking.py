"""How recall orders facts, and how it fills a token budget.

A candidate's score mixes four things, each in [0, 1]:

    score = 0.55 * relevance + 0.20 * freshness + 0.15 * confidence + 0.10 * importance

- relevance: how well the fact matches the query. The keyword part is SQLite's
  bm25 (lower is better, unbounded) divided by the best bm25 among the
  candidates, so the best keyword match scores 1. Without vectors that is the
  relevance. With vectors it is the mean of the keyword part and the cosine
  similarity of the embeddings (0 for a fact the other search did not find):
  a fact found both ways beats one found only one way, and neither scale can
  drown the other.
- freshness: ``0.5 ** (age / 30 days)``, the age counted from the fact's last
  confirmation (a restatement), else its creation.
- confidence: the stored confidence, which ``decay()`` halves as a fact nears
  its expiry.
- importance: as given when the fact was added.

Relevance carries most of the weight so that a close match beats a merely
fresh one; freshness and confidence break near-ties, the way the hybrid-memory
plugin's 0.6/0.25/0.15 mix did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from flatstate.facts.model import DAY_MS, Fact, Hit

__all__ = [
    "FRESHNESS_HALF_LIFE_MS",
    "WEIGHTS",
    "fill_budget",
    "freshness",
    "keyword_scores",
    "relevance",
    "score_hit",
]

WEIGHTS = {"relevance": 0.55, "freshness": 0.20, "confidence": 0.15, "importance": 0.10}
FRESHNESS_HALF_LIFE_MS = 30 * DAY_MS

_W_REL = WEIGHTS["relevance"]
_W_FRESH = WEIGHTS["freshness"]
_W_CONF = WEIGHTS["confidence"]
_W_IMP = WEIGHTS["importance"]


def freshness(fact: Fact, now: int) -> float:
    """1.0 for a fact confirmed just now, halving every 30 days since.

    >>> from flatstate.facts.model import _example_fact
    >>> freshness(_example_fact("x"), FRESHNESS_HALF_LIFE_MS)
    0.5
    """
    anchor = fact.last_confirmed_at if fact.last_confirmed_at is not None else fact.created_at
    age = max(0, now - anchor)
    return float(0.5 ** (age / FRESHNESS_HALF_LIFE_MS))


def keyword_scores(bm25: Sequence[float]) -> list[float]:
    """bm25 values (negative, lower is better) scaled so the best is 1.0 and no match is 0.

    >>> keyword_scores([-4.0, -2.0, -1.0])
    [1.0, 0.5, 0.25]
    """
    best = min(bm25, default=0.0)
    if best >= 0:
        return [0.0] * len(bm25)
    return [b / best if b < 0 else 0.0 for b in bm25]


def relevance(keyword: float, vector: float | None) -> float:
    """Keyword relevance alone (``vector`` None: vectors are off), else the mean of the two.

    >>> relevance(0.5, None), relevance(1.0, 0.0), relevance(0.8, 0.6)
    (0.5, 0.5, 0.7)
    """
    if vector is None:
        return keyword
    return (keyword + vector) / 2


def score_hit(fact: Fact, keyword: float, vector: float | None, now: int) -> Hit:
    """Score one candidate (see the module docstring); ``vector`` None when vectors are off."""
    fresh = freshness(fact, now)
    total = (
        _W_REL * relevance(keyword, vector)
        + _W_FRESH * fresh
        + _W_CONF * fact.confidence
        + _W_IMP * fact.importance
    )
    return Hit(fact, round(total, 6), keyword, vector or 0.0, fresh)


T = TypeVar("T")


def fill_budget(
    items: Iterable[T], cost: Callable[[T], int], budget: int, limit: int | None = None
) -> list[T]:
    """The items, in order, that fit ``budget``; one too large is skipped, not a stop.

    Skipping lets a short, lower-ranked fact use the room a long one could not.

    >>> fill_budget(["aaaa", "bbbbbbbb", "cc"], len, 7)
    ['aaaa', 'cc']
    """
    chosen: list[T] = []
    left = budget
    for item in items:
        if limit is not None and len(chosen) >= limit:
            break
        c = cost(item)
        if c <= left:
            chosen.append(item)
            left -= c
    return chosen
