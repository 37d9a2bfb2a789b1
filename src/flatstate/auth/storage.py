"""The seam under :class:`~flatstate.auth.store.AuthStore`: where one agent's profiles live.

The store's rules (rotation, cooldowns, the overlay, the OAuth refresh and its
compare-and-swap) are written once, in :mod:`flatstate.auth.store`, against
this small contract; each place that keeps profiles implements it:

- :class:`~flatstate.auth.disk.AuthFile`: OpenClaw's ``auth-profiles.json``,
  a file lock per update and a lock file per refresh;
- :class:`~flatstate.auth.postgres.PostgresAuthStorage`: a row per profile in
  PostgreSQL, an advisory lock per update and per refresh, across hosts.

Both speak in whole OpenClaw documents (``{"version", "profiles", "order",
"lastGood", "usageStats", ...}`` as plain dicts), so that a change written
for one runs unchanged on the other.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from flatstate.auth.document import AuthDocument
from flatstate.auth.profiles import strip_plaintext
from flatstate.frozen import thaw

__all__ = ["AuthStorage", "Updater", "changed_copy"]

Updater = Callable[[dict[str, Any]], bool]
"""Changes a plain document in place; returns False when there is nothing to save.

It may run more than once (a storage retries after a lost connection), each
time on the latest document, so it must not count its own runs."""


class AuthStorage(Protocol):
    """One agent's auth profiles, wherever they are kept."""

    @property
    def path(self) -> str:
        """Names the store in messages: a file path, or a URL without its password."""

    @property
    def directory(self) -> str:
        """The local directory a relative ``file:`` ref is taken from."""

    @property
    def cli_store(self) -> str:
        """What to pass to ``flatstate auth ... --store`` to reach this store."""

    @property
    def readonly(self) -> bool: ...

    @property
    def suppressed_writes(self) -> int:
        """Writes kept in this process only because the store is read-only."""

    def same_as(self, other: AuthStorage) -> bool:
        """Whether ``other`` keeps the same profiles (inheriting from oneself is no overlay)."""

    def current(self) -> AuthDocument:
        """The latest document, served from a cache that is checked for changes first."""

    def update(self, change: Updater) -> AuthDocument:
        """Apply ``change`` to the latest document under the store's lock; return the result.

        If ``change`` raises, nothing is written. Read-only: only this process's
        copy changes, until the stored one does.
        """

    def refresh_lock(self, provider: str, profile_id: str) -> AbstractContextManager[None]:
        """The right to refresh one OAuth profile, across every process that shares the store.

        Held while the token endpoint is called, so that of all the processes
        asking at once only the first calls it; the others find its new tokens.
        """

    def close(self) -> None:
        """Release what the storage holds (connections); the file storage holds nothing."""


def changed_copy(current: AuthDocument, change: Updater) -> AuthDocument | None:
    """``change`` applied to a private copy of ``current``: a read-only store's write.

    None when ``change`` says there is nothing to save. A document that could
    not be read raises its :class:`~flatstate.errors.StoreCorrupt`, as a real
    write would.

    >>> doc = AuthDocument("auth-profiles.json", {"version": 1, "profiles": {}})
    >>> def add(plain):
    ...     plain["profiles"]["x:y"] = {"type": "token", "provider": "x", "token": "t"}
    ...     return True
    >>> list(changed_copy(doc, add).profiles), list(doc.profiles)
    (['x:y'], [])
    """
    if current.corrupt is not None:
        raise current.corrupt
    doc: dict[str, Any] = thaw(current.raw)
    if not change(doc):
        return None
    strip_plaintext(doc)
    return AuthDocument(current.path, doc)
