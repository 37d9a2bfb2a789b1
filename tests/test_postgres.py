"""What only the PostgreSQL backend does: namespaces, the schema, outside writers, lost
connections, and processes on separate connections (the conformance suite covers the rest)."""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import flatstate
from flatstate.backends import _blobs
from flatstate.backends import postgres as pg_backend
from flatstate.backends.postgres import backend as pg_backend_module
from flatstate.errors import (
    ConflictError,
    LockTimeout,
    ReadOnlyStore,
    StoreClosed,
    StoreCorrupt,
    StoreUnavailable,
)
from tests.conftest import NO_POSTGRES, POSTGRES_DSN, postgres_location
from tests.pgkill import BackendKiller, keep_going, self_terminating
from tests.processes import RUN_TIMEOUT, START_TIMEOUT, ctx, join_all, running
from tests.test_store_processes import COUNTER_KEY, check_counter_race

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(POSTGRES_DSN is None, reason=NO_POSTGRES)]

# How long another process may take to serve a committed value (a notification is
# normally delivered within milliseconds): past it, wait_until fails the test.
FRESHNESS_DEADLINE = 10.0


@pytest.fixture
def location(tmp_path: Path) -> str:
    return postgres_location(tmp_path)


@pytest.fixture
def sql() -> Iterator[psycopg.Connection[Any]]:
    """A plain connection to the test server: 'another program'."""
    assert POSTGRES_DSN is not None
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        yield conn


def namespace_of(store: flatstate.SessionStore) -> str:
    backend = store.backend
    assert isinstance(backend, pg_backend.PostgresBackend)
    return backend.namespace


def pg(store: flatstate.SessionStore) -> pg_backend.PostgresBackend:
    backend = store.backend
    assert isinstance(backend, pg_backend.PostgresBackend)
    return backend


