"""What only the PostgreSQL auth store does: rows and hand edits, the password and tokens kept
out of every message, typed errors for locations that do not fit, read-only use, and sessions
killed (pg_terminate_backend) during rotation writes and OAuth refreshes.

The rules shared with the file store run on PostgreSQL through ``auth_place`` in
test_auth_store.py, test_auth_rotation.py and test_auth_refresh.py.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from flatstate.auth import AuthProfile, open_auth_store
from flatstate.auth.postgres import PostgresAuthStorage
from flatstate.errors import (
    InvalidLocation,
    InvalidSessionKey,
    ReadOnlyStore,
    StoreCorrupt,
    StoreUnavailable,
)
from tests.auth_support import (
    FIXTURE_OAUTH_EXPIRES,
    OAUTH_ID,
    AuthPlace,
    SecretGuard,
    catch,
    secret_guard,
)
from tests.conftest import NO_POSTGRES, POSTGRES_DSN, require_extra

psycopg = require_extra("psycopg", "postgres") if POSTGRES_DSN else None

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(POSTGRES_DSN is None, reason=NO_POSTGRES)]

EXPIRED = FIXTURE_OAUTH_EXPIRES + 1
NEW_EXPIRES = EXPIRED + 3_600_000
START_TIMEOUT = 60.0
JOIN_TIMEOUT = 90.0
# A slow token endpoint: long enough for the test to kill a session while it is being called.
SLOW_REFRESH = 1.5
NOW = 1_795_000_000_000


@pytest.fixture
def guard(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[SecretGuard]:
    yield from secret_guard(capsys, caplog)  # the server's password among the secrets


@pytest.fixture
def place(tmp_path: Path, openclaw_dir: Path) -> Iterator[AuthPlace]:
    """The OpenClaw fixture's profiles as the main agent's store, on PostgreSQL."""
    where = AuthPlace("postgres", tmp_path)
    where.seed_fixture(openclaw_dir)
    yield where
    where.close()


@pytest.fixture
def sql() -> Iterator[Any]:
    """A plain connection to the test server: 'another program'."""
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        yield conn


def _tokens(tag: str) -> dict[str, Any]:
    return {"access": f"A-new-{tag}-000", "refresh": f"R-new-{tag}-000", "expires": NEW_EXPIRES}


def _backends(sql: Any, namespace: str, *, locking: bool = False) -> list[int]:
    """The server processes of flatstate auth stores of ``namespace`` (with ``locking``:
    only those holding an advisory lock, i.e. a refresh lock or a write)."""
    query = "SELECT a.pid FROM pg_stat_activity a WHERE a.application_name = %s"
    if locking:
        query += (
            " AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
            " AND l.locktype = 'advisory' AND l.granted)"
        )
    name = f"flatstate-auth:{namespace}"[:63]
    return [int(row[0]) for row in sql.execute(query, (name,)).fetchall()]


def _kill(sql: Any, pids: list[int]) -> None:
    for pid in pids:
        sql.execute("SELECT pg_terminate_backend(%s)", (pid,))


# -- rows, and changes made by other programs ----------------------------------------------


def test_a_profile_is_a_row_and_a_hand_edit_is_seen(
    place: AuthPlace, sql: Any, guard: SecretGuard
) -> None:
    store = place.open(check_interval=0)
    ns = place.ref()
    rows = sql.execute(
        "SELECT profile_id, credential::jsonb->>'type' FROM flatstate.auth_profiles "
        "WHERE ns = %s AND credential IS NOT NULL ORDER BY profile_pos",
        (ns,),
    ).fetchall()
    assert rows == [
        ("anthropic:default", "api_key"),
        (OAUTH_ID, "oauth"),
        ("openai:default", "token"),
    ]
    # Another program changes a row: the trigger gives the namespace a new version.
    sql.execute(
        "UPDATE flatstate.auth_profiles SET credential = %s::json "
        "WHERE ns = %s AND profile_id = %s",
        (
            json.dumps({"type": "token", "provider": "openai", "token": "T-by-hand-123456"}),
            ns,
            "openai:default",
        ),
    )
    guard.secret("T-by-hand-123456")
    assert store.resolve_secret("openai:default") == "T-by-hand-123456"
    store.mark_failure("openai:default", "timeout", now=NOW)
    assert store.usage("openai:default").error_count == 1  # type: ignore[union-attr]
    assert store.remove("openai:default") is True
    left = sql.execute(
        "SELECT count(*) FROM flatstate.auth_profiles WHERE ns = %s AND profile_id = %s",
        (ns, "openai:default"),
    ).fetchone()
    assert left == (0,)  # the profile and its stats went together


def test_agents_of_one_database_do_not_see_each_other(place: AuthPlace, guard: SecretGuard) -> None:
    main = place.open()
    other = place.open("other")
    assert other.profiles() == ()
    other.add("x:y", {"type": "token", "provider": "x", "token": "T-other-agent-1"})
    guard.secret("T-other-agent-1")
    assert main.reload().get("x:y") is None
    assert len(main.profiles()) == 3


# -- secrets and typed errors --------------------------------------------------------------


def test_no_password_or_token_in_reprs_errors_or_logs(place: AuthPlace, guard: SecretGuard) -> None:
    store = place.open()
    guard.secret("A-new-leak-000", "R-new-leak-000")
    guard.watch(store, store.path, store.profiles(), store.status(), store.problems)
    assert store.path.startswith("postgresql://") and "namespace=" in store.path

    def failing(profile: AuthProfile) -> Mapping[str, Any]:
        raise RuntimeError("token endpoint said no")

    with pytest.raises(RuntimeError):
        store.refresh_oauth(OAUTH_ID, failing, now=EXPIRED)
    unreachable = "postgresql://someone:s3cret-pw-999@127.0.0.1:1/nowhere?connect_timeout=2"
    guard.secret("s3cret-pw-999")
    err = catch(guard, StoreUnavailable, open_auth_store, unreachable)
    assert "127.0.0.1" in str(err)
    err = catch(
        guard, InvalidLocation, open_auth_store, "postgresql://u:s3cret-pw-999@h/db?nosuchparam=1"
    )
    assert "postgresql://u@" in str(err)


def test_locations_that_do_not_fit_are_typed_errors(
    place: AuthPlace, tmp_path: Path, guard: SecretGuard
) -> None:
    url = place.location()
    catch(guard, InvalidLocation, open_auth_store, tmp_path / "agent", agent_id="ops")
    catch(guard, InvalidLocation, open_auth_store, tmp_path / "agent", inherit_from=url)
    err = catch(guard, InvalidLocation, open_auth_store, url, inherit_from=str(tmp_path))
    assert "main agent's id" in str(err)
    catch(guard, InvalidLocation, open_auth_store, url + "&schema=Not-An-Identifier")
    catch(guard, InvalidSessionKey, open_auth_store, POSTGRES_DSN, agent_id="not an id!")


def test_readonly_writes_nothing(place: AuthPlace, sql: Any, guard: SecretGuard) -> None:
    guard.secret("T-ro-added-12345", "A-ro-new-12345", "R-ro-new-12345")
    before = place.stored()
    version = sql.execute(
        "SELECT version FROM flatstate.auth_stores WHERE ns = %s", (place.ref(),)
    ).fetchone()
    store = place.open(readonly=True, check_interval=0)
    store.mark_failure("openai:default", "rate_limit", now=1000)
    store.add("x:ro", {"type": "token", "provider": "x", "token": "T-ro-added-12345"})
    refreshed = store.refresh_oauth(
        OAUTH_ID, lambda p: {"access": "A-ro-new-12345", "refresh": "R-ro-new-12345"}, force=True
    )
    assert refreshed.refresh == "R-ro-new-12345" and store.get("x:ro") is not None
    assert store.suppressed_writes == 3
    assert place.stored() == before
    assert (
        sql.execute(
            "SELECT version FROM flatstate.auth_stores WHERE ns = %s", (place.ref(),)
        ).fetchone()
        == version
    )
    assert place.locks_left() == []
    # The rows are the truth: when they change, the in-memory changes give way.
    place.open().mark_success("anthropic:default", now=2000)
    assert store.get("x:ro") is None


def test_a_server_error_never_quotes_the_row(tmp_path: Path, sql: Any, guard: SecretGuard) -> None:
    """PostgreSQL's DETAIL line quotes a failing row, credential and all: flatstate's error
    keeps only the primary message."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    url = f"{POSTGRES_DSN}{'&' if '?' in (POSTGRES_DSN or '') else '?'}schema={schema}"
    token = guard.secret("T-refused-by-a-check-0001")
    try:
        store = open_auth_store(url, agent_id="ops")
        sql.execute(
            f'ALTER TABLE "{schema}".auth_profiles ADD CONSTRAINT no_refused '
            "CHECK (credential::text NOT LIKE '%%refused%%')"
        )
        err = catch(
            guard,
            StoreCorrupt,
            store.add,
            "x:y",
            {"type": "token", "provider": "x", "token": token},
        )
        assert "23514" in str(err) and "no_refused" in str(err)
        assert store.reload().get("x:y") is None
        store.close()
    finally:
        sql.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_readonly_never_creates_the_tables(tmp_path: Path, sql: Any, guard: SecretGuard) -> None:
    schema = f"t_{uuid.uuid4().hex[:10]}"
    url = f"{POSTGRES_DSN}{'&' if '?' in (POSTGRES_DSN or '') else '?'}schema={schema}"
    try:
        err = catch(guard, ReadOnlyStore, open_auth_store, url, readonly=True)
        assert "migration" in str(err)
        assert sql.execute("SELECT to_regnamespace(%s)", (schema,)).fetchone() == (None,)
        with open_auth_store(url, agent_id="ops") as store:  # a write opens and creates them
            assert store.profiles() == ()
    finally:
        sql.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- killed sessions during rotation writes --------------------------------------------------


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_commit_whose_session_dies_is_applied_exactly_once(
    place: AuthPlace, monkeypatch: pytest.MonkeyPatch, guard: SecretGuard, when: str
) -> None:
    """Killed just before COMMIT: nothing happened, the write runs again. Just after (the
    reply lost): the transaction's status says it committed, and it is not run again."""
    store = place.open()
    store.mark_failure("openai:default", "timeout", now=NOW)
    fired: list[str] = []
    real_commit = PostgresAuthStorage._commit

    def dying_commit(self: PostgresAuthStorage, conn: Any) -> None:
        if fired:
            return real_commit(self, conn)
        fired.append(when)
        kill = "SELECT pg_terminate_backend(pg_backend_pid())"
        query = f"{kill}; COMMIT" if when == "before" else f"COMMIT; {kill}"
        psycopg.ClientCursor(conn).execute(query)
        return None

    monkeypatch.setattr(PostgresAuthStorage, "_commit", dying_commit)
    stats = store.mark_failure("openai:default", "timeout", now=NOW)
    assert fired == [when]
    assert stats.error_count == 2
    assert place.stored()["usageStats"]["openai:default"]["errorCount"] == 2
    # A refresh committed whose reply was lost is not retried into a conflict either.
    fired.clear()
    guard.secret("A-new-lost-000", "R-new-lost-000")
    new = store.refresh_oauth(OAUTH_ID, lambda p: _tokens("lost"), now=EXPIRED)
    assert fired == [when] and new.refresh == "R-new-lost-000"
    assert place.stored()["profiles"][OAUTH_ID]["refresh"] == "R-new-lost-000"


