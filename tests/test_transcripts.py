"""Transcripts: OpenClaw's JSONL kept exactly, appends that never tear, reads from the end."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import flatstate
from flatstate.bench.transcripts import write_large_transcript
from flatstate.errors import InvalidEntry
from flatstate.transcripts import FsyncPolicy, Transcript
from flatstate.transcripts.file import CHUNK
from tests.conftest import require_extra
from tests.processes import START_TIMEOUT, ctx, join_all, running

FIXTURE_CONTEXTS = {
    # Worked out by hand from pi-coding-agent's buildSessionContext: the summary,
    # then the path from firstKeptEntryId to the compaction, then what follows;
    # custom and session_info entries never reach the model.
    "162cb05f-a456-44f7-a1f5-a4d48d64ea75": [
        "fa0d93a0", "e3bed44e", "c520ea5d", "d94a7b08", "fe1b94e4", "28e97c29", "18d93921",
        "780604b0", "2183eaa6", "df5d3c9d", "a744b55c", "5e6cf2dd", "ecdf1b8d", "83b08edc",
        "7475efce", "bc1abd7b",
    ],
    "6943a621-e286-4184-ac21-9d848a3c576d": [
        "ece732d5", "6831c7d8", "382dae90", "976f9000", "d0ba94d1", "3352dbf4", "5bcbef98",
        "af6b4e1a", "b8046dfc", "5b412b13", "3e1bfb47", "e1b79568", "b5b776c2", "2f6800ff",
        "ffed1faf", "3a6a6f19", "b21b96ba", "71013364", "e953eebd", "3f533a59", "00390246",
    ],
}  # fmt: skip


def sessions_dir(openclaw_dir: Path) -> Path:
    return openclaw_dir / "agents" / "main" / "sessions"


def message(text: str, role: str = "user") -> dict[str, Any]:
    return {
        "type": "message",
        "message": {"role": role, "content": [{"type": "text", "text": text}]},
    }


# -- OpenClaw's files -----------------------------------------------------------


def test_context_matches_what_openclaw_computes(openclaw_dir: Path) -> None:
    for session_id, expected in FIXTURE_CONTEXTS.items():
        transcript = Transcript(str(sessions_dir(openclaw_dir) / f"{session_id}.jsonl"))
        context = transcript.context()
        assert [e["id"] for e in context.entries] == expected
        first = context.messages[0]
        assert first["role"] == "compactionSummary" and first["summary"].startswith("Summary of")
        assert first["tokensBefore"] == context.compaction["tokensBefore"]  # type: ignore[index]
        assert [m.get("role") for m in context.messages[1:]] == [
            e["message"]["role"] for e in context.entries[1:]
        ]


def test_without_compaction_the_context_is_every_message(openclaw_dir: Path) -> None:
    path = sessions_dir(openclaw_dir) / "0544bfcc-b699-45e4-97c0-a5f36a123529.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    expected = [e["id"] for e in lines if e["type"] == "message"]
    context = Transcript(str(path)).context()
    assert [e["id"] for e in context.entries] == expected and context.compaction is None
    assert context.leaf_id == lines[-1]["id"]


def test_every_line_survives_appends_byte_for_byte(openclaw_dir: Path) -> None:
    path = sessions_dir(openclaw_dir) / "e035579b-50ac-4970-b7bc-ba29c8ecc16d.jsonl"
    original = path.read_bytes()
    transcript = Transcript(str(path))
    leaf = transcript.leaf_id
    new_id = transcript.append({"type": "brand_new_type", "payload": {"unknown": [1, None]}})
    second = transcript.append(message("hello"))
    data = path.read_bytes()
    assert data.startswith(original)
    added = [json.loads(line) for line in data[len(original) :].splitlines()]
    assert added[0]["parentId"] == leaf and added[0]["id"] == new_id
    assert added[0]["payload"] == {"unknown": [1, None]} and added[0]["timestamp"].endswith("Z")
    assert added[1]["parentId"] == new_id and added[1]["id"] == second
    assert [e["type"] for e in transcript.iter_entries()][-2:] == ["brand_new_type", "message"]


# -- appends ----------------------------------------------------------------------


def test_the_first_append_writes_the_header(tmp_path: Path) -> None:
    transcript = Transcript(str(tmp_path / "s1.jsonl"), session_id="s1", cwd="/work")
    first = transcript.append(message("hi"))
    header = transcript.header()
    assert header is not None and header["id"] == "s1" and header["version"] == 3
    assert header["cwd"] == "/work" and header["type"] == "session"
    assert transcript.tail(5)[0]["id"] == first and transcript.tail(5)[0]["parentId"] is None
    assert oct(os.stat(transcript.path).st_mode & 0o777) == "0o600"


def test_entries_without_a_type_are_refused(tmp_path: Path) -> None:
    transcript = Transcript(str(tmp_path / "t.jsonl"))
    with pytest.raises(InvalidEntry, match="type"):
        transcript.append({"no": "type"})
    assert not Path(transcript.path).exists()


def test_returned_entries_are_frozen_and_shared(tmp_path: Path) -> None:
    transcript = Transcript(str(tmp_path / "t.jsonl"))
    transcript.append(message("one"))
    context = transcript.context()
    assert transcript.context() is context
    with pytest.raises(TypeError):
        context.messages[0]["role"] = "assistant"  # type: ignore[index]


def test_appends_by_another_writer_extend_the_cached_context(tmp_path: Path) -> None:
    path = str(tmp_path / "t.jsonl")
    reader, writer = Transcript(path), Transcript(path)
    writer.append(message("one"))
    assert len(reader.context().messages) == 1
    writer.append(message("two"))
    before = reader.bytes_read
    context = reader.context()
    assert [m["content"][0]["text"] for m in context.messages] == ["one", "two"]
    assert reader.bytes_read - before < 300  # only the new line was read


def _append_many(path: str, worker: int, barrier: Any, count: int) -> None:
    transcript = Transcript(
        path, fsync=FsyncPolicy.batched(), lock="flock" if worker % 2 else "file"
    )
    barrier.wait(START_TIMEOUT)
    for i in range(count):
        transcript.append(message(f"w{worker}-{i}-" + "x" * (i % 700)))


def test_two_processes_appending_lose_no_line_and_never_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.jsonl")
    barrier = ctx.Barrier(2)
    with running(_append_many, [(path, 0, barrier, 400), (path, 1, barrier, 400)]) as procs:
        assert join_all(procs) == [0, 0]
    lines = Path(path).read_bytes().split(b"\n")
    assert lines[-1] == b""
    entries = [json.loads(line) for line in lines[:-1]]  # every line is whole JSON
    assert entries[0]["type"] == "session"
    texts = [e["message"]["content"][0]["text"].split("-")[:2] for e in entries[1:]]
    assert sorted(texts) == sorted([f"w{w}", str(i)] for w in range(2) for i in range(400))
    # One chain: each entry's parent is the line before it (no writer raced the leaf).
    for before, after in itertools.pairwise(entries[1:]):
        assert after["parentId"] == before["id"]


# -- reads from the end -------------------------------------------------------------


@pytest.fixture(scope="module")
def big_transcript(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A 100 MB transcript with a compaction near its end (the benchmark's own), and the
    number of entries e0, e1, ... before the compaction."""
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    return path, write_large_transcript(str(path), 100_000_000)