def wait_until(
    check: Callable[[], bool], timeout: float = FRESHNESS_DEADLINE, what: str = "the check"
) -> None:
    """Poll ``check`` until it holds; fail the test if it still does not after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} did not hold within {timeout:g} s")
        time.sleep(0.001)


# -- addresses, namespaces, secrets ----------------------------------------------


def test_the_password_never_appears_in_location_or_errors(tmp_path: Path) -> None:
    with flatstate.open_store(postgres_location(tmp_path)) as store:
        password = psycopg.conninfo.conninfo_to_dict(POSTGRES_DSN).get("password")
        assert password and password not in store.location
        assert password not in repr(store) and password not in str(store.stats())
        assert store.location.startswith("postgresql://") and "namespace=" in store.location
    with pytest.raises(StoreClosed) as closed:
        store.get("main")
    assert str(password) not in str(closed.value) and store.location in str(closed.value)
    unreachable = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(StoreUnavailable) as info:
        flatstate.open_store(unreachable)
    assert "s3cret-pw" not in str(info.value) and "s3cret-pw" not in info.value.location
    assert "127.0.0.1" in str(info.value)


def test_doctor_reads_the_database_through_the_backend(location: str, tmp_path: Path) -> None:
    """doctor on a URL opens the store read-only and checks its rows, naming the store by
    its location (no password), instead of looking for files under a 'directory' named
    like the URL."""
    from flatstate.doctor import diagnose

    with flatstate.open_store(location) as store:
        store.patch("main", {"model": "m"})
        store.patch("agent:main:big", {"notes": "x" * 5000})
    report = diagnose(location, max_entry_bytes=4096)
    password = psycopg.conninfo.conninfo_to_dict(POSTGRES_DSN).get("password")
    leaked = bool(password) and password in repr(report)  # a failure must not print it
    assert password and not leaked
    assert report.backend == "postgres" and report.store.startswith("postgresql://")
    assert report.entries == 2 and report.store_bytes > 0
    assert [(f.kind, f.subject) for f in report.findings] == [("oversized", "agent:main:big")]
    assert report.transcripts_dir is None  # the transcripts are in the database
    assert pg_backend.local_state_dir(location) == str(tmp_path / "state")


def test_redact_dsn_drops_passwords_in_both_forms() -> None:
    assert pg_backend.redact_dsn("postgresql://u:pw@h:5/db?sslpassword=x&a=b") == (
        "postgresql://u@h:5/db?a=b"
    )
    assert "pw" not in pg_backend.redact_dsn("host=h user=u password=pw dbname=d")
    dsn, ours = pg_backend.split_dsn("postgresql://h/db?namespace=n%2F1&state_dir=/x&sslmode=off")
    assert dsn == "postgresql://h/db?sslmode=off"
    assert ours == {"namespace": "n/1", "state_dir": "/x"}


def test_agents_share_a_database_without_seeing_each_other(tmp_path: Path) -> None:
    assert POSTGRES_DSN is not None
    ns = f"fleet-{random.randrange(1 << 30)}"
    base = postgres_location(tmp_path, namespace=ns)
    main = flatstate.open_store(base)
    ops_location = postgres_location(tmp_path, namespace=ns + "-ops")
    ops = flatstate.open_store(ops_location, agent_id="ops")
    try:
        main.patch("main", {"model": "a"})
        ops.patch("main", {"model": "b"})
        assert list(main.keys()) == ["agent:main:main"]
        assert list(ops.keys()) == ["agent:ops:main"]
        assert main.get("main")["model"] == "a"  # type: ignore[index]
    finally:
        main.close()
        ops.close()
    # Without a namespace the agent id is the namespace; transcripts stay local.
    with flatstate.open_store(POSTGRES_DSN, agent_id="Nobody-Here", readonly=True) as store:
        assert namespace_of(store) == "nobody-here"
        assert store.backend.transcripts_dir == os.path.join(
            os.path.expanduser("~"), ".flatstate", "nobody-here", "transcripts"
        )
    with flatstate.open_store(base) as store:
        assert store.backend.transcripts_dir == str(tmp_path / "state" / "transcripts")


# -- the schema ------------------------------------------------------------------


def test_rows_log_and_blobs_are_plain_sql(location: str, sql: psycopg.Connection[Any]) -> None:
    prompt = {"prompt": "skills " * 400}
    with flatstate.open_store(location) as store:
        ns = namespace_of(store)
        store.upsert("agent:main:a", {"model": "m", "updatedAt": 5, "skillsSnapshot": prompt})
        store.upsert("agent:main:b", {"updatedAt": 6, "skillsSnapshot": prompt})
        store.patch("agent:main:a", {"totalTokens": 7})
        store.delete("agent:main:b")
    rows = sql.execute(
        "SELECT key, entry->>'model', (entry->>'totalTokens')::int, updated_at, version "
        "FROM flatstate.sessions WHERE ns = %s ORDER BY key",
        (ns,),
    ).fetchall()
    assert len(rows) == 1 and rows[0][:3] == ("agent:main:a", "m", 7)
    log = sql.execute(
        "SELECT seq, key FROM flatstate.changes WHERE ns = %s ORDER BY seq", (ns,)
    ).fetchall()
    assert [seq for seq, _ in log] == [1, 2, 3, 4]  # gap-free, one per change
    a, b = "agent:main:a", "agent:main:b"
    assert [key for _, key in log] == [a, b, a, b]
    assert rows[0][4] == 3  # a row's version is the position of its last change
    head = sql.execute("SELECT seq FROM flatstate.namespaces WHERE ns = %s", (ns,)).fetchone()
    assert head == (4,)
    blobs = sql.execute("SELECT count(*) FROM flatstate.blobs WHERE ns = %s", (ns,)).fetchone()
    assert blobs == (1,)  # the shared skills snapshot is stored once
    version = sql.execute("SELECT version FROM flatstate.schema_version").fetchone()
    assert version == (pg_backend.SCHEMA_VERSION,)


def test_session_json_is_compressed_with_lz4_where_the_server_has_it(
    location: str, sql: psycopg.Connection[Any]
) -> None:
    with flatstate.open_store(location) as store:
        store.upsert("agent:main:a", {"updatedAt": 1, "note": "ten kilobytes " * 800})
        ns = namespace_of(store)
    try:
        sql.execute("SET default_toast_compression = lz4")
    except psycopg.Error:
        pytest.skip("this server was built without lz4")
    methods = sql.execute(
        "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = ANY(%s::regclass[]) "
        "AND attname IN ('entry', 'value') ORDER BY attname",
        (["flatstate.sessions", "flatstate.blobs"],),
    ).fetchall()
    assert methods == [("entry", "l"), ("value", "l")]
    stored = sql.execute(
        "SELECT pg_column_compression(entry) FROM flatstate.sessions WHERE ns = %s",
        (ns,),
    ).fetchall()
    assert stored == [("lz4",)]


def test_replaced_blobs_are_collected_without_help(
    location: str, sql: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_blobs, "COLLECT_AFTER", 8)
    with flatstate.open_store(location) as store:
        ns = namespace_of(store)
        for n in range(60):
            store.upsert(f"agent:main:s{n % 4}", {"skillsSnapshot": {"prompt": f"v{n} " * 100}})
        stored = sql.execute("SELECT count(*) FROM flatstate.blobs WHERE ns = %s", (ns,)).fetchone()
        assert stored is not None and 4 <= stored[0] <= 4 + 8
        assert store.get("agent:main:s3")["skillsSnapshot"]["prompt"].startswith("v59 ")  # type: ignore[index]


def test_blob_collection_deletes_a_bounded_batch_per_commit(
    location: str, sql: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Housekeeping never stalls a writer: each commit deletes at most COLLECT_BATCH of
    the unreferenced blobs, and the next commits go on until none is left."""
    monkeypatch.setattr(_blobs, "COLLECT_AFTER", 8)
    monkeypatch.setattr(pg_backend_module, "COLLECT_BATCH", 3)
    with flatstate.open_store(location) as store:
        ns = namespace_of(store)

        def blobs() -> int:
            found = sql.execute("SELECT count(*) FROM flatstate.blobs WHERE ns = %s", (ns,))
            return int(found.fetchone()[0])  # type: ignore[index]

        for n in range(20):
            store.upsert(f"agent:main:s{n}", {"skillsSnapshot": {"prompt": f"old {n} " * 100}})
        counts = [blobs()]
        for n in range(20):  # each adds a blob and orphans one; commits collect as they go
            store.upsert(f"agent:main:s{n}", {"skillsSnapshot": {"prompt": f"new {n} " * 100}})
            counts.append(blobs())
        for i in range(20):  # writes that orphan nothing
            store.patch("agent:main:counter", {"i": i})
            counts.append(blobs())
        changes = [after - before for before, after in itertools.pairwise(counts)]
        assert min(changes) >= -3, counts  # never more than 3 deleted by one commit
        assert -3 in changes or -2 in changes, counts  # a full batch of 3 was deleted
        assert counts[-1] == 20, counts  # and the next commits went on to the live ones


