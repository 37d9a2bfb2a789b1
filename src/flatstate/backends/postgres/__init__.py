"""The distributed engine: one PostgreSQL database shared by gateways on many hosts.

Open it with ``open_store("postgresql://user:password@host/db")``. The schema
(:mod:`flatstate.backends.postgres.schema`) keeps every agent's sessions in one set
of tables, each row tagged with its *namespace* (the agent id unless told
otherwise): one row per session (``key``, ``entry`` as json text, kept exactly, ``session_id``,
``updated_at``, ``version``), large object fields stored once by content in
``blobs`` as on SQLite, a change log numbered per namespace, and
``schema_version`` for migrations.

Writes. Every write transaction takes the namespace's advisory lock, so the
writers of a namespace, in every process on every host, take turns, as
SQLite's BEGIN IMMEDIATE makes them do on one machine, and reads the change
log's head under it. When no other writer's commit has been announced since
the store last caught up, the write runs on the store's view and one query
carries BEGIN, the lock, a check that the head has not moved
(``begin_write_at``), the rows and COMMIT: one round trip and one commit. If
the head moved, nothing is written and the batch runs again, locking first
(BEGIN and the lock as one query, catch up, run, then the rows and COMMIT:
two round trips). A write that commits nothing confirms the head before its
outcome is reported. Either way a read-modify-write (``patch``,
``update(fn)``) acts on the latest committed state, which is what makes 4
processes x 500 increments of one counter come out at 2,000. Each row write
is also checked against the row's ``version`` as the store last read it
(``UPDATE ... WHERE version = expected``, in the server functions
``put``/``remove``), so a program that writes the table without taking the
lock never has its change overwritten unseen: the write is retried from the
start (caught up, re-run) a bounded number of times. Writes bind their
parameters on the client (psycopg's ClientCursor) and send each batch as one
multi-statement query: on this machine that cost half the client CPU of the
same statements in pipeline mode, and a pooler sees no prepared statement.

Why a lock and not optimistic transactions alone or SERIALIZABLE: optimistic
retries under contention (many processes patching one counter) redo work and
can starve, and SERIALIZABLE would abort and retry the same way and still
needs a commit-ordered change log, which the lock gives for free. The
one-round-trip path is optimistic only while nobody else writes: after a stale
view the next writes lock first. Different agents (namespaces) never wait for
each other.

Freshness. Every committed change notifies the namespace's channel with its
log position. Each backend LISTENs on a dedicated connection in a thread
(:mod:`flatstate.backends.postgres.listen`) and bumps the store's signal when a
position is newer than what the store has seen, so the next read reloads just
the keys the log names. After a lost connection the listener reconnects and
asks for a catch-up from the log by position, which misses nothing; the
store's periodic check (``check_interval``) is a backstop besides. A
process's own writes are in its cache as soon as they return.

A connection lost during a commit is settled before anything is retried:
each write sets a random marker that the trigger logs with its changes; on a
new connection, under the namespace lock (granted only once the old
transaction has ended), the marker is in the log or it never will be. So a
write is neither lost nor applied twice. Other lost connections are retried
on a fresh one for up to ``lock_timeout``.

Transcripts live in the database too (:mod:`~flatstate.backends.postgres.transcripts`):
a row per transcript, whose lock orders the appends of every host, and a row per JSONL
line. The facts (:mod:`flatstate.facts.postgres`) and auth profiles
(:mod:`flatstate.auth.postgres`) have tables of their own in the same database; the local
state directory (``state_dir``, default ``~/.flatstate/<namespace>``) keeps only what an
earlier flatstate left there, imported on first open.

The package: :mod:`~flatstate.backends.postgres.dsn` (locations and redaction),
:mod:`~flatstate.backends.postgres.connection` (lost connections, retries, errors),
:mod:`~flatstate.backends.postgres.schema` (tables, server functions, migrations),
:mod:`~flatstate.backends.postgres.queries` (the statements),
:mod:`~flatstate.backends.postgres.listen` (LISTEN on a thread),
:mod:`~flatstate.backends.postgres.backend` (the row protocol),
:mod:`~flatstate.backends.postgres.transcript_schema` (the transcript tables),
:mod:`~flatstate.backends.postgres.appends` (transcript appends: order, group commit,
lost connections) and :mod:`~flatstate.backends.postgres.transcripts` (transcripts read
and written with the interface of a file).
"""

from flatstate.backends.postgres.backend import PostgresBackend
from flatstate.backends.postgres.dsn import DEFAULT_SCHEMA, local_state_dir, redact_dsn, split_dsn
from flatstate.backends.postgres.schema import SCHEMA_VERSION

__all__ = [
    "DEFAULT_SCHEMA",
    "SCHEMA_VERSION",
    "PostgresBackend",
    "local_state_dir",
    "redact_dsn",
    "split_dsn",
]
