"""What SQLite alone costs per patch in `flatstate bench write`: upserts of rows the size of
the bench's entries (the same table, index and change-log trigger), 64 per transaction,
synchronous=NORMAL, with no Python beyond the calls. Prints µs per row, wall and CPU.

Usage: python scripts/sqlite-floor.py [ROW_BYTES] [BATCHES]
"""

import os
import random
import sqlite3
import sys
import tempfile
import time

ROW_BYTES = int(sys.argv[1]) if len(sys.argv) > 1 else 2900
BATCHES = int(sys.argv[2]) if len(sys.argv) > 2 else 300
SESSIONS, BATCH = 2000, 64

with tempfile.TemporaryDirectory() as directory:
    conn = sqlite3.connect(os.path.join(directory, "floor.sqlite"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -8192")
    conn.execute(
        "CREATE TABLE sessions (key TEXT NOT NULL UNIQUE, session_id TEXT NOT NULL, "
        "updated_at INTEGER, entry TEXT NOT NULL, blobs TEXT)"
    )
    conn.execute("CREATE INDEX sessions_updated_at ON sessions (updated_at)")
    conn.execute("CREATE TABLE changes (seq INTEGER PRIMARY KEY, key TEXT NOT NULL)")
    conn.execute(
        "CREATE TRIGGER logged AFTER UPDATE ON sessions BEGIN "
        "INSERT INTO changes (key) VALUES (old.key); END"
    )
    row = "x" * ROW_BYTES
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO sessions VALUES (?, 'sid', ?, ?, NULL)",
        ((f"agent:main:k{i}", i, row) for i in range(SESSIONS)),
    )
    conn.execute("COMMIT")
    upsert = (
        "INSERT INTO sessions (key, session_id, updated_at, entry, blobs) VALUES (?, 'sid', ?, ?, "
        "NULL) ON CONFLICT (key) DO UPDATE SET session_id = excluded.session_id, "
        "updated_at = excluded.updated_at, entry = excluded.entry, blobs = excluded.blobs"
    )
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in range(BATCHES):
        conn.execute("BEGIN IMMEDIATE")
        for i in range(BATCH):
            key = f"agent:main:k{random.randrange(SESSIONS)}"
            conn.execute(upsert, (key, 10**12 + batch * BATCH + i, row))
        conn.execute("COMMIT")
    rows = BATCHES * BATCH
    print(
        f"{ROW_BYTES} B rows, {BATCH} a transaction: "
        f"{(time.perf_counter() - wall) / rows * 1e6:.1f} µs wall, "
        f"{(time.process_time() - cpu) / rows * 1e6:.1f} µs CPU per row"
    )
    conn.close()
