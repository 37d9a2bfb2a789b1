"""AuthStore: OpenClaw's auth profiles, read from a shared frozen snapshot, written under a lock.

Reads (:meth:`AuthStore.get`, :meth:`AuthStore.select_profile`, ...) return
objects shared with the cache, never clones: OpenClaw's
``cloneAuthProfileStore`` deep-copied the whole store per read, one of the
four hot paths of its memory leak. A read looks at the files' stat at most
every ``check_interval`` seconds (0.25 s): a change written by another
process is seen within that bound, one written through this store at once.

Writes go to the agent's own file (:mod:`flatstate.auth.disk`): lock, re-read,
change, atomic replace. An OAuth refresh also holds a lock of its own per
(provider, profile) and commits with compare-and-swap on the refresh token it
started from, so a rotated token is never overwritten by an older one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from shlex import quote
from typing import Any

import msgspec

from flatstate._open import POSTGRES_SCHEMES
from flatstate.auth.disk import AuthFile
from flatstate.auth.document import AuthDocument, AuthSnapshot
from flatstate.auth.profiles import (
    FAILURE_REASONS,
    PROFILE_TYPES,
    AuthProblem,
    AuthProfile,
    ProfileStats,
    check_profile,
)
from flatstate.auth.refs import parse_ref, resolve_ref
from flatstate.auth.rotation import CooldownPolicy, apply_failure, apply_success, provider_key
from flatstate.auth.storage import AuthStorage
from flatstate.errors import (
    ConflictError,
    ExtraMissing,
    InvalidLocation,
    InvalidProfile,
    SecretUnavailable,
    StoreCorrupt,
)
from flatstate.files import check_location
from flatstate.frozen import thaw
from flatstate.keys import normalize_agent_id

__all__ = [
    "DEFAULT_CHECK_INTERVAL",
    "DEFAULT_REFRESH_MARGIN_MS",
    "READONLY_ENV",
    "AuthStore",
    "ProfileStatus",
    "Refresher",
    "open_auth_store",
]

DEFAULT_CHECK_INTERVAL = 0.25
DEFAULT_REFRESH_MARGIN_MS = 60_000
READONLY_ENV = "FLATSTATE_AUTH_READONLY"

Clock = Callable[[], int]
Refresher = Callable[[AuthProfile], Mapping[str, Any]]
"""Given the current OAuth profile, returns its new tokens: access, refresh?, expires?, ..."""

log = logging.getLogger("flatstate.auth")
_monotonic = time.monotonic


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _env_readonly() -> bool:
    return os.environ.get(READONLY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class ProfileStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One profile's standing at a given time, as ``flatstate auth status`` shows it.

    ``state`` is ``ok``, ``cooldown``, ``disabled`` or ``expired`` (an OAuth or
    token profile past its ``expires``: an OAuth grant is refreshed on its next
    use, a static token must be replaced); ``until`` and ``remaining_ms`` say
    when a cooldown or disable ends; ``reason`` is the disable reason, or for a
    cooldown the failure reasons counted; ``inherited`` marks a profile that
    comes from the main agent's store.
    """

    id: str
    provider: str
    type: str
    email: str | None
    secret: str
    state: str
    expires: int | None
    until: int | None
    remaining_ms: int | None
    reason: str | None
    error_count: int
    last_used: int | None
    inherited: bool


