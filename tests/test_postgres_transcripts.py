"""Transcripts shared through PostgreSQL by several hosts: each host a process with a local
state directory of its own, all on one database and namespace. What is checked: an append
on one host is in another's tail; appends from many hosts form one order that all of them
see, with no line lost or doubled; a host killed with SIGKILL keeps what it acknowledged;
connections terminated by the server lose and repeat nothing; compaction and archives."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

import flatstate
from flatstate.backends.postgres.transcripts import PgTranscript
from flatstate.cli import app
from flatstate.compaction import compact
from tests.conftest import NO_POSTGRES, POSTGRES_DSN, postgres_location
from tests.pgkill import BackendKiller, keep_going, self_terminating
from tests.processes import START_TIMEOUT, ctx, join_all, running, wait_for_content
from tests.test_postgres import FRESHNESS_DEADLINE, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(POSTGRES_DSN is None, reason=NO_POSTGRES)]

KEY = "agent:main:main"


def host(root: Path, namespace: str, name: str) -> str:
    """The location a host opens: the shared namespace, a state directory of its own."""
    return postgres_location(root / name, namespace=namespace)


@pytest.fixture
def namespace() -> str:
    return f"hosts-{random.randrange(1 << 40):x}"


def message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
    }


def chain(lines: list[dict[str, Any]]) -> None:
    """A header, then entries each the child of the line before it."""
    assert lines[0]["type"] == "session"
    for before, after in itertools.pairwise(lines[1:]):
        assert after["parentId"] == before["id"]


def lines_of(location: str) -> list[dict[str, Any]]:
    with flatstate.open_store(location) as store:
        transcript = store.transcript(KEY, create=False)
        return [json.loads(line) for line in transcript.export_lines()]


# -- two hosts ----------------------------------------------------------------------


def _append_slowly(location: str, count: int, acks: Any) -> None:
    with flatstate.open_store(location) as store:
        transcript = store.transcript(KEY)
        acks.put(("ready", 0.0))
        for i in range(count):
            entry_id = transcript.append(message(f"a{i}"))
            acks.put((entry_id, time.monotonic()))  # one clock for every process here
            time.sleep(0.02)
    acks.put(None)


def test_an_append_on_one_host_is_in_the_other_hosts_tail(tmp_path: Path, namespace: str) -> None:
    a, b = host(tmp_path, namespace, "a"), host(tmp_path, namespace, "b")
    with flatstate.open_store(b) as store:
        store.patch(KEY, {})
        acks, count = ctx.Queue(), 30
        seen: dict[str, float] = {}
        with running(_append_slowly, [(a, count, acks)]) as procs:
            assert acks.get(timeout=START_TIMEOUT)[0] == "ready"
            transcript = store.transcript(KEY)
            deadline = time.monotonic() + FRESHNESS_DEADLINE * count
            while len(seen) < count and time.monotonic() < deadline:
                now = time.monotonic()
                for entry in transcript.tail(count):  # every new one, however many came
                    seen.setdefault(entry["id"], now)
            assert join_all(procs) == [0]
        acked = dict(iter(lambda: acks.get(timeout=10), None))
    assert set(acked) == set(seen), "host B missed an append of host A in its tail"
    # B's first sight of each append against A's return from it (negative: B saw the
    # committed line before A's call returned)
    lags = sorted((seen[i] - acked[i]) * 1000 for i in acked)
    print(
        f"\nhost A -> host B tail: seen p50 {statistics.median(lags):+.2f} ms, "
        f"latest {lags[-1]:+.2f} ms from A's append returning, over {len(lags)} appends"
    )
    assert not os.path.exists(tmp_path / "a" / "state" / "transcripts")  # rows, not files


# -- many hosts, one order ----------------------------------------------------------


def _host_appending(location: str, worker: int, count: int, barrier: Any, out: Any) -> None:
    with flatstate.open_store(location) as store:
        transcript = store.transcript(KEY)
        barrier.wait(START_TIMEOUT)
        for i in range(count):
            transcript.append(message(f"w{worker}-{i}"))
        barrier.wait(START_TIMEOUT)  # every host is done: now each reads the whole order
        ids = [e["id"] for e in transcript.iter_entries()]
        out.put((worker, hashlib.sha256("\n".join(ids).encode()).hexdigest(), len(ids)))


def test_four_hosts_appending_to_one_transcript_see_one_order(
    tmp_path: Path, namespace: str
) -> None:
    hosts, count = 4, 250
    locations = [host(tmp_path, namespace, f"h{w}") for w in range(hosts)]
    with flatstate.open_store(locations[0]) as store:
        store.patch(KEY, {})
    barrier, out = ctx.Barrier(hosts), ctx.Queue()
    args = [(locations[w], w, count, barrier, out) for w in range(hosts)]
    with running(_host_appending, args) as procs:
        assert join_all(procs) == [0] * hosts
    views = [out.get(timeout=10) for _ in range(hosts)]
    assert {(digest, n) for _, digest, n in views} == {(views[0][1], hosts * count)}
    lines = lines_of(locations[0])
    assert len(lines) == 1 + hosts * count
    chain(lines)
    texts = sorted(e["message"]["content"][0]["text"] for e in lines[1:])
    assert texts == sorted(f"w{w}-{i}" for w in range(hosts) for i in range(count))
    # each host's own appends keep their order inside the one order
    for w in range(hosts):
        mine = [e for e in lines[1:] if e["message"]["content"][0]["text"].startswith(f"w{w}-")]
        assert [e["message"]["content"][0]["text"] for e in mine] == [
            f"w{w}-{i}" for i in range(count)
        ]


# -- crashes and lost connections -----------------------------------------------------


def _append_until_killed(location: str, ack: str, threads: int) -> None:
    store = flatstate.open_store(location)
    transcript = store.transcript(KEY)
    fd = os.open(ack, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def one(t: int) -> None:
        for i in itertools.count():
            ids = transcript.append_many([message(f"t{t}-{i}-a"), message(f"t{t}-{i}-b")])
            os.write(fd, ("\n".join(ids) + "\n").encode())  # acknowledged: it committed

    workers = [threading.Thread(target=one, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_kill_9_of_a_host_mid_batch_keeps_its_acknowledged_appends(
    tmp_path: Path, namespace: str
) -> None:
    location = host(tmp_path, namespace, "victim")
    with flatstate.open_store(location) as store:
        store.patch(KEY, {})
    ack = str(tmp_path / "acks")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for round_ in range(3):
        with running(_append_until_killed, [(location, ack, 8)]) as procs:
            wait_for_content(ack)
            time.sleep(rng.uniform(0.05, 0.4))
            os.kill(procs[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
            procs[0].join(10)
        acked = Path(ack).read_text().split()
        lines = lines_of(location)
        ids = [e["id"] for e in lines[1:]]
        assert len(ids) == len(set(ids)), f"seed {seed}, round {round_}: a line twice"
        missing = set(acked) - set(ids)
        assert not missing, f"seed {seed}, round {round_}: {len(missing)} acknowledged lost"
        chain(lines)
        # a batch is all or nothing: both halves of every append, or neither
        texts = {e["message"]["content"][0]["text"] for e in lines[1:]}
        for text in texts:
            other = text[:-1] + ("b" if text.endswith("a") else "a")
            assert other in texts, f"seed {seed}: half an append_many ({text})"


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_connection_lost_at_commit_neither_loses_nor_repeats_an_append(
    tmp_path: Path, namespace: str, when: str
) -> None:
    """Before COMMIT: nothing was written, the append runs again. After it (the reply
    lost): its lines are found by their marker and it is not repeated."""
    with flatstate.open_store(host(tmp_path, namespace, "a")) as store:
        transcript = store.transcript(KEY)
        first = transcript.append(message("one"))
        with self_terminating(when) as fired:
            second = transcript.append(message("two"))
        assert fired
        third = transcript.append(message("three"))
        assert [e["id"] for e in transcript.tail(10)] == [first, second, third]


def _append_counting(
    location: str, worker: int, count: int, barrier: Any, fired: Any, out: Any
) -> None:
    done: list[str] = []
    with flatstate.open_store(location) as store:
        transcript = store.transcript(KEY)
        barrier.wait(START_TIMEOUT)
        i = 0
        while keep_going(i, count, fired):
            done += transcript.append_many([message(f"w{worker}-{i}")])
            i += 1
    out.put(done)


def test_terminated_connections_lose_and_duplicate_no_append(
    tmp_path: Path, namespace: str
) -> None:
    """Appenders' connections are terminated at random mid-run (pg_terminate_backend):
    every acknowledged append is there exactly once, and nothing else is."""
    workers, count = 2, 300
    locations = [host(tmp_path, namespace, f"h{w}") for w in range(workers)]
    with flatstate.open_store(locations[0]) as store:
        store.patch(KEY, {})
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    killer = BackendKiller([f"flatstate:{namespace}"])
    args = [(locations[w], w, count, barrier, killer.fired, out) for w in range(workers)]
    with running(_append_counting, args) as procs:
        with killer:
            codes = join_all(procs)
        assert codes == [0] * workers, f"seed {killer.seed}"
    acked = [i for _ in range(workers) for i in out.get(timeout=10)]
    killer.check_fired()
    lines = lines_of(locations[0])
    ids = [e["id"] for e in lines[1:]]
    assert sorted(ids) == sorted(acked), f"seed {killer.seed}: lost or doubled ({len(ids)} lines)"
    chain(lines)
    print(f"\n{len(killer.kills)} connections terminated; {len(ids)} appends, each once")


# -- compaction and archives ------------------------------------------------------------


def test_a_reader_sees_the_old_context_or_the_compacted_one(tmp_path: Path, namespace: str) -> None:
    location = host(tmp_path, namespace, "a")
    with flatstate.open_store(location) as store, flatstate.open_store(location) as other:
        transcript = store.transcript(KEY)
        for i in range(40):
            transcript.append_many([message(f"q{i} " + "u" * 300), message(f"a{i} " + "a" * 300)])
        before = transcript.context()
        reader = other.transcript(KEY)
        assert isinstance(reader, PgTranscript)
        seen: list[int] = []
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                reader._remembered = None  # read afresh each time, not extended
                context = reader.context()
                seen.append(len(context.messages))

        thread = threading.Thread(target=read)
        thread.start()
        try:
            result = compact(store, KEY, keep_recent_tokens=1000)
            wait_until(lambda: reader.context().compaction is not None)
        finally:
            stop.set()
            thread.join()
        assert result is not None
        after = transcript.context()
        assert set(seen) <= {len(before.messages), len(after.messages)}
        assert len(after.messages) < len(before.messages)
        assert other.get(KEY).compaction_count == 1  # type: ignore[union-attr]


def test_reset_and_delete_archive_the_rows_under_openclaws_names(
    tmp_path: Path, namespace: str
) -> None:
    with flatstate.open_store(host(tmp_path, namespace, "a")) as store:
        store.transcript("main").append(message("before the reset"))
        old = store.get("main")
        assert old is not None
        store.reset("main")
        transcripts = store.backend.transcripts  # type: ignore[attr-defined]
        (archived,) = [row.name for row in transcripts.listing()]
        assert archived.startswith(f"{old.session_id}.jsonl.reset.")
        kept = transcripts.named(archived)
        assert [e["message"]["content"][0]["text"] for e in kept.iter_entries()] == [
            "before the reset"
        ]
        store.transcript("main").append(message("after the reset"))
        store.delete("main")
        names = [row.name for row in transcripts.listing()]
        assert len(names) == 2 and any(".jsonl.deleted." in n for n in names)
        assert all(row.archived_at for row in transcripts.listing())
        assert not os.path.exists(tmp_path / "a" / "state" / "transcripts")


def test_maintenance_archives_the_transcripts_of_sessions_it_removes(
    tmp_path: Path, namespace: str
) -> None:
    from flatstate.maintenance import MaintenanceConfig

    with flatstate.open_store(host(tmp_path, namespace, "a")) as store:
        for i in range(3):
            store.patch(f"s{i}", {"updatedAt": 1_000 + i})
            store.transcript(f"s{i}").append(message(f"in s{i}"))
        store.maintain(MaintenanceConfig(mode="enforce", max_entries=1, prune_after_ms=None))
        assert list(store.keys()) == ["agent:main:s2"]
        rows = store.backend.transcripts.listing()  # type: ignore[attr-defined]
        archived = sorted(row.name.split(".jsonl.")[1][:8] for row in rows if row.archived_at)
        assert archived == ["deleted.", "deleted."]
        assert [row.archived_at for row in rows].count(None) == 1


def test_a_transcript_file_kept_locally_before_is_imported_once(
    tmp_path: Path, namespace: str
) -> None:
    """Before transcripts moved into the database they were files in state_dir/transcripts:
    the first open imports such a file and keeps it as a .bak archive, nothing lost."""
    location = host(tmp_path, namespace, "a")
    with flatstate.open_store(location) as store:
        entry = store.patch("main", {})
        assert entry is not None
    directory = tmp_path / "a" / "state" / "transcripts"
    directory.mkdir(parents=True)
    old = directory / f"{entry.session_id}.jsonl"
    old.write_bytes(b'{"type":"session","version":3,"id":"x"}\n{"type":"custom","id":"k1"}\n')
    with flatstate.open_store(location) as store:
        transcript = store.transcript("main")
        assert [e["id"] for e in transcript.tail(5)] == ["k1"]
        assert transcript.append(message("next"))
    assert not old.exists() and len(list(directory.glob("*.jsonl.bak.*"))) == 1


def test_export_openclaw_writes_the_database_transcripts_as_jsonl_files(
    tmp_path: Path, namespace: str
) -> None:
    from flatstate.transfer import export_openclaw

    location = host(tmp_path, namespace, "a")
    with flatstate.open_store(location) as store:
        transcript = store.transcript("main")
        transcript.append(message("kept"))
        expected = b"".join(transcript.export_lines())
        session_id = store.get("main").session_id  # type: ignore[union-attr]
        store.reset("main")
    report = export_openclaw(location, str(tmp_path / "openclaw"))
    (agent,) = report.agents
    assert agent.sessions == 1 and agent.transcripts == 1
    sessions = tmp_path / "openclaw" / "agents" / "main" / "sessions"
    (archived,) = sessions.glob(f"{session_id}.jsonl.reset.*")
    assert archived.read_bytes() == expected
    with flatstate.open_store(sessions / "sessions.json", readonly=True) as back:
        assert list(back.keys()) == ["agent:main:main"]


def test_bench_transcript_on_postgres_prints_both_contenders_as_json() -> None:
    from typer.testing import CliRunner

    from flatstate.cli import app

    args = ["bench", "transcript", "--backend", "postgres", "--dsn", str(POSTGRES_DSN)]
    result = CliRunner().invoke(app, [*args, "--seconds", "0.3", "--entries", "300", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out["contenders"]) == {"file", "postgres"}
    for figures in out["contenders"].values():
        assert [row["tasks"] for row in figures["appends"]] == [1, 64]
        assert all(row["per_s"] > 0 for row in figures["appends"])
        assert figures["reads"]["context_messages"] == 31
    password = psycopg.conninfo.conninfo_to_dict(POSTGRES_DSN).get("password")
    assert password and password not in result.stdout


def test_doctor_counts_the_transcripts_in_the_database(tmp_path: Path, namespace: str) -> None:
    from flatstate.doctor import diagnose

    location = host(tmp_path, namespace, "a")
    with flatstate.open_store(location) as store:
        transcript = store.transcript("main")
        transcript.append(message("one"))
        transcript.append(message("two"))
        size = sum(len(line) for line in transcript.export_lines())
    report = diagnose(location)
    assert (report.transcript_files, report.transcript_bytes) == (1, size)
    assert report.transcripts_dir is None
    shown = CliRunner().invoke(app, ["doctor", "--store", location]).stdout
    assert "transcripts: 1 transcript, " in shown and " in the database" in shown
