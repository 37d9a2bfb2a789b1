"""FlatstateSessionService against Google ADK's own session contract, models and Runner.

The contract tests state, in our words, each behaviour ADK's shared session-service suite
holds its backends to (tests/unittests/sessions/ in google/adk-python); the differential test
runs the same random operations against ADK's InMemorySessionService and ours.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import check_docstring_examples, postgres_location, require_extra
from tests.processes import RUN_TIMEOUT, START_TIMEOUT, join_all, running, wait_for_content

require_extra("google.adk", "adk")

from google.adk.agents import LlmAgent  # noqa: E402
from google.adk.cli.service_registry import get_service_registry  # noqa: E402
from google.adk.errors import StaleSessionError  # noqa: E402
from google.adk.errors.already_exists_error import AlreadyExistsError  # noqa: E402
from google.adk.errors.session_not_found_error import SessionNotFoundError  # noqa: E402
from google.adk.events.event import Event  # noqa: E402
from google.adk.events.event_actions import EventActions  # noqa: E402
from google.adk.models.base_llm import BaseLlm  # noqa: E402
from google.adk.models.llm_request import LlmRequest  # noqa: E402
from google.adk.models.llm_response import LlmResponse  # noqa: E402
from google.adk.runners import Runner  # noqa: E402
from google.adk.sessions.base_session_service import GetSessionConfig  # noqa: E402
from google.adk.sessions.in_memory_session_service import InMemorySessionService  # noqa: E402
from google.adk.sessions.session import Session  # noqa: E402
from google.genai import types  # noqa: E402

import flatstate  # noqa: E402
from flatstate.errors import InvalidLocation  # noqa: E402
from flatstate.integrations.adk import (  # noqa: E402
    EVENT_TYPE,
    FlatstateSessionService,
    location_from_uri,
)

APP = "my_app"


def run(body: Callable[[FlatstateSessionService], Awaitable[Any]], location: Path | str) -> Any:
    """Run ``body`` with a service on ``location``, closed afterwards."""

    async def main() -> Any:
        async with FlatstateSessionService(location) as service:
            return await body(service)

    return asyncio.run(main())


def text_event(text: str, **fields: Any) -> Event:
    author = fields.pop("author", "user")
    return Event(
        author=author,
        content=types.Content(role="user", parts=[types.Part(text=text)]),
        **fields,
    )


def delta_event(delta: dict[str, Any], **fields: Any) -> Event:
    author = fields.pop("author", "user")
    return Event(author=author, actions=EventActions(state_delta=delta), **fields)


# -- the contract: creating, reading, deleting --------------------------------------------
def test_an_unknown_session_reads_as_none(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        assert await service.get_session(app_name=APP, user_id="u", session_id="nope") is None

    run(body, tmp_path)


def test_a_negative_num_recent_events_set_after_the_config_is_built_is_refused(
    tmp_path: Path,
) -> None:
    """GetSessionConfig checks the field when it is built, not when it is set; such a config
    made the read loop forever on a worker thread (and the process never exit)."""

    async def body(service: FlatstateSessionService) -> None:
        made = await service.create_session(app_name=APP, user_id="u")
        config = GetSessionConfig()
        config.num_recent_events = -1
        with pytest.raises(ValueError, match="num_recent_events"):
            await service.get_session(app_name=APP, user_id="u", session_id=made.id, config=config)

    run(body, tmp_path)


def test_a_created_session_reads_back_equal_and_is_gone_after_delete(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        created = await service.create_session(app_name=APP, user_id="u", state={"k": "v"})
        assert created.id and created.state == {"k": "v"} and created.events == []
        assert created.last_update_time <= time.time()
        got = await service.get_session(app_name=APP, user_id="u", session_id=created.id)
        assert got == created
        await service.delete_session(app_name=APP, user_id="u", session_id=created.id)
        assert await service.get_session(app_name=APP, user_id="u", session_id=created.id) is None
        # Deleting again, or deleting what never was, does nothing.
        await service.delete_session(app_name=APP, user_id="u", session_id=created.id)

    run(body, tmp_path)


def test_a_taken_id_is_refused_and_the_first_session_kept(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        await service.create_session(app_name=APP, user_id="u", session_id="s", state={"n": 1})
        with pytest.raises(AlreadyExistsError):
            await service.create_session(app_name=APP, user_id="u", session_id="s")
        with pytest.raises(AlreadyExistsError):  # padding does not make it another id
            await service.create_session(app_name=APP, user_id="u", session_id=" s\n")
        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None and got.state == {"n": 1}

    run(body, tmp_path)


def test_padded_ids_reach_the_trimmed_session_and_blank_ids_get_generated(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        created = await service.create_session(
            app_name=APP, user_id="u", session_id="order-42\n", state={"cart": "book"}
        )
        assert created.id == "order-42"
        got = await service.get_session(app_name=APP, user_id="u", session_id="  order-42 ")
        assert got is not None and got.id == "order-42" and got.state == {"cart": "book"}
        await service.delete_session(app_name=APP, user_id="u", session_id="order-42\t")
        assert await service.get_session(app_name=APP, user_id="u", session_id="order-42") is None
        blank = await service.create_session(app_name=APP, user_id="u", session_id="   ")
        assert blank.id.strip() and blank.id == blank.id.strip()

    run(body, tmp_path)


def test_ids_differing_only_in_case_or_separators_are_different_sessions(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        names = ["Ada", "ada", "a:da", "a~3ada", "ád a", ""]
        for index, name in enumerate(names):
            await service.create_session(
                app_name=name, user_id=name, session_id=name or "x", state={"i": index}
            )
        for index, name in enumerate(names):
            got = await service.get_session(app_name=name, user_id=name, session_id=name or "x")
            assert got is not None and got.state == {"i": index}
            assert (got.app_name, got.user_id) == (name, name)
            listed = await service.list_sessions(app_name=name)
            assert [s.state for s in listed.sessions] == [{"i": index}]

    run(body, tmp_path)


def test_a_session_belongs_to_its_user(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        first = await service.create_session(app_name=APP, user_id="u1", session_id="s1")
        await service.append_event(first, Event(author="user"))
        await service.create_session(app_name=APP, user_id="u2", session_id="s1")
        other = await service.get_session(app_name=APP, user_id="u2", session_id="s1")
        assert other is not None and other.user_id == "u2" and other.events == []

    run(body, tmp_path)


# -- listing ------------------------------------------------------------------------------
def test_listing_gives_state_without_events_for_one_user_or_all(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        for user, sid in [("u1", "a"), ("u1", "b"), ("u2", "c")]:
            session = await service.create_session(
                app_name=APP, user_id=user, session_id=sid, state={"key": sid}
            )
            await service.append_event(session, text_event("hello"))
        await service.create_session(app_name="other_app", user_id="u1", session_id="z")
        one = await service.list_sessions(app_name=APP, user_id="u1")
        assert {s.id: s.state for s in one.sessions} == {"a": {"key": "a"}, "b": {"key": "b"}}
        every = await service.list_sessions(app_name=APP)
        assert sorted(s.id for s in every.sessions) == ["a", "b", "c"]
        assert all(s.events == [] for s in every.sessions)
        assert (await service.list_sessions(app_name=APP, user_id="nobody")).sessions == []

    run(body, tmp_path)


def test_listing_puts_the_least_recently_updated_first(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        for sid in "abc":
            await service.create_session(app_name=APP, user_id="u", session_id=sid)
        a = await service.get_session(app_name=APP, user_id="u", session_id="a")
        assert a is not None
        await service.append_event(a, Event(author="user", timestamp=time.time() + 5))
        listed = await service.list_sessions(app_name=APP, user_id="u")
        assert [s.id for s in listed.sessions] == ["b", "c", "a"]

    run(body, tmp_path)


def test_pages_come_in_the_listing_order_and_end_with_no_token(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        for index in range(7):
            user = f"u{index % 2}"
            session = await service.create_session(
                app_name=APP, user_id=user, session_id=f"s{index}"
            )
            await service.append_event(session, Event(author="user", timestamp=1000.0 - index))
        whole = [s.id for s in (await service.list_sessions(app_name=APP)).sessions]
        assert whole == [f"s{i}" for i in reversed(range(7))]
        paged: list[str] = []
        token = None
        for _ in range(10):
            page = await service.list_sessions(app_name=APP, page_size=3, page_token=token)
            assert len(page.sessions) <= 3
            paged += [s.id for s in page.sessions]
            token = page.next_page_token
            if token is None:
                break
        assert paged == whole
        with pytest.raises(ValueError, match="page_size"):
            await service.list_sessions(app_name=APP, page_size=0)
        with pytest.raises(ValueError, match="page_token"):
            await service.list_sessions(app_name=APP, page_size=2, page_token="garbage!")

    run(body, tmp_path)


# -- state scopes -------------------------------------------------------------------------
def test_app_state_is_shared_by_every_user_of_the_app_only(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        first = await service.create_session(
            app_name=APP, user_id="u1", session_id="s1", state={"app:k1": "v1"}
        )
        await service.append_event(first, delta_event({"app:k2": "v2"}))
        second = await service.create_session(app_name=APP, user_id="u2", session_id="s2")
        assert second.state == {"app:k1": "v1", "app:k2": "v2"}
        again = await service.get_session(app_name=APP, user_id="u1", session_id="s1")
        assert again is not None and again.state == {"app:k1": "v1", "app:k2": "v2"}
        elsewhere = await service.create_session(app_name="other", user_id="u1")
        assert elsewhere.state == {}

    run(body, tmp_path)


def test_user_state_is_shared_by_one_users_sessions_only(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        first = await service.create_session(
            app_name=APP, user_id="u1", session_id="s1", state={"user:k1": "v1"}
        )
        await service.append_event(first, delta_event({"user:k2": "v2"}))
        sibling = await service.create_session(app_name=APP, user_id="u1", session_id="s1b")
        assert sibling.state == {"user:k1": "v1", "user:k2": "v2"}
        stranger = await service.create_session(app_name=APP, user_id="u2", session_id="s2")
        assert stranger.state == {}
        assert await service.get_user_state(app_name=APP, user_id="u1") == {
            "k1": "v1",
            "k2": "v2",
        }
        assert await service.get_user_state(app_name=APP, user_id="u2") == {}

    run(body, tmp_path)


def test_session_state_stays_in_its_session(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        first = await service.create_session(
            app_name=APP, user_id="u1", session_id="s1", state={"sk1": "v1"}
        )
        await service.append_event(first, delta_event({"sk2": "v2"}))
        again = await service.get_session(app_name=APP, user_id="u1", session_id="s1")
        assert again is not None and again.state == {"sk1": "v1", "sk2": "v2"}
        sibling = await service.create_session(app_name=APP, user_id="u1", session_id="s1b")
        assert sibling.state == {}

    run(body, tmp_path)


def test_temp_state_lives_in_the_callers_session_only(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(
            app_name=APP, user_id="u", session_id="s", state={"temp:seed": 1}
        )
        assert session.state == {}
        event = delta_event({"temp:k1": "v1", "sk": "v2"})
        await service.append_event(session, event)
        # The next agent of the same invocation reads it from the session it holds ...
        assert session.state["temp:k1"] == "v1"
        # ... but neither the event nor the store keeps it.
        assert "temp:k1" not in event.actions.state_delta
        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None and got.state == {"sk": "v2"}
        assert got.events[0].actions.state_delta == {"sk": "v2"}
        tail = service.store.sync.transcript("adk:s:my_app:u:s", create=False).tail(5)
        assert tail and all("temp:" not in str(record) for record in tail)

    run(body, tmp_path)


def test_delta_values_replace_and_none_and_false_are_kept(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(
            app_name=APP,
            user_id="u",
            session_id="s",
            state={"profile": {"name": "ada", "role": "admin"}, "flag": True, "off": False},
        )
        await service.append_event(
            session,
            delta_event(
                {"profile": {"name": "bob"}, "flag": None, "app:cfg": {"a": 1}, "user:p": None}
            ),
        )
        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None
        assert got.state == {
            "profile": {"name": "bob"},
            "flag": None,
            "off": False,
            "app:cfg": {"a": 1},
            "user:p": None,
        }
        assert got.state == session.state

    run(body, tmp_path)


def test_a_value_json_cannot_hold_is_stored_as_its_text(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        await service.append_event(session, delta_event({"callback": lambda: 1, "ok": 2}))
        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None and len(got.events) == 1
        assert got.state["ok"] == 2 and isinstance(got.state["callback"], str)

    run(body, tmp_path)


# -- events -------------------------------------------------------------------------------
def test_last_update_time_is_the_appended_events_timestamp_exactly(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        created = session.last_update_time
        stamp = created + 10.123456789012345
        await service.append_event(session, Event(author="user", timestamp=stamp))
        assert session.last_update_time == stamp
        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None and got.last_update_time == stamp > created
        assert got.events[0].timestamp == stamp

    run(body, tmp_path)


def test_events_read_back_equal_to_what_was_appended(tmp_path: Path) -> None:
    from google.adk.tools.tool_confirmation import ToolConfirmation

    full = Event(
        invocation_id="invocation",
        author="agent",
        content=types.Content(
            role="model",
            parts=[
                types.Part(text="some text"),
                types.Part.from_bytes(data=b"\x00\xffimage", mime_type="image/png"),
            ],
        ),
        turn_complete=True,
        actions=EventActions(
            artifact_delta={"file": 0},
            transfer_to_agent="agent",
            escalate=True,
            requested_tool_confirmations={
                "call": ToolConfirmation(hint="sure?", confirmed=False, payload={"id": "a1"})
            },
        ),
        long_running_tool_ids={"tool1"},
        error_code="error_code",
        error_message="error_message",
        interrupted=True,
        grounding_metadata=types.GroundingMetadata(
            web_search_queries=["query1"],
            search_entry_point=types.SearchEntryPoint(sdk_blob=b"blob"),
        ),
        usage_metadata=types.GenerateContentResponseUsageMetadata(
            prompt_token_count=1, candidates_token_count=1, total_token_count=2
        ),
        citation_metadata=types.CitationMetadata(),
        custom_metadata={"custom_key": ["custom", 1.5]},
        timestamp=1_700_000_000.123,
        input_transcription=types.Transcription(text="in", finished=True),
        output_transcription=types.Transcription(text="out", finished=True),
    )

    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        await service.append_event(session, copy.deepcopy(full))
        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got == session
        assert got is not None and got.events == [full]
        confirmation = got.events[0].actions.requested_tool_confirmations["call"]
        assert isinstance(confirmation, ToolConfirmation) and confirmation.payload == {"id": "a1"}

    run(body, tmp_path)


def test_events_are_stored_as_adk_dumps_them_in_the_sessions_transcript(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        event = text_event("hi")
        await service.append_event(session, event)
        [line] = service.store.sync.transcript("adk:s:my_app:u:s", create=False).tail(10)
        assert line["type"] == EVENT_TYPE
        assert Event.model_validate(flatstate.frozen.thaw(line["event"])) == event

    run(body, tmp_path)


def test_partial_events_are_neither_stored_nor_added(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        await service.append_event(session, Event(author="user", partial=True))
        assert session.events == []
        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None and got.events == []

    run(body, tmp_path)


def test_get_session_config_narrows_the_events(tmp_path: Path) -> None:
    base = float(int(time.time()))

    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        for index in range(1, 6):
            await service.append_event(session, Event(author="user", timestamp=base + index))

        async def stamps(**config: Any) -> list[float]:
            got = await service.get_session(
                app_name=APP, user_id="u", session_id="s", config=GetSessionConfig(**config)
            )
            assert got is not None and got.state == {} and got.last_update_time == base + 5
            return [event.timestamp - base for event in got.events]

        assert await stamps() == [1, 2, 3, 4, 5]
        assert await stamps(num_recent_events=0) == []
        assert await stamps(num_recent_events=3) == [3, 4, 5]
        assert await stamps(num_recent_events=99) == [1, 2, 3, 4, 5]
        assert await stamps(after_timestamp=base + 4) == [4, 5]
        assert await stamps(after_timestamp=base + 50) == []
        assert await stamps(after_timestamp=base + 4, num_recent_events=3) == [4, 5]
        assert await stamps(after_timestamp=base, num_recent_events=2) == [4, 5]

    run(body, tmp_path)


def test_after_timestamp_reads_back_past_a_long_history(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        for index in range(200):
            await service.append_event(session, Event(author="user", timestamp=1000.0 + index))
        got = await service.get_session(
            app_name=APP,
            user_id="u",
            session_id="s",
            config=GetSessionConfig(after_timestamp=1000.0 + 30),
        )
        assert got is not None and [e.timestamp for e in got.events] == [
            1000.0 + i for i in range(30, 200)
        ]

    run(body, tmp_path)


# -- unknown and stale sessions -----------------------------------------------------------
def test_appending_to_an_unknown_or_deleted_session_raises(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        ghost = Session(id="ghost", app_name=APP, user_id="u")
        with pytest.raises(SessionNotFoundError):
            await service.append_event(ghost, Event(author="user"))
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        await service.delete_session(app_name=APP, user_id="u", session_id="s")
        with pytest.raises(ValueError):  # SessionNotFoundError is a ValueError
            await service.append_event(session, Event(author="user"))
        assert await service.get_session(app_name=APP, user_id="u", session_id="s") is None

    run(body, tmp_path)


def test_appending_through_a_stale_session_is_refused(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        now = time.time()
        original = await service.create_session(app_name=APP, user_id="u", session_id="s")
        await service.append_event(original, delta_event({"sk1": "v1"}, timestamp=now + 1))
        updated = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert updated is not None
        await service.append_event(updated, delta_event({"sk2": "v2"}, timestamp=now + 2))
        with pytest.raises(StaleSessionError, match="modified in storage"):
            await service.append_event(original, delta_event({"sk3": "v3"}, timestamp=now + 3))
        # A deep copy is as stale as the object it copies.
        copied = updated.model_copy(deep=True)
        await service.append_event(updated, Event(author="user", timestamp=now + 4))
        with pytest.raises(StaleSessionError):
            await service.append_event(copied, Event(author="user", timestamp=now + 5))
        final = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert final is not None and len(final.events) == 3
        assert final.state == {"sk1": "v1", "sk2": "v2"}

    run(body, tmp_path)


def test_a_session_built_by_hand_is_checked_by_its_update_time(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        stored = await service.create_session(app_name=APP, user_id="u", session_id="s")
        await service.append_event(
            stored, Event(author="user", timestamp=stored.last_update_time + 5)
        )
        behind = Session(id="s", app_name=APP, user_id="u", last_update_time=1.0)
        with pytest.raises(StaleSessionError):
            await service.append_event(behind, Event(author="user"))
        level = Session(id="s", app_name=APP, user_id="u", last_update_time=stored.last_update_time)
        await service.append_event(
            level, Event(author="user", timestamp=stored.last_update_time + 6)
        )

    run(body, tmp_path)


def test_of_two_appends_through_one_revision_exactly_one_wins(tmp_path: Path) -> None:
    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        for round_ in range(8):
            latest = await service.get_session(app_name=APP, user_id="u", session_id="s")
            assert latest is not None
            copies = [latest.model_copy(deep=True) for _ in range(2)]
            results = await asyncio.gather(
                *(
                    service.append_event(c, delta_event({f"r{round_}": n}))
                    for n, c in enumerate(copies)
                ),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            assert len(errors) == 1 and isinstance(errors[0], StaleSessionError)
        final = await service.get_session(app_name=APP, user_id="u", session_id=session.id)
        assert final is not None and len(final.events) == 8
        assert sorted(final.state) == [f"r{i}" for i in range(8)]

    run(body, tmp_path)


# -- the log: an event written but not applied (a crash between the two) -------------------
def test_an_event_written_but_not_applied_is_replayed_by_reads_and_applied_by_the_next_append(
    tmp_path: Path,
) -> None:
    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(app_name=APP, user_id="u", session_id="s")
        await service.append_event(session, delta_event({"n": 1}, timestamp=1000.0))
        # What a kill -9 between the transcript append and the state update leaves behind.
        orphan = delta_event({"n": 2, "app:seen": True}, timestamp=1001.0)
        transcript = service.store.sync.transcript("adk:s:my_app:u:s", create=False)
        transcript.append({"type": EVENT_TYPE, "event": orphan.model_dump(mode="json")})
        stored = service.store.sync.get("adk:s:my_app:u:s")
        assert stored is not None and stored["adk"]["revision"] == 1

        got = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert got is not None
        assert got.state == {"n": 2, "app:seen": True} and got.last_update_time == 1001.0
        assert [e.timestamp for e in got.events] == [1000.0, 1001.0]
        assert service.store.sync.get("adk:s:my_app:u:s") == stored  # the read wrote nothing
        # The old object is stale (the stored session moved on); the fresh one appends,
        # and the orphan's delta is applied for good, once.
        with pytest.raises(StaleSessionError):
            await service.append_event(session, Event(author="user", timestamp=1002.0))
        await service.append_event(got, delta_event({"m": 3}, timestamp=1003.0))
        final = service.store.sync.get("adk:s:my_app:u:s")
        assert final is not None and final["adk"]["revision"] == 3
        assert dict(final["adk"]["state"]) == {"n": 2, "m": 3}
        again = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert again is not None and again.state == {"n": 2, "m": 3, "app:seen": True}
        assert [e.timestamp for e in again.events] == [1000.0, 1001.0, 1003.0]

    run(body, tmp_path)


# -- differential: ADK's InMemorySessionService and ours, the same random operations ------
USERS = ["u1", "U1", "u2"]
SIDS = ["s1", " s1", "s2", "S2"]
STATE_KEYS = ["a", "b", "app:a", "app:b", "user:a", "user:b", "temp:a"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
states = st.dictionaries(st.sampled_from(STATE_KEYS), json_values, max_size=4)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(USERS), st.sampled_from(SIDS), states),
        st.tuples(st.just("append"), st.sampled_from(USERS), st.sampled_from(SIDS), states),
        st.tuples(
            st.just("get"),
            st.sampled_from(USERS),
            st.sampled_from(SIDS),
            st.none() | st.integers(0, 4),
            st.none() | st.integers(0, 12),
        ),
        st.tuples(st.just("list"), st.sampled_from([None, *USERS])),
        st.tuples(st.just("delete"), st.sampled_from(USERS), st.sampled_from(SIDS)),
        st.tuples(st.just("user_state"), st.sampled_from(USERS)),
    ),
    max_size=24,
)


def shape(session: Session | None, base: float) -> Any:
    """A session as both services must agree on it (a creation time is each one's own)."""
    if session is None:
        return None
    when = session.last_update_time
    return (
        session.id,
        session.app_name,
        session.user_id,
        session.state,
        [event.model_dump(mode="json") for event in session.events],
        when if when >= base else "created",
    )


async def replay(service: Any, ops: list[tuple[Any, ...]], base: float) -> list[Any]:
    """Run ``ops`` on ``service``; what each one returned or raised."""
    held: dict[tuple[str, str], Session] = {}  # the latest object of each session
    seen: list[Any] = []
    for number, op in enumerate(ops):
        kind = op[0]
        try:
            if kind == "create":
                _, user, sid, state = op
                made = await service.create_session(
                    app_name=APP, user_id=user, session_id=sid, state=copy.deepcopy(state)
                )
                held[user, sid.strip()] = made
                seen.append(shape(made, base))
            elif kind == "append":
                _, user, sid, delta = op
                session = held.get((user, sid.strip())) or Session(
                    id=sid.strip(), app_name=APP, user_id=user
                )
                event = Event(
                    author="user",
                    invocation_id=f"inv{number}",
                    id=f"e{number}",
                    timestamp=base + number,
                    content=types.Content(role="user", parts=[types.Part(text=f"t{number}")]),
                    actions=EventActions(state_delta=copy.deepcopy(delta)),
                )
                await service.append_event(session, event)
                seen.append(shape(session, base))
            elif kind == "get":
                _, user, sid, recent, after = op
                config = GetSessionConfig(
                    num_recent_events=recent,
                    after_timestamp=None if after is None else base + after,
                )
                got = await service.get_session(
                    app_name=APP, user_id=user, session_id=sid, config=config
                )
                if got is not None:
                    held[user, sid.strip()] = got
                seen.append(shape(got, base))
            elif kind == "list":
                listed = await service.list_sessions(app_name=APP, user_id=op[1])
                seen.append([shape(s, base) for s in listed.sessions])
            elif kind == "delete":
                _, user, sid = op
                await service.delete_session(app_name=APP, user_id=user, session_id=sid)
                seen.append("deleted")
            else:
                seen.append(await service.get_user_state(app_name=APP, user_id=op[1]))
        except Exception as exc:  # both must raise the same kind of error
            seen.append(type(exc).__name__)
    return seen


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
def test_the_same_operations_give_what_adks_in_memory_service_gives(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[Any, ...]]
) -> None:
    base = time.time() + 10_000_000  # every event after every creation

    async def both() -> tuple[list[Any], list[Any]]:
        expected = await replay(InMemorySessionService(), ops, base)
        async with FlatstateSessionService(tmp_path_factory.mktemp("diff")) as ours:
            actual = await replay(ours, ops, base)
        return expected, actual

    expected, actual = asyncio.run(both())
    assert actual == expected


