"""The auth store: OpenClaw's fixture, overlay, malformed content, refs, security. Tests taking
``auth_place`` run on every storage (agent directories, then PostgreSQL); the others are
about files (bytes, modes, symlinks, legacy auth.json)."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flatstate.auth import AuthProfile, open_auth_store
from flatstate.auth.store import AuthStore
from flatstate.errors import InvalidProfile, SecretUnavailable, StoreCorrupt, UnsafePath
from tests.auth_support import (
    FIXTURE_COOLDOWN_UNTIL,
    OAUTH_ID,
    AuthPlace,
    SecretGuard,
    agent_dir_of,
    catch,
    read_json,
    secret_guard,
    write_json,
)


@pytest.fixture
def guard(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[SecretGuard]:
    for scanner in secret_guard(capsys, caplog):
        scanner.secret(*OVERLAY_SECRETS)
        yield scanner


@pytest.fixture
def agent_dir(openclaw_dir: Path) -> Path:
    return agent_dir_of(openclaw_dir)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the real OpenClaw file ---------------------------------------------------------------


def test_fixture_loads_every_profile_type(
    auth_place: AuthPlace, openclaw_dir: Path, guard: SecretGuard
) -> None:
    auth_place.seed_fixture(openclaw_dir)
    store = auth_place.open()
    guard.watch(store, store.profiles(), store.snapshot().usage_stats, store.status())
    assert [(p.id, p.type) for p in store.profiles()] == [
        ("anthropic:default", "api_key"),
        (OAUTH_ID, "oauth"),
        ("openai:default", "token"),
    ]
    oauth = store.get(OAUTH_ID)
    assert oauth is not None and oauth.email == "work@example.com"
    assert store.usage("anthropic:default").cooldown_until == FIXTURE_COOLDOWN_UNTIL  # type: ignore[union-attr]
    assert store.problems == ()


def test_fixture_round_trip_keeps_every_field_and_byte(agent_dir: Path, guard: SecretGuard) -> None:
    path = agent_dir / "auth-profiles.json"
    original = path.read_bytes()
    store = open_auth_store(agent_dir)
    store.update(lambda doc: True)  # a save with no change
    assert path.read_bytes() == original

    store.mark_failure("openai:default", "timeout", now=FIXTURE_COOLDOWN_UNTIL)
    after = read_json(path)
    before = json.loads(original)
    assert after["profiles"] == before["profiles"]
    assert after["usageStats"]["anthropic:default"] == before["usageStats"]["anthropic:default"]
    assert after["version"] == 1
    assert _mode(path) == 0o600


def test_unknown_fields_survive_a_write(
    auth_place: AuthPlace, openclaw_dir: Path, guard: SecretGuard
) -> None:
    doc = read_json(agent_dir_of(openclaw_dir) / "auth-profiles.json")
    doc["futureTopLevel"] = {"kept": True}
    doc["profiles"][OAUTH_ID]["enterpriseUrl"] = "https://example.com"
    doc["profiles"][OAUTH_ID]["nested"] = {"a": [1, 2, {"b": None}]}
    doc["usageStats"]["anthropic:default"]["laterField"] = 7
    auth_place.seed(doc)
    store = auth_place.open()
    assert store.get(OAUTH_ID)["nested"]["a"][2]["b"] is None  # type: ignore[index]
    store.mark_failure("anthropic:default", "rate_limit", now=FIXTURE_COOLDOWN_UNTIL + 1)
    after = auth_place.stored()
    assert after["futureTopLevel"] == {"kept": True}
    assert after["profiles"][OAUTH_ID] == doc["profiles"][OAUTH_ID]
    assert after["usageStats"]["anthropic:default"]["laterField"] == 7
    assert list(after["profiles"]) == list(doc["profiles"])  # file order kept


def test_a_killed_writers_temp_file_is_swept_by_the_next_write(
    agent_dir: Path, guard: SecretGuard
) -> None:
    # What a writer killed between its write and its rename leaves: the secrets, in full.
    path = agent_dir / "auth-profiles.json"
    stale = agent_dir / "auth-profiles.json.4242.0f0e.tmp"
    fresh = agent_dir / "auth-profiles.json.4343.0f0f.tmp"
    for temp in (stale, fresh):
        temp.write_bytes(path.read_bytes())
    os.utime(stale, (1, 1))  # long dead
    store = open_auth_store(str(agent_dir))
    store.mark_failure("anthropic:default", "rate_limit", now=FIXTURE_COOLDOWN_UNTIL + 1)
    assert not stale.exists()
    assert fresh.exists()  # maybe a live writer's, this very moment


# -- reads share -------------------------------------------------------------------------


def test_reads_return_the_same_frozen_objects(
    auth_place: AuthPlace, openclaw_dir: Path, guard: SecretGuard
) -> None:
    auth_place.seed_fixture(openclaw_dir)
    store = auth_place.open(check_interval=0)
    first = store.get(OAUTH_ID)
    assert first is store.get(OAUTH_ID)
    assert store.profiles()[1] is first
    assert store.snapshot() is store.snapshot()
    assert store.usage("anthropic:default") is store.usage("anthropic:default")
    assert isinstance(first, AuthProfile)
    with pytest.raises(TypeError):
        first["access"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        store.snapshot().profiles["new"] = first  # type: ignore[index]
    private = first.to_dict()
    private["access"] = "changed"
    assert store.get(OAUTH_ID)["access"] != "changed"  # type: ignore[index]


def test_a_write_keeps_untouched_profiles_shared(
    auth_place: AuthPlace, openclaw_dir: Path, guard: SecretGuard
) -> None:
    auth_place.seed_fixture(openclaw_dir)
    store = auth_place.open()
    before = store.get(OAUTH_ID)
    store.mark_failure("openai:default", "unknown", now=1)
    # A new snapshot, whose unchanged profile is equal (a fresh parse of the file).
    assert store.get(OAUTH_ID) == before


def test_changes_by_another_store_are_seen_after_the_check_interval(
    auth_place: AuthPlace, openclaw_dir: Path, guard: SecretGuard
) -> None:
    auth_place.seed_fixture(openclaw_dir)
    reader = auth_place.open(check_interval=3600)
    writer = auth_place.open()
    writer.mark_failure("openai:default", "auth", now=1000)
    # Within the interval the reader still serves what it had (the documented bound) ...
    assert reader.usage("openai:default") is None
    # ... and sees the change as soon as it looks at the store.
    reader.reload()
    assert reader.usage("openai:default").error_count == 1  # type: ignore[union-attr]
    eager = auth_place.open(check_interval=0)
    writer.mark_success("openai:default", now=2000)
    assert eager.usage("openai:default").error_count == 0  # type: ignore[union-attr]


def test_own_writes_are_seen_at_once(
    auth_place: AuthPlace, openclaw_dir: Path, guard: SecretGuard
) -> None:
    auth_place.seed_fixture(openclaw_dir)
    store = auth_place.open(check_interval=3600)
    store.mark_failure("openai:default", "format", now=1000)
    assert store.usage("openai:default").error_count == 1  # type: ignore[union-attr]


# -- overlay -----------------------------------------------------------------------------


OVERLAY_SECRETS = ("K-main-1", "T-shared-22", "T-agent-333", "K-agent-4444")


MAIN_DOC = {
    "version": 1,
    "profiles": {
        "anthropic:main": {"type": "api_key", "provider": "anthropic", "key": "K-main-1"},
        "openai:shared": {"type": "token", "provider": "openai", "token": "T-shared-22"},
    },
    "order": {"anthropic": ["anthropic:main"], "openai": ["openai:shared"]},
    "lastGood": {"openai": "openai:shared"},
    "usageStats": {"openai:shared": {"lastUsed": 5, "errorCount": 0}},
}
AGENT_DOC = {
    "version": 1,
    "profiles": {
        "openai:shared": {"type": "token", "provider": "openai", "token": "T-agent-333"},
        "google:agent": {"type": "api_key", "provider": "google", "key": "K-agent-4444"},
    },
    "order": {"anthropic": ["anthropic:main"]},
}


def _main_and_agent(root: Path) -> tuple[Path, Path]:
    main = root / "agents" / "main" / "agent"
    agent = root / "agents" / "coder" / "agent"
    write_json(main / "auth-profiles.json", MAIN_DOC)
    write_json(agent / "auth-profiles.json", AGENT_DOC)
    return main, agent


def _overlay(place: AuthPlace) -> AuthStore:
    """The coder agent's store over the main agent's."""
    place.seed(MAIN_DOC, "main")
    place.seed(AGENT_DOC, "coder")
    return place.open("coder", inherit_from="main")


def test_an_agent_store_overlays_the_main_store(auth_place: AuthPlace, guard: SecretGuard) -> None:
    store = _overlay(auth_place)
    guard.watch(store, store.profiles(), store.status())
    assert {p.id for p in store.profiles()} == {"anthropic:main", "openai:shared", "google:agent"}
    assert store.resolve_secret("openai:shared") == "T-agent-333"  # the agent wins per key
    assert store.resolve_secret("anthropic:main") == "K-main-1"
    assert store.snapshot().order["openai"] == ("openai:shared",)  # inherited per provider
    assert store.usage("openai:shared").last_used == 5  # type: ignore[union-attr]
    inherited = {s.id: s.inherited for s in store.status()}
    assert inherited == {"anthropic:main": True, "openai:shared": False, "google:agent": False}


def test_writes_through_an_overlay_go_to_the_agent_file(
    auth_place: AuthPlace, guard: SecretGuard
) -> None:
    store = _overlay(auth_place)
    main_before = auth_place.stored("main")
    stats = store.mark_failure("anthropic:main", "rate_limit", now=10_000)
    assert stats.cooldown_until == 40_000
    assert auth_place.stored("main") == main_before
    assert auth_place.stored("coder")["usageStats"]["anthropic:main"]["errorCount"] == 1
    err = catch(guard, InvalidProfile, store.remove, "anthropic:main")
    assert "inherited" in str(err)
    assert store.remove("google:agent") is True
    assert store.get("google:agent") is None


def test_inherit_from_the_same_directory_is_no_overlay(
    auth_place: AuthPlace, openclaw_dir: Path, guard: SecretGuard
) -> None:
    auth_place.seed_fixture(openclaw_dir)
    store = auth_place.open(inherit_from="main")
    assert store.inherited_path is None


# -- malformed files ---------------------------------------------------------------------


def test_malformed_profiles_are_reported_by_id_and_kept(
    auth_place: AuthPlace, guard: SecretGuard
) -> None:
    guard.secret("K-good-12345", "K-noprov-12345", "K-weird-12345")
    bad = {
        "no:provider": {"type": "api_key", "key": "K-noprov-12345"},
        "weird:type": {"type": "password", "provider": "weird", "key": "K-weird-12345"},
        "not:object": ["K-in-a-list"],
    }
    auth_place.seed(
        {
            "version": 1,
            "profiles": {"good:one": {"type": "api_key", "provider": "good", "key": "K-good-12345"}}
            | bad,
            "order": "not-an-object",
        },
    )
    store = auth_place.open()
    guard.watch(store, *store.problems)
    assert [p.id for p in store.profiles()] == ["good:one"]
    found = {(p.kind, p.subject) for p in store.problems}
    assert found == {
        ("missing_provider", "no:provider"),
        ("invalid_type", "weird:type"),
        ("non_object", "not:object"),
        ("invalid_section", "order"),
    }
    # Writing is allowed, and keeps the invalid profiles exactly as they were.
    store.mark_success("good:one", now=5)
    after = auth_place.stored()
    for profile_id, value in bad.items():
        assert after["profiles"][profile_id] == value
    assert after["order"] == "not-an-object"
    # A write that needs the broken section is refused and names it.
    err = catch(guard, StoreCorrupt, store.set_order, "good", ["good:one"])
    assert "'order'" in str(err)


def test_bad_json_is_reported_never_overwritten(tmp_path: Path, guard: SecretGuard) -> None:
    path = tmp_path / "auth-profiles.json"
    damaged = b'{"version": 1, "profiles": {"x:y": {"type": "api_key", "key": "K-trunc-999'
    guard.secret("K-trunc-999")
    path.write_bytes(damaged)
    path.chmod(0o600)
    store = open_auth_store(tmp_path)
    guard.watch(store, *store.problems)
    assert store.profiles() == ()
    assert [p.kind for p in store.problems] == ["corrupt_file"]
    assert str(path) in store.problems[0].message
    err = catch(
        guard, StoreCorrupt, store.add, "a:b", {"type": "token", "provider": "a", "token": "t" * 12}
    )
    assert str(path) in str(err)
    err = catch(guard, StoreCorrupt, store.update, lambda doc: True)
    assert path.read_bytes() == damaged


def test_bad_json_in_the_agent_file_still_serves_the_main_store(
    tmp_path: Path, guard: SecretGuard
) -> None:
    main, agent = _main_and_agent(tmp_path)
    (agent / "auth-profiles.json").write_bytes(b"[1, 2")
    store = open_auth_store(agent, inherit_from=main)
    assert {p.id for p in store.profiles()} == {"anthropic:main", "openai:shared"}
    assert store.problems[0].kind == "corrupt_file"


def test_top_level_array_is_corrupt(tmp_path: Path, guard: SecretGuard) -> None:
    (tmp_path / "auth-profiles.json").write_text("[]")
    store = open_auth_store(tmp_path)
    [problem] = [p for p in store.problems if p.kind == "corrupt_file"]
    assert "not an object" in problem.message


def test_openclaw_legacy_field_names_are_accepted(
    auth_place: AuthPlace, guard: SecretGuard
) -> None:
    guard.secret("K-legacy-names-1")
    auth_place.seed(
        {
            "version": 1,
            "profiles": {
                "x:default": {"mode": "api_key", "provider": "x", "apiKey": "K-legacy-names-1"}
            },
            "order": {"x": [" x:default ", "", 3]},
        },
    )
    store = auth_place.open()
    assert store.get("x:default").type == "api_key"  # type: ignore[union-attr]
    assert store.resolve_secret("x:default") == "K-legacy-names-1"
    assert store.snapshot().order["x"] == ("x:default",)


# -- legacy auth.json --------------------------------------------------------------------


def _legacy(agent: Path) -> dict[str, Any]:
    legacy = {
        "anthropic": {"type": "api_key", "key": "K-legacy-anthropic-1"},
        "google": {"mode": "oauth", "access": "A-legacy-2222", "refresh": "R-legacy-3333"},
    }
    write_json(agent / "auth.json", legacy)
    return legacy


def test_legacy_auth_json_migrates_once(tmp_path: Path, guard: SecretGuard) -> None:
    guard.secret("K-legacy-anthropic-1", "A-legacy-2222", "R-legacy-3333")
    _legacy(tmp_path)
    store = open_auth_store(tmp_path)
    assert not (tmp_path / "auth.json").exists()
    assert store.get("anthropic:default")["key"] == "K-legacy-anthropic-1"  # type: ignore[index]
    google = store.get("google:default")
    assert google is not None and google.type == "oauth" and google.provider == "google"
    saved = (tmp_path / "auth-profiles.json").read_bytes()
    assert _mode(tmp_path / "auth-profiles.json") == 0o600
    open_auth_store(tmp_path)  # running it again changes nothing
    assert (tmp_path / "auth-profiles.json").read_bytes() == saved


def test_legacy_file_is_deleted_only_after_the_save(
    tmp_path: Path, guard: SecretGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    _legacy(tmp_path)
    real_unlink = os.unlink

    def crash(path: Any, *args: Any, **kw: Any) -> None:
        if str(path).endswith("auth.json"):
            raise OSError("simulated crash before the delete")
        real_unlink(path, *args, **kw)

    monkeypatch.setattr(os, "unlink", crash)
    with pytest.raises(OSError, match="simulated"):
        open_auth_store(tmp_path)
    assert (tmp_path / "auth.json").exists()
    saved = (tmp_path / "auth-profiles.json").read_bytes()
    assert b"anthropic:default" in saved  # saved before the delete was tried
    monkeypatch.setattr(os, "unlink", real_unlink)
    open_auth_store(tmp_path)
    assert not (tmp_path / "auth.json").exists()
    assert (tmp_path / "auth-profiles.json").read_bytes() == saved


def test_legacy_migration_never_replaces_an_existing_profile(
    agent_dir: Path, guard: SecretGuard
) -> None:
    write_json(agent_dir / "auth.json", {"anthropic": {"type": "api_key", "key": "K-older-111111"}})
    guard.secret("K-older-111111")
    store = open_auth_store(agent_dir)
    assert store.resolve_secret("anthropic:default") == "sk-ant-FIXTURE-not-a-real-key-0001"
    assert not (agent_dir / "auth.json").exists()


def test_an_invalid_legacy_credential_keeps_the_old_file(
    tmp_path: Path, guard: SecretGuard
) -> None:
    write_json(
        tmp_path / "auth.json",
        {"ok": {"type": "api_key", "key": "K-ok-12345678"}, "bad": {"type": "nope"}},
    )
    guard.secret("K-ok-12345678")
    store = open_auth_store(tmp_path)
    assert store.get("ok:default") is not None
    assert [(p.kind, p.subject) for p in store.problems] == [("legacy", "bad:default")]
    assert (tmp_path / "auth.json").exists()


# -- refs --------------------------------------------------------------------------------


def test_refs_resolve_at_use_time(
    auth_place: AuthPlace, guard: SecretGuard, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard.secret("S-env-first-1", "S-env-second-2", "S-file-3333", "S-plain-44444")
    store = auth_place.open()
    base = Path(store.agent_dir)  # a directory, or the local state_dir of a URL
    store.add("a:env", {"type": "api_key", "provider": "a", "keyRef": "env:FLATSTATE_T_KEY"})
    store.add("a:file", {"type": "token", "provider": "a", "tokenRef": "file:secrets/a.txt"})
    store.add(
        "a:obj",
        {"type": "api_key", "provider": "a", "keyRef": {"source": "env", "id": "FLATSTATE_T_KEY"}},
    )
    monkeypatch.setenv("FLATSTATE_T_KEY", "S-env-first-1")
    assert store.resolve_secret("a:env") == "S-env-first-1"
    monkeypatch.setenv("FLATSTATE_T_KEY", "S-env-second-2")
    assert store.resolve_secret("a:env") == "S-env-second-2"
    assert store.resolve_secret("a:obj") == "S-env-second-2"
    (base / "secrets").mkdir(parents=True)
    (base / "secrets" / "a.txt").write_text("S-file-3333\n")
    assert store.resolve_secret("a:file") == "S-file-3333"
    guard.watch(store.get("a:env"), store.get("a:file"), store.status())
    monkeypatch.delenv("FLATSTATE_T_KEY")
    err = catch(guard, SecretUnavailable, store.resolve_secret, "a:env")
    assert "FLATSTATE_T_KEY" in str(err)
    (base / "secrets" / "a.txt").unlink()
    catch(guard, SecretUnavailable, store.resolve_secret, "a:file")
    catch(guard, SecretUnavailable, store.resolve_secret, "no:such")


def test_plaintext_is_dropped_on_save_when_a_ref_exists(
    auth_place: AuthPlace, guard: SecretGuard
) -> None:
    guard.secret("S-plain-44444", "S-plain-token-5555")
    auth_place.seed(
        {
            "version": 1,
            "profiles": {
                "a:k": {
                    "type": "api_key",
                    "provider": "a",
                    "key": "S-plain-44444",
                    "keyRef": "env:K",
                },
                "a:t": {
                    "type": "token",
                    "provider": "a",
                    "token": "S-plain-token-5555",
                    "tokenRef": "env:T",
                },
            },
        },
    )
    store = auth_place.open()
    store.mark_success("a:k", now=1)
    text = json.dumps(auth_place.stored())
    assert "S-plain-44444" not in text and "S-plain-token-5555" not in text
    assert auth_place.stored()["profiles"]["a:k"]["keyRef"] == "env:K"


def test_add_checks_the_credential(auth_place: AuthPlace, guard: SecretGuard) -> None:
    store = auth_place.open()
    catch(guard, InvalidProfile, store.add, "x:y", {"type": "api_key", "provider": "x"})
    catch(guard, InvalidProfile, store.add, "x:y", {"type": "magic", "provider": "x", "key": "k"})
    catch(guard, InvalidProfile, store.add, "x:y", {"type": "api_key", "key": "k"})
    catch(
        guard,
        InvalidProfile,
        store.add,
        "x:y",
        {"type": "api_key", "provider": "x", "keyRef": "vault:z"},
    )
    catch(
        guard, InvalidProfile, store.add, " x:y", {"type": "token", "provider": "x", "token": "t"}
    )
    if auth_place.postgres:
        assert auth_place.stored()["profiles"] == {}
    else:
        assert not (Path(store.agent_dir) / "auth-profiles.json").exists()


# -- security ----------------------------------------------------------------------------


def test_wide_permissions_are_reported_and_fixed(agent_dir: Path, guard: SecretGuard) -> None:
    path = agent_dir / "auth-profiles.json"
    path.chmod(0o644)
    agent_dir.chmod(0o755)
    store = open_auth_store(agent_dir)
    assert [(p.kind, p.subject) for p in store.problems] == [
        ("permissions", str(agent_dir)),
        ("permissions", str(path)),
    ]
    assert _mode(path) == 0o600 and _mode(agent_dir) == 0o700
    assert open_auth_store(agent_dir).problems == ()


def test_new_files_are_private(tmp_path: Path, guard: SecretGuard) -> None:
    agent = tmp_path / "new" / "agent"
    store = open_auth_store(agent)
    assert not agent.exists()  # opening creates nothing
    store.add("x:y", {"type": "token", "provider": "x", "token": "T-new-file-1234"})
    guard.secret("T-new-file-1234")
    assert _mode(agent) == 0o700 and _mode(agent / "auth-profiles.json") == 0o600
    assert not [n for n in os.listdir(agent) if n.endswith((".lock", ".tmp"))]


def test_a_symlinked_auth_file_is_refused_unless_allowed(
    agent_dir: Path, tmp_path: Path, guard: SecretGuard
) -> None:
    real = tmp_path / "elsewhere.json"
    (agent_dir / "auth-profiles.json").rename(real)
    (agent_dir / "auth-profiles.json").symlink_to(real)
    err = catch(guard, UnsafePath, open_auth_store, agent_dir)
    assert "allow_symlink" in str(err)
    store = open_auth_store(agent_dir, allow_symlink=True)
    assert store.get(OAUTH_ID) is not None
    store.mark_failure("openai:default", "timeout", now=1)
    assert (agent_dir / "auth-profiles.json").is_symlink()  # written through, link kept
    assert read_json(real)["usageStats"]["openai:default"]["errorCount"] == 1


def test_a_file_replaced_by_a_symlink_later_is_refused(
    agent_dir: Path, tmp_path: Path, guard: SecretGuard
) -> None:
    store = open_auth_store(agent_dir, check_interval=0)
    real = tmp_path / "elsewhere.json"
    (agent_dir / "auth-profiles.json").rename(real)
    (agent_dir / "auth-profiles.json").symlink_to(real)
    catch(guard, UnsafePath, store.get, OAUTH_ID)
    catch(guard, UnsafePath, store.mark_success, OAUTH_ID)


# -- read-only ---------------------------------------------------------------------------


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_readonly_suppresses_every_write(
    agent_dir: Path, guard: SecretGuard, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "environment":
        monkeypatch.setenv("FLATSTATE_AUTH_READONLY", "1")
    (agent_dir / "auth-profiles.json").chmod(0o644)
    write_json(agent_dir / "auth.json", {"legacy": {"type": "api_key", "key": "K-ro-legacy-1"}})
    guard.secret("K-ro-legacy-1", "T-ro-added-12345", "A-ro-new-12345", "R-ro-new-12345")
    (agent_dir / "auth.json").chmod(0o644)
    before = _files(agent_dir)
    store = open_auth_store(agent_dir, readonly=how == "argument")
    assert store.readonly
    assert {p.kind for p in store.problems} == {"permissions"}
    assert "not fixed" in store.problems[0].message
    # Every kind of write returns normally and changes only this process's view.
    store.mark_failure("openai:default", "rate_limit", now=1000)
    store.mark_success("anthropic:default", now=1000)
    store.add("x:ro", {"type": "token", "provider": "x", "token": "T-ro-added-12345"})
    store.set_order("anthropic", [OAUTH_ID])
    store.remove("x:ro")
    refreshed = store.refresh_oauth(
        OAUTH_ID, lambda p: {"access": "A-ro-new-12345", "refresh": "R-ro-new-12345"}, force=True
    )
    assert refreshed.refresh == "R-ro-new-12345"
    assert store.usage("openai:default").error_count == 1  # type: ignore[union-attr]
    assert store.get("legacy:default") is not None  # migrated in memory only
    assert store.suppressed_writes == 7
    assert _files(agent_dir) == before  # not a byte written, no lock or temp file left
    assert stat.S_IMODE((agent_dir / "auth-profiles.json").stat().st_mode) == 0o644
    # Disk is the truth: when the file changes, the in-memory changes give way to it.
    doc = read_json(agent_dir / "auth-profiles.json")
    doc["profiles"]["openai:default"]["email"] = "changed@example.com"
    write_json(agent_dir / "auth-profiles.json", doc)
    store.reload()
    assert store.get("openai:default").email == "changed@example.com"  # type: ignore[union-attr]
    assert store.usage("openai:default") is None


def test_concurrent_writers_lose_no_update(
    auth_place: AuthPlace, openclaw_dir: Path, guard: SecretGuard
) -> None:
    auth_place.seed_fixture(openclaw_dir)
    stores = [auth_place.open(check_interval=3600) for _ in range(4)]
    start = threading.Barrier(len(stores))

    def work(store: Any) -> None:
        start.wait(10)
        for _ in range(10):
            store.mark_failure("openai:default", "timeout", now=1000)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stats = auth_place.stored()["usageStats"]["openai:default"]
    assert stats["errorCount"] == 40 and stats["failureCounts"] == {"timeout": 40}
