"""The contract every storage backend fulfils for :class:`~flatstate.store.SessionStore`.

A backend stores entries under raw keys (whatever is on disk, legacy aliases
included) and knows three things the store cannot: how to read and write them
atomically, how to say cheaply that another process may have changed them, and
which keys changed since a point it handed out earlier (its *token*).

The store calls a backend only while holding its own lock, so a backend need
not be thread-safe. Writes happen between :meth:`Backend.begin` and
:meth:`Backend.commit`; the store re-reads what changed (``changes_since``)
right after ``begin``, which is what makes every read-modify-write see the
latest committed state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from flatstate.errors import ReadOnlyStore, StoreCorrupt
from flatstate.frozen import StringPool
from flatstate.model import SessionEntry

if TYPE_CHECKING:
    from flatstate.transcripts import TranscriptLike

__all__ = ["Backend", "FileCheck", "RetryWrite", "Row", "Signal", "StaleView"]

Row = tuple[str, SessionEntry]
"""(raw key, frozen entry)."""


class RetryWrite(Exception):
    """Raised by a backend when a write surely did not commit and may simply run again.

    A database backend raises it for a row that changed under the write (a
    writer outside the store's lock), a deadlock or a connection lost before
    the commit. The store rolls back, catches up and re-runs the write
    function, a bounded number of times; after the last attempt it raises
    ``error``, the public error that says what went wrong.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class StaleView(Exception):
    """Raised by a backend that ran a write on its view before taking its lock, when
    the store turned out to have moved on meanwhile: nothing was written. The
    store runs the whole batch again at once; the backend takes its lock first
    this time (see :meth:`Backend.confirm_view`)."""


class Signal(Protocol):
    """A counter that grows whenever any writer commits (see :mod:`flatstate._signal`)."""

    def read(self) -> int: ...
    def bump(self) -> None: ...
    def close(self) -> None: ...


class FileCheck(NamedTuple):
    """What a file store holds, read from its files as they are, without opening it as a
    store (a damaged one may not open): what ``flatstate doctor`` looks at."""

    store_file: str
    transcripts_dir: str
    entries: dict[str, bytes]
    """Every entry that could be read, as the JSON stored under its raw key."""
    problems: list[str]
    """Damage found, each in words that say how to repair it."""
    wal_bytes: int = 0


class Backend(ABC):
    location: str
    """Where the data lives, for messages: a path or a redacted URL."""
    signal: Signal
    pool: StringPool
    readonly: bool = False
    readonly_reason: str = "the store was opened read-only"
    """What a refused write says (a backend that is read-only by nature says why)."""
    corruption: StoreCorrupt | None = None
    """Why the store is read-only despite the caller (a damaged file), if it is."""
    transcripts_dir: str
    """Where session transcripts live (archives and disk budgets stay inside it)."""
    store_file: str | None = None
    """The file holding the entries, if it lives in ``transcripts_dir`` (sessions.json)."""
    keeps_transcripts: bool = False
    """Whether :meth:`transcript` serves the transcripts (kept in the backend's database)
    rather than files in ``transcripts_dir``."""
    transcript_lock: str = "flock"
    """How transcript appends exclude each other: ``"file"`` where OpenClaw may write too."""

    @classmethod
    def check_files(cls, location: str) -> FileCheck | None:
        """Read the files of a store at ``location`` without opening it (writing nothing);
        None for a backend whose store is not files (doctor reads it through an open store)."""
        return None

    @abstractmethod
    def scan(self) -> tuple[Any, Iterator[Row]]:
        """Every row at one instant, and the token of that instant."""

    @abstractmethod
    def read(self, key: str) -> Row | None:
        """One row by raw key, at the latest committed state."""

    @abstractmethod
    def scan_keys(self) -> list[str]:
        """Every raw key, sorted."""

    @abstractmethod
    def count(self) -> int:
        """The number of rows."""

    @abstractmethod
    def changes_since(self, token: Any) -> tuple[set[str] | None, Any]:
        """Raw keys changed after ``token`` (None: too many or unknown, reload all)."""

    def begin(self) -> None:
        """Refuse a store opened read-only, then take the writer lock (waiting up to the
        lock timeout) and start a transaction (:meth:`_begin`)."""
        if self.readonly:
            raise ReadOnlyStore(self.location, self.readonly_reason)
        self._begin()

    @abstractmethod
    def _begin(self) -> None:
        """Take the writer lock and start a transaction; the store may be written."""

    def confirm_view(self) -> None:
        """Raise :class:`StaleView` if this write ran on a view the store has since left.

        The store calls it when a write ends without committing anything (its
        function raised, or it changed nothing), because such an outcome is never
        checked by a commit. A backend that takes its lock in :meth:`begin` and
        catches up under it has nothing to check: the default does nothing.
        """
        return None

    @abstractmethod
    def put(self, key: str, entry: SessionEntry, previous: SessionEntry | None) -> int:
        """Insert or replace ``key`` inside the transaction; return the entry's JSON size.

        ``previous`` is the entry this one replaces as the store last read it
        inside this transaction (None when unknown); values shared with it by
        identity are unchanged, which lets a backend skip rewriting them. The
        size is that of the entry's compact JSON, which the store checks
        against its limit (rolling back when it is over).
        """

    @abstractmethod
    def remove(self, key: str) -> None:
        """Delete ``key`` inside the transaction (a missing key is no error)."""

    @abstractmethod
    def commit(self) -> Any:
        """Make the transaction durable, bump the signal, and return the new token."""

    @abstractmethod
    def rollback(self) -> None:
        """Abandon the transaction; nothing of it reaches storage."""

    @abstractmethod
    def close(self) -> None:
        """Release every resource; the backend is not used again."""

    def disk_bytes(self) -> int:
        """Bytes the store occupies on disk (0 where unknown)."""
        return 0

    def transcript(self, entry: SessionEntry, key: str) -> TranscriptLike | None:
        """The transcript of ``entry`` when the backend keeps it itself (in its database);
        None for the file in ``transcripts_dir`` that the entry names (the default)."""
        return None

    def archive_transcript(
        self, entry: SessionEntry, key: str, reason: str, now_ms: int
    ) -> str | None:
        """Archive the transcript of ``entry`` that the backend keeps itself (on a reset or
        delete, as ``<name>.<reason>.<time>``); its archive name, None when it had none.
        Called only where :meth:`transcript` serves one."""
        raise ReadOnlyStore(self.location, self.readonly_reason)

    def transcript_usage(self) -> tuple[int, int] | None:
        """(transcripts, bytes) that the backend keeps itself, in its database; None for
        transcript files in ``transcripts_dir`` (doctor counts those)."""
        return None

    def wal_bytes(self) -> int:
        """Bytes of the write-ahead log, included in :meth:`disk_bytes` (0 where none)."""
        return 0
