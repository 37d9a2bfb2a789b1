"""What the compaction hooks put back into the prompt after a transcript is compacted.

After compaction the model has lost what the removed turns said. The
hybrid-memory plugin answered with recall on the session's last prompt plus
the newest facts (``list(8)``); this is that, as one call whose cost is
bounded by its limits and its token budget, apart from one COUNT over a
narrow index (the plugin's health check: 11 ms at 100,000 facts here).
"""

from __future__ import annotations

import msgspec

from flatstate.facts.model import Fact, estimate_tokens, render_fact
from flatstate.facts.store import FactStore

__all__ = ["MemoryContext", "after_compaction_context"]

_OPEN = "<memory-context>"
_CLOSE = "</memory-context>"


class MemoryContext(msgspec.Struct, frozen=True, gc=False):
    """The facts chosen after a compaction and the text that carries them."""

    facts: tuple[Fact, ...]
    """Recalled facts first (best first), then the newest ones not already there."""
    recalled: int
    """How many of ``facts`` came from recall on the last prompt."""
    text: str
    """``<memory-context>`` with one line per fact, or "" when there are none."""
    tokens: int
    """Estimated tokens of ``text`` (characters / 4); never above the budget."""
    total_facts: int
    """Live facts in the store (the plugin's health-check count)."""


def after_compaction_context(
    facts: FactStore,
    last_prompt: str | None,
    *,
    budget_tokens: int = 800,
    newest: int = 8,
    preview_chars: int = 150,
) -> MemoryContext:
    """Facts to re-inject after a compaction: recall for ``last_prompt``, then the newest.

    Recall gets the budget first (less the wrapper's tokens); the ``newest``
    facts fill what it left, skipping any already recalled. Each fact is one
    line of at most ``preview_chars`` characters of its text. Recalled facts
    have their access counters bumped, as any recall does.

    >>> import tempfile
    >>> from flatstate.facts import open_facts
    >>> with open_facts(tempfile.mkdtemp()) as store:
    ...     _ = store.add("Deploys go to fly.io", category="decision")
    ...     _ = store.add("Prefers tabs over spaces", category="preference")
    ...     ctx = after_compaction_context(store, "where do we deploy?")
    >>> print(ctx.text)
    <memory-context>
    - [decision] Deploys go to fly.io
    - [preference] Prefers tabs over spaces
    </memory-context>
    >>> ctx.recalled, ctx.total_facts
    (1, 2)
    """
    total = facts.count()
    overhead = estimate_tokens(_OPEN) + estimate_tokens(_CLOSE) + 2
    budget = budget_tokens - overhead
    if budget <= 0 or total == 0:
        return MemoryContext((), 0, "", 0, total)

    def cost(fact: Fact) -> int:
        return estimate_tokens(render_fact(fact, preview_chars)) + 1  # and its newline

    recalled: tuple[Fact, ...] = ()
    if last_prompt and last_prompt.strip():
        recalled = facts.recall(last_prompt, budget_tokens=budget, preview_chars=preview_chars)
    left = budget - sum(map(cost, recalled))
    seen = {fact.id for fact in recalled}
    extra: list[Fact] = []
    for fact in facts.list(newest) if newest > 0 else ():
        if fact.id not in seen and cost(fact) <= left:
            extra.append(fact)
            left -= cost(fact)
    chosen = (*recalled, *extra)
    if not chosen:
        return MemoryContext((), 0, "", 0, total)
    lines = [_OPEN, *(render_fact(fact, preview_chars) for fact in chosen), _CLOSE]
    text = "\n".join(lines)
    return MemoryContext(chosen, len(recalled), text, estimate_tokens(text), total)