def _mark_failures(location: str, times: int, barrier: Any, done: Any) -> None:
    with open_auth_store(location, check_interval=3600) as store:
        barrier.wait(START_TIMEOUT)
        for _ in range(times):
            store.mark_failure("openai:default", "timeout", now=NOW)
    done.put("ok")


def test_sessions_killed_at_random_lose_and_duplicate_no_failure_count(
    place: AuthPlace, sql: Any, guard: SecretGuard
) -> None:
    """Two processes count 40 failures each on one profile while their sessions are
    terminated at random; every acknowledged write counts exactly once."""
    times = 40
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    done = ctx.Queue()
    workers = [
        ctx.Process(target=_mark_failures, args=(place.location(), times, barrier, done))
        for _ in range(2)
    ]
    killed = [0]
    stop = threading.Event()

    def killer() -> None:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            while not stop.is_set():
                pids = _backends(conn, place.ref())
                if pids:
                    _kill(conn, pids[:1])
                    killed[0] += 1
                time.sleep(0.05)

    try:
        for w in workers:
            w.start()
        barrier.wait(START_TIMEOUT)
        thread = threading.Thread(target=killer)
        thread.start()
        got = [done.get(timeout=JOIN_TIMEOUT) for _ in workers]
        stop.set()
        thread.join(JOIN_TIMEOUT)
        for w in workers:
            w.join(JOIN_TIMEOUT)
            assert w.exitcode == 0
    finally:
        stop.set()
        for w in workers:
            if w.is_alive():
                w.kill()
                w.join()
    assert got == ["ok", "ok"]
    assert killed[0] >= 3, "the killer found too few sessions to make the test mean anything"
    stats = place.stored()["usageStats"]["openai:default"]
    assert stats["errorCount"] == 2 * times
    assert stats["failureCounts"] == {"timeout": 2 * times}


