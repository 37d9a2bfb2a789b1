"""compactionCount kept in step with the transcript that records it.

A compaction writes its entry to the transcript first and then raises the session's
``compactionCount``; a crash between the two leaves the transcript one ahead. The store
runs :func:`reconcile` whenever it opens a transcript, so the count is repaired there.
It only ever raises the count. This module sits below the store and knows it only as
something with ``get`` and ``update``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flatstate.transcripts.api import TranscriptLike

__all__ = ["reconcile", "recorded_compactions"]

log = logging.getLogger("flatstate.transcripts")


class _Draft(Protocol):
    def get(self, key: str) -> Any: ...
    def patch(self, key: str, fields: Mapping[str, Any], *, preserve_activity: bool) -> Any: ...


class _Store(Protocol):
    def get(self, key: str) -> Any: ...
    def update(self, fn: Callable[[Any], Any]) -> Any: ...


def recorded_compactions(transcript: TranscriptLike) -> int:
    """The compaction count the transcript's latest compaction entry records (0: none)."""
    compaction = transcript.context().compaction
    details = compaction.get("details") if compaction is not None else None
    count = details.get("compactionCount") if isinstance(details, Mapping) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def _count_of(entry: Any) -> int:
    count = entry.get("compactionCount") if entry is not None else None
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def reconcile(store: _Store, key: str, transcript: TranscriptLike) -> int:
    """Raise session ``key``'s ``compactionCount`` to what ``transcript`` records; return it."""
    recorded = recorded_compactions(transcript)
    current = _count_of(store.get(key))
    if recorded <= current:
        return current

    def raise_count(draft: _Draft) -> None:
        existing = draft.get(key)
        if existing is not None and _count_of(existing) < recorded:
            draft.patch(key, {"compactionCount": recorded}, preserve_activity=True)

    store.update(raise_count)
    log.info("%s: compactionCount raised to %d from its transcript", key, recorded)
    return recorded
