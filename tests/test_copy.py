"""Whole states between locations: `flatstate copy`, and import/export with a PostgreSQL side."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flatstate import open_store
from flatstate.auth import open_auth_store
from flatstate.backends.postgres.catalog import namespaces
from flatstate.cli import app
from flatstate.copying import copy_state, tally
from flatstate.errors import CopyIncomplete, DestinationExists, InvalidFact, InvalidLocation
from flatstate.facts import open_facts
from flatstate.places import sources
from flatstate.transfer import export_openclaw, import_openclaw
from tests.conftest import POSTGRES_DSN, postgres_location, require_extra

pytestmark = pytest.mark.postgres


@pytest.fixture
def own_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A URL on the test server naming no namespace: a schema of this test's own, and a home
    directory under tmp_path for the default local state directories."""
    if POSTGRES_DSN is None:
        pytest.skip("no PostgreSQL server (FLATSTATE_TEST_POSTGRES_DSN)")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    schema = f"t_{uuid.uuid4().hex[:12]}"
    return f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}schema={schema}"


@pytest.fixture
def state_dir(openclaw_dir: Path, tmp_path: Path) -> Path:
    """The OpenClaw fixture's main agent as a state directory, with facts added."""
    imported = tmp_path / "imported"
    import_openclaw(str(openclaw_dir), str(imported))
    with open_facts(imported / "main") as facts:
        facts.add("Prefers dark mode", category="preference")
        facts.add("Deploys on Fridays", category="fact")
    return imported / "main"


def entries(location: str, agent_id: str = "main") -> dict[str, object]:
    with open_store(location, readonly=True, agent_id=agent_id) as store:
        return {key: entry.to_dict() for key, entry in store.items()}


def test_a_state_dir_goes_to_postgres_and_back_unchanged(state_dir: Path, tmp_path: Path) -> None:
    url = postgres_location(tmp_path / "pg")
    there = copy_state(str(state_dir), url)
    assert there.verified and len(there.agents) == 1
    copied = there.agents[0]
    assert copied.sessions.count == 5 and copied.transcripts.count > 0
    assert copied.auth_profiles.count > 0 and copied.facts == 2
    with open_store(url) as store:  # the transcripts are rows of the database, not files
        assert store.transcript("main").tail(1)
    assert not list((tmp_path / "pg" / "state").rglob("*.jsonl*"))
    with open_facts(url) as facts:
        assert {f.text for f in facts.list()} == {"Prefers dark mode", "Deploys on Fridays"}
    (there_place,) = sources(url)
    assert not os.path.exists(there_place.auth_file)  # the profiles are rows in the database
    with open_auth_store(url) as auth:
        assert len(auth.profiles()) == copied.auth_profiles.count

    back = copy_state(url, str(tmp_path / "back"))
    assert back.verified
    (place,) = sources(str(state_dir))
    (returned,) = sources(str(tmp_path / "back"))
    assert tally(place) == tally(returned)
    assert entries(str(tmp_path / "back")) == entries(str(state_dir))
    with open_facts(state_dir) as original, open_facts(tmp_path / "back") as returned:
        assert list(returned.export()) == list(original.export())  # ids, times, counters


def test_an_openclaw_root_imports_into_postgres_and_exports_back(
    openclaw_dir: Path, own_schema: str, tmp_path: Path
) -> None:
    report = import_openclaw(str(openclaw_dir), own_schema)
    with_sessions = sorted(a.agent_id for a in report.agents if a.sessions)
    assert "main" in with_sessions and namespaces(own_schema) == with_sessions
    assert "password" not in json.dumps([a.destination for a in report.agents])

    export_openclaw(own_schema, str(tmp_path / "back"))
    source = openclaw_dir / "agents" / "main" / "sessions" / "sessions.json"
    exported = tmp_path / "back" / "agents" / "main" / "sessions" / "sessions.json"
    assert entries(str(exported)) == entries(str(source))
    for transcript in source.parent.glob("*.jsonl*"):
        assert (exported.parent / transcript.name).read_bytes() == transcript.read_bytes()
    # The auth profiles went into the database's rows and came back out as OpenClaw's file.
    auth = "agents/main/agent/auth-profiles.json"
    original = json.loads((openclaw_dir / auth).read_text())
    assert json.loads((tmp_path / "back" / auth).read_text()) == original
    with open_auth_store(own_schema, agent_id="main") as store:
        assert [p.id for p in store.profiles()] == list(original["profiles"])


def test_copy_from_openclaw_reads_back_what_it_wrote(openclaw_dir: Path, tmp_path: Path) -> None:
    report = copy_state(str(openclaw_dir), str(tmp_path / "dest"))
    assert report.verified
    main = next(a for a in report.agents if a.agent_id == "main")
    assert main.sessions.count == 5 and main.destination == str(tmp_path / "dest" / "main")