def open_auth_store(
    location: str | os.PathLike[str],
    *,
    agent_id: str | None = None,
    inherit_from: str | os.PathLike[str] | None = None,
    readonly: bool = False,
    allow_symlink: bool = False,
    migrate: bool = True,
    policy: CooldownPolicy | None = None,
    clock: Clock | None = None,
    check_interval: float = DEFAULT_CHECK_INTERVAL,
    lock_timeout: float = 10.0,
    refresh_lock_timeout: float = 120.0,
) -> AuthStore:
    """Open the auth profile store at ``location``: an agent directory, or a PostgreSQL URL.

    An agent directory (``~`` is expanded) holds OpenClaw's ``auth-profiles.json``.
    A ``postgresql://`` URL keeps the profiles of one agent (``agent_id``, or the
    URL's ``namespace``) in rows that every host shares (see
    :mod:`flatstate.auth.postgres`); close the store (or use it in ``with``) to
    release its connection.

    - ``inherit_from``: the main agent's store, whose profiles, order,
      lastGood and usageStats this agent sees unless its own store has the
      same key (the agent wins per key): a directory for a directory; for a
      URL, another agent id in the same database, or a URL.
    - ``readonly`` (or ``FLATSTATE_AUTH_READONLY=1``): nothing is ever written;
      changes stay in this process (see :mod:`flatstate.auth.disk`).
    - ``allow_symlink``: accept an ``auth-profiles.json`` that is a symlink.
    - ``migrate``: move a legacy ``auth.json`` into the store (directories).
    - ``policy``: cooldown and billing-disable durations.
    - ``clock``: the time in epoch milliseconds (for tests).
    - ``check_interval``: how often reads look for changes by other processes.

    Raises :class:`~flatstate.errors.UnsafePath` for a symlinked file,
    :class:`~flatstate.errors.InvalidLocation` for an ``agent_id`` or an
    ``inherit_from`` that does not fit the location, and
    :class:`~flatstate.errors.StoreUnavailable` for a server that cannot be reached.

    >>> import tempfile
    >>> store = open_auth_store(tempfile.mkdtemp())
    >>> store.add("openai:default", {"type": "api_key", "provider": "openai",
    ...                              "keyRef": "env:OPENAI_API_KEY"}).hint
    'ref env:OPENAI_API_KEY'
    >>> store.select_profile("openai").id
    'openai:default'
    """
    where = os.fspath(location)
    check_location(where)
    main_at = os.fspath(inherit_from) if inherit_from is not None else None
    readonly = readonly or _env_readonly()
    if where.startswith(POSTGRES_SCHEMES):
        return _open_postgres(
            where,
            agent_id=agent_id,
            inherit_from=main_at,
            readonly=readonly,
            store_options={"policy": policy, "clock": clock, "check_interval": check_interval},
            lock_timeout=lock_timeout,
            refresh_lock_timeout=refresh_lock_timeout,
        )
    shown = os.path.expanduser(where)
    if agent_id is not None:
        raise InvalidLocation(
            shown,
            "agent_id names the agent of a postgresql:// store; an agent directory is "
            "one agent's already",
            "Drop agent_id, or open that agent's directory.",
        )
    if main_at is not None and main_at.startswith(POSTGRES_SCHEMES):
        raise InvalidLocation(
            shown,
            "a store in a directory can only inherit from another directory, not a URL",
            "Pass the main agent's directory as inherit_from.",
        )
    options: dict[str, Any] = {
        "readonly": readonly,
        "allow_symlink": allow_symlink,
        "lock_timeout": lock_timeout,
        "refresh_lock_timeout": refresh_lock_timeout,
    }
    agent = AuthFile(shown, **options)
    main = AuthFile(os.path.expanduser(main_at), **options) if main_at else None
    if main is not None and main.same_as(agent):
        main = None  # inheriting from oneself is no overlay
    problems: list[AuthProblem] = []
    for file in (agent, main):
        if file is not None:
            problems.extend(file.check_permissions())
    if migrate:
        # A corrupt auth-profiles.json is reported by the snapshot; auth.json stays.
        with contextlib.suppress(StoreCorrupt):
            problems.extend(agent.migrate_legacy())
    return AuthStore(
        agent,
        main,
        readonly=readonly,
        policy=policy or CooldownPolicy(),
        clock=clock or _now_ms,
        check_interval=check_interval,
        problems=problems,
    )


