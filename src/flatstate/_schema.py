"""Schema versions: one policy for every database flatstate keeps (sessions and facts on
SQLite, sessions on PostgreSQL).

A database records the version of its schema. An older one is migrated in place when it is
opened for writing; a newer one was written by a newer flatstate and is never touched.
"""

from __future__ import annotations

from flatstate.errors import ReadOnlyStore, StoreCorrupt

__all__ = ["needs_migration"]


def needs_migration(location: str, found: int, latest: int, *, readonly: bool) -> bool:
    """Whether a database at schema ``found`` must be migrated to ``latest`` before use.

    Raises StoreCorrupt for a schema newer than this flatstate knows, and ReadOnlyStore for
    one that needs a migration the caller may not write.
    """
    if found > latest:
        raise StoreCorrupt(
            location,
            f"schema version {found} is newer than this flatstate knows ({latest})",
            "Upgrade flatstate to open it.",
        )
    if found < latest and readonly:
        raise ReadOnlyStore(
            location,
            f"schema version {found} needs a migration to {latest}; "
            "open it once without readonly to migrate it",
        )
    return found < latest
