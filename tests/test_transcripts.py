"""Transcripts: OpenClaw's JSONL kept exactly, appends that never tear, reads from the end.

The conformance tests take ``kind``: each runs on a transcript file and on a transcript in
PostgreSQL (rows), through the interface both offer (TranscriptLike)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flatstate
from flatstate.bench.transcripts import write_large_transcript
from flatstate.errors import InvalidEntry, TranscriptNotEmpty
from flatstate.transcripts import FsyncPolicy, Transcript, TranscriptLike
from flatstate.transcripts.file import CHUNK
from tests.conftest import postgres_location, require_extra
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


# -- where a transcript lives ---------------------------------------------------------

KINDS = ["file", pytest.param("postgres", marks=pytest.mark.postgres)]
New = Callable[..., TranscriptLike]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def location(tmp_path: Path, kind: str) -> str:
    """A store location of ``kind`` (a state directory, or a namespace of the test server)."""
    return str(tmp_path / "state") if kind == "file" else postgres_location(tmp_path)


@pytest.fixture
def new(tmp_path: Path, kind: str) -> Iterator[New]:
    """Makes transcripts of ``kind`` by name: a file in the test's directory, or rows in a
    namespace of the test's own. ``again`` gives a second, independent reader and writer of
    the same transcript (as another process would have)."""
    stores: list[flatstate.SessionStore] = []
    where = postgres_location(tmp_path) if kind == "postgres" else ""

    def make(
        name: str = "t.jsonl", *, session_id: str | None = None, cwd: str | None = None,
        again: bool = False,
    ) -> TranscriptLike:  # fmt: skip
        if kind == "file":
            return Transcript(str(tmp_path / name), session_id=session_id, cwd=cwd)
        if not stores or again:
            stores.append(flatstate.open_store(where))
        transcripts = stores[-1].backend.transcripts  # type: ignore[attr-defined]
        transcript = transcripts.named(name, session_id)
        if cwd is not None:
            transcript.cwd = cwd
        return transcript  # type: ignore[no-any-return]

    yield make
    for store in stores:
        store.close()


def loaded(new: New, path: Path) -> TranscriptLike:
    """The transcript of ``path``'s lines: the file itself, or its lines imported as rows."""
    transcript = new(path.name)
    if isinstance(transcript, Transcript):
        return Transcript(str(path))
    with open(path, "rb") as f:
        transcript.import_lines(f)
    return transcript


def everything(transcript: TranscriptLike) -> bytes:
    return b"".join(transcript.export_lines())


# -- OpenClaw's files -----------------------------------------------------------


def test_context_matches_what_openclaw_computes(openclaw_dir: Path, new: New) -> None:
    for session_id, expected in FIXTURE_CONTEXTS.items():
        transcript = loaded(new, sessions_dir(openclaw_dir) / f"{session_id}.jsonl")
        context = transcript.context()
        assert [e["id"] for e in context.entries] == expected
        first = context.messages[0]
        assert first["role"] == "compactionSummary" and first["summary"].startswith("Summary of")
        assert first["tokensBefore"] == context.compaction["tokensBefore"]  # type: ignore[index]
        assert [m.get("role") for m in context.messages[1:]] == [
            e["message"]["role"] for e in context.entries[1:]
        ]


def test_without_compaction_the_context_is_every_message(openclaw_dir: Path, new: New) -> None:
    path = sessions_dir(openclaw_dir) / "0544bfcc-b699-45e4-97c0-a5f36a123529.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    expected = [e["id"] for e in lines if e["type"] == "message"]
    context = loaded(new, path).context()
    assert [e["id"] for e in context.entries] == expected and context.compaction is None
    assert context.leaf_id == lines[-1]["id"]


def test_every_line_survives_appends_byte_for_byte(openclaw_dir: Path, new: New) -> None:
    path = sessions_dir(openclaw_dir) / "e035579b-50ac-4970-b7bc-ba29c8ecc16d.jsonl"
    original = path.read_bytes()
    transcript = loaded(new, path)
    assert everything(transcript) == original
    leaf = transcript.leaf_id
    new_id = transcript.append({"type": "brand_new_type", "payload": {"unknown": [1, None]}})
    second = transcript.append(message("hello"))
    data = everything(transcript)
    assert data.startswith(original)
    added = [json.loads(line) for line in data[len(original) :].splitlines()]
    assert added[0]["parentId"] == leaf and added[0]["id"] == new_id
    assert added[0]["payload"] == {"unknown": [1, None]} and added[0]["timestamp"].endswith("Z")
    assert added[1]["parentId"] == new_id and added[1]["id"] == second
    assert [e["type"] for e in transcript.iter_entries()][-2:] == ["brand_new_type", "message"]