# -- a Runner, end to end, with a scripted model ------------------------------------------
class ScriptedLlm(BaseLlm):
    """Answers each request with the next scripted line and records what it was shown."""

    script: list[str]
    seen: list[list[str]]

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncIterator[LlmResponse]:
        shown = [
            part.text
            for content in llm_request.contents
            for part in (content.parts or [])
            if part.text
        ]
        self.seen.append(shown)
        reply = self.script[len(self.seen) - 1]
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=reply)]))


def test_a_runner_holds_a_conversation_through_the_service(tmp_path: Path) -> None:
    model = ScriptedLlm(model="scripted", script=["hello, Ada", "you said: hi", "bye"], seen=[])
    agent = LlmAgent(name="assistant", model=model, instruction="Be brief.", output_key="last")

    async def turns(service: FlatstateSessionService, lines: list[str]) -> list[str]:
        runner = Runner(app_name=APP, agent=agent, session_service=service)
        replies = []
        for line in lines:
            async for event in runner.run_async(
                user_id="ada",
                session_id="chat",
                new_message=types.Content(role="user", parts=[types.Part(text=line)]),
            ):
                if event.content and event.content.parts and event.author == "assistant":
                    replies += [p.text for p in event.content.parts if p.text]
        return replies

    async def first(service: FlatstateSessionService) -> list[str]:
        await service.create_session(app_name=APP, user_id="ada", session_id="chat")
        return await turns(service, ["my name is Ada", "hi"])

    assert run(first, tmp_path) == ["hello, Ada", "you said: hi"]
    assert model.seen[1] == ["my name is Ada", "hello, Ada", "hi"]

    # A reopened store (as another process would see it) continues the conversation.
    async def second(service: FlatstateSessionService) -> Session | None:
        assert await turns(service, ["bye?"]) == ["bye"]
        return await service.get_session(app_name=APP, user_id="ada", session_id="chat")

    session = run(second, tmp_path)
    assert model.seen[2] == ["my name is Ada", "hello, Ada", "hi", "you said: hi", "bye?"]
    assert session is not None and session.state == {"last": "bye"}
    texts = [p.text for e in session.events for p in (e.content.parts if e.content else [])]
    assert texts == ["my name is Ada", "hello, Ada", "hi", "you said: hi", "bye?", "bye"]