def _open_postgres(
    url: str,
    *,
    agent_id: str | None,
    inherit_from: str | None,
    readonly: bool,
    store_options: dict[str, Any],
    lock_timeout: float,
    refresh_lock_timeout: float,
) -> AuthStore:
    try:
        from flatstate.auth.postgres import PostgresAuthStorage
    except ImportError as exc:
        if exc.name not in ("psycopg", "psycopg_pool"):
            raise
        raise ExtraMissing("auth profiles in PostgreSQL", "postgres") from None

    options: dict[str, Any] = {
        "readonly": readonly,
        "lock_timeout": lock_timeout,
        "refresh_lock_timeout": refresh_lock_timeout,
    }
    agent = PostgresAuthStorage(url, agent_id=agent_id, **options)
    main: PostgresAuthStorage | None = None
    try:
        if inherit_from is not None:
            if inherit_from.startswith(POSTGRES_SCHEMES):
                main = PostgresAuthStorage(inherit_from, agent_id=None, **options)
            elif os.sep in inherit_from or inherit_from.startswith(("~", ".")):
                raise InvalidLocation(
                    agent.path,
                    f"inherit_from {inherit_from!r} looks like a directory, but a PostgreSQL "
                    "store inherits from another agent of the database",
                    "Pass the main agent's id (inherit_from='main') or its postgresql:// URL.",
                )
            else:
                main = PostgresAuthStorage(
                    url, agent_id=None, namespace=normalize_agent_id(inherit_from), **options
                )
        opts = store_options
        return AuthStore(
            agent,
            main,
            readonly=readonly,
            policy=opts["policy"] or CooldownPolicy(),
            clock=opts["clock"] or _now_ms,
            check_interval=opts["check_interval"],
            problems=[],
        )
    except BaseException:
        agent.close()
        if main is not None:
            main.close()
        raise