def test_a_schema_newer_than_this_flatstate_is_refused(
    tmp_path: Path, sql: psycopg.Connection[Any]
) -> None:
    schema = f"as_test_{random.randrange(1 << 30)}"
    location = postgres_location(tmp_path, schema=schema)
    try:
        with pytest.raises(ReadOnlyStore, match="needs a migration"):
            flatstate.open_store(location, readonly=True)  # nothing there yet
        flatstate.open_store(location).close()
        sql.execute(f"UPDATE {schema}.schema_version SET version = 99")
        with pytest.raises(StoreCorrupt, match="newer than this flatstate knows"):
            flatstate.open_store(location)
    finally:
        sql.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_nul_characters_are_kept_as_on_the_other_backends(location: str) -> None:
    """Entries are json text, not jsonb (which refuses NUL and turns 1e16 into an integer)."""
    with flatstate.open_store(location) as store:
        store.patch("main", {"label": "a\x00b", "six": "a\\u0000b", "big": 1e16})
    with flatstate.open_store(location) as fresh:
        entry = fresh.get("main")
        assert entry is not None
        assert (entry["label"], entry["six"], entry["big"]) == ("a\x00b", "a\\u0000b", 1e16)
        assert type(entry["big"]) is float


# -- other writers -----------------------------------------------------------------


