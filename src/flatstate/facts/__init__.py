"""Durable memory facts: preferences, decisions and entities that survive compaction.

Open a state directory's facts, or a PostgreSQL namespace's (a ``postgresql://`` URL),
with :func:`open_facts`; see ``docs/facts.md``.

>>> import tempfile
>>> from flatstate.facts import open_facts
>>> with open_facts(tempfile.mkdtemp()) as facts:
...     _ = facts.add("Prefers dark mode", category="preference", entity="user", key="theme")
...     [f.text for f in facts.recall("which theme does the user like? dark?")]
['Prefers dark mode']
"""

from flatstate.facts.aio import open_async_facts
from flatstate.facts.context import MemoryContext, after_compaction_context
from flatstate.facts.model import (
    DECAY_CLASSES,
    DECAY_TTL_MS,
    DecayReport,
    Fact,
    Hit,
    NewFact,
    classify_decay,
    estimate_tokens,
    normalized_hash,
    render_fact,
)
from flatstate.facts.query import fts_query, query_terms
from flatstate.facts.store import FactStats, FactStore, open_facts
from flatstate.facts.vectors import Embed

__all__ = [
    "DECAY_CLASSES",
    "DECAY_TTL_MS",
    "DecayReport",
    "Embed",
    "Fact",
    "FactStats",
    "FactStore",
    "Hit",
    "MemoryContext",
    "NewFact",
    "after_compaction_context",
    "classify_decay",
    "estimate_tokens",
    "fts_query",
    "normalized_hash",
    "open_async_facts",
    "open_facts",
    "query_terms",
    "render_fact",
]
