"""Typed errors: one root, each leaf also a matching builtin.

Every message names the subject (a key, a path, a profile), the cause, and the
fix. No message ever carries a secret: callers pass identifiers, never values.

    FlatstateError
    ├── InvalidSessionKey   (ValueError)
    ├── InvalidEntry        (ValueError)
    │   └── EntryTooLarge
    ├── InvalidProfile      (ValueError)
    ├── InvalidLocation     (ValueError)
    ├── SessionNotFound     (KeyError)
    ├── SecretUnavailable   (LookupError)
    ├── InvalidFact         (ValueError)
    ├── FactNotFound        (LookupError)
    ├── InvalidStoreItem    (ValueError)
    ├── VectorsUnavailable  (ImportError)
    ├── ExtraMissing        (ImportError)
    ├── StoreCorrupt        (OSError)
    ├── StoreInUse          (BlockingIOError)
    ├── DestinationExists   (FileExistsError)
    │   └── TranscriptNotEmpty
    ├── CopyIncomplete      (RuntimeError)
    ├── StoreUnavailable    (ConnectionError)
    │   └── CommitOutcomeUnknown
    ├── DiskFull            (OSError)
    ├── StoreClosed         (ValueError)
    ├── NeedsAwait          (RuntimeError)
    ├── LockTimeout         (TimeoutError)
    ├── ReadOnlyStore       (PermissionError)
    ├── UnsafePath          (PermissionError)
    └── ConflictError       (RuntimeError)
"""

from __future__ import annotations

import errno
from shlex import quote
from typing import Any


class FlatstateError(Exception):
    """Root of every error flatstate raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword-only details; rebuild from the same arguments
        # so errors cross process boundaries (multiprocessing) intact.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[FlatstateError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class InvalidSessionKey(FlatstateError, ValueError):
    """A session key that cannot be stored: empty, malformed or unsafe."""

    def __init__(self, key: object, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(
            f"invalid session key {key!r}: {problem}. "
            "Use a key such as 'agent:main:main' or 'agent:<agentId>:<channel>:<kind>:<id>'."
        )


class InvalidEntry(FlatstateError, ValueError):
    """An entry that cannot be stored: not an object, unsafe sessionId, bad field."""

    def __init__(self, key: str | None, problem: str) -> None:
        self.key = key
        self.problem = problem
        where = f"entry for {key!r}" if key is not None else "entry"
        super().__init__(f"invalid {where}: {problem}. Nothing was written.")


class EntryTooLarge(InvalidEntry):
    """An entry whose JSON exceeds the store's ``max_entry_bytes``."""

    def __init__(self, key: str | None, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            key,
            f"{size:,} bytes of JSON exceeds the limit of {limit:,} bytes "
            "(raise max_entry_bytes when opening the store, or shrink the entry)",
        )


class InvalidProfile(FlatstateError, ValueError):
    """An auth profile, or a request about one, that cannot be honoured."""

    def __init__(self, profile_id: str | None, problem: str) -> None:
        self.profile_id = profile_id
        self.problem = problem
        where = f"auth profile {profile_id!r}" if profile_id is not None else "auth profile"
        super().__init__(f"{where}: {problem}. Nothing was written.")


class InvalidLocation(FlatstateError, ValueError):
    """A store location (a URL, a directory, a URI such as ``flatstate:///path``, an option
    naming one) that cannot be used; nothing was opened."""

    def __init__(self, location: str, problem: str, fix: str = "Nothing was opened.") -> None:
        self.location = location
        self.problem = problem
        super().__init__(f"{location}: {problem}. {fix}")


class SecretUnavailable(FlatstateError, LookupError):
    """A profile whose secret cannot be had now: no plaintext, or a ref that does not resolve.

    The message names the profile and the ref (``env:NAME``, ``file:PATH``), which
    are not secret, and never the value.
    """

    def __init__(self, profile_id: str, problem: str, fix: str) -> None:
        self.profile_id = profile_id
        self.problem = problem
        self.fix = fix
        super().__init__(f"auth profile {profile_id!r}: {problem}. {fix}")


class SessionNotFound(FlatstateError, KeyError):
    """An operation that needs an existing session found none under the key."""

    def __init__(self, key: str, location: str | None = None) -> None:
        self.key = key
        self.location = location
        where, store = (f" in {location}", f" --store {quote(location)}") if location else ("", "")
        super().__init__(
            f"no session {key!r}{where}; create it first, or list the keys with: "
            f"flatstate sessions list{store}"
        )

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0])


class InvalidFact(FlatstateError, ValueError):
    """A memory fact that cannot be stored: empty text, a bad field value."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"invalid fact: {problem}. Nothing was written.")


class FactNotFound(FlatstateError, LookupError):
    """An operation named a fact id that the facts database does not hold."""

    def __init__(self, fact_id: str, path: str) -> None:
        self.fact_id = fact_id
        self.path = path
        super().__init__(
            f"no fact with id {fact_id!r} in {path}. "
            "List ids with: flatstate facts list (or search)."
        )


class InvalidStoreItem(FlatstateError, ValueError):
    """A LangGraph store operation that cannot run: a bad value, filter, TTL or page."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"invalid store operation: {problem}. Nothing was written.")