def _set_field(
    sql: psycopg.Connection[Any], store: flatstate.SessionStore, key: str, field: str, value: Any
) -> None:
    """Another program's commit: ``field`` of session ``key`` set to ``value`` with plain SQL."""
    sql.execute(
        "UPDATE flatstate.sessions SET entry = jsonb_set(entry::jsonb, %s, %s::jsonb) "
        "WHERE ns = %s AND key = %s",
        ([field], json.dumps(value), namespace_of(store), f"agent:main:{key}"),
    )


def test_a_change_made_with_plain_sql_is_seen_without_polling(
    location: str, sql: psycopg.Connection[Any]
) -> None:
    with flatstate.open_store(location, check_interval=3600) as store:
        store.patch("main", {"label": "ours"})
        _set_field(sql, store, "main", "label", "theirs")
        wait_until(lambda: store.get("main")["label"] == "theirs")  # type: ignore[index]


def test_a_row_changed_outside_the_lock_is_never_overwritten(
    location: str, sql: psycopg.Connection[Any]
) -> None:
    """A program that writes without the namespace lock races a read-modify-write: the
    row's version check catches it and the write runs again on the new value."""
    with flatstate.open_store(location) as store:
        store.patch("main", {"count": 1, "label": "x"})
        calls = []

        def bump(draft: flatstate.Draft) -> None:
            calls.append(draft["main"]["count"])
            if len(calls) == 1:  # meanwhile, another program changes the same row
                _set_field(sql, store, "main", "label", "y")
            draft.patch("main", {"count": draft["main"]["count"] + 1})

        store.update(bump)
        assert calls == [1, 1]  # run again, on the row as the other program left it
        entry = store.get("main")
        assert entry is not None and entry["count"] == 2 and entry["label"] == "y"


def test_a_write_run_on_a_view_that_went_stale_runs_again(
    location: str, sql: psycopg.Connection[Any]
) -> None:
    """A write runs on the store's view and is locked and checked at commit: a commit by
    anyone else in between (here to an entry the write only reads, which no row version
    guards) sends it round again on the new state."""
    with flatstate.open_store(location) as store:
        store.patch("other", {"count": 1})
        seen = []

        def copy(draft: flatstate.Draft) -> None:
            seen.append(draft["other"]["count"])
            if len(seen) == 1:
                _set_field(sql, store, "other", "count", 2)
            draft.patch("main", {"copy": draft["other"]["count"]})

        store.update(copy)
        assert seen == [1, 2]
        assert store.get("main")["copy"] == 2  # type: ignore[index]


@pytest.mark.parametrize("outcome", ["raises", "writes nothing"])
def test_a_write_that_commits_nothing_is_checked_against_the_latest_state(
    location: str, sql: psycopg.Connection[Any], outcome: str
) -> None:
    """No commit checks a write that raises or changes nothing, so its view is confirmed
    first: one that went stale runs again instead of reporting a stale outcome."""
    with flatstate.open_store(location) as store:
        store.patch("main", {"count": 1})
        seen = []

        def check(draft: flatstate.Draft) -> int:
            count: int = draft["main"]["count"]
            seen.append(count)
            if len(seen) == 1:
                _set_field(sql, store, "main", "count", 2)
            if count < 2 and outcome == "raises":
                raise ValueError("count too low")
            return count

        assert store.update(check) == 2
        assert seen == [1, 2]


