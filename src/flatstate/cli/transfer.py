"""``flatstate import-openclaw`` and ``export-openclaw``: whole OpenClaw state dirs in and out."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from flatstate.cli._output import (
    JsonOption,
    count,
    err_console,
    print_json,
    say,
    store_path,
    warn,
)


def with_progress(title: str, run: Any) -> Any:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(agent: str, done: int, total: int) -> None:
            if agent not in tasks:
                tasks[agent] = bar.add_task(f"{title} {agent}", total=total)
            bar.update(tasks[agent], completed=done)

        return run(progress)


def import_openclaw(
    source: Annotated[
        str, typer.Argument(help="An OpenClaw state dir (~/.openclaw) or a sessions.json.")
    ],
    destination: Annotated[str, typer.Argument(help="Where the SQLite state directories go.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Let the source win over what DEST holds; read a database a live gateway holds.",
        ),
    ] = False,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge", help="Into a DEST that holds state: per session the fresher updatedAt wins."
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Copy OpenClaw sessions, transcripts and auth profiles into SQLite state directories.

    Reads OpenClaw 2026.3 files and 2026.9 databases alike, and never writes the source.
    """
    from flatstate.transfer import import_openclaw as run

    started = time.monotonic()
    report = with_progress(
        "importing",
        lambda p: run(
            store_path(source), store_path(destination), progress=p, force=force, merge=merge
        ),
    )
    _print_transfer(report, json_output, time.monotonic() - started)
    if report.damaged:
        raise typer.Exit(1)


def export_openclaw(
    source: Annotated[str, typer.Argument(help="A state directory, or a directory of them.")],
    destination: Annotated[
        str, typer.Argument(help="An OpenClaw state dir, or a sessions.json path.")
    ],
    force: Annotated[
        bool,
        typer.Option("--force", help="Write over what DEST holds (otherwise refused)."),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Write SQLite state directories back in OpenClaw's layout and formats."""
    from flatstate.transfer import export_openclaw as run

    started = time.monotonic()
    report = with_progress(
        "exporting",
        lambda p: run(store_path(source), store_path(destination), progress=p, force=force),
    )
    _print_transfer(report, json_output, time.monotonic() - started)


def _print_transfer(report: Any, json_output: bool, seconds: float) -> None:
    if json_output:
        print_json(report)
        return
    for agent in report.agents:
        say(
            f"{agent.agent_id}: {count(agent.sessions, 'session')}, "
            f"{count(agent.transcripts, 'transcript file')}"
            f"{', auth profiles' if agent.auth_profiles else ''} -> {agent.destination}"
        )
        for key in agent.skipped_keys:
            warn(f"skipped {key!r}: not a valid session key (see flatstate doctor)")

        if agent.kept_keys:
            say(
                f"  kept {len(agent.kept_keys)} sessions of the destination, as fresh or "
                f"fresher: {', '.join(agent.kept_keys)}"
            )
        for note in agent.notes:
            say(f"  note: {note}")
        for damage in agent.damage:
            warn(f"damaged: {damage.path}: {damage.problem}")
    for damage in report.damage:
        warn(f"damaged: {damage.path}: {damage.problem}")
    say(f"{count(report.sessions, 'session')} in {seconds:.1f} s")
