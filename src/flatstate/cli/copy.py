"""``flatstate copy SRC DEST``: a whole state between any two locations, then checked."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from flatstate.cli._output import JsonOption, count, print_json, say, store_path, warn
from flatstate.cli.transfer import with_progress


def copy(
    source: Annotated[
        str,
        typer.Argument(
            help="A state directory, a directory of them, a postgresql:// URL, or an OpenClaw "
            "state directory (~/.openclaw) or sessions.json."
        ),
    ],
    destination: Annotated[
        str,
        typer.Argument(help="A directory (a state directory per agent) or a postgresql:// URL."),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Copy into a DEST that already holds state.")
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Reread both sides after the copy and compare counts and digests.",
        ),
    ] = True,
    json_output: JsonOption = False,
) -> None:
    """Copy sessions, transcripts, auth profiles and facts from SRC to DEST, every agent.

    The source is only read; a DEST that holds state is refused (without --force). Exits 1
    when the check finds a difference.
    """
    from flatstate.copying import copy_state

    started = time.monotonic()
    report = with_progress(
        "copying",
        lambda p: copy_state(
            store_path(source), store_path(destination), progress=p, force=force, verify=verify
        ),
    )
    if json_output:
        print_json(report)
    else:
        for agent in report.agents:
            checked = {True: "verified", False: "DIFFERS", None: "not checked"}[agent.verified]
            vectors = f" ({count(agent.vectors, 'vector')})" if agent.vectors else ""
            say(
                f"{agent.agent_id}: {count(agent.sessions.count, 'session')}, "
                f"{count(agent.transcripts.count, 'transcript file')}, "
                f"{count(agent.auth_profiles.count, 'auth profile')}, "
                f"{count(agent.facts, 'fact')}{vectors} -> {agent.destination} ({checked})"
            )
            for problem in agent.mismatches:
                warn(f"  {problem}")
        say(f"{count(len(report.agents), 'agent')} in {time.monotonic() - started:.1f} s")
    if report.mismatched:
        raise typer.Exit(1)
