"""One ``auth-profiles.json`` on disk: the parsed copy, locked updates, and the safety checks.

- **Cache.** The parsed :class:`~flatstate.auth.document.AuthDocument` is
  kept with the file's stat (inode, size, mtime, ctime) taken *before* the
  read, so content that changed during the read is never taken for fresh.
- **Updates** (OpenClaw's ``updateAuthProfileStoreWithLock``) take the file
  lock ``auth-profiles.json.lock``, re-read the file inside it (never the
  cache), apply the change to the plain document, drop plaintext secrets that
  have a ref, replace the file atomically with mode 0600, and keep the result
  as the new cached copy.
- **Refresh locks** are separate lock files, one per (provider, profile):
  ``auth-profiles.json.refresh.<provider>.<profile>.<hash>.lock``.
- **Read-only** (``readonly=True``): updates change only this process's copy,
  and no file (not even a lock file) is created; the copy is replaced when
  the file on disk changes, since disk is the truth.
- **Safety**: a symlink in the file's place is refused unless allowed; a
  file or directory open to group or others is reported, and fixed unless
  read-only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
import threading
from collections.abc import Iterator
from typing import Any

from flatstate.auth.document import AuthDocument, decode_document, encode_document
from flatstate.auth.profiles import (
    AuthProblem,
    check_profile,
    normalize_credential,
    strip_plaintext,
)
from flatstate.auth.storage import AuthStorage, Updater, changed_copy
from flatstate.errors import StoreCorrupt, UnsafePath
from flatstate.files import atomic_write, check_place, sweep_temp_files
from flatstate.frozen import decode_json
from flatstate.locks import FileLock

__all__ = ["AUTH_FILE", "LEGACY_FILE", "AuthFile", "loose_modes"]

AUTH_FILE = "auth-profiles.json"
LEGACY_FILE = "auth.json"

log = logging.getLogger("flatstate.auth")

StatKey = tuple[int, int, int, int]

# OpenClaw: the store lock goes stale after 30 s; a refresh lock after 180 s
# (a token endpoint can be slow), waited on for up to 120 s.
STORE_LOCK_STALE = 30.0
REFRESH_LOCK_STALE = 180.0

_thread_refresh_locks: dict[str, threading.RLock] = {}
_thread_refresh_guard = threading.Lock()


def loose_modes(agent_dir: str) -> list[tuple[str, int, int]]:
    """(path, mode, widest mode allowed) of an agent directory wider than 0700 and of its
    ``auth-profiles.json`` wider than 0600: secrets that other users may read."""
    found = []
    directory = os.path.abspath(agent_dir)
    for path, limit in ((directory, 0o700), (os.path.join(directory, AUTH_FILE), 0o600)):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if mode & ~limit:
            found.append((path, mode, limit))
    return found


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:48]


class AuthFile:
    """The auth store file of one agent directory (an :class:`~flatstate.auth.storage.AuthStorage`).

    >>> import tempfile
    >>> home = tempfile.TemporaryDirectory()
    >>> auth = AuthFile(home.name, readonly=False, allow_symlink=False,
    ...                 lock_timeout=5, refresh_lock_timeout=5)
    >>> def add_key(doc):
    ...     doc["profiles"]["openai:default"] = {"type": "api_key", "provider": "openai"}
    ...     return True
    >>> saved = auth.update(add_key)
    >>> list(saved.profiles), saved is auth.current(), oct(os.stat(auth.path).st_mode & 0o777)
    (['openai:default'], True, '0o600')
    >>> home.cleanup()
    """

    def __init__(
        self,
        agent_dir: str,
        *,
        readonly: bool,
        allow_symlink: bool,
        lock_timeout: float,
        refresh_lock_timeout: float,
    ) -> None:
        self.directory = os.path.abspath(agent_dir)
        self.path = os.path.join(self.directory, AUTH_FILE)
        check_place(self.directory, directory=True)
        check_place(self.path, directory=False)
        self.readonly = readonly
        self.allow_symlink = allow_symlink
        self.lock_timeout = lock_timeout
        self.refresh_lock_timeout = refresh_lock_timeout
        self.suppressed_writes = 0
        self._key: StatKey | None = None
        self._doc: AuthDocument | None = None

    @property
    def cli_store(self) -> str:
        return self.directory

    def same_as(self, other: AuthStorage) -> bool:
        return isinstance(other, AuthFile) and os.path.realpath(
            other.directory
        ) == os.path.realpath(self.directory)

    def close(self) -> None:
        """Nothing to release: every read and write opens the file and closes it."""

    # -- reading -------------------------------------------------------------
    def _stat_key(self) -> StatKey | None:
        try:
            st = os.stat(self.path) if self.allow_symlink else os.lstat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            raise self._symlink_error()
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _symlink_error(self) -> UnsafePath:
        return UnsafePath(
            self.path,
            "is a symbolic link, which could send secrets to (or read them from) another file",
            "Replace the link with the file itself, or open the store with allow_symlink=True.",
        )

    def _read(self) -> bytes | None:
        flags = os.O_RDONLY | os.O_CLOEXEC | (0 if self.allow_symlink else os.O_NOFOLLOW)
        try:
            fd = os.open(self.path, flags)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._symlink_error() from None
            raise
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def _parse(self, data: bytes | None) -> AuthDocument:
        try:
            return AuthDocument(self.path, decode_document(self.path, data))
        except StoreCorrupt as exc:
            log.warning("%s", exc)
            return AuthDocument(self.path, None, corrupt=exc)

    def current(self) -> AuthDocument:
        """The cached document, re-read first if the file changed since it was read."""
        key = self._stat_key()
        doc = self._doc
        if doc is not None and key == self._key:
            return doc
        doc = self._parse(self._read())
        for problem in doc.problems:
            if problem.kind != "corrupt_file":  # logged once already, by _parse
                log.warning("%s: %s", problem.path, problem.message)
        self._doc, self._key = doc, key
        return doc

    # -- writing -------------------------------------------------------------
    def update(self, change: Updater) -> AuthDocument:
        """Apply ``change`` to the file's latest content under its lock; return the new document.

        If ``change`` raises, nothing is written. In read-only mode only this
        process's copy changes.
        """
        if self.readonly:
            return self._update_in_memory(change)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        with FileLock(self.path, timeout=self.lock_timeout, stale=STORE_LOCK_STALE):
            key = self._stat_key()
            doc = decode_document(self.path, self._read())
            if change(doc):
                strip_plaintext(doc)
                target = os.path.realpath(self.path) if self.allow_symlink else self.path
                atomic_write(target, encode_document(doc), mode=0o600)
                # A writer killed mid-write left its temp file: it holds secrets (maybe ones
                # rotated out since), so it goes once it is old enough to be surely dead.
                sweep_temp_files(os.path.dirname(target), os.path.basename(target))
                key = self._stat_key()  # still under the lock: no other writer in between
            new = AuthDocument(self.path, doc)
            self._doc, self._key = new, key
            return new

    def _update_in_memory(self, change: Updater) -> AuthDocument:
        current = self.current()
        new = changed_copy(current, change)
        if new is None:
            return current
        # The disk's stat key stays: when the file changes, its content replaces this copy.
        self._doc = new
        if self.suppressed_writes == 0:
            log.warning(
                "%s is read-only: changes stay in this process only, until the file changes",
                self.path,
            )
        self.suppressed_writes += 1
        return new

    @contextlib.contextmanager
    def refresh_lock(self, provider: str, profile_id: str) -> Iterator[None]:
        """The right to refresh one OAuth profile, across processes (threads if read-only)."""
        digest = hashlib.sha256(f"{provider}\0{profile_id}".encode()).hexdigest()[:10]
        name = f"{AUTH_FILE}.refresh.{_safe(provider)}.{_safe(profile_id)}.{digest}"
        target = os.path.join(self.directory, name)
        if self.readonly:
            with _thread_refresh_guard:
                mutex = _thread_refresh_locks.setdefault(target, threading.RLock())
            with mutex:
                yield
            return
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        with FileLock(
            target,
            timeout=self.refresh_lock_timeout,
            stale=REFRESH_LOCK_STALE,
            option="refresh_lock_timeout",
        ):
            yield

    # -- safety --------------------------------------------------------------
    def check_permissions(self) -> list[AuthProblem]:
        """Report a directory wider than 0700 or a file wider than 0600; fix unless read-only."""
        problems = []
        for path, mode, limit in loose_modes(self.directory):
            if self.readonly:
                outcome = "not fixed: the store is read-only"
            else:
                os.chmod(path, mode & limit)
                outcome = f"fixed to {mode & limit:04o}"
            message = f"mode {mode:04o} is wider than {limit:04o}; {outcome}"
            log.warning("%s: %s", path, message)
            problems.append(
                AuthProblem(kind="permissions", subject=path, path=path, message=message)
            )
        return problems

    def migrate_legacy(self) -> list[AuthProblem]:
        """Move ``auth.json`` (provider -> credential) into ``<provider>:default`` profiles.

        The new profiles are saved before the old file is deleted, and an id
        that already exists is left alone, so running this again (or after a
        crash between the two steps) changes nothing. A credential that cannot
        be migrated is reported and keeps the old file in place. Read-only:
        the profiles join this process's copy and the old file stays.
        """
        legacy = os.path.join(self.directory, LEGACY_FILE)
        if not os.path.lexists(legacy):
            return []
        if os.path.islink(legacy) and not self.allow_symlink:
            raise UnsafePath(
                legacy,
                "is a symbolic link, which could read secrets from another file",
                "Replace the link with the file itself, or open the store with allow_symlink=True.",
            )
        problems: list[AuthProblem] = []
        complete = [True]

        def migrate(doc: dict[str, Any]) -> bool:
            problems.clear()
            try:
                with open(legacy, "rb") as f:
                    data = f.read()
            except FileNotFoundError:  # another process migrated it meanwhile
                complete[0] = False
                return False
            credentials, found = self._legacy_credentials(legacy, data)
            problems.extend(found)
            complete[0] = not found
            profiles: dict[str, Any] = doc["profiles"]
            added = False
            for provider, credential in credentials.items():
                profile_id = f"{provider}:default"
                if profile_id not in profiles:
                    profiles[profile_id] = credential
                    added = True
            return added

        self.update(migrate)
        if complete[0] and not self.readonly:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(legacy)
            log.info("%s migrated into %s and removed", legacy, self.path)
        return problems

    def _legacy_credentials(
        self, legacy: str, data: bytes
    ) -> tuple[dict[str, dict[str, Any]], list[AuthProblem]]:
        try:
            raw = decode_json(data) if data.strip() else {}
        except Exception as exc:  # msgspec.DecodeError; its message has positions only
            raw = f"invalid JSON ({exc})"
        if not isinstance(raw, dict):
            problem = raw if isinstance(raw, str) else "the top level is not a JSON object"
            message = f"not migrated: {problem}; the old file is kept"
            return {}, [AuthProblem(kind="legacy", subject=legacy, path=legacy, message=message)]
        credentials: dict[str, dict[str, Any]] = {}
        problems = []
        for provider, value in raw.items():
            credential = dict(value) if isinstance(value, dict) else value
            if isinstance(credential, dict):
                normalize_credential(credential)
                credential.setdefault("provider", provider)
            reason = check_profile(credential)
            if reason is None:
                credentials[provider] = credential
            else:
                problems.append(
                    AuthProblem(
                        kind="legacy",
                        subject=f"{provider}:default",
                        path=legacy,
                        message=f"legacy credential for {provider!r} not migrated ({reason}); "
                        "the old file is kept",
                    )
                )
        return credentials, problems