def test_a_writer_that_keeps_losing_gives_up_with_a_conflict(
    location: str, sql: psycopg.Connection[Any]
) -> None:
    with flatstate.open_store(location) as store:
        store.patch("main", {"count": 1})

        def always_raced(draft: flatstate.Draft) -> None:
            sql.execute(
                "UPDATE flatstate.sessions SET entry = entry WHERE ns = %s",
                (namespace_of(store),),
            )
            draft.patch("main", {"count": 5})

        with pytest.raises(ConflictError, match="namespace lock"):
            store.update(always_raced)
        assert store.get("main")["count"] == 1  # type: ignore[index]


def test_a_held_namespace_lock_times_out_with_a_clear_error(
    location: str, sql: psycopg.Connection[Any]
) -> None:
    with flatstate.open_store(location, lock_timeout=0.3) as store:
        store.patch("main", {"count": 1})
        with sql.transaction():
            sql.execute("SELECT flatstate.lock(%s)", (namespace_of(store),))
            with pytest.raises(LockTimeout, match="Another process is writing"):
                store.patch("main", {"count": 2})
        store.patch("main", {"count": 3})
        assert store.get("main")["count"] == 3  # type: ignore[index]


def test_a_reader_far_behind_reloads_everything(
    location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_blobs, "MAX_REPLAY", 3)
    with (
        flatstate.open_store(location) as writer,
        flatstate.open_store(location, check_interval=3600) as reader,
    ):
        before = reader.stats().full_reloads
        writer.update(lambda d: [d.__setitem__(f"k{i}", {"updatedAt": i}) for i in range(10)])
        wait_until(lambda: len(reader) == 10)
        assert reader.stats().full_reloads > before


# -- lost connections ---------------------------------------------------------------


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_connection_lost_at_commit_neither_loses_nor_repeats_the_write(
    location: str, when: str
) -> None:
    """Before COMMIT: nothing was written, the write runs again. After COMMIT (the reply
    lost): the marked change is found in the log and the write is not repeated."""
    with flatstate.open_store(location) as store, flatstate.open_store(location) as other:
        store.patch(COUNTER_KEY, {"count": 0})
        with self_terminating(when) as fired:
            store.update(lambda d: d.patch(COUNTER_KEY, {"count": d[COUNTER_KEY]["count"] + 1}))
        assert fired
        assert store.get(COUNTER_KEY)["count"] == 1  # type: ignore[index]
        wait_until(lambda: other.get(COUNTER_KEY)["count"] == 1)  # type: ignore[index]
        store.update(lambda d: d.patch(COUNTER_KEY, {"count": d[COUNTER_KEY]["count"] + 1}))
        assert store.get(COUNTER_KEY)["count"] == 2  # type: ignore[index]


def test_a_killed_listener_reconnects_and_catches_up(
    location: str, sql: psycopg.Connection[Any]
) -> None:
    with (
        flatstate.open_store(location, check_interval=3600) as reader,
        flatstate.open_store(location) as writer,
    ):
        reader.get("main")
        gone = "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)"
        for round_ in range(3):
            pid = pg(reader).listener_pid
            sql.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_until(lambda p=pid: sql.execute(gone, (p,)).fetchone()[0])  # type: ignore[index]
            writer.patch("main", {"n": round_})  # while the listener is away or catching up
            wait_until(lambda r=round_: (reader.get("main") or {}).get("n") == r)
        assert pg(reader).listener_reconnects >= 1


# -- processes on separate connections -----------------------------------------------


def test_four_processes_patching_one_counter_lose_no_update(location: str) -> None:
    check_counter_race(location)


def _write_and_report(location: str, queue: Any, count: int) -> None:
    with flatstate.open_store(location) as store:
        for i in range(1, count + 1):
            store.patch("agent:main:seq", {"n": i})
            queue.put((i, store._token))  # the log position of that commit, once acknowledged
        queue.put(None)