class VectorsUnavailable(FlatstateError, ImportError):
    """Vector search was asked for but cannot run here: sqlite-vec does not load, or the
    PostgreSQL server lacks pgvector (``fix`` then says how to install it)."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        super().__init__(
            f"vector search is unavailable: {problem}. "
            + (
                fix
                or "Install it with: pip install 'flatstate[vec]', or open the facts without embed="
            )
            + "."
        )


class ExtraMissing(FlatstateError, ImportError):
    """Something asked for needs an optional extra that is not installed."""

    def __init__(self, what: str, extra: str) -> None:
        self.what = what
        self.extra = extra
        super().__init__(
            f"{what} needs the {extra} extra, which is not installed. "
            f"Install it with: pip install 'flatstate[{extra}]'. Nothing was changed."
        )


class StoreCorrupt(FlatstateError, OSError):
    """A store file that is not what it should be; it is left untouched."""

    def __init__(self, path: str, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}. The file was not changed. {fix}")


class StoreInUse(FlatstateError, BlockingIOError):
    """Another program holds the store open for writing (a live OpenClaw gateway).

    Reading a database while its owner writes it, without taking part in its
    locking, may see half of a write; flatstate waits for the owner to stop.
    """

    def __init__(self, path: str, holder: str, fix: str) -> None:
        self.path = path
        self.holder = holder
        self.fix = fix
        super().__init__(f"{path} is in use: {holder}. Nothing was read. {fix}")


class DestinationExists(FlatstateError, FileExistsError):
    """An import whose destination already holds state that the import would overwrite."""

    def __init__(self, path: str, holds: str, *, can_merge: bool = True) -> None:
        self.path = path
        self.holds = holds
        merge = (
            ", or --merge (merge=True) to keep the fresher entry of each session (by updatedAt)"
            if can_merge
            else ""
        )
        super().__init__(
            f"{path} already holds {holds}; importing again would overwrite changes made there "
            f"since. Nothing was written. Pass --force (force=True) to let the source win{merge}."
        )


class TranscriptNotEmpty(DestinationExists):
    """An import of JSONL lines into a transcript that already holds lines."""

    def __init__(self, path: str, lines: int) -> None:
        self.path = path
        self.holds = f"{lines:,} lines"
        self.lines = lines
        Exception.__init__(
            self,
            f"{path} already holds {lines:,} lines; an import fills only an empty transcript. "
            "Nothing was written. Import into a new session, or archive this transcript first "
            "(reset or delete the session).",
        )


class CopyIncomplete(FlatstateError, RuntimeError):
    """A copy that failed after it began writing: the destination may hold part of it.

    ``cause`` is the error that stopped it (also the ``__cause__``).
    """

    def __init__(self, destination: str, agent_id: str, cause: str) -> None:
        self.destination = destination
        self.agent_id = agent_id
        self.cause = cause
        super().__init__(
            f"the copy to {destination} stopped at agent {agent_id!r}: {cause}. The destination "
            "may hold part of the copy. Fix the cause and copy again with --force (force=True), "
            "which writes the source over it, or remove the destination."
        )


class StoreUnavailable(FlatstateError, ConnectionError):
    """The database server cannot be reached, or the connection broke mid-operation.

    ``location`` is the store's redacted address (never its password).
    """

    def __init__(self, location: str, problem: str, fix: str) -> None:
        self.location = location
        self.problem = problem
        self.fix = fix
        super().__init__(f"{location}: {problem}. {fix}")


class CommitOutcomeUnknown(StoreUnavailable):
    """The connection broke during a commit and whether the commit happened cannot be told.

    Never retried by flatstate: running the write again could apply it twice.
    """


class DiskFull(FlatstateError, OSError):
    """The file system holding a store has no room left: the write was not made."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: the disk is full, so this write was not made (every write acknowledged "
            "before it is kept). Free space on the file system that holds it, then retry."
        )


def is_disk_full(exc: BaseException) -> bool:
    """Whether an OSError (or a driver's error text) says the disk or the quota is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "database or disk is full" in str(exc)


class StoreClosed(FlatstateError, ValueError):
    """A read or write of a store after its ``close()``.

    ``location`` is the store's redacted address (never its password).
    """

    def __init__(self, location: str) -> None:
        self.location = location
        super().__init__(f"the store at {location} was closed; open it again to read or write it")


class NeedsAwait(FlatstateError, RuntimeError):
    """A synchronous call was handed something to await inside a running event loop, where
    it cannot wait without blocking that loop."""

    def __init__(self, call: str, fix: str) -> None:
        self.call = call
        self.fix = fix
        super().__init__(f"{call} was given a coroutine inside a running event loop. {fix}")


class LockTimeout(FlatstateError, TimeoutError):
    """Another writer held the lock for longer than the timeout."""

    def __init__(
        self,
        path: str,
        timeout: float,
        holder_pid: int | None = None,
        fix: str | None = None,
        *,
        option: str = "lock_timeout",
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.holder_pid = holder_pid
        holder = f" held by pid {holder_pid}" if holder_pid is not None else ""
        fix = fix or (
            f"Wait for that writer to finish, raise {option}, or remove the lock file "
            "if that process is gone."
        )
        super().__init__(
            f"could not lock {path} within {timeout:g} s: the lock is{holder or ' busy'}. {fix}"
        )


class ReadOnlyStore(FlatstateError, PermissionError):
    """A write to a store opened read-only (or made read-only by a problem)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path} is read-only: {reason}. Nothing was written.")


class UnsafePath(FlatstateError, PermissionError):
    """A path that escapes its directory or is a link where none is allowed."""

    def __init__(self, path: str, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}. {fix}")


class ConflictError(FlatstateError, RuntimeError):
    """A compare-and-swap lost: the data changed under the caller."""

    def __init__(self, subject: str, problem: str) -> None:
        self.subject = subject
        self.problem = problem
        super().__init__(f"{subject}: {problem}")
