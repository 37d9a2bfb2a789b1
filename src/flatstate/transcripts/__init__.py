"""Session transcripts: OpenClaw's append-only JSONL, read from the end.

A transcript file starts with a header line (``{"type": "session", "version":
3, "id", "timestamp", "cwd"}``) followed by entries that carry ``id``,
``parentId`` and ``timestamp`` and form a tree; the *leaf* is the last line.
Entry types are ``message``, ``custom_message``, ``custom``, ``compaction``,
``branch_summary``, ``model_change``, ``thinking_level_change``, ``label``
and ``session_info``; unknown types and fields are kept as they are.

Appends take ``<file>.lock`` (OpenClaw's lock-file protocol) so that two
writers never interleave and every ``parentId`` names the true leaf; each
entry is one ``write()`` of one complete line. Reads never grow with the file:
``tail(n)`` and ``context()`` read backwards from the end, stopping as soon as
they have what they need, and remember the result keyed by the file's
identity, mtime and size (appends by this or another process extend it by
reading only the new bytes). Returned entries are frozen and shared.

Where a backend keeps transcripts itself (PostgreSQL, OpenClaw 2026.9's database), the store
hands out its own kind, with the same interface: :class:`TranscriptLike`
(:mod:`~flatstate.transcripts.api`), against which callers are type-checked.

The package: :mod:`~flatstate.transcripts.api` (the interface every transcript offers),
:mod:`~flatstate.transcripts.file` (the file: appends, tails, the index),
:mod:`~flatstate.transcripts.context` (what the model sees),
:mod:`~flatstate.transcripts.layout` (where a transcript lives, archive names, moving one
aside) and :mod:`~flatstate.transcripts.reconcile` (compactionCount in step with it).
"""

from flatstate.transcripts.api import GroupedAppends, QueuedAppends, TranscriptLike
from flatstate.transcripts.context import (
    CONTEXT_TYPES,
    Context,
    build_context,
    iso_now,
    to_epoch_ms,
)
from flatstate.transcripts.file import SESSION_VERSION, FsyncPolicy, LineProblem, Transcript
from flatstate.transcripts.layout import (
    archive,
    archive_name,
    check_inside,
    move_aside,
    transcript_file,
    transcript_path,
    zstd,
)

__all__ = [
    "CONTEXT_TYPES",
    "SESSION_VERSION",
    "Context",
    "FsyncPolicy",
    "GroupedAppends",
    "LineProblem",
    "QueuedAppends",
    "Transcript",
    "TranscriptLike",
    "archive",
    "archive_name",
    "build_context",
    "check_inside",
    "iso_now",
    "move_aside",
    "to_epoch_ms",
    "transcript_file",
    "transcript_path",
    "zstd",
]