# -- killed sessions during an OAuth refresh -------------------------------------------------


def _slow_refresh(
    location: str, tag: str, calls_path: str, calling: Any, go: Any, results: Any
) -> None:
    """Waits for ``go``, then refreshes the fixture's OAuth profile through a slow endpoint
    that sets ``calling`` when it starts."""

    def refresher(profile: AuthProfile) -> Mapping[str, Any]:
        with open(calls_path, "a", encoding="utf-8") as f:
            f.write(f"{tag} {profile.refresh}\n")
        calling.set()
        time.sleep(SLOW_REFRESH)
        return _tokens(tag)

    try:
        with open_auth_store(location) as store:
            go.wait(START_TIMEOUT)
            profile = store.refresh_oauth(OAUTH_ID, refresher, now=EXPIRED)
            results.put((tag, profile.refresh, profile.access))
    except BaseException as exc:  # reported to the test rather than lost in the child
        results.put((tag, "error", repr(exc)))


@pytest.mark.parametrize("kill", ["refresh lock", "every session"])
def test_a_refresh_whose_lock_session_dies_still_calls_the_endpoint_once(
    place: AuthPlace, sql: Any, tmp_path: Path, guard: SecretGuard, kill: str
) -> None:
    """Host A is calling the token endpoint when its lock's session (or every session it
    has) is terminated; host B, asking now, finds the lock free but A's claim, waits for
    A's tokens, and does not call the endpoint. A's old refresh token is never written
    back and both end with A's new tokens."""
    guard.secret("A-new-a-000", "R-new-a-000", "A-new-b-000", "R-new-b-000")
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    calls_path = str(tmp_path / "calls.txt")
    events = {tag: (ctx.Event(), ctx.Event()) for tag in ("a", "b")}  # (calling, go)
    workers = {
        tag: ctx.Process(
            target=_slow_refresh,
            args=(
                place.location(state_dir=str(tmp_path / f"host-{tag}")),
                tag,
                calls_path,
                *events[tag],
                results,
            ),
        )
        for tag in ("a", "b")
    }
    try:
        for w in workers.values():
            w.start()
        events["a"][1].set()
        assert events["a"][0].wait(START_TIMEOUT), "host A never called the endpoint"
        victims = _backends(sql, place.ref(), locking=kill == "refresh lock")
        assert victims
        _kill(sql, victims)
        events["b"][1].set()  # B asks while A's lock is gone and its refresh under way
        got = sorted(results.get(timeout=JOIN_TIMEOUT) for _ in workers)
        for w in workers.values():
            w.join(JOIN_TIMEOUT)
            assert w.exitcode == 0
    finally:
        for w in workers.values():
            if w.is_alive():
                w.kill()
                w.join()
    with open(calls_path, encoding="utf-8") as f:
        calls = f.read().splitlines()
    assert calls == ["a FIXTURE-refresh-token-0003"], f"endpoint calls: {len(calls)}"
    assert got == [("a", "R-new-a-000", "A-new-a-000"), ("b", "R-new-a-000", "A-new-a-000")]
    assert place.stored()["profiles"][OAUTH_ID]["refresh"] == "R-new-a-000"
    assert place.locks_left() == []