def test_a_destination_holding_state_is_refused_and_left_as_it_was(
    state_dir: Path, tmp_path: Path
) -> None:
    url = postgres_location(tmp_path / "pg")
    copy_state(str(state_dir), url)
    with open_store(url) as store:
        store.patch("main", {"label": "changed there"})
    before = entries(url)
    with pytest.raises(DestinationExists, match="5 sessions") as caught:
        copy_state(str(state_dir), url)
    assert "--merge" not in str(caught.value)  # copy has no such option
    assert entries(url) == before
    forced = copy_state(str(state_dir), url, force=True)
    assert forced.verified and entries(url) == entries(str(state_dir))


def test_one_state_goes_to_two_namespaces_of_one_schema(state_dir: Path, tmp_path: Path) -> None:
    """Copies keep fact ids, so the two namespaces hold the same ids: unique per namespace
    (they were unique per schema, and the second copy failed halfway)."""
    first, second = postgres_location(tmp_path / "a"), postgres_location(tmp_path / "b")
    assert copy_state(str(state_dir), first).verified
    assert copy_state(str(state_dir), second).verified
    with open_facts(first) as a, open_facts(second) as b:
        assert [f.id for f in a.export()] == [f.id for f in b.export()] != []
        fact = next(iter(a.export()))
        a.forget(fact.id)  # by id, in its own namespace only
        assert a.get(fact.id) is None and b.get(fact.id) == fact


def test_a_destination_holding_only_facts_is_refused(state_dir: Path, tmp_path: Path) -> None:
    url = postgres_location(tmp_path / "pg")
    with open_facts(url) as theirs:
        theirs.add("Owns a cat", entity="user")
    with pytest.raises(DestinationExists, match="1 facts"):
        copy_state(str(state_dir), url)
    with open_facts(url) as theirs:
        assert theirs.count() == 1
    assert entries(url) == {}


def test_many_agents_into_a_url_naming_one_namespace_are_refused(
    openclaw_dir: Path, tmp_path: Path, own_schema: str
) -> None:
    imported = tmp_path / "imported"
    import_openclaw(str(openclaw_dir), str(imported))
    with open_store(imported / "second", agent_id="second") as store:
        store.patch("main", {"label": "another agent"})
    url = f"{own_schema}&namespace=one"
    with pytest.raises(ValueError, match="2 agents"):
        copy_state(str(imported), url)
    assert namespaces(own_schema) == []

    report = copy_state(str(imported), own_schema)
    assert report.verified and namespaces(own_schema) == ["main", "second"]
    assert entries(f"{own_schema}&namespace=second", "second") == entries(
        str(imported / "second"), "second"
    )


def test_the_digests_see_a_changed_transcript(state_dir: Path, tmp_path: Path) -> None:
    copy_state(str(state_dir), str(tmp_path / "copy"))
    (copy,) = sources(str(tmp_path / "copy"))
    (place,) = sources(str(state_dir))
    assert tally(copy) == tally(place)
    transcript = next((tmp_path / "copy" / "transcripts").glob("*.jsonl"))
    transcript.write_bytes(transcript.read_bytes() + b'{"type":"custom"}\n')
    sessions, transcripts, auth, facts, vectors = tally(copy)
    original = tally(place)
    assert transcripts.count == original[1].count and transcripts.digest != original[1].digest
    assert (sessions, auth, facts, vectors) == (original[0], original[2], *original[3:])