class AuthStore:
    """An agent's auth profiles (see the module docstring); open with :func:`open_auth_store`.

    The rules live here, once; where the profiles are kept (a file, rows in
    PostgreSQL) is the :class:`~flatstate.auth.storage.AuthStorage` given.
    """

    def __init__(
        self,
        agent: AuthStorage,
        main: AuthStorage | None,
        *,
        readonly: bool,
        policy: CooldownPolicy,
        clock: Clock,
        check_interval: float,
        problems: Sequence[AuthProblem] = (),
    ) -> None:
        self._agent = agent
        self._main = main if main is not None and not main.same_as(agent) else None
        if main is not None and self._main is None:
            main.close()
        self.readonly = readonly
        self.policy = policy
        self._clock = clock
        self._interval = check_interval
        self._next_check = 0.0
        self._open_problems = tuple(problems)
        self._snap = AuthSnapshot(self._agent.current(), self._main_doc())
        self._next_check = _monotonic() + check_interval

    def close(self) -> None:
        """Release the storage's connections (PostgreSQL); a file store holds none."""
        self._agent.close()
        if self._main is not None:
            self._main.close()

    def __enter__(self) -> AuthStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paths and state -----------------------------------------------------
    @property
    def path(self) -> str:
        """The agent's ``auth-profiles.json``, or its URL (without the password)."""
        return self._agent.path

    @property
    def agent_dir(self) -> str:
        """The agent's directory; for PostgreSQL, the local one relative file refs start in."""
        return self._agent.directory

    @property
    def inherited_path(self) -> str | None:
        """The main agent's ``auth-profiles.json`` this store overlays, if any."""
        return self._main.path if self._main is not None else None

    @property
    def problems(self) -> tuple[AuthProblem, ...]:
        """What was found wrong: at open (permissions, legacy file) and in the files as they are."""
        return self._open_problems + self.snapshot().problems

    @property
    def suppressed_writes(self) -> int:
        """Writes kept in memory only because the store is read-only."""
        return self._agent.suppressed_writes + (self._main.suppressed_writes if self._main else 0)

    def __repr__(self) -> str:
        return (
            f"AuthStore({self.path!r}, profiles={len(self.snapshot().profiles)}, "
            f"readonly={self.readonly})"
        )

    # -- reads ---------------------------------------------------------------
    def _main_doc(self) -> AuthDocument | None:
        return self._main.current() if self._main is not None else None

    def _refresh_view(self) -> AuthSnapshot:
        """Stat the files (re-reading a changed one) and rebuild the snapshot if either changed."""
        agent = self._agent.current()
        main = self._main_doc()
        snap = self._snap
        if agent is not snap.agent or main is not snap.inherited:
            snap = self._snap = AuthSnapshot(agent, main)
        self._next_check = _monotonic() + self._interval
        return snap

    def snapshot(self) -> AuthSnapshot:
        """The whole state now: frozen, shared, unchanged by later writes."""
        if _monotonic() < self._next_check:
            return self._snap
        return self._refresh_view()

    def reload(self) -> AuthSnapshot:
        """Look at the files now, whatever ``check_interval`` says."""
        return self._refresh_view()

    def get(self, profile_id: str) -> AuthProfile | None:
        """The profile ``profile_id`` (shared, immutable), or None."""
        snap = self._snap if _monotonic() < self._next_check else self._refresh_view()
        profile: AuthProfile | None = snap.profiles.get(profile_id)
        return profile

    def profiles(self, provider: str | None = None) -> tuple[AuthProfile, ...]:
        """Every profile in file order (inherited ones first), or only one provider's."""
        values: tuple[AuthProfile, ...] = tuple(self.snapshot().profiles.values())
        if provider is None:
            return values
        key = provider_key(provider)
        return tuple(p for p in values if provider_key(p.provider) == key)

    def usage(self, profile_id: str) -> ProfileStats | None:
        """The usage stats of ``profile_id`` (shared, immutable), or None."""
        return self.snapshot().stats(profile_id)

    def select_profile(self, provider: str, now: int | None = None) -> AuthProfile | None:
        """The profile to use for ``provider`` at ``now`` (epoch ms), or None if none is usable.

        Explicit order first, then lastGood, then the oldest lastUsed; a
        profile in cooldown or disabled is skipped (:mod:`flatstate.auth.rotation`).
        """
        snap = self._snap if _monotonic() < self._next_check else self._refresh_view()
        return snap.select(provider, self._clock() if now is None else now)

    def resolve_secret(self, profile_id: str) -> str:
        """The secret to send for ``profile_id``: its ref resolved now, else its plaintext.

        An api_key profile gives its key, a token profile its token, an oauth
        profile its access token. Raises
        :class:`~flatstate.errors.SecretUnavailable` when there is none.
        """
        profile = self.get(profile_id)
        if profile is None:
            raise SecretUnavailable(
                profile_id, "no such profile", "List profiles with `flatstate auth list`."
            )
        ref = profile.ref
        if ref is not None:
            return resolve_ref(profile_id, ref, self._owner(profile_id).directory)
        plain = profile.plaintext
        if plain is None:
            raise SecretUnavailable(
                profile_id,
                f"its {profile.type} profile holds no secret and no ref",
                "Add it again with `flatstate auth add`.",
            )
        return plain

    def status(self, now: int | None = None) -> tuple[ProfileStatus, ...]:
        """Every profile's standing at ``now``: usable, in cooldown, or disabled, and until when."""
        at = self._clock() if now is None else now
        snap = self.snapshot()
        result = []
        for profile in snap.profiles.values():
            stats = snap.stats(profile.id)
            state, until, reason = "ok", None, None
            if stats is not None:
                if (stats.disabled_until or 0) > at:
                    state, until, reason = "disabled", stats.disabled_until, stats.disabled_reason
                elif (stats.cooldown_until or 0) > at:
                    state, until = "cooldown", stats.cooldown_until
                counted = [r for r, n in stats.failure_counts.pairs() if n]
                if state == "cooldown" and counted:
                    reason = ",".join(counted)
            if state == "ok" and profile.expires is not None and profile.expires <= at:
                state = "expired"
            result.append(
                ProfileStatus(
                    id=profile.id,
                    provider=profile.provider,
                    type=profile.type,
                    email=profile.email,
                    secret=profile.hint,
                    state=state,
                    expires=profile.expires,
                    until=until,
                    remaining_ms=None if until is None else until - at,
                    reason=reason,
                    error_count=stats.error_count if stats is not None else 0,
                    last_used=stats.last_used if stats is not None else None,
                    inherited=snap.owners[profile.id] is not snap.agent,
                )
            )
        return tuple(result)

    # -- writes --------------------------------------------------------------
    def update(self, change: Callable[[dict[str, Any]], bool]) -> AuthSnapshot:
        """Change the agent's file under its lock, starting from what is on disk now.

        ``change`` gets the whole document as plain dicts and lists and edits it
        in place; it returns False if there is nothing to save. The lock is held
        while it runs, so keep it short. Returns the new snapshot.
        """
        self._agent.update(change)
        return self._refresh_view()

    def _require(self, profile_id: str) -> AuthProfile:
        profile = self.get(profile_id)
        if profile is None:
            raise InvalidProfile(
                profile_id, "no such profile (list them with `flatstate auth list`)"
            )
        return profile

    def _owner(self, profile_id: str) -> AuthStorage:
        snap = self.snapshot()
        doc = snap.owners.get(profile_id)
        if doc is None or doc is snap.agent or self._main is None:
            return self._agent
        return self._main

    def add(self, profile_id: str, credential: Mapping[str, Any]) -> AuthProfile:
        """Add ``profile_id``, or replace it, in the agent's own file; return it.

        The credential is checked first: a known type, a provider, a secret or
        a ref of a known form. A plaintext secret next to a ref is dropped.
        """
        value = _check_new_profile(profile_id, credential)

        def change(doc: dict[str, Any]) -> bool:
            doc["profiles"][profile_id] = value
            return True

        self.update(change)
        return self._require(profile_id)

    def remove(self, profile_id: str) -> bool:
        """Remove ``profile_id`` with its stats, order entries and lastGood; False if absent.

        A profile inherited from the main agent cannot be removed here
        (:class:`~flatstate.errors.InvalidProfile`): remove it from the main store.
        """
        snap = self.snapshot()
        if profile_id in snap.profiles and snap.owners[profile_id] is not snap.agent:
            main = self._main.cli_store if self._main is not None else ""
            raise InvalidProfile(
                profile_id,
                f"it is inherited from {self.inherited_path}; remove it from that store "
                f"(flatstate auth remove {quote(profile_id)} --store {quote(main)})",
            )
        removed = [False]

        def change(doc: dict[str, Any]) -> bool:
            removed[0] = doc["profiles"].pop(profile_id, None) is not None
            usage = doc.get("usageStats")
            if isinstance(usage, dict) and usage.pop(profile_id, None) is not None:
                removed[0] = True
            order = doc.get("order")
            if isinstance(order, dict):
                for provider, ids in list(order.items()):
                    if isinstance(ids, list) and profile_id in ids:
                        kept = [i for i in ids if i != profile_id]
                        if kept:
                            order[provider] = kept
                        else:
                            del order[provider]
                        removed[0] = True
            last_good = doc.get("lastGood")
            if isinstance(last_good, dict):
                for provider, good in list(last_good.items()):
                    if good == profile_id:
                        del last_good[provider]
                        removed[0] = True
            return removed[0]

        self.update(change)
        return removed[0]

    def set_order(self, provider: str, profile_ids: Sequence[str] | None) -> tuple[str, ...]:
        """Make ``profile_ids`` the explicit order for ``provider`` (None or empty clears it).

        Every id must be a profile of that provider. Returns the order now in force.
        """
        key = provider_key(provider)
        ids = list(dict.fromkeys(profile_ids or ()))
        for profile_id in ids:
            profile = self._require(profile_id)
            if provider_key(profile.provider) != key:
                raise InvalidProfile(
                    profile_id, f"it belongs to provider {profile.provider!r}, not {provider!r}"
                )

        def change(doc: dict[str, Any]) -> bool:
            order = _writable_section(doc, "order", self.path)
            for name in [n for n in order if provider_key(n) == key]:
                del order[name]
            if ids:
                order[key] = ids
            elif not order:
                doc.pop("order", None)
            return True

        snap = self.update(change)
        current = snap.order.get(key)
        return tuple(current) if current else ()

    def mark_failure(self, profile_id: str, reason: str, *, now: int | None = None) -> ProfileStats:
        """Record a failed call with ``profile_id``: counters up, then a cooldown or a disable.

        ``reason`` is one of auth, format, rate_limit, billing, timeout,
        unknown. Billing disables the profile (5 h doubling to 24 h); any other
        reason starts the next cooldown step (30 s, 1 min, 5 min by default).
        """
        if reason not in FAILURE_REASONS:
            raise InvalidProfile(
                profile_id,
                f"unknown failure reason {reason!r}; use one of {', '.join(FAILURE_REASONS)}",
            )
        at = self._clock() if now is None else now
        return self._update_stats(
            profile_id, lambda stats: apply_failure(stats, reason, at, self.policy)
        )

    def mark_success(self, profile_id: str, *, now: int | None = None) -> ProfileStats:
        """Record a successful call: counters reset, cooldowns lifted, lastUsed and lastGood set."""
        at = self._clock() if now is None else now
        profile = self._require(profile_id)

        def good(doc: dict[str, Any]) -> None:
            _writable_section(doc, "lastGood", self.path)[profile.provider] = profile_id

        return self._update_stats(profile_id, lambda stats: apply_success(stats, at), good)

    def _update_stats(
        self,
        profile_id: str,
        compute: Callable[[Mapping[str, Any] | None], dict[str, Any]],
        also: Callable[[dict[str, Any]], None] | None = None,
    ) -> ProfileStats:
        self._require(profile_id)
        inherited = self._main_doc()

        def change(doc: dict[str, Any]) -> bool:
            usage = _writable_section(doc, "usageStats", self.path)
            base = usage.get(profile_id)
            if not isinstance(base, dict) and inherited is not None:
                # First change of an inherited profile's stats: start from the
                # main agent's, so a cooldown there is not forgotten here.
                found = inherited.usage.get(profile_id)
                base = thaw(found) if found is not None else None
            usage[profile_id] = compute(base if isinstance(base, dict) else None)
            if also is not None:
                also(doc)
            return True

        stats = self.update(change).stats(profile_id)
        assert stats is not None
        return stats

    # -- OAuth refresh -------------------------------------------------------
    def refresh_oauth(
        self,
        profile_id: str,
        refresher: Refresher,
        *,
        now: int | None = None,
        force: bool = False,
        margin_ms: int = DEFAULT_REFRESH_MARGIN_MS,
    ) -> AuthProfile:
        """Refresh an OAuth profile's tokens once, however many processes ask at the same time.

        Under the profile's refresh lock the file is read again. If another
        writer refreshed the profile since this store last saw it, its tokens
        are returned and ``refresher`` is not called. Otherwise, if the access
        token expires within ``margin_ms`` (or ``force``), ``refresher(profile)``
        returns the new tokens, which are committed with :meth:`commit_refresh`.
        A profile without ``expires`` is refreshed only with ``force``.
        """
        seen = self._require(profile_id)
        if seen.type != "oauth":
            raise InvalidProfile(profile_id, f"it is an {seen.type} profile, not oauth")
        owner = self._owner(profile_id)
        with owner.refresh_lock(seen.provider, profile_id):
            current = self._reread(owner, profile_id)
            if (current.refresh, current.access) != (seen.refresh, seen.access):
                return current  # refreshed by someone else while we waited
            at = self._clock() if now is None else now
            expires = current.expires
            if not force and (expires is None or expires > at + margin_ms):
                return current
            tokens = refresher(current)
            return self.commit_refresh(profile_id, current.refresh, tokens)

    def _reread(self, owner: AuthStorage, profile_id: str) -> AuthProfile:
        """The profile as on disk now (a real read, not a stat check), and the view updated."""
        owner.update(lambda doc: False)
        current = self._refresh_view().get(profile_id)
        if current is None or current.type != "oauth":
            raise InvalidProfile(profile_id, "it was removed or replaced by another writer")
        return current

    def commit_refresh(
        self, profile_id: str, expected_refresh: str | None, tokens: Mapping[str, Any]
    ) -> AuthProfile:
        """Store new OAuth ``tokens`` if the refresh token on disk is still ``expected_refresh``.

        This is the compare-and-swap that keeps a rotation: a writer that read
        the profile before another one rotated its refresh token gets
        :class:`~flatstate.errors.ConflictError` and nothing is written. The
        tokens go to the file the profile lives in (the main agent's for an
        inherited profile), merged into the profile's other fields.
        """
        new = _check_tokens(profile_id, tokens)
        owner = self._owner(profile_id)

        def change(doc: dict[str, Any]) -> bool:
            current = doc["profiles"].get(profile_id)
            if check_profile(current) is not None or current.get("type") != "oauth":
                raise InvalidProfile(
                    profile_id, f"it is no longer an oauth profile in {owner.path}"
                )
            if current.get("refresh") != expected_refresh:
                raise ConflictError(
                    f"auth profile {profile_id!r}",
                    "its refresh token was rotated by another writer after you read it, so "
                    "your tokens are stale. Nothing was written; read the profile again "
                    "(store.get) and use its current tokens",
                )
            current.update(new)
            return True

        owner.update(change)
        return self._require_fresh(profile_id)

    def _require_fresh(self, profile_id: str) -> AuthProfile:
        profile = self._refresh_view().get(profile_id)
        assert profile is not None
        return profile