def test_a_failing_refresher_releases_the_lock_and_the_claim(
    place: AuthPlace, sql: Any, guard: SecretGuard
) -> None:
    store = place.open()
    before = place.stored()
    seen: list[int] = []

    def failing(profile: AuthProfile) -> Mapping[str, Any]:
        seen.append(len(_backends(sql, place.ref(), locking=True)))
        claims = sql.execute(
            "SELECT count(*) FROM flatstate.auth_refresh_claims WHERE ns = %s", (place.ref(),)
        ).fetchone()
        seen.append(int(claims[0]))
        raise RuntimeError("token endpoint said no")

    with pytest.raises(RuntimeError):
        store.refresh_oauth(OAUTH_ID, failing, now=EXPIRED)
    assert seen == [1, 1]  # held while the endpoint was called ...
    assert place.locks_left() == []  # ... and released after
    assert place.stored() == before


# -- the CLI ---------------------------------------------------------------------------------


def test_the_cli_keeps_auth_profiles_in_the_database(
    place: AuthPlace, tmp_path: Path, guard: SecretGuard
) -> None:
    from typer.testing import CliRunner

    from flatstate.cli import app

    runner = CliRunner()
    coder = place.location("coder")
    env = {"OPENAI_API_KEY": "unused"}
    added = runner.invoke(
        app, ["auth", "add", "openai:ref", "--ref", "env:OPENAI_API_KEY", "--store", coder], env=env
    )
    assert added.exit_code == 0, added.output
    with open_auth_store(coder) as store:
        assert store.get("openai:ref") is not None
    assert not (tmp_path / "coder" / "auth-profiles.json").exists()  # nothing local
    listed = runner.invoke(
        app, ["auth", "list", "--json", "--store", coder, "--inherit-from", place.location()]
    )
    assert listed.exit_code == 0, listed.output
    ids = [p["id"] for p in json.loads(listed.stdout)["items"]]
    assert ids == ["anthropic:default", OAUTH_ID, "openai:default", "openai:ref"]
    guard.watch(added.output, listed.output)
    empty = runner.invoke(app, ["auth", "list", "--store", place.location("nobody")])
    assert empty.exit_code == 1 and "no auth profiles" in empty.output


