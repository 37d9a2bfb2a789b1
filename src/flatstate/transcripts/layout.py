"""Where transcripts live and where they go: an entry's transcript file, OpenClaw's archive
names (``<file>.<reason>.<ISO time>``), and moving a transcript aside under its lock."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flatstate.errors import ExtraMissing, InvalidEntry, StoreCorrupt
from flatstate.model import validate_session_id
from flatstate.transcripts.file import Transcript

__all__ = [
    "archive",
    "archive_name",
    "archive_time_ms",
    "check_inside",
    "move_aside",
    "transcript_file",
    "transcript_path",
    "zstd",
]

_ARCHIVE = re.compile(
    r"^(?P<base>.+)\.(?P<reason>deleted|reset|bak)\.(?P<ts>[0-9TZ:.\-]+?)(?:\.zst)?$"
)


def check_inside(directory: str, path: str) -> str:
    """``path`` resolved, if it lies directly in ``directory``; StoreCorrupt otherwise."""
    resolved = os.path.realpath(path)
    if os.path.dirname(resolved) != os.path.realpath(directory):
        raise StoreCorrupt(
            path,
            f"the transcript path leaves {directory}",
            "Fix the entry's sessionFile (it must name a file in the sessions directory).",
        )
    return resolved


def transcript_path(directory: str, entry: Mapping[str, Any], key: str | None) -> str:
    """Where an entry's transcript lives: its ``sessionFile`` or ``<sessionId>.jsonl``.

    Refuses a path-like session id and a ``sessionFile`` outside ``directory``.
    """
    session_id = validate_session_id(entry.get("sessionId"), key)
    session_file = entry.get("sessionFile")
    name = session_file if isinstance(session_file, str) and session_file else f"{session_id}.jsonl"
    return check_inside(directory, os.path.join(directory, name))


def transcript_file(entry: Mapping[str, object], directory: str) -> str | None:
    """The transcript an entry names, as :func:`transcript_path` finds it, or None where the
    entry names none that lies inside ``directory`` (maintenance leaves such files alone)."""
    try:
        return transcript_path(directory, entry, None)
    except (StoreCorrupt, InvalidEntry):
        return None


def move_aside(source: str, target: str, *, lock: str = "file") -> None:
    """Rename transcript ``source`` to ``target`` under its lock, so that no append lands in
    the old file after it moved."""
    with Transcript(source, lock=lock)._exclusive():
        os.rename(source, target)


def archive_name(path: str, reason: str, now_ms: int) -> str:
    """OpenClaw's archive name: ``<file>.<reason>.<ISO time with ':' as '-'>``."""
    stamp = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return f"{path}.{reason}.{stamp.replace('+00:00', 'Z').replace(':', '-')}"


def archive_time_ms(name: str) -> tuple[str, int] | None:
    """(reason, epoch ms) of an archive file name, or None for any other name."""
    match = _ARCHIVE.match(name)
    if not match:
        return None
    stamp = match.group("ts")
    date, _, clock = stamp.partition("T")
    try:
        when = datetime.fromisoformat(f"{date}T{clock.replace('-', ':')}".replace("Z", "+00:00"))
    except ValueError:
        return None
    return match.group("reason"), int(when.timestamp() * 1000)


def zstd() -> Any:
    """The zstandard module, or ExtraMissing naming the extra: checked before any write."""
    try:
        import zstandard
    except ImportError:
        raise ExtraMissing("a compressed transcript archive", "zstd") from None
    return zstandard


def archive(
    path: str, reason: str, now_ms: int, *, compress: bool = False, lock: str = "file"
) -> str | None:
    """Rename a transcript to ``<file>.<reason>.<time>`` (``.zst`` compressed if asked).

    Takes the transcript's lock so that no append lands in the old file after
    it is archived. Returns the archive's path, or None if there was no file.
    """
    zstandard = zstd() if compress else None
    if not os.path.exists(path):
        return None
    target = archive_name(path, reason, now_ms)
    move_aside(path, target, lock=lock)
    if zstandard is None:
        return target
    with open(target, "rb") as source, open(target + ".zst", "wb") as sink:
        zstandard.ZstdCompressor().copy_stream(source, sink)
        sink.flush()
        os.fsync(sink.fileno())
    os.chmod(target + ".zst", 0o600)
    os.unlink(target)
    return target + ".zst"
