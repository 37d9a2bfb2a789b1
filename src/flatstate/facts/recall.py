"""Recall: the candidates a query draws from the keyword index (and the vectors), ranked,
and the best of them chosen to fit a token budget.

The backend finds the candidates (:meth:`~flatstate.facts.backend.FactsBackend.keyword`,
and :meth:`~flatstate.facts.backend.VectorSearch.nearest`); :mod:`ranking` scores them.
This module joins the two, the same way on every backend.
"""

from __future__ import annotations

from collections.abc import Callable

from flatstate.errors import InvalidFact
from flatstate.facts.backend import FactsBackend, Row, VectorSearch
from flatstate.facts.model import Fact, Hit, estimate_tokens, render_fact
from flatstate.facts.ranking import fill_budget, keyword_scores, score_hit

__all__ = ["MIN_CANDIDATES", "Ranked", "choose", "pool_size", "rank"]

# Recall ranks at least this many keyword (and vector) candidates to fill its budget.
MIN_CANDIDATES = 48

Ranked = list[tuple[int, Hit]]
"""(seq, hit) pairs, best first."""


def pool_size(limit: int | None) -> int:
    """How many candidates of each kind recall ranks to pick ``limit`` facts (or a budget's)."""
    return max(MIN_CANDIDATES, 4 * (limit or 0))


def rank(
    backend: FactsBackend,
    vectors: VectorSearch | None,
    query: str,
    now: int,
    pool: int,
    build: Callable[[Row], Fact],
) -> Ranked:
    """(seq, hit) of the candidates for ``query``, best first; ties go to the newest fact.

    Call it inside ``backend.read``. ``build`` makes a Fact of a backend row.
    """
    keyword: dict[int, tuple[Fact, float]] = {}
    found = backend.keyword(query, now, pool)
    scores = keyword_scores([score for score, _ in found])
    for (_, row), kw in zip(found, scores, strict=True):
        keyword[row[0]] = (build(row), kw)
    similar: dict[int, float] = {}
    if vectors is not None and query.strip():
        try:
            vector = vectors.encode(query)
        except InvalidFact:
            vector = None  # no usable embedding for this text: keywords alone
        if vector is not None:
            similar = dict(vectors.nearest(vector, now, pool))
    off = 0.0 if vectors is not None else None  # a vector part of 0, or none at all
    ranked = [
        (seq, score_hit(fact, kw, similar.get(seq, off), now))
        for seq, (fact, kw) in keyword.items()
    ]
    only_vector = [seq for seq in similar if seq not in keyword]
    if only_vector:
        ranked.extend(
            (row[0], score_hit(build(row), 0.0, similar[row[0]], now))
            for row in backend.by_seqs(only_vector)
        )
    ranked.sort(key=lambda item: (-item[1].score, -item[0]))
    return ranked


def choose(ranked: Ranked, budget_tokens: int, limit: int | None, preview_chars: int) -> Ranked:
    """The ranked facts, in order, whose prompt lines fit ``budget_tokens`` (at most ``limit``).

    Each costs the tokens of its line (:func:`~flatstate.facts.model.render_fact`
    with ``preview_chars``) plus one for its newline; one too long is skipped.
    """
    return fill_budget(
        ranked,
        lambda item: estimate_tokens(render_fact(item[1].fact, preview_chars)) + 1,
        budget_tokens,
        limit,
    )