def test_tail_of_a_100_mb_transcript_reads_a_bounded_number_of_bytes(
    big_transcript: tuple[Path, int],
) -> None:
    path, _ = big_transcript
    transcript = Transcript(str(path))
    last = transcript.tail(10)
    assert [e["id"] for e in last] == [f"t{k}" for k in range(10)]
    assert os.path.getsize(path) >= 100_000_000
    assert transcript.bytes_read <= 2 * CHUNK


def test_context_of_a_100_mb_transcript_reads_only_its_kept_part(
    big_transcript: tuple[Path, int],
) -> None:
    path, count = big_transcript
    transcript = Transcript(str(path))
    context = transcript.context()
    # The summary, the 20 entries the compaction keeps, then the 10 after it.
    kept = [f"e{i}" for i in range(count - 20, count)]
    assert [e["id"] for e in context.entries] == ["c1", *kept, *(f"t{k}" for k in range(10))]
    assert transcript.bytes_read <= 2 * CHUNK


# -- damage -------------------------------------------------------------------------


def test_a_truncated_last_line_is_ignored_and_repaired_on_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    transcript = Transcript(str(path))
    first = transcript.append(message("kept"))
    with open(path, "ab") as f:
        f.write(b'{"type":"message","id":"torn","mess')
    reader = Transcript(str(path))
    assert [e["id"] for e in reader.tail(5)] == [first]
    assert any("incomplete last line" in p.problem for p in reader.problems)
    second = Transcript(str(path)).append(message("after"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e.get("id") for e in lines[1:]] == [first, second]
    assert lines[2]["parentId"] == first


def test_an_invalid_line_is_reported_with_its_line_number(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "t.jsonl"
    transcript = Transcript(str(path))
    transcript.append(message("one"))
    with open(path, "ab") as f:
        f.write(b"this is not json\n")
    transcript.append(message("two"))
    reader = Transcript(str(path))
    assert [m["content"][0]["text"] for m in reader.context().messages] == ["one", "two"]
    assert [(p.line, p.problem.split(" (")[0]) for p in reader.problems] == [(3, "not JSON")]
    assert "line 3" in caplog.text
    everything = Transcript(str(path))
    assert len(list(everything.iter_entries())) == 2
    assert everything.problems[0].line == 3


# -- through the store --------------------------------------------------------------


def test_store_transcripts_live_beside_sessions_json(openclaw_dir: Path) -> None:
    with flatstate.open_store(sessions_dir(openclaw_dir) / "sessions.json") as store:
        transcript = store.transcript("agent:main:main")
        assert transcript.path == str(
            sessions_dir(openclaw_dir) / "162cb05f-a456-44f7-a1f5-a4d48d64ea75.jsonl"
        )
        assert transcript.lock_mode == "file"
        assert len(transcript.context().messages) == 16


def test_store_transcripts_live_in_the_state_directory(tmp_path: Path) -> None:
    with flatstate.open_store(tmp_path / "state") as store:
        transcript = store.transcript("main")  # creates the session
        entry = store.get("main")
        assert entry is not None
        assert transcript.path == str(
            tmp_path / "state" / "transcripts" / f"{entry.session_id}.jsonl"
        )
        assert transcript.lock_mode == "flock"
        transcript.append(message("hi"))
        assert store.transcript("main") is transcript
        with pytest.raises(KeyError, match="create it first"):
            store.transcript("agent:main:absent", create=False)


def test_a_path_like_session_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    path.write_text(
        json.dumps({"agent:main:main": {"sessionId": "../../etc/passwd", "updatedAt": 1}})
    )
    with flatstate.open_store(path) as store, pytest.raises(InvalidEntry, match="safe id"):
        store.transcript("main")


def test_reset_and_delete_archive_as_openclaw_names_them(tmp_path: Path) -> None:
    with flatstate.open_store(tmp_path / "state") as store:
        store.transcript("main").append(message("before the reset"))
        old = store.get("main")
        assert old is not None
        fresh = store.reset("main")
        assert fresh.session_id != old.session_id
        directory = tmp_path / "state" / "transcripts"
        archived = [p.name for p in directory.iterdir()]
        assert len(archived) == 1 and archived[0].startswith(f"{old.session_id}.jsonl.reset.")
        store.transcript("main").append(message("after the reset"))
        store.delete("main")
        names = sorted(p.name for p in directory.iterdir())
        assert any(".jsonl.deleted." in n for n in names) and not any(
            n.endswith(".jsonl") for n in names
        )


def test_reset_can_compress_the_archive(tmp_path: Path) -> None:
    zstandard = require_extra("zstandard", "zstd")
    with flatstate.open_store(tmp_path / "state") as store:
        store.transcript("main").append(message("squeeze me"))
        store.reset("main", compress=True)
    (archive,) = (tmp_path / "state" / "transcripts").iterdir()
    assert archive.name.endswith(".zst")
    text = zstandard.ZstdDecompressor().decompressobj().decompress(archive.read_bytes())
    assert b"squeeze me" in text


def test_copying_the_fixture_keeps_it_readable(openclaw_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.jsonl"
    shutil.copy(sessions_dir(openclaw_dir) / "162cb05f-a456-44f7-a1f5-a4d48d64ea75.jsonl", target)
    assert len(list(Transcript(str(target)).iter_entries())) == 31


def test_tail_plain_is_tail_as_fresh_plain_values(tmp_path: Path) -> None:
    from flatstate.frozen import thaw

    transcript = Transcript(str(tmp_path / "t.jsonl"), session_id="s")
    assert transcript.tail_plain(3) == []
    transcript.append_many([{"type": "custom", "data": {"n": n, "l": [n]}} for n in range(5)])
    with open(transcript.path, "ab") as f:
        f.write(b"not json\n")  # reported and skipped, as tail does
    plain = transcript.tail_plain(3)
    assert plain == [thaw(entry) for entry in transcript.tail(3)]
    assert [entry["data"]["n"] for entry in plain] == [2, 3, 4]
    plain[0]["data"]["l"].append("mine")  # the caller's own copy
    assert transcript.tail_plain(3)[0]["data"]["l"] == [2]
    assert transcript.tail_plain(0) == [] and len(transcript.tail_plain(99)) == 5
    assert any("not JSON" in problem.problem for problem in transcript.problems)
