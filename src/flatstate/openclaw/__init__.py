"""OpenClaw 2026.9's SQLite state, read without ever being written.

Since 2026.8 OpenClaw keeps sessions, transcripts and auth profiles in SQLite
only. This package reads those databases for the importer
(:mod:`flatstate.transfer`), ``flatstate doctor`` and the read-only store
(:mod:`flatstate.backends.openclaw`); nothing here opens a file for writing,
creates a file beside one, or takes part in OpenClaw's locking.

    openclaw/
    ├── database.py   one file opened immutable (or a private copy, to replay a WAL);
    │                 its header, its WAL index and the processes that hold it
    ├── agent.py      an agent's database: sessions, transcript events, its auth rows
    └── root.py       a state directory: its agents, their leases, the shared auth store
"""
