"""A full disk and a read-only file system, made for real with tmpfs and bind mounts (the
tests run as root in CI; elsewhere they skip, saying why)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import flatstate
from flatstate.doctor import diagnose
from flatstate.errors import DiskFull, ReadOnlyStore
from flatstate.facts import open_facts


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip()}); run as root to test this")


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def read_only_view(source: Path, where: Path) -> Iterator[Path]:
    """``source`` seen again at ``where`` through a read-only bind mount."""
    where.mkdir()
    mount("--bind", str(source), str(where))
    try:
        mount("-o", "remount,ro,bind", str(where))
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path) -> None:
    """Take every free byte of the file system holding ``directory``."""
    with open(directory / "ballast", "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()


@pytest.mark.parametrize("location", ["state", "agents/main/sessions/sessions.json"])
def test_a_full_disk_gives_a_typed_error_and_loses_nothing(tmp_path: Path, location: str) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        path = str(disk / location)
        with flatstate.open_store(path) as store:
            store.patch("main", {"n": 0})
            for n in range(1, 5):
                store.patch("main", {"n": n})
            fill(disk)
            with pytest.raises(DiskFull) as caught:
                for n in range(5, 100_000):
                    store.patch("main", {"n": n, "pad": "x" * 65536})
            assert path in str(caught.value) or str(disk) in str(caught.value)
            assert "Free space" in str(caught.value)
            acknowledged = store.get("main")
        os.unlink(disk / "ballast")
        with flatstate.open_store(path) as reopened:
            assert reopened.get("main") == acknowledged


def test_a_transcript_append_on_a_full_disk_leaves_no_half_line(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk, flatstate.open_store(str(disk / "state")) as store:
        transcript = store.transcript("main")
        transcript.append({"type": "custom", "n": 0})
        fill(disk)
        with pytest.raises(DiskFull):
            for n in range(1, 10_000):
                transcript.append({"type": "custom", "n": n, "pad": "y" * 65536})
        os.unlink(disk / "ballast")
        written = list(transcript.iter_entries())
        assert not transcript.problems
        assert Path(transcript.path).read_bytes().endswith(b"\n")
        assert [e["n"] for e in written] == list(range(len(written)))


def test_a_store_on_a_read_only_mount_can_be_read(tmp_path: Path) -> None:
    state = tmp_path / "data" / "state"
    with flatstate.open_store(str(state)) as store:
        store.patch("main", {"label": "kept"})
        store.transcript("main").append({"type": "custom", "n": 1})
    with open_facts(str(state)) as facts:
        facts.add("the sky is blue")
    with read_only_view(tmp_path / "data", tmp_path / "ro") as view:
        before = sorted(p.name for p in (view / "state").iterdir())
        with flatstate.open_store(str(view / "state"), readonly=True) as store:
            assert store.get("main")["label"] == "kept"  # type: ignore[index]
            assert store.transcript("main").tail(1)[0]["n"] == 1
            with pytest.raises(ReadOnlyStore):
                store.patch("main", {"label": "changed"})
        with open_facts(str(view / "state"), readonly=True) as facts:
            assert [fact.text for fact in facts.recall("sky")] == ["the sky is blue"]
        with pytest.raises(ReadOnlyStore):
            flatstate.open_store(str(view / "state")).patch("main", {"label": "x"})
        assert not [f for f in diagnose(str(view / "state")).findings if f.kind == "corrupt"]
        assert sorted(p.name for p in (view / "state").iterdir()) == before


def test_a_sessions_json_on_a_read_only_mount_can_be_read(
    openclaw_dir: Path, tmp_path: Path
) -> None:
    with read_only_view(openclaw_dir, tmp_path / "ro") as view:
        path = view / "agents" / "main" / "sessions" / "sessions.json"
        with flatstate.open_store(str(path), readonly=True) as store:
            assert len(store) == 5
        with flatstate.open_store(str(path)) as store, pytest.raises(ReadOnlyStore) as caught:
            store.patch("main", {"label": "x"})
        assert "read-only file system" in str(caught.value)


@pytest.mark.parametrize("location", ["mysql://gw:hunter2@db/agents", "file:///tmp/x", "", " "])
def test_a_url_of_no_store_or_an_empty_location_is_refused(
    location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such a location became a directory: `mysql://gw:hunter2@db` made ./mysql:/gw:hunter2@db
    (its password in every path shown), an empty one the current directory."""
    from typer.testing import CliRunner

    from flatstate.auth import open_auth_store
    from flatstate.cli import app
    from flatstate.copying import copy_state
    from flatstate.errors import InvalidLocation
    from flatstate.facts import open_facts

    with flatstate.open_store(str(tmp_path / "source")) as store:
        store.patch("main", {})
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    for opener in (flatstate.open_store, open_facts, open_auth_store):
        with pytest.raises(InvalidLocation) as info:
            opener(location)
        assert "hunter2" not in str(info.value)
    with pytest.raises(InvalidLocation):
        copy_state(str(tmp_path / "source"), location)
    for args in (["sessions", "patch", "main", "--set", "a=1"], ["facts", "add", "x"]):
        result = CliRunner().invoke(app, [*args, "--store", location])
        assert result.exit_code == 1 and "hunter2" not in result.output, result.output
        assert "Traceback" not in result.output
    assert list(here.iterdir()) == []


def test_an_auth_store_on_a_file_is_refused_and_the_file_left_alone(tmp_path: Path) -> None:
    """It opened empty, narrowed the file's mode, then failed the write with a raw
    FileExistsError."""
    from flatstate.auth import open_auth_store
    from flatstate.errors import StoreCorrupt

    afile = tmp_path / "afile"
    afile.write_text("x")
    afile.chmod(0o644)
    with pytest.raises(StoreCorrupt, match="is a file, where the store needs a directory"):
        open_auth_store(afile)
    assert afile.stat().st_mode & 0o777 == 0o644 and afile.read_text() == "x"


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="drops root's capabilities with setpriv so that modes apply",
)
def test_a_state_directory_the_reader_cannot_write_is_read(tmp_path: Path) -> None:
    """SQLite cannot make the -shm a read needs in a directory it may not write; with no WAL
    to replay the files are read as immutable (it was ReadOnlyStore, and doctor called the
    healthy store corrupt)."""
    import json
    import sys

    state = tmp_path / "state"
    with flatstate.open_store(str(state)) as store:
        store.patch("main", {"label": "kept"})
    with open_facts(state) as facts:
        facts.add("Deploys go to fly.io")
    before = sorted(os.listdir(state))
    for path in (state, *state.iterdir()):
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        code = (
            "import json, flatstate\n"
            "from flatstate.facts import open_facts\n"
            "from flatstate.doctor import diagnose\n"
            f"s = flatstate.open_store({str(state)!r}, readonly=True)\n"
            f"f = open_facts({str(state)!r}, readonly=True)\n"
            "print(json.dumps([s.get('main')['label'], f.count(),"
            f" [x.kind for x in diagnose({str(state)!r}).findings]]))\n"
        )
        drop = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all"]
        done = subprocess.run([*drop, sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == ["kept", 1, []]
    finally:
        for path in (state, *state.iterdir()):
            path.chmod(path.stat().st_mode | 0o200)
    assert sorted(os.listdir(state)) == before