def test_the_copy_command_shows_no_password(state_dir: Path, tmp_path: Path) -> None:
    url = postgres_location(tmp_path / "pg")
    password = url.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
    result = CliRunner().invoke(app, ["copy", str(state_dir), url, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["agents"][0]["verified"] is True
    if password:
        assert password not in result.output


def test_a_url_psycopg_cannot_parse_never_shows_its_password(
    state_dir: Path, tmp_path: Path
) -> None:
    # psycopg's parse error quotes the text it choked on: here, the password.
    url = "postgresql://postgres:hunter2x%zz@127.0.0.1:1/flatstate"
    with pytest.raises(InvalidLocation, match="not a usable PostgreSQL DSN") as caught:
        copy_state(str(state_dir), url)
    assert "hunter2" not in str(caught.value)
    for args in (
        ["copy", str(state_dir), url],
        ["export-openclaw", url, str(tmp_path / "out")],
        ["import-openclaw", str(state_dir), url],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and "hunter2" not in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_vectors_travel_between_state_directories(state_dir: Path, tmp_path: Path) -> None:
    # Between two state directories the facts database is copied whole (SQLite's online
    # backup), embeddings included.
    require_extra("sqlite_vec", "vec")
    from flatstate.facts.vectors import HashingEmbedder

    embed = HashingEmbedder(16)
    with open_facts(state_dir, embed=embed) as facts:
        assert facts.embed_missing() == 2
    there = copy_state(str(state_dir), str(tmp_path / "there"))
    assert there.verified
    (place,) = sources(str(tmp_path / "there"))
    with open_facts(place.state_dir, embed=embed) as copied:
        assert copied.stats().vectors == 2
        assert copied.embed_missing() == 0  # nothing left to compute
        (hit,) = copied.search("dark mode preference", limit=1)
        assert hit.fact.text == "Prefers dark mode" and hit.vector > 0


@pytest.mark.postgres
def test_vectors_travel_to_postgres_and_back_unchanged(state_dir: Path, tmp_path: Path) -> None:
    """Fact by fact (a PostgreSQL side), the embeddings go along as they are: the copy's
    searches rank as the original's, and nothing is left for embed_missing() to compute. The
    server needs no pgvector to hold them (they are plain real[] columns)."""
    require_extra("sqlite_vec", "vec")
    from flatstate.facts.vectors import HashingEmbedder

    embed = HashingEmbedder(16)
    with open_facts(state_dir, embed=embed) as facts:
        assert facts.embed_missing() == 2
        original = sorted(facts.export_vectors())
    url = postgres_location(tmp_path / "pg")
    there = copy_state(str(state_dir), url)
    assert there.verified and there.agents[0].vectors == 2
    back = copy_state(url, str(tmp_path / "back"))
    assert back.verified and back.agents[0].vectors == 2
    (place,) = sources(str(tmp_path / "back"))
    with open_facts(place.state_dir, embed=embed) as copied:
        assert sorted(copied.export_vectors()) == original  # the very numbers
        assert copied.embed_missing() == 0
        (hit,) = copied.search("dark mode preference", limit=1)
        assert hit.fact.text == "Prefers dark mode" and hit.vector > 0


def test_a_forced_copy_whose_vectors_do_not_fit_changes_nothing(
    state_dir: Path, tmp_path: Path
) -> None:
    """The destination's vectors of the same model have another length: the copy would fail
    at its last step, so it is refused before its first, and the destination is as it was."""
    require_extra("sqlite_vec", "vec")
    from flatstate.facts.vectors import HashingEmbedder

    with open_facts(state_dir, embed=HashingEmbedder(16)) as facts:
        assert facts.embed_missing() == 2
        assert facts.vector_models() == {"default": 16}
    url = postgres_location(tmp_path / "pg")
    with open_store(url) as store:
        store.upsert("agent:main:other", {"sessionId": "s-other", "updatedAt": 1})
    with open_facts(url) as theirs:  # vectors as plain columns: no pgvector needed
        fact = theirs.add("Owns a cat", entity="user")
        assert theirs.import_vectors([(fact.id, "default", [1.0] + [0.0] * 7)]) == 1
    before = entries(url)
    with pytest.raises(InvalidFact, match="'default' vectors have 16 dimensions") as caught:
        copy_state(str(state_dir), url, force=True)
    assert "have 8" in str(caught.value)
    assert entries(url) == before
    with open_facts(url) as theirs:
        assert theirs.count() == 1 and theirs.vector_models() == {"default": 8}


def test_a_copy_that_fails_after_writing_says_the_destination_may_hold_part_of_it(
    state_dir: Path, tmp_path: Path
) -> None:
    """Two agents, the second one's transcripts directory taken by a file: the first agent is
    copied, then the copy stops with CopyIncomplete naming the second and the cause, instead
    of the cause alone (whose "Nothing was written" would be wrong by then)."""
    source = tmp_path / "states"
    for agent in ("a", "b"):
        copy_state(str(state_dir), str(source / agent))
    (tmp_path / "dest" / "b").mkdir(parents=True)
    (tmp_path / "dest" / "b" / "transcripts").write_text("in the way")
    with pytest.raises(CopyIncomplete, match=r"agent 'b'.*transcripts.*part of the copy") as info:
        copy_state(str(source), str(tmp_path / "dest"), force=True)
    assert info.value.agent_id == "b" and isinstance(info.value.__cause__, OSError)
    assert "Nothing was written" not in str(info.value)
    assert len(entries(str(tmp_path / "dest" / "a"))) == 5  # what it says: part is there
    (tmp_path / "dest" / "b" / "transcripts").unlink()
    assert copy_state(str(source), str(tmp_path / "dest"), force=True).verified


def test_a_copy_onto_its_own_source_is_refused_before_writing(
    state_dir: Path, tmp_path: Path
) -> None:
    """Under --force it rewrote every file from itself, then failed on the auth file."""
    before = {p: p.read_bytes() for p in state_dir.rglob("*") if p.is_file()}
    with pytest.raises(InvalidLocation, match="is the source itself"):
        copy_state(str(state_dir), str(state_dir), force=True)
    with pytest.raises(InvalidLocation, match="is the source itself"):
        copy_state(str(state_dir.parent), str(state_dir.parent), force=True)
    assert {p: p.read_bytes() for p in state_dir.rglob("*") if p.is_file()} == before
