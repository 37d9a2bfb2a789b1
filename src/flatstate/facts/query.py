"""Turning any user text into a safe FTS5 query.

User text never reaches ``MATCH`` as it is: FTS5 gives meaning to ``"``,
``*``, ``^``, ``:``, ``-``, ``+``, parentheses and the words ``AND``, ``OR``,
``NOT`` and ``NEAR``, and a stray one either raises a syntax error or quietly
changes what is searched for. Instead the text is split into words here, each
word becomes a quoted FTS5 string (``"word"``, internal quotes doubled), and
the strings are OR-joined: a prompt is many words, and requiring all of them
would almost never match. bm25 then ranks the facts that share the most and
rarest words first.

Scoring is the cost of a query, about two microseconds for every fact that
matches any term, so a query is planned first (:class:`QueryPlanner`): it
keeps the prompt's rarest words, and bounds how many facts are scored,
whatever the size of the store. The words are the same on every backend;
PostgreSQL gets them as bound parameters of ``plainto_tsquery`` rather than
as FTS5 strings (see ``postgres``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

__all__ = [
    "MAX_QUERY_TERMS",
    "POSTINGS_BUDGET",
    "QueryPlanner",
    "fts_query",
    "plan_terms",
    "query_terms",
]

# Longer prompts keep their first words; each OR term costs a posting-list scan.
MAX_QUERY_TERMS = 32

# A word is a run of letters and digits, the characters FTS5's unicode61
# tokenizer keeps by default (categories L*, N*, Co); everything else separates.
_WORD = re.compile(r"[^\W_]+")

# Words too common to say anything about which fact is meant. Dropping them
# keeps a prompt's query to its content words, and keeps recall fast at 100k
# facts: "the" would otherwise match, and make bm25 score, every other row.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves""".split()
)


def query_terms(text: str) -> list[str]:
    """The distinct content words of ``text``, in order, at most ``MAX_QUERY_TERMS``.

    >>> query_terms('What did "we" decide about (the) NEAR-term deploy* -- AND OR?')
    ['decide', 'near', 'term', 'deploy']
    >>> query_terms("Café   naïve 日本語")
    ['café', 'naïve', '日本語']
    """
    # NFKC first: a decomposed "é" (e + combining accent) must read as one letter.
    folded = unicodedata.normalize("NFKC", text).casefold()
    terms: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(folded):
        if word in STOPWORDS or word in seen:
            continue
        seen.add(word)
        terms.append(word)
        if len(terms) == MAX_QUERY_TERMS:
            break
    if not terms:
        # A query made only of stopwords ("who am I?") still means something:
        # search for its words rather than for nothing.
        for word in _WORD.findall(folded):
            if word not in seen:
                seen.add(word)
                terms.append(word)
        del terms[MAX_QUERY_TERMS:]
    return terms


# Scoring a matching row with bm25 costs about a microsecond per query term, and
# an OR query matches every row holding any of its terms. This many matches,
# summed over the kept terms, bounds that work however large the store grows.
POSTINGS_BUDGET = 500
# Counting a term's facts stops here: past it, a term is simply "too common".
DOC_FREQ_CAP = 4 * POSTINGS_BUDGET
# Document counts remembered, and how much the store may grow before they are
# counted again (they only steer the plan; a stale one costs a little speed).
DOC_FREQ_CACHE_TERMS = 8192
DOC_FREQ_CACHE_GROWTH = 0.1


def plan_terms(
    terms: Sequence[str], doc_freq: Callable[[str], int], budget: int = POSTINGS_BUDGET
) -> list[str]:
    """The terms worth searching for: rarest first, while their matches fit ``budget``.

    A word found in thousands of facts ("project", "meeting") says little about
    which fact is meant (bm25 gives it a small weight) yet costs the most to
    score; the rare words of a prompt (names, tools, topics) say the most. So
    terms are taken from the rarest while the sum of their document counts
    stays within the budget; the rarest term that matches anything is always
    kept. Terms that match nothing are dropped. Small stores keep every term.

    >>> counts = {"alice": 12, "billing": 300, "decided": 4000, "nothing": 0}
    >>> plan_terms(["decided", "alice", "billing", "nothing"], counts.__getitem__, 2000)
    ['alice', 'billing']
    >>> plan_terms(["decided"], counts.__getitem__, 2000)
    ['decided']
    """
    counted = sorted(
        ((count, i, term) for i, term in enumerate(terms) if (count := doc_freq(term)) > 0)
    )
    kept: list[str] = []
    total = 0
    for count, _, term in counted:
        if kept and total + count > budget:
            break
        kept.append(term)
        total += count
    return kept


def quote(term: str) -> str:
    """``term`` as an FTS5 string literal: in double quotes, internal quotes doubled."""
    return '"' + term.replace('"', '""') + '"'


def fts_query(text: str | Sequence[str]) -> str | None:
    """An FTS5 ``MATCH`` expression that any input leaves well-formed; None if it has no words.

    ``text`` is user text, or terms already taken from it (:func:`query_terms`).

    >>> fts_query('say "hi" NOT (bye)*')
    '"say" OR "hi" OR "bye"'
    >>> fts_query("?!") is None
    True
    """
    terms = query_terms(text) if isinstance(text, str) else text
    if not terms:
        return None
    return " OR ".join(quote(term) for term in terms)


class QueryPlanner:
    """Plans queries against one store's keyword index: which terms, and which rows to score.

    The index is reached through three functions, so that one planner serves
    every backend: ``count_matching(term, cap)`` (facts holding a term, at most
    ``cap``), ``top_seq()`` (the highest seq stored) and ``floor_of(terms, n)``
    (the seq of the ``n``-th newest fact matching any of ``terms``, 0 if fewer).
    Keeps a bounded memory of how many facts hold each term, so that a term is
    counted once, not on every recall.
    """

    def __init__(
        self,
        count_matching: Callable[[str, int], int],
        top_seq: Callable[[], int],
        floor_of: Callable[[list[str], int], int],
        budget: int = POSTINGS_BUDGET,
        cap: int = DOC_FREQ_CAP,
    ) -> None:
        self._count_matching = count_matching
        self._top_seq = top_seq
        self._floor_of = floor_of
        self.budget = budget
        self.cap = cap
        self._doc_freq: dict[str, int] = {}
        self._rows = 0

    def doc_freq(self, term: str) -> int:
        """How many indexed facts hold ``term`` (at most ``cap``)."""
        cache = self._doc_freq
        found = cache.pop(term, None)
        if found is None:
            found = self._count_matching(term, self.cap)
            if len(cache) >= DOC_FREQ_CACHE_TERMS:
                del cache[next(iter(cache))]  # the least recently used
        cache[term] = found
        return found

    def plan(self, text: str) -> tuple[list[str], int] | None:
        """The terms to search ``text`` for and the lowest seq worth scoring; None: no words.

        The terms are the text's rarest (:func:`plan_terms`). When even the
        rarest term alone is in more facts than the budget, only the budget's
        worth of the newest of them are scored, through a seq floor: among
        equally good matches the newest, being the freshest, would rank first
        anyway.
        """
        terms = query_terms(text)
        if not terms:
            return None
        top = self._top_seq()
        if top > self._rows * (1 + DOC_FREQ_CACHE_GROWTH) + 100 or top < self._rows:
            self._doc_freq.clear()
            self._rows = top
        kept = plan_terms(terms, self.doc_freq, self.budget)
        if not kept:
            return None
        floor = 0
        if sum(map(self.doc_freq, kept)) > self.budget:
            floor = self._floor_of(kept, self.budget)
        return kept, floor
