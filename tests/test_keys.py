"""Session keys: the canonical form and the aliases that fold into it."""

from __future__ import annotations

import pytest

from flatstate.errors import InvalidSessionKey
from flatstate.keys import agent_id_of, normalize_agent_id, normalize_key


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("main", "agent:main:main"),
        ("MAIN", "agent:main:main"),
        ("agent:main:main", "agent:main:main"),
        (" Agent:Main:Telegram:Direct:42 ", "agent:main:telegram:direct:42"),
        ("cron:nightly", "agent:main:cron:nightly"),
        ("global", "global"),
        ("agent:coder:subagent:1234", "agent:coder:subagent:1234"),
    ],
)
def test_normalize(raw: str, canonical: str) -> None:
    assert normalize_key(raw) == canonical


def test_bare_keys_belong_to_the_given_agent() -> None:
    assert normalize_key("main", "Ops") == "agent:ops:main"
    assert agent_id_of("agent:ops:main") == "ops" and agent_id_of("global") is None


@pytest.mark.parametrize(
    "raw", ["", " ", "agent:", "agent:x", "agent:x:", "agent:-x:y", "a\x00b", "k" * 513]
)
def test_invalid_keys(raw: str) -> None:
    with pytest.raises(InvalidSessionKey) as info:
        normalize_key(raw)
    assert isinstance(info.value, ValueError) and info.value.problem


def test_a_bare_key_must_fit_once_scoped() -> None:
    # The stored key is agent:main:<key>: a bare key of 512 characters would be written and
    # then never read back (a reopen finds a 523-character key and leaves it out).
    assert len(normalize_key("k" * 501)) == 512
    with pytest.raises(InvalidSessionKey, match="once scoped"):
        normalize_key("k" * 502)
    assert normalize_key("agent:main:" + "k" * 501) == "agent:main:" + "k" * 501


def test_non_string_keys_are_refused() -> None:
    with pytest.raises(InvalidSessionKey, match="string"):
        normalize_key(42)  # type: ignore[arg-type]


def test_agent_ids() -> None:
    assert normalize_agent_id(" Coder ") == "coder"
    with pytest.raises(InvalidSessionKey):
        normalize_agent_id("no spaces")