# -- concurrency --------------------------------------------------------------------------
def test_64_sessions_take_turns_at_once(tmp_path: Path) -> None:
    async def conversation(service: FlatstateSessionService, number: int) -> None:
        sid = f"s{number}"
        await service.create_session(app_name=APP, user_id=f"u{number % 8}", session_id=sid)
        for turn in range(5):
            session = await service.get_session(
                app_name=APP,
                user_id=f"u{number % 8}",
                session_id=sid,
                config=GetSessionConfig(num_recent_events=20),
            )
            assert session is not None and len(session.events) == 2 * turn
            await service.append_event(session, text_event(f"{sid} q{turn}"))
            await service.append_event(
                session, delta_event({"turns": turn + 1, f"user:{sid}": turn}, author="model")
            )

    async def body(service: FlatstateSessionService) -> None:
        await asyncio.gather(*(conversation(service, n) for n in range(64)))
        listed = await service.list_sessions(app_name=APP)
        assert len(listed.sessions) == 64
        for number in range(64):
            got = await service.get_session(
                app_name=APP, user_id=f"u{number % 8}", session_id=f"s{number}"
            )
            assert got is not None and len(got.events) == 10 and got.state["turns"] == 5
            assert sum(1 for key in got.state if key.startswith("user:")) == 8
            texts = [e.content.parts[0].text for e in got.events if e.content and e.content.parts]
            assert texts == [f"s{number} q{t}" for t in range(5)]

    run(body, tmp_path)