def _writable_section(doc: dict[str, Any], name: str, path: str) -> dict[str, Any]:
    section = doc.setdefault(name, {})
    if not isinstance(section, dict):
        raise StoreCorrupt(
            path,
            f"'{name}' is not a JSON object, so it cannot be updated",
            f"Fix or delete '{name}' in the file by hand.",
        )
    return section


def _check_new_profile(profile_id: str, credential: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(profile_id, str) or not profile_id or profile_id != profile_id.strip():
        raise InvalidProfile(None, "a profile id must be a non-empty string without outer blanks")
    if any(ord(c) < 32 for c in profile_id):
        raise InvalidProfile(None, "a profile id must not contain control characters")
    value: dict[str, Any] = thaw(credential) if isinstance(credential, Mapping) else credential
    reason = check_profile(value)
    if reason == "non_object":
        raise InvalidProfile(profile_id, "the credential must be a JSON object")
    if reason == "invalid_type":
        raise InvalidProfile(profile_id, f"its type must be one of {', '.join(PROFILE_TYPES)}")
    if reason == "missing_provider":
        raise InvalidProfile(profile_id, "it needs a provider")
    kind = value["type"]
    ref_field, secret_field = {
        "api_key": ("keyRef", "key"),
        "token": ("tokenRef", "token"),
        "oauth": (None, "access"),
    }[kind]
    ref = value.get(ref_field) if ref_field else None
    if ref is not None and parse_ref(ref) is None:
        raise InvalidProfile(profile_id, f"its {ref_field} must be 'env:NAME' or 'file:PATH'")
    secret = value.get(secret_field)
    if ref is None and not (isinstance(secret, str) and secret):
        needs = f"a {secret_field} or a {ref_field}" if ref_field else "an access token"
        raise InvalidProfile(profile_id, f"an {kind} profile needs {needs}")
    _check_expires(profile_id, value)
    return value


def _check_expires(profile_id: str, fields: Mapping[str, Any]) -> None:
    """An ``expires`` that is there is epoch milliseconds (an integer) or None: any other
    would read as "never expires" and the token would never be refreshed."""
    expires = fields.get("expires")
    if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)):
        raise InvalidProfile(
            profile_id, f"'expires' must be epoch milliseconds (an integer), not {expires!r:.40}"
        )


def _check_tokens(profile_id: str, tokens: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(tokens, Mapping):
        raise InvalidProfile(profile_id, "the refresher must return a mapping of new tokens")
    new = {str(k): thaw(v) for k, v in tokens.items()}
    access = new.get("access")
    if not isinstance(access, str) or not access:
        raise InvalidProfile(profile_id, "the new tokens need a non-empty 'access'")
    refresh = new.get("refresh")
    if refresh is None:  # the provider did not rotate it (or said nothing): keep the stored one
        new.pop("refresh", None)
    elif not (isinstance(refresh, str) and refresh):
        raise InvalidProfile(profile_id, "a new 'refresh' must be a non-empty string")
    _check_expires(profile_id, new)
    for field in ("type", "provider"):
        if field in new:
            raise InvalidProfile(profile_id, f"a refresh may not change '{field}'")
    return new
