"""Auth profiles: OpenClaw's ``auth-profiles.json``, shared frozen reads, locked writes.

Open a store with :func:`open_auth_store`; see ``docs/auth.md`` for the file
format kept, the locking and compare-and-swap rules, rotation, and security.

    auth/
    ├── profiles.py   AuthProfile, ProfileStats, AuthProblem: frozen values, redacted reprs
    ├── refs.py       keyRef / tokenRef: env:NAME and file:PATH, resolved at use time
    ├── rotation.py   CooldownPolicy, failure and success rules, ranked selection
    ├── document.py   one file parsed (AuthDocument), two overlaid (AuthSnapshot)
    ├── storage.py    AuthStorage: the seam between the rules and where profiles are kept
    ├── disk.py       the file: stat-keyed cache, locks, atomic writes, checks, migration
    ├── postgres.py   rows in PostgreSQL: advisory locks, refresh claims, settled commits
    ├── postgres_schema.py   its tables, migrations and statements
    └── store.py      AuthStore and open_auth_store: the rules, once, and the public API
"""

from flatstate.auth.disk import AUTH_FILE, LEGACY_FILE
from flatstate.auth.document import AuthSnapshot
from flatstate.auth.profiles import (
    FAILURE_REASONS,
    PROFILE_TYPES,
    AuthProblem,
    AuthProfile,
    ProfileStats,
    redact,
    secret_hint,
)
from flatstate.auth.refs import parse_ref, resolve_ref
from flatstate.auth.rotation import CooldownPolicy
from flatstate.auth.store import (
    DEFAULT_CHECK_INTERVAL,
    READONLY_ENV,
    AuthStore,
    ProfileStatus,
    Refresher,
    open_auth_store,
)

__all__ = [
    "AUTH_FILE",
    "DEFAULT_CHECK_INTERVAL",
    "FAILURE_REASONS",
    "LEGACY_FILE",
    "PROFILE_TYPES",
    "READONLY_ENV",
    "AuthProblem",
    "AuthProfile",
    "AuthSnapshot",
    "AuthStore",
    "CooldownPolicy",
    "ProfileStats",
    "ProfileStatus",
    "Refresher",
    "open_auth_store",
    "parse_ref",
    "redact",
    "resolve_ref",
    "secret_hint",
]