ROUNDS = 25


def _append_rounds(location: str, worker: int, ready: str, go: str) -> None:
    """A process's share: ROUNDS appends to the shared session (retrying when the other
    process got in first) and ROUNDS to a session of its own."""

    async def main() -> None:
        async with FlatstateSessionService(location) as service:
            own = await service.create_session(app_name=APP, user_id="u", session_id=f"own{worker}")
            Path(ready).write_text("ready")
            while not os.path.exists(go):
                await asyncio.sleep(0.005)
            for round_ in range(ROUNDS):
                await service.append_event(own, delta_event({"n": round_}))
                while True:
                    shared = await service.get_session(
                        app_name=APP,
                        user_id="u",
                        session_id="shared",
                        config=GetSessionConfig(num_recent_events=1),
                    )
                    assert shared is not None
                    try:
                        await service.append_event(
                            shared, delta_event({f"w{worker}": round_, "app:last": worker})
                        )
                        break
                    except StaleSessionError:
                        continue

    asyncio.run(main())


@pytest.mark.slow
def test_two_processes_append_to_one_store_and_lose_nothing(tmp_path: Path) -> None:
    location = str(tmp_path / "state")

    async def setup(service: FlatstateSessionService) -> None:
        await service.create_session(app_name=APP, user_id="u", session_id="shared")

    run(setup, location)
    ready = [str(tmp_path / f"ready{w}") for w in range(2)]
    go = str(tmp_path / "go")
    with running(_append_rounds, [(location, w, ready[w], go) for w in range(2)]) as procs:
        for path in ready:
            wait_for_content(path, START_TIMEOUT)
        Path(go).write_text("go")
        assert join_all(procs, RUN_TIMEOUT) == [0, 0]

    async def check(service: FlatstateSessionService) -> None:
        shared = await service.get_session(app_name=APP, user_id="u", session_id="shared")
        assert shared is not None and len(shared.events) == 2 * ROUNDS
        assert shared.state["w0"] == shared.state["w1"] == ROUNDS - 1
        assert shared.state["app:last"] in (0, 1)
        record = service.store.sync.get("adk:s:my_app:u:shared")
        assert record is not None and record["adk"]["revision"] == 2 * ROUNDS
        for worker in range(2):
            own = await service.get_session(app_name=APP, user_id="u", session_id=f"own{worker}")
            assert own is not None and [e.actions.state_delta["n"] for e in own.events] == list(
                range(ROUNDS)
            )

    run(check, location)


