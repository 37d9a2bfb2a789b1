"""A change counter shared by every process that opens the same store.

Asking the database whether anything changed costs a query (``PRAGMA
data_version`` caps near 136,000 reads/s here) and a file stat costs a system
call (~268,000/s); both are too slow to do on every read. Instead each writer
bumps a 64-bit counter in a small memory-mapped file after it commits, and
each reader compares one integer in shared memory with the value it last saw:
a read costs no system call at all.

The guarantee: a write acknowledged by any flatstate process is seen by every
read that starts after the acknowledgement. Writers that do not know the
counter (other programs, or a writer killed between its commit and its bump)
are caught by the store's periodic check instead.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct

__all__ = ["ChangeSignal", "LocalSignal"]

_COUNTER = struct.Struct("<Q")


class LocalSignal:
    """A counter seen only inside this process (for backends with their own channel)."""

    def __init__(self) -> None:
        self.value = 0

    def read(self) -> int:
        return self.value

    def bump(self) -> None:
        self.value += 1

    def close(self) -> None:
        pass


class ChangeSignal:
    """A counter in ``path``, mapped into memory, bumped under an exclusive flock.

    The flock makes read-increment-write atomic across processes, so the
    counter only ever grows and no reader can miss a bump.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < _COUNTER.size:
                    os.ftruncate(fd, _COUNTER.size)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, _COUNTER.size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._unpack = _COUNTER.unpack_from

    def read(self) -> int:
        return self._unpack(self._map, 0)[0]  # type: ignore[no-any-return]

    def bump(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            _COUNTER.pack_into(self._map, 0, (self.read() + 1) & 0xFFFF_FFFF_FFFF_FFFF)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1


def open_signal(path: str, *, create: bool = True) -> ChangeSignal | LocalSignal:
    """The shared counter at ``path``, or a local one where the file cannot be made.

    A read-only directory still gets a working store; other processes' writes
    are then seen through the periodic check alone. So does a reader told not
    to create the file (``create=False``: a read-only store in a directory that
    is someone else's) when no writer has made it yet.
    """
    if not create and not os.path.exists(path):
        return LocalSignal()
    try:
        return ChangeSignal(path)
    except OSError:
        return LocalSignal()