# -- the benchmark -------------------------------------------------------------------------


def test_the_benchmark_runs_each_phase_beside_the_file_and_cleans_up(sql: Any) -> None:
    from flatstate.bench.auth import AuthBenchOptions, run_auth_bench

    options = AuthBenchOptions(
        calls=2000,
        stat_calls=200,
        baseline_calls=100,
        write_calls=3,
        refresh_calls=3,
        check_calls=5,
        backend="postgres",
        dsn=POSTGRES_DSN,
    )
    result = run_auth_bench(options)
    assert set(result["postgres"]) == set(result["phases"]) - {"baseline"}
    assert result["postgres"]["get_stat_every_call"]["calls"] == 5
    password = psycopg.conninfo.conninfo_to_dict(POSTGRES_DSN).get("password")
    assert password and password not in json.dumps(result)
    left = sql.execute(
        "SELECT count(*) FROM flatstate.auth_stores WHERE ns LIKE 'bench-auth-%'"
    ).fetchone()
    assert left == (0,)


def _refresh_and_hang(location: str, calls_path: str, calling: Any) -> None:
    """Claims the refresh with a short claim (refresh_lock_timeout=2 s), then hangs in the
    token endpoint until the test kills the process."""

    def refresher(profile: AuthProfile) -> Mapping[str, Any]:
        with open(calls_path, "a", encoding="utf-8") as f:
            f.write(f"dead {profile.refresh}\n")
        calling.set()
        time.sleep(3600)
        raise AssertionError("never answers")

    with open_auth_store(location, refresh_lock_timeout=2.0) as store:
        store.refresh_oauth(OAUTH_ID, refresher, now=EXPIRED)


def test_a_host_killed_mid_refresh_leaves_a_claim_that_lapses(
    place: AuthPlace, tmp_path: Path, guard: SecretGuard
) -> None:
    """The case the claim cannot save: the process holding it dies (kill -9) while the
    endpoint is being called. Its claim lapses (after its refresh_lock_timeout); the next
    host then refreshes from the stored token, and nothing half-written is left behind."""
    guard.secret("A-new-next-000", "R-new-next-000")
    ctx = multiprocessing.get_context("spawn")
    calls_path = str(tmp_path / "calls.txt")
    calling = ctx.Event()
    doomed = ctx.Process(target=_refresh_and_hang, args=(place.location(), calls_path, calling))
    doomed.start()
    try:
        assert calling.wait(START_TIMEOUT), "the doomed host never called the endpoint"
        doomed.kill()
        doomed.join(JOIN_TIMEOUT)
    finally:
        if doomed.is_alive():
            doomed.kill()
            doomed.join()
    store = place.open(refresh_lock_timeout=30.0)

    def refresher(profile: AuthProfile) -> Mapping[str, Any]:
        with open(calls_path, "a", encoding="utf-8") as f:
            f.write(f"next {profile.refresh}\n")
        return _tokens("next")

    new = store.refresh_oauth(OAUTH_ID, refresher, now=EXPIRED)  # waits out the claim
    with open(calls_path, encoding="utf-8") as f:
        calls = f.read().splitlines()
    assert calls == ["dead FIXTURE-refresh-token-0003", "next FIXTURE-refresh-token-0003"]
    assert new.refresh == "R-new-next-000"
    assert place.stored()["profiles"][OAUTH_ID]["refresh"] == "R-new-next-000"
    assert place.locks_left() == []