KILL_SCRIPT = """
import asyncio, os, sys
from flatstate.integrations.adk import FlatstateSessionService
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions

async def main():
    service = FlatstateSessionService(sys.argv[1])
    session = await service.create_session(app_name="my_app", user_id="u", session_id="s")
    acks = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    number = 0
    while True:
        event = Event(author="user", id=f"e{number}", actions=EventActions(
            state_delta={"n": number, "pad": "x" * 1024}))
        await service.append_event(session, event)
        os.write(acks, f"e{number}\\n".encode())  # acknowledged: the append returned
        number += 1

asyncio.run(main())
"""


@pytest.mark.slow
def test_kill_9_mid_turn_loses_no_acknowledged_event(tmp_path: Path) -> None:
    location = str(tmp_path / "state")
    acks = tmp_path / "acks"
    child = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, location, str(acks)])
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not acks.exists() or acks.read_text().count("\n") < 40:
            assert time.monotonic() < deadline, "the writer acknowledged too few events"
            assert child.poll() is None, "the writer died on its own"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    acknowledged = acks.read_text().split()

    async def check(service: FlatstateSessionService) -> None:
        session = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert session is not None
        ids = [event.id for event in session.events]
        assert ids[: len(acknowledged)] == acknowledged
        assert len(ids) <= len(acknowledged) + 1  # at most the append it was killed in
        assert session.state["n"] == len(ids) - 1
        await service.append_event(session, Event(author="user", id="after"))
        again = await service.get_session(app_name=APP, user_id="u", session_id="s")
        assert again is not None and [e.id for e in again.events] == [*ids, "after"]
        record = service.store.sync.get("adk:s:my_app:u:s")
        assert record is not None and record["adk"]["revision"] == len(ids) + 1

    run(check, location)


