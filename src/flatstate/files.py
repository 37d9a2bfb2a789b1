"""Atomic file replacement: a reader sees the old file or the new one, never a torn one.

The new bytes go to a temporary file in the same directory, are flushed to
disk, renamed over the target, and the directory entry is flushed too; only
then has the write happened. Temporary files are named as OpenClaw names them
(``<name>.<pid>.<uuid>.tmp``) so either program's sweep recognises the other's
leftovers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
import uuid
from collections.abc import Iterable

from flatstate.errors import DiskFull, InvalidLocation, ReadOnlyStore, StoreCorrupt, is_disk_full

__all__ = [
    "READ_ONLY_FS",
    "TEMP_STALE_SECONDS",
    "atomic_write",
    "check_place",
    "fsync_dir",
    "on_read_only_fs",
    "sweep_temp_files",
]

READ_ONLY_FS = "it is on a read-only file system; open it with readonly=True to read it"


def check_place(path: str, *, directory: bool) -> None:
    """Refuse a location whose existing parts are of the wrong kind (a directory where the
    store's file belongs, a file where one of its directories must be), naming that part."""
    fix = "Move it aside, or point flatstate at another location."
    path = os.path.abspath(path)
    if os.path.exists(path) and os.path.isdir(path) != directory:
        wanted = "a directory" if directory else "a file"
        found = "a file" if directory else "a directory"
        raise StoreCorrupt(path, f"is {found}, where the store needs {wanted}", fix)
    parent = os.path.dirname(path)
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise StoreCorrupt(parent, f"is a file, where the store needs a directory for {path}", fix)


def on_read_only_fs(path: str) -> bool:
    """Whether the file system holding ``path`` (or its directory) is mounted read-only."""
    try:
        return bool(os.statvfs(os.path.dirname(path) or ".").f_flag & os.ST_RDONLY)
    except OSError:
        return False


TEMP_STALE_SECONDS = 300.0


def fsync_dir(directory: str) -> None:
    """Flush a directory's entries (a rename is durable only after this)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str, data: bytes | Iterable[bytes], *, mode: int = 0o600, durable: bool = True
) -> None:
    """Replace ``path`` with ``data`` atomically (and durably unless ``durable=False``).

    A symlink is followed: the file it points at is replaced and the link stays, so a
    store kept elsewhere through a link gets the write. ``data`` may also be an iterable
    of chunks, written as they come, so that a large file (an imported transcript) never
    has to be held in memory whole."""
    path = os.path.realpath(path)
    directory = os.path.dirname(path)
    temp = os.path.join(directory, f"{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            for chunk in (data,) if isinstance(data, bytes) else data:
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        if is_disk_full(exc):
            raise DiskFull(path) from exc
        if isinstance(exc, OSError) and exc.errno == errno.EROFS:
            raise ReadOnlyStore(path, READ_ONLY_FS) from exc
        raise
    if durable:
        fsync_dir(directory)


def sweep_temp_files(
    directory: str, prefix: str, *, older_than: float = TEMP_STALE_SECONDS
) -> list[str]:
    """Delete ``<prefix>.*.tmp`` files older than ``older_than`` seconds; return their paths."""
    removed: list[str] = []
    cutoff = time.time() - older_than
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if not (name.startswith(prefix + ".") and name.endswith(".tmp")):
            continue
        path = os.path.join(directory, name)
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(path).st_mtime < cutoff:
                os.unlink(path)
                removed.append(path)
    return removed


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# The URL schemes a store can live at; any other URL is a mistake, never a directory name.
STORE_SCHEMES = ("postgresql://", "postgres://", "memory://")


def check_location(location: str) -> None:
    """Refuse a location that would otherwise become a directory by accident: an empty one
    (the current directory) or a URL of a scheme no store lives at (``mysql://u:pw@db``
    became the directory ``mysql:/u:pw@db``, its password shown in every path). Only the
    scheme is named, never the rest of such a URL."""
    if not location.strip():
        raise InvalidLocation(
            repr(location),
            "an empty location names no store",
            "Pass a state directory, a sessions.json or a postgresql:// URL "
            "(--store or FLATSTATE_STORE).",
        )
    if _URL.match(location) and not location.startswith(STORE_SCHEMES):
        scheme = location.split("://", 1)[0]
        raise InvalidLocation(
            f"{scheme}://...",
            f"flatstate keeps no state at {scheme}:// URLs",
            "Pass a state directory, a sessions.json or a postgresql:// URL.",
        )
