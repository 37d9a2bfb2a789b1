"""The one generator of OpenClaw-shaped session stores that every benchmark uses.

Two profiles:

- ``small``: ~10 KiB entries (an 8 KiB skills prompt with 12 skills, a
  systemPromptReport listing 20 tools, routing and token fields); 2000 of them
  make a ~21 MiB sessions.json, the store of the seed issue.
- ``heavy``: what heavy users reported (DESIGN.md): 41 KiB skills prompts,
  about one distinct prompt per 9 entries, and a 5-60 KiB systemPromptReport.

In both, prompts repeat across entries as they do in real stores (158 entries
held 18 distinct prompts in one report). Generation is deterministic for a
given seed.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["PROFILES", "Profile", "make_entry", "make_key", "make_store"]

BASE_TIME_MS = 1_795_000_000_000


@dataclass(frozen=True)
class Profile:
    name: str
    prompt_bytes: int
    entries_per_prompt: int
    report_bytes: tuple[int, int]
    skills: int = 12
    tools: int = 20


PROFILES = {
    "small": Profile("small", prompt_bytes=8 * 1024, entries_per_prompt=9, report_bytes=(0, 0)),
    "heavy": Profile(
        "heavy", prompt_bytes=41 * 1024, entries_per_prompt=9, report_bytes=(5 * 1024, 60 * 1024)
    ),
}

_WORDS = [
    *"agent tool skill workspace memory session channel route token model prompt".split(),
    *"review deploy search summary context policy schedule digest report browser".split(),
    *"file shell python notes calendar email github slack telegram discord".split(),
]


def _text(rng: random.Random, size: int) -> str:
    return " ".join(rng.choices(_WORDS, k=size // 5 + 1))[:size]


def _prompt(profile: Profile, variant: int) -> str:
    rng = random.Random(f"prompt-{profile.name}-{variant}")
    skills = "\n".join(
        f'<skill name="skill-{variant}-{i}">{_text(rng, 160)}</skill>'
        for i in range(profile.skills)
    )
    body = _text(rng, max(0, profile.prompt_bytes - len(skills) - 64))
    return f"<available_skills>\n{skills}\n</available_skills>\n{body}"[: profile.prompt_bytes]


_CHANNELS = ("telegram", "discord", "slack", "whatsapp", "signal")


def make_key(i: int, agent_id: str = "main") -> str:
    """A key of one of the shapes real stores hold: DMs, groups, channels, cron runs, sub-agents."""
    kind = i % 5
    channel = _CHANNELS[i % len(_CHANNELS)]
    if kind == 0:
        return f"agent:{agent_id}:{channel}:direct:user{i}"
    if kind == 1:
        return f"agent:{agent_id}:{channel}:group:g{i}"
    if kind == 2:
        return f"agent:{agent_id}:{channel}:channel:c{i}"
    if kind == 3:
        return f"agent:{agent_id}:cron:job{i % 17}:run:{uuid.UUID(int=i).hex[-12:]}"
    return f"agent:{agent_id}:subagent:{uuid.UUID(int=i)}"


def make_entry(i: int, profile: Profile, prompts: dict[int, str] | None = None) -> dict[str, Any]:
    """Entry number ``i`` of a store of this profile, as plain JSON data."""
    rng = random.Random(f"entry-{profile.name}-{i}")
    variant = i // profile.entries_per_prompt
    cache = prompts if prompts is not None else {}
    prompt = cache.get(variant)
    if prompt is None:
        prompt = cache[variant] = _prompt(profile, variant)
    channel = _CHANNELS[i % len(_CHANNELS)]
    peer = f"{channel}:{100000 + i}"
    updated = BASE_TIME_MS + i * 1000
    low, high = profile.report_bytes
    tool_text = (rng.randint(low, high) // profile.tools) if high else 0
    report = {
        "source": "run",
        "generatedAt": updated,
        "systemPrompt": {"chars": 30000 + i % 977, "projectContextChars": 12000},
        "skills": {"promptChars": len(prompt), "count": profile.skills},
        "tools": {
            "listChars": 2400,
            "schemaChars": 9100,
            "entries": [
                {
                    "name": f"tool_{k}",
                    "schemaChars": 300 + k * 7,
                    **({"schema": _text(rng, tool_text)} if tool_text else {}),
                }
                for k in range(profile.tools)
            ],
        },
    }
    return {
        "sessionId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "updatedAt": updated,
        "sessionStartedAt": updated - 3_600_000,
        "chatType": ("direct", "group", "channel", "direct", "direct")[i % 5],
        "channel": channel,
        "origin": {
            "label": f"user {i}",
            "provider": channel,
            "surface": channel,
            "chatType": "direct",
            "from": peer,
            "to": f"{channel}:bot",
        },
        "deliveryContext": {"channel": channel, "to": peer},
        "lastChannel": channel,
        "lastTo": peer,
        "sessionFile": f"{uuid.UUID(int=i)}.jsonl",
        "model": "claude-opus-4-5",
        "modelProvider": "anthropic",
        "thinkingLevel": "low",
        "inputTokens": rng.randint(1000, 90000),
        "outputTokens": rng.randint(100, 9000),
        "totalTokens": rng.randint(1000, 100000),
        "contextTokens": 200000,
        "cacheRead": rng.randint(0, 50000),
        "cacheWrite": rng.randint(0, 5000),
        "compactionCount": 0,
        "skillsSnapshot": {
            "prompt": prompt,
            "skills": [{"name": f"skill-{variant}-{k}"} for k in range(profile.skills)],
            "version": 3,
        },
        "systemPromptReport": report,
    }


def make_store(
    entries: int, profile: str | Profile = "small", agent_id: str = "main"
) -> dict[str, dict[str, Any]]:
    """A whole store: key -> entry, ``entries`` long."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    prompts: dict[int, str] = {}
    return {make_key(i, agent_id): make_entry(i, prof, prompts) for i in range(entries)}