# -- the URI scheme and ADK's service registry ----------------------------------------------
def test_the_flatstate_scheme_resolves_through_adks_registry(tmp_path: Path) -> None:
    uri = f"flatstate://{tmp_path / 'state'}"
    service = get_service_registry().create_session_service(uri, agents_dir=str(tmp_path))
    assert isinstance(service, FlatstateSessionService)
    assert service.store.sync.location.startswith(str(tmp_path / "state"))
    service.close()
    assert location_from_uri("flatstate:///srv/agent%20state") == "/srv/agent state"
    assert location_from_uri("flatstate://localhost/srv/x") == "/srv/x"
    assert location_from_uri("flatstate+postgresql://h/db") == "postgresql://h/db"
    for bad in ["flatstate://relative/path", "flatstate:///x?mode=ro", "flatstate://", "file:///x"]:
        with pytest.raises(InvalidLocation):
            location_from_uri(bad)
    with pytest.raises(InvalidLocation) as caught:
        location_from_uri("flatstate://user:hunter2@host/x")
    assert "hunter2" not in str(caught.value)


def test_adks_cli_builds_the_service_from_session_service_uri(tmp_path: Path) -> None:
    """What ``adk web --session_service_uri flatstate:///...`` does, in a fresh interpreter:
    load the agents directory's services.py, then resolve the URI."""
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "services.py").write_text(
        "import flatstate.integrations.adk  # registers flatstate://\n"
    )
    state = tmp_path / "state"
    script = textwrap.dedent(
        f"""
        import asyncio
        from google.adk.cli.service_registry import load_services_module
        from google.adk.cli.utils.service_factory import create_session_service_from_options
        load_services_module({str(agents)!r})
        service = create_session_service_from_options(
            base_dir={str(agents)!r}, session_service_uri="flatstate://{state}")
        async def main():
            made = await service.create_session(app_name="a", user_id="u", session_id="s")
            await service.close()
            print(type(service).__name__, made.id)
        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["FlatstateSessionService", "s"]
    assert (state / "sessions.sqlite").exists()


# -- lifecycle ----------------------------------------------------------------------------
def test_a_program_that_never_closes_the_service_still_exits(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, threading
        from flatstate.integrations.adk import FlatstateSessionService
        from google.adk.events.event import Event
        service = FlatstateSessionService({str(tmp_path / "state")!r})
        async def main():
            session = await service.create_session(app_name="a", user_id="u")
            await service.append_event(session, Event(author="user"))
        asyncio.run(main())
        print(sorted(t.name for t in threading.enumerate()
                     if not t.daemon and t is not threading.main_thread()))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_shared_store_stays_open_after_the_service_closes(tmp_path: Path) -> None:
    async def body() -> None:
        async with flatstate.open_async_store(tmp_path) as store:
            service = FlatstateSessionService(store)
            await service.create_session(app_name=APP, user_id="u", session_id="s")
            await service.aclose()
            other = FlatstateSessionService(store)
            assert await other.get_session(app_name=APP, user_id="u", session_id="s")
            await other.close()  # awaiting close() works too, as for ADK's own services
            assert await store.count() == 1
            with pytest.raises(TypeError, match="options"):
                FlatstateSessionService(store, synchronous="full")

    asyncio.run(body())


def test_close_closes_an_owned_store_from_sync_code(tmp_path: Path) -> None:
    service = FlatstateSessionService(tmp_path, synchronous="full")
    service.close()
    with pytest.raises(flatstate.errors.StoreClosed):
        asyncio.run(service.list_sessions(app_name=APP))
    service.close()  # twice is fine
    assert threading.active_count() >= 1


# -- PostgreSQL ---------------------------------------------------------------------------
@pytest.mark.postgres
def test_a_postgresql_location_works_end_to_end(tmp_path: Path) -> None:
    location = postgres_location(tmp_path)

    async def body(service: FlatstateSessionService) -> None:
        session = await service.create_session(
            app_name=APP, user_id="u", session_id="s", state={"app:a": 1, "user:b": 2, "c": 3}
        )
        await service.append_event(session, delta_event({"c": 4}, timestamp=5000.5))
        got = await service.get_session(
            app_name=APP, user_id="u", session_id="s", config=GetSessionConfig(num_recent_events=5)
        )
        assert got == session
        listed = await service.list_sessions(app_name=APP, page_size=1)
        assert [s.id for s in listed.sessions] == ["s"] and listed.next_page_token is None
        stale = got.model_copy(deep=True)
        await service.append_event(got, Event(author="user"))
        with pytest.raises(StaleSessionError):
            await service.append_event(stale, Event(author="user"))
        await service.delete_session(app_name=APP, user_id="u", session_id="s")
        assert await service.get_session(app_name=APP, user_id="u", session_id="s") is None

    run(body, location)


def test_the_docstring_example_runs() -> None:
    check_docstring_examples("flatstate.integrations.adk")