def test_an_import_fills_only_an_empty_transcript(openclaw_dir: Path, new: New) -> None:
    path = sessions_dir(openclaw_dir) / "0544bfcc-b699-45e4-97c0-a5f36a123529.jsonl"
    transcript = new("imported.jsonl")
    with open(path, "rb") as f:
        assert transcript.import_lines(f) == len(path.read_bytes().splitlines())
    with open(path, "rb") as f, pytest.raises(TranscriptNotEmpty, match="Nothing was written"):
        transcript.import_lines(f)
    assert everything(transcript) == path.read_bytes()
    with pytest.raises(InvalidEntry, match="newline inside"):
        new("other.jsonl").import_lines([b'{"type":"session"}\n{"a":1}\n'])
    assert everything(new("other.jsonl")) == b""


# -- appends ----------------------------------------------------------------------


def test_the_first_append_writes_the_header(new: New) -> None:
    transcript = new("s1.jsonl", session_id="s1", cwd="/work")
    first = transcript.append(message("hi"))
    header = transcript.header()
    assert header is not None and header["id"] == "s1" and header["version"] == 3
    assert header["cwd"] == "/work" and header["type"] == "session"
    assert transcript.tail(5)[0]["id"] == first and transcript.tail(5)[0]["parentId"] is None
    assert transcript.leaf_id == first
    if isinstance(transcript, Transcript):
        assert oct(os.stat(transcript.path).st_mode & 0o777) == "0o600"


def test_entries_without_a_type_are_refused(new: New) -> None:
    transcript = new()
    with pytest.raises(InvalidEntry, match="type"):
        transcript.append({"no": "type"})
    with pytest.raises(InvalidEntry, match="JSON"):
        transcript.append({"type": "x", "bad": object()})
    assert everything(transcript) == b"" and transcript.header() is None


def test_returned_entries_are_frozen_and_shared(new: New) -> None:
    transcript = new()
    transcript.append(message("one"))
    context = transcript.context()
    assert transcript.context() is context
    with pytest.raises(TypeError):
        context.messages[0]["role"] = "assistant"  # type: ignore[index]


def reads(transcript: TranscriptLike) -> int:
    """What a transcript has read so far: bytes of a file, rows of a database."""
    return int(getattr(transcript, "bytes_read", None) or getattr(transcript, "rows_read", 0))


def test_appends_by_another_writer_extend_the_cached_context(new: New) -> None:
    reader, writer = new(), new(again=True)
    writer.append(message("one"))
    assert len(reader.context().messages) == 1
    writer.append(message("two"))
    before = reads(reader)
    context = reader.context()
    assert [m["content"][0]["text"] for m in context.messages] == ["one", "two"]
    # only the new line was read: under 300 bytes of a file, one row of a table
    assert reads(reader) - before < (300 if isinstance(reader, Transcript) else 2)


def _append_many(where: str, worker: int, barrier: Any, count: int) -> None:
    if where.startswith("postgresql"):
        store = flatstate.open_store(where)
        transcript: Any = store.backend.transcripts.named("shared.jsonl")  # type: ignore[attr-defined]
    else:
        store = None
        transcript = Transcript(
            where, fsync=FsyncPolicy.batched(), lock="flock" if worker % 2 else "file"
        )
    barrier.wait(START_TIMEOUT)
    for i in range(count):
        transcript.append(message(f"w{worker}-{i}-" + "x" * (i % 700)))
    if store is not None:
        store.close()


