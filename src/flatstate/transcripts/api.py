"""What every transcript offers, wherever it lives: the interface that the store hands out
and that compaction, the CLI, transfers and the async API use, so that mypy checks them
against it rather than against one storage.

:class:`~flatstate.transcripts.file.Transcript` (a JSONL file) and
:class:`~flatstate.backends.postgres.transcripts.PgTranscript` (rows in PostgreSQL)
satisfy it; so does the read-only ``StoredTranscript`` of OpenClaw 2026.9's database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Protocol, runtime_checkable

from flatstate.frozen import FrozenMap
from flatstate.transcripts.context import Context
from flatstate.transcripts.file import LineProblem
from flatstate.writer import Job, Notify

__all__ = ["GroupedAppends", "QueuedAppends", "TranscriptLike"]


class TranscriptLike(Protocol):
    """One session's transcript: OpenClaw's JSONL lines, in order, header first."""

    @property
    def path(self) -> str:
        """Where it lives, for messages and hooks' ``sessionFile`` (never a password)."""

    @property
    def session_id(self) -> str | None: ...

    @property
    def problems(self) -> list[LineProblem]:
        """Lines that could not be read (:class:`~flatstate.transcripts.LineProblem`)."""

    def header(self) -> FrozenMap | None:
        """The first line, when it is a session header."""

    def iter_entries(self) -> Iterator[FrozenMap]:
        """Every entry after the header, first to last."""

    def tail(self, n: int) -> tuple[FrozenMap, ...]:
        """The last ``n`` entries in order, read from the end."""

    def tail_plain(self, n: int) -> list[dict[str, Any]]:
        """:meth:`tail` as fresh plain dicts, the caller's own to change."""
        ...

    def context(self) -> Context:
        """What the model sees (the latest compaction's summary, then the kept entries)."""

    @property
    def leaf_id(self) -> str | None:
        """The id of the last entry (the parent of the next append)."""

    def append(self, entry: Mapping[str, Any]) -> str:
        """Append one entry as a child of the leaf; its id."""

    def append_many(
        self, entries: Sequence[Mapping[str, Any]], *, guard: Callable[[], bool] | None = None
    ) -> list[str]:
        """Append entries in order, all or none; ``guard`` runs first with every other
        writer kept out, and False from it writes nothing (a compare-and-append)."""

    def flush(self) -> None:
        """Make appends still waiting for a batched sync durable."""

    def export_lines(self) -> Iterator[bytes]:
        """The transcript as OpenClaw's JSONL: every line as stored, each ending in a newline."""

    def import_lines(self, lines: Iterable[bytes]) -> int:
        """Fill an empty transcript with JSONL lines, kept byte for byte; the number of lines.
        A transcript that holds a line refuses
        (:class:`~flatstate.errors.TranscriptNotEmpty`) and nothing is written."""


@runtime_checkable
class QueuedAppends(Protocol):
    """A transcript whose appends can be queued without a thread waiting for each: the
    async API awaits the future, so that many tasks' appends share one commit."""

    def submit(self, entries: Sequence[Mapping[str, Any]]) -> Future[list[str]]: ...


@runtime_checkable
class GroupedAppends(Protocol):
    """A transcript file whose appends a sync group writes and syncs
    (:mod:`~flatstate.transcripts.syncgroup`): ``notify`` gets the job once it is on the
    disk and completes ``waiter`` (an asyncio future), so a task waits holding no thread and
    many tasks' appends share their fsyncs. ``cached_tail_plain`` answers a tail from the
    lines remembered from the file's end (one ``stat``), or None when that needs a read."""

    def cached_tail_plain(self, n: int) -> list[dict[str, Any]] | None: ...

    def submit_append(
        self,
        entries: Sequence[Mapping[str, Any]],
        notify: Notify,
        waiter: Any,
        *,
        guard: Callable[[], bool] | None = None,
    ) -> Job: ...