def test_a_reader_process_sees_every_write_and_never_an_older_one(location: str) -> None:
    """The reader learns of commits only by notification (no polling): each acknowledged
    write is served within FRESHNESS_DEADLINE (wait_until fails the test past it), and no
    read returns a value older than the last notification the reader had processed before it."""
    reader = flatstate.open_store(location, check_interval=3600)
    backend = pg(reader)
    reader.get("agent:main:seq")
    queue = ctx.Queue()
    samples: list[tuple[int, int]] = []  # (position notified before the read, value read)
    acked: dict[int, int] = {}  # write -> its log position
    count = 200
    try:
        with running(_write_and_report, [(location, queue, count)]) as procs:
            while (item := queue.get(timeout=RUN_TIMEOUT)) is not None:
                i, position = item
                acked[i] = position

                def seen(i: int = i) -> bool:
                    notified = backend.notified
                    entry = reader.get("agent:main:seq")
                    samples.append((notified, entry["n"] if entry else 0))
                    return entry is not None and entry["n"] >= i

                wait_until(seen, what=f"serving write n={i}")
            assert join_all(procs) == [0]
    finally:
        reader.close()
    assert len(acked) == count
    by_position = sorted((position, i) for i, position in acked.items())
    compared = 0
    for notified, value in samples:
        newest = max((i for position, i in by_position if position <= notified), default=0)
        assert value >= newest, f"served n={value} after a notification of n={newest}"
        compared += newest > 0
    assert compared > 0, "no read followed a notification of a write: nothing was compared"


def _increment_counting(location: str, barrier: Any, times: int, fired: Any, out: Any) -> None:
    done = 0
    with flatstate.open_store(location) as store:
        barrier.wait(START_TIMEOUT)
        while keep_going(done, times, fired):
            store.update(lambda d: d.patch(COUNTER_KEY, {"count": d[COUNTER_KEY]["count"] + 1}))
            done += 1
    out.put(done)


def test_killed_connections_lose_and_duplicate_no_write(
    location: str, sql: psycopg.Connection[Any]
) -> None:
    """Writers' pooled connections and listeners are terminated at random mid-run
    (pg_terminate_backend); every acknowledged increment is counted exactly once."""
    with flatstate.open_store(location) as store:
        store.upsert(COUNTER_KEY, {"count": 0})
        ns = namespace_of(store)
    workers, times = 2, 300
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    killer = BackendKiller([f"flatstate:{ns}", f"flatstate-listen:{ns}"])
    args = [(location, barrier, times, killer.fired, out)] * workers
    with running(_increment_counting, args) as procs:
        with killer:
            codes = join_all(procs)
        assert codes == [0] * workers, f"seed {killer.seed}"
    acknowledged = sum(out.get(timeout=10) for _ in range(workers))
    assert acknowledged >= workers * times
    killer.check_fired()
    with flatstate.open_store(location) as store:
        count = store.get(COUNTER_KEY)["count"]  # type: ignore[index]
        assert count == acknowledged, f"seed {killer.seed}"


# -- the CLI -------------------------------------------------------------------------


def test_the_cli_works_on_a_database_url_without_showing_its_password(location: str) -> None:
    from typer.testing import CliRunner

    from flatstate.cli import app

    runner = CliRunner()
    env = {"FLATSTATE_STORE": location}  # off the command line, where others can read it
    patched = runner.invoke(app, ["sessions", "patch", "main", "--set", "model=m"], env=env)
    assert patched.exit_code == 0, patched.output
    listed = runner.invoke(app, ["sessions", "list", "--json"], env=env)
    keys = [item["key"] for item in json.loads(listed.output)["items"]]
    assert listed.exit_code == 0 and keys == ["agent:main:main"]
    stats = runner.invoke(app, ["stats", "--json"], env=env)
    password = psycopg.conninfo.conninfo_to_dict(POSTGRES_DSN).get("password")
    assert stats.exit_code == 0 and password and password not in stats.output
    assert json.loads(stats.output)["backend"] == "postgres"