def test_two_processes_appending_lose_no_line_and_never_interleave(
    tmp_path: Path, kind: str, new: New
) -> None:
    where = str(tmp_path / "shared.jsonl") if kind == "file" else postgres_location(tmp_path)
    barrier = ctx.Barrier(2)
    with running(_append_many, [(where, 0, barrier, 400), (where, 1, barrier, 400)]) as procs:
        assert join_all(procs) == [0, 0]
    if kind == "file":
        data = Path(where).read_bytes()
    else:
        with flatstate.open_store(where) as store:
            data = everything(store.backend.transcripts.named("shared.jsonl"))  # type: ignore[attr-defined]
    lines = data.split(b"\n")
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
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A 100 MB transcript with a compaction near its end (the benchmark's own), and the
    number of entries e0, e1, ... before the compaction."""
    path = tmp_path_factory.mktemp("big") / "big.jsonl"
    return path, write_large_transcript(str(path), 100_000_000)


@pytest.fixture(scope="module")
def big_rows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """The same shape imported as rows (20 MB: the bound is in rows, whatever the length)."""
    root = tmp_path_factory.mktemp("bigrows")
    path = root / "big.jsonl"
    count = write_large_transcript(str(path), 20_000_000)
    where = postgres_location(root)
    with flatstate.open_store(where) as store, open(path, "rb") as f:
        store.backend.transcripts.named("big.jsonl").import_lines(f)  # type: ignore[attr-defined]
    yield where, count


@pytest.fixture
def big(kind: str, request: pytest.FixtureRequest) -> Iterator[tuple[TranscriptLike, int]]:
    if kind == "file":
        path, count = request.getfixturevalue("big_file")
        assert os.path.getsize(path) >= 100_000_000
        yield Transcript(str(path)), count
        return
    where, count = request.getfixturevalue("big_rows")
    with flatstate.open_store(where) as store:
        yield store.backend.transcripts.named("big.jsonl"), count  # type: ignore[attr-defined]


def test_tail_of_a_big_transcript_reads_a_bounded_amount(
    big: tuple[TranscriptLike, int],
) -> None:
    transcript, _ = big
    last = transcript.tail(10)
    assert [e["id"] for e in last] == [f"t{k}" for k in range(10)]
    assert reads(transcript) <= (2 * CHUNK if isinstance(transcript, Transcript) else 11)


def test_context_of_a_big_transcript_reads_only_its_kept_part(
    big: tuple[TranscriptLike, int],
) -> None:
    transcript, count = big
    context = transcript.context()
    # The summary, the 20 entries the compaction keeps, then the 10 after it.
    kept = [f"e{i}" for i in range(count - 20, count)]
    assert [e["id"] for e in context.entries] == ["c1", *kept, *(f"t{k}" for k in range(10))]
    # a file: two chunks from its end; rows: the first page read back from the last line
    assert reads(transcript) <= (2 * CHUNK if isinstance(transcript, Transcript) else 64)


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
    new: New, caplog: pytest.LogCaptureFixture
) -> None:
    source = new("source.jsonl")
    source.append(message("one"))
    lines = [*source.export_lines(), b"this is not json\n"]
    transcript = new()
    transcript.import_lines(lines)
    transcript.append(message("two"))
    reader = new(again=True)
    assert [m["content"][0]["text"] for m in reader.context().messages] == ["one", "two"]
    assert [(p.line, p.problem.split(" (")[0]) for p in reader.problems] == [(3, "not JSON")]
    assert "line 3" in caplog.text
    everything_ = new(again=True)
    assert len(list(everything_.iter_entries())) == 2
    assert everything_.problems[0].line == 3


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


def test_tail_plain_gives_the_tail_as_fresh_plain_dicts(tmp_path: Path) -> None:
    transcript = Transcript(str(tmp_path / "t.jsonl"), session_id="s")
    for number in range(5):
        transcript.append({"type": "note", "n": number, "nested": {"list": [number]}})
    with open(transcript.path, "ab") as f:
        f.write(b"not json\n")
    plain = transcript.tail_plain(3)
    assert [entry["n"] for entry in plain] == [2, 3, 4]
    assert plain == [flatstate.frozen.thaw(entry) for entry in transcript.tail(3)]
    assert all(type(entry) is dict and type(entry["nested"]) is dict for entry in plain)
    plain[0]["n"] = "mine"  # a private copy: the next read is unaffected
    assert transcript.tail_plain(3)[0]["n"] == 2
    assert len(transcript.tail_plain(99)) == 5  # the header is not an entry
    assert transcript.tail_plain(0) == []
    assert any("not JSON" in problem.problem for problem in transcript.problems)


def test_a_tail_of_the_file_as_this_object_left_it_reads_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "t.jsonl")
    ours, theirs = Transcript(path, session_id="s"), Transcript(path, session_id="s")
    for number in range(5):
        ours.append({"type": "note", "n": number})
    read = ours.bytes_read
    assert [entry["n"] for entry in ours.tail_plain(3)] == [2, 3, 4]
    assert [entry["n"] for entry in ours.tail(99)] == [0, 1, 2, 3, 4]  # the header left out
    assert ours.cached_tail_plain(2) == [entry for entry in ours.tail_plain(2)]
    assert ours.bytes_read == read  # what it wrote last is what it reads: no read
    theirs.append({"type": "note", "n": 5})  # another writer: the file changed
    assert ours.cached_tail_plain(2) is None  # says so rather than answer from memory
    assert [entry["n"] for entry in ours.tail_plain(2)] == [4, 5]
    assert ours.bytes_read > read
    ours.append({"type": "note", "n": 6})  # what it read, then wrote, it remembers
    read = ours.bytes_read
    assert [entry["n"] for entry in ours.tail(3)] == [4, 5, 6]
    assert ours.bytes_read == read
    with open(path, "ab") as f:  # a line cut short by a crash: the tail reads the file again
        f.write(b'{"type": "note", "n": 7')
    assert [entry["n"] for entry in ours.tail(2)] == [5, 6]
    assert any("incomplete" in problem.problem for problem in ours.problems)
