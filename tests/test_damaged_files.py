"""sessions.json files as they come from the field: nested too deeply, holding lone surrogates,
invalid UTF-8 or numbers out of range. Each opens (read-only where it cannot be trusted), is
never changed, and doctor names the problem and where it is."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flatstate
from flatstate.cli import app
from flatstate.doctor import diagnose, repair
from flatstate.errors import ReadOnlyStore, StoreCorrupt

GOOD = b'  "agent:main:good": {\n    "sessionId": "good",\n    "updatedAt": 1\n  }'


def write_store(directory: Path, bad_entry: bytes) -> Path:
    """A sessions.json whose first entry is ``bad_entry`` (the JSON of one member's value)."""
    path = directory / "sessions.json"
    path.write_bytes(b'{\n  "agent:main:bad": ' + bad_entry + b",\n" + GOOD + b"\n}")
    path.chmod(0o600)
    return path


def deep(depth: int) -> bytes:
    return b'{"sessionId": "bad", "v": ' + b"[" * depth + b"]" * depth + b"}"


def assert_read_only_and_untouched(path: Path, says: str) -> None:
    before = path.read_bytes()
    with flatstate.open_store(str(path)) as store:
        assert store.corruption is not None and says in str(store.corruption)
        assert store.get("agent:main:good") is not None  # the rest stays readable
        with pytest.raises(ReadOnlyStore, match="doctor --repair"):
            store.patch("agent:main:good", {"n": 1})
    assert path.read_bytes() == before
    findings = [f for f in diagnose(str(path)).findings if f.kind == "corrupt"]
    assert findings and says in findings[0].detail, findings


def test_a_deeply_nested_entry_opens_read_only(tmp_path: Path) -> None:
    path = write_store(tmp_path, deep(600))
    assert_read_only_and_untouched(path, "'agent:main:bad' at line 2, column 21")
    assert_read_only_and_untouched(path, "deeper than 64")


@pytest.mark.parametrize("depth", [600, 1_100, 100_000])
def test_nesting_is_reported_without_a_recursion_error(tmp_path: Path, depth: int) -> None:
    """Past ~1,000 levels no JSON parser here reads the file at all: the whole store is
    read-only, with the position of the first level too deep."""
    path = write_store(tmp_path, deep(depth))
    before = path.read_bytes()
    with flatstate.open_store(str(path)) as store:
        assert store.corruption is not None and "deeper than 64" in str(store.corruption)
        with pytest.raises(ReadOnlyStore):
            store.patch("agent:main:good", {"n": 1})
    (finding,) = diagnose(str(path)).findings
    assert "line 2" in finding.detail and "deeper than 64" in finding.detail
    result = CliRunner().invoke(app, ["doctor", "--store", str(path)])
    assert result.exit_code == 1 and "deeper than" in result.output
    assert isinstance(result.exception, SystemExit)
    assert path.read_bytes() == before


def test_a_number_out_of_range_is_named_with_its_line_and_column(tmp_path: Path) -> None:
    path = write_store(tmp_path, b'{\n    "sessionId": "bad",\n    "n": 1e400\n  }')
    assert_read_only_and_untouched(path, "line 4, column 10: the number 1e400 is out of range")


def test_invalid_utf8_is_named_with_its_byte(tmp_path: Path) -> None:
    path = write_store(tmp_path, b'{"sessionId": "bad", "v": "\xff"}')
    before = path.read_bytes()
    with pytest.raises(ReadOnlyStore), flatstate.open_store(str(path)) as store:
        assert isinstance(store.corruption, StoreCorrupt)
        assert str(path) in str(store.corruption)
        assert "not UTF-8 text at byte 49" in str(store.corruption)
        store.patch("x", {})
    assert path.read_bytes() == before
    (finding,) = diagnose(str(path)).findings
    assert "not UTF-8 text at byte 49" in finding.detail


def test_a_lone_surrogate_written_by_node_round_trips_byte_for_byte(tmp_path: Path) -> None:
    """Node writes "\\ud83d" when it cuts a string mid-emoji; the file is valid JSON."""
    cut = b'{\n    "sessionId": "bad",\n    "label": "cut \\ud83d",\n    "updatedAt": 1\n  }'
    path = write_store(tmp_path, cut)
    with flatstate.open_store(str(path)) as store:
        assert store.corruption is None
        assert store.get("agent:main:bad")["label"] == "cut \ud83d"  # type: ignore[index]
        store.patch("agent:main:good", {"n": 1})  # rewrites the whole file
    assert cut in path.read_bytes()
    with flatstate.open_store(str(path)) as fresh:
        assert fresh.get("agent:main:bad")["label"] == "cut \ud83d"  # type: ignore[index]
    assert not diagnose(str(path)).findings


def test_an_entry_holding_a_lone_surrogate_is_shown_and_patched(tmp_path: Path) -> None:
    """The entry itself (not another) is patched, and the CLI prints the escape."""
    cut = b'{\n    "sessionId": "bad",\n    "label": "cut \\ud83d",\n    "updatedAt": 1\n  }'
    path = write_store(tmp_path, cut)
    with flatstate.open_store(str(path)) as store:
        store.patch("agent:main:bad", {"n": 1})
    with flatstate.open_store(str(path)) as fresh:
        entry = fresh.get("agent:main:bad")
        assert entry is not None and entry["label"] == "cut \ud83d" and entry["n"] == 1
    shown = CliRunner().invoke(app, ["sessions", "show", "agent:main:bad", "--store", str(path)])
    assert shown.exit_code == 0 and "cut \\ud83d" in shown.output
    as_json = CliRunner().invoke(
        app, ["sessions", "show", "agent:main:bad", "--store", str(path), "--json"]
    )
    assert as_json.exit_code == 0 and '"label": "cut \\ud83d"' in as_json.output


def test_a_transcript_line_holding_a_lone_surrogate_is_read_and_continued(
    tmp_path: Path,
) -> None:
    """Node writes the escape in a transcript line too: the line is an entry like any other,
    so the next append hangs under it (not under the one before)."""
    with flatstate.open_store(str(tmp_path / "state")) as store:
        transcript = store.transcript("main")
        first = transcript.append({"type": "custom", "n": 1})
        with open(transcript.path, "ab") as f:
            f.write(
                b'{"type":"message","id":"cafe0001","parentId":"' + first.encode() + b'",'
                b'"message":{"role":"user","content":"cut \\ud83d"}}\n'
            )
    with flatstate.open_store(str(tmp_path / "state")) as store:
        transcript = store.transcript("main")
        assert transcript.tail(1)[0]["message"]["content"] == "cut \ud83d"
        assert transcript.leaf_id == "cafe0001" and not transcript.problems
        assert transcript.context().messages[-1]["content"] == "cut \ud83d"
        transcript.append({"type": "custom", "n": 2})
        assert transcript.tail(1)[0]["parentId"] == "cafe0001"
        shown = CliRunner().invoke(
            app, ["transcript", "tail", "main", "--store", str(tmp_path / "state")]
        )
        assert shown.exit_code == 0 and "cut \\ud83d" in shown.output, shown.output


def test_repair_keeps_a_lone_surrogate_and_the_quarantine_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    path.write_bytes(
        b'{\n  "agent:main:a": {"sessionId": "a", "label": "cut \\ud83d"},\n'
        b'  "agent:main:b": {"sessionId": "b", "label": \n'
    )
    path.chmod(0o644)
    report = repair(str(path))
    assert report.kept == ["agent:main:a"] and report.lost
    assert stat.S_IMODE(os.stat(report.moved_to).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with flatstate.open_store(str(path)) as store:
        assert store.get("agent:main:a")["label"] == "cut \ud83d"  # type: ignore[index]


def test_repair_reports_an_out_of_range_number_instead_of_writing_null(tmp_path: Path) -> None:
    path = write_store(tmp_path, b'{"sessionId": "bad", "n": 1e400}')
    report = repair(str(path))
    assert report.kept == ["agent:main:good"]
    assert any("agent:main:bad" in lost for lost in report.lost)
    assert b"null" not in path.read_bytes()


ENTRY = b'{\n  "agent:main:main": {\n    "sessionId": "s1",\n    "updatedAt": 1\n  }\n}'


@pytest.mark.parametrize("outside", [True, False])
def test_a_write_through_a_symlink_goes_to_the_target(tmp_path: Path, outside: bool) -> None:
    """A link out of the directory needs allow_symlink=True; one inside it is accepted."""
    real = tmp_path / ("elsewhere" if outside else "agents") / "real.json"
    real.parent.mkdir(exist_ok=True)
    real.write_bytes(ENTRY)
    link = tmp_path / "agents" / "sessions.json"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(real if outside else "real.json")
    with flatstate.open_store(str(link), allow_symlink=outside) as store:
        store.patch("main", {"label": "through the link"})
    assert link.is_symlink()
    with flatstate.open_store(str(real)) as store:
        assert store.get("main")["label"] == "through the link"  # type: ignore[index]


@pytest.mark.parametrize(
    "location", ["state", "directory/sessions.json", "file/state", "file/sessions.json"]
)
def test_a_path_of_the_wrong_kind_is_named(tmp_path: Path, location: str) -> None:
    (tmp_path / "state").write_text("a file where the state directory belongs")
    (tmp_path / "directory" / "sessions.json").mkdir(parents=True)
    (tmp_path / "file").write_text("a file where a directory belongs")
    with pytest.raises(StoreCorrupt) as caught:
        flatstate.open_store(str(tmp_path / location))
    assert caught.value.path == str(tmp_path / location.split("/")[0]) or caught.value.path == str(
        tmp_path / location
    )
    assert "where the store needs" in caught.value.problem
    assert (tmp_path / "state").read_text().startswith("a file")


def test_deleting_an_entry_whose_transcript_is_outside_leaves_that_file_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_text('{"type": "session"}\n')
    with flatstate.open_store(str(tmp_path / "state")) as store:
        store.upsert("main", {"sessionId": "s1", "sessionFile": str(outside)})
        assert store.delete("main") is True
        assert store.get("main") is None
    assert outside.read_text() == '{"type": "session"}\n'
    assert any("left where it is" in r.getMessage() for r in caplog.records)


def test_a_refused_write_to_a_damaged_file_leaves_its_directory_as_it_was(
    tmp_path: Path,
) -> None:
    """No change counter (or anything else) appears beside a store every write fails on; the
    first write after the repair makes it."""
    path = write_store(tmp_path, b'{"sessionId": ')
    before = sorted(os.listdir(tmp_path))
    result = CliRunner().invoke(app, ["sessions", "patch", "good", "--set", "n=1", "-s", str(path)])
    assert result.exit_code == 1 and "doctor --repair" in result.output
    assert sorted(os.listdir(tmp_path)) == before
    path.write_bytes(b"{\n" + GOOD + b"\n}")
    with flatstate.open_store(str(path)) as writer, flatstate.open_store(str(path)) as reader:
        assert reader.get("good") is not None
        writer.patch("good", {"n": 2})
        assert reader.get("good")["n"] == 2  # seen through the counter, before any check
    assert ".sessions.json.flatstate-signal" in os.listdir(tmp_path)


def test_an_empty_database_file_is_a_store_not_made_yet(tmp_path: Path) -> None:
    """What a writer killed between creating sessions.sqlite and its schema leaves: reads say
    there is no store, doctor finds nothing wrong, and the next write makes the store."""
    (tmp_path / "sessions.sqlite").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no store here"):
        flatstate.open_store(str(tmp_path), readonly=True)
    assert diagnose(str(tmp_path)).findings == []
    with flatstate.open_store(str(tmp_path)) as store:
        store.patch("main", {"label": "made"})
    with flatstate.open_store(str(tmp_path), readonly=True) as store:
        assert store.get("main")["label"] == "made"


def test_a_database_of_another_kind_is_named_as_such(tmp_path: Path) -> None:
    """A facts database where sessions.sqlite belongs (and the reverse): both keep a
    schema_version at 1, so each passed for the other and failed at its first query with
    a raw OperationalError."""
    from flatstate.facts import open_facts

    with open_facts(tmp_path / "facts") as facts:
        facts.add("Deploys go to fly.io")
    with flatstate.open_store(str(tmp_path / "sessions")) as store:
        store.patch("main", {})
    (tmp_path / "swapped").mkdir()
    os.rename(tmp_path / "facts" / "facts.sqlite", tmp_path / "swapped" / "sessions.sqlite")
    os.rename(tmp_path / "sessions" / "sessions.sqlite", tmp_path / "swapped" / "facts.sqlite")
    before = {p.name: p.read_bytes() for p in (tmp_path / "swapped").iterdir()}
    for readonly in (True, False):
        with pytest.raises(StoreCorrupt, match="not a session store"):
            flatstate.open_store(str(tmp_path / "swapped"), readonly=readonly)
        with pytest.raises(StoreCorrupt, match="not a facts database"):
            open_facts(tmp_path / "swapped", readonly=readonly)
    assert {p.name: p.read_bytes() for p in (tmp_path / "swapped").iterdir()} == before
