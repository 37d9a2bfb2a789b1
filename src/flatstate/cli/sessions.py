"""``flatstate sessions ...``, ``doctor``, ``stats``, ``import-openclaw``, ``export-openclaw``."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Annotated, Any

import psutil
import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from flatstate.cli import _where as where
from flatstate.cli._output import (
    JsonOption,
    add_row,
    count,
    err_console,
    human_bytes,
    listing,
    print_json,
    print_table,
    say,
    shown_of,
    store_path,
    table,
    warn,
    when,
)
from flatstate.cli._where import DEFAULT_STORE, AgentOption, AllAgentsOption, StoreOption
from flatstate.doctor import OpenClawAgentReport, OpenClawReport
from flatstate.errors import ReadOnlyStore, SessionNotFound
from flatstate.frozen import FrozenMap, decode_json, encode_json
from flatstate.maintenance import (
    MaintenanceConfig,
    MaintenanceReport,
    parse_bytes,
    parse_duration_ms,
)
from flatstate.model import SessionEntry, now_ms
from flatstate.store import SessionStore

app = typer.Typer(help="List, inspect, change and prune sessions.", no_args_is_help=True)

KeyArgument = Annotated[
    str, typer.Argument(metavar="KEY", help="The session key, e.g. agent:main:main or main.")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
]


def need(store: SessionStore, key: str, place: where.Place) -> SessionEntry:
    """The entry of ``key``, or SessionNotFound naming the store as ``--store`` takes it."""
    entry = store.get(key)
    if entry is None:
        raise SessionNotFound(store.canonical_key(key), place.shown)
    return entry


@app.command("list")
def list_sessions(
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    all_agents: AllAgentsOption = False,
    limit: Annotated[
        int, typer.Option(metavar="N", help="Show at most this many (newest first); 0 for all.")
    ] = 50,
    json_output: JsonOption = False,
) -> None:
    """List sessions, most recently updated first."""
    places = [where.resolve(store, agent)]
    if all_agents:  # those with sessions: an agent may hold auth profiles only
        places = [p for p in where.resolve_all(store, agent) if not where.missing(p)]
    rows: list[tuple[str, str, SessionEntry]] = []
    for place in places:
        with where.sessions(place) as s:
            rows.extend((place.agent_id or s.agent_id, key, entry) for key, entry in s.items())
    rows.sort(key=lambda row: -(row[2].updated_at or 0))
    total = len(rows)
    if limit:
        rows = rows[:limit]
    if json_output:
        items = [{"key": key, "agentId": agent_id, "entry": entry} for agent_id, key, entry in rows]
        print_json(listing([p.describe() for p in places], items, total))
        return
    now = now_ms()
    scope = f"{count(len(places), 'agent')} of {store}" if all_agents else places[0].shown
    grid = table()
    grid.add_column("key", no_wrap=True)  # whole, to copy into other commands
    for column in ("sessionId", "updated", "model", "channel", "tokens"):
        grid.add_column(column, overflow="fold")
    for _, key, entry in rows:
        add_row(
            grid,
            key,
            entry.session_id[:8],
            when(entry.updated_at, now),
            entry.model or "-",
            _channel(entry),
            f"{entry.total_tokens:,}" if entry.total_tokens else "-",
        )
    print_table(grid, f"{shown_of(len(rows), total, 'session')} in {scope}")


def _print_entry(key: str, entry: SessionEntry) -> None:
    """Every field of an entry, one a row: times with their age, objects as compact JSON."""
    now = now_ms()
    grid = table(show_header=False)
    grid.add_column("field", style="bold")
    grid.add_column("value", overflow="fold")
    add_row(grid, "key", key)
    for name, value in entry.items():
        if name.endswith("At") and isinstance(value, int | float) and not isinstance(value, bool):
            shown = when(value, now)
        elif isinstance(value, FrozenMap | tuple):
            shown = encode_json(value).decode()
        else:
            shown = str(value)
        add_row(grid, name, shown)
    print_table(grid)


def _channel(entry: SessionEntry) -> str:
    """The entry's channel: its route fields, or (OpenClaw 2026.9) its delivery route."""
    delivery = entry.get("delivery")
    route = delivery.get("route") if isinstance(delivery, Mapping) else None
    routed = route.get("channel") if isinstance(route, Mapping) else None
    return entry.last_channel or entry.channel or (routed if isinstance(routed, str) else "-")


@app.command("show")
def show(
    key: KeyArgument,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print one session's entry."""
    place = where.resolve(store, agent)
    with where.sessions(place) as s:
        entry = need(s, key, place)
        canonical = s.canonical_key(key)
    if json_output:
        print_json(entry)
    else:
        _print_entry(canonical, entry)


def _json_value(text: str, option: str) -> Any:
    try:
        return decode_json(text)
    except ValueError as exc:  # msgspec's DecodeError: a position, never the content
        raise typer.BadParameter(f"not valid JSON ({exc})", param_hint=option) from None


def _changes(assignments: list[str], patch_json: str | None) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if patch_json:
        value = _json_value(patch_json, "'--patch'")
        if not isinstance(value, dict):
            raise typer.BadParameter(
                'takes a JSON object, e.g. {"model": "gpt-5"}', param_hint="'--patch'"
            )
        changes.update(value)
    for assignment in assignments:
        field, sep, raw = assignment.partition("=")
        if not sep or not field:
            raise typer.BadParameter(f"takes FIELD=VALUE, not {assignment!r}", param_hint="'--set'")
        try:
            changes[field] = decode_json(raw)
        except ValueError:  # not JSON: take the text as a string
            changes[field] = raw
    if not changes:
        raise typer.BadParameter("nothing to change: give --set FIELD=VALUE or --patch JSON")
    return changes


@app.command("patch")
def patch(
    key: KeyArgument,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD=VALUE",
            help="VALUE is JSON when it parses, else text; null removes the field. Repeatable.",
        ),
    ] = None,
    patch_json: Annotated[
        str | None, typer.Option("--patch", metavar="JSON", help="A JSON object of changes.")
    ] = None,
    preserve_activity: Annotated[
        bool,
        typer.Option("--preserve-activity", help="Keep updatedAt (metadata and route updates)."),
    ] = False,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Merge changes into a session with OpenClaw's rules (creating it if missing)."""
    changes = _changes(set_ or [], patch_json)
    place = where.resolve(store, agent)
    with where.sessions(place, write=not dry_run) as s:
        entry_key = s.canonical_key(key)
        if dry_run:
            entry = s.preview_patch(key, changes, preserve_activity=preserve_activity)
        else:
            result = s.patch(key, changes, preserve_activity=preserve_activity)
            assert result is not None
            entry = result
    if json_output:
        print_json(entry)
        return
    verb = "would patch" if dry_run else "patched"
    say(f"{verb} {entry_key}: {', '.join(changes)}{' (dry run: nothing written)' * dry_run}")


@app.command("delete")
def delete(
    key: KeyArgument,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Remove a session (its transcript is archived as .deleted.<time>)."""
    place = where.resolve(store, agent)
    with where.sessions(place, write=not dry_run) as s:
        need(s, key, place)
        canonical = s.canonical_key(key)
        if not dry_run:
            s.delete(key)
    if json_output:
        print_json({"key": canonical, "deleted": not dry_run})
    else:
        say(f"{'would delete' if dry_run else 'deleted'} {canonical}")


def _parsed(parse: Any, text: str, option: str) -> int:
    """A duration or size option's value, or a usage error saying what it takes."""
    try:
        value: int = parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    return value


@app.command("prune")
def prune(
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    enforce: Annotated[
        bool, typer.Option("--enforce", help="Remove; without it, only say what would go.")
    ] = False,
    active_key: Annotated[
        str,
        typer.Option(metavar="KEY", help="A session never to remove (the agent's main one)."),
    ] = "main",
    prune_after: Annotated[
        str,
        typer.Option(metavar="DURATION", help="Remove sessions idle this long: 30d, 12h, 90m."),
    ] = "30d",
    max_entries: Annotated[
        int, typer.Option(metavar="N", help="Keep at most this many sessions (0: no cap).")
    ] = 500,
    max_disk: Annotated[
        str | None,
        typer.Option(
            metavar="SIZE", help="Disk budget of the sessions directory: 10GB, 512MiB (off)."
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="List every session and file, every warning.")
    ] = False,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Prune old sessions, cap their number, archive transcripts, keep the disk budget."""
    config = MaintenanceConfig(
        mode="enforce" if enforce else "warn",
        prune_after_ms=_parsed(parse_duration_ms, prune_after, "'--prune-after'"),
        max_entries=max_entries or None,
        max_disk_bytes=_parsed(parse_bytes, max_disk, "'--max-disk'") if max_disk else None,
    )
    place = where.resolve(store, agent)
    with where.sessions(place, write=enforce and not dry_run) as s:
        report = s.maintain(config, active_key=active_key or None, dry_run=dry_run)
    if json_output:
        print_json(report)
    else:
        _print_report(report, place.shown, verbose)


MAX_WARNINGS = 5


def _print_report(report: MaintenanceReport, shown: str, verbose: bool) -> None:
    """A summary; the sessions and files themselves with ``--verbose``."""
    acted = report.mode == "enforce" and not report.dry_run
    budget = report.disk_budget
    evicted = budget.removed_entries if budget is not None else []
    removed = len(report.pruned) + len(report.capped) + len(evicted)
    parts = [f"{len(report.pruned):,} by age", f"{len(report.capped):,} by the cap"]
    if evicted:
        parts.append(f"{len(evicted):,} for the disk budget")
    line = f"{count(report.before_count, 'session')} in {shown}: "
    if acted:
        line += f"removed {' and '.join(parts)}; {report.after_count:,} remain"
    else:
        why = "" if report.dry_run else "; --enforce removes them"
        line += (
            f"would remove {' and '.join(parts)}, leaving {report.before_count - removed:,} "
            f"({'dry run' if report.dry_run else 'warn mode'}: nothing was changed{why})"
        )
    say(line)
    if verbose:
        for why, keys in (
            ("by age", report.pruned),
            ("by the cap", report.capped),
            ("for the disk budget", evicted),
        ):
            for key in keys:
                say(f"  {'removed' if acted else 'would remove'} {key} ({why})")
    delete = "deleted" if acted else "would delete"
    files = [
        ("archived" if acted else "would archive", report.archived, "transcript", None),
        (delete, report.removed_archives, "old archive", None),
        (
            delete,
            budget.removed_files if budget is not None else [],
            "file for the disk budget",
            "files for the disk budget",
        ),
    ]
    for verb, paths, noun, plural in files:
        if paths:
            say(f"{verb} {count(len(paths), noun, plural)}")
            if verbose:
                for path in paths:
                    say(f"  {path}")
    if budget is not None:
        say(
            f"disk: {human_bytes(budget.total_bytes_before)} -> "
            f"{human_bytes(budget.total_bytes_after)} (budget {human_bytes(budget.max_bytes)}, "
            f"high water {human_bytes(budget.high_water_bytes)})"
        )
    shown_warnings = report.warnings if verbose else report.warnings[:MAX_WARNINGS]
    for warning in shown_warnings:
        warn(warning)
    hidden = len(report.warnings) - len(shown_warnings)
    if hidden:
        warn(f"... and {count(hidden, 'more warning')} (--verbose shows them)")
    if not verbose and (removed or report.archived or report.removed_archives):
        say("(--verbose lists them)")


def doctor(
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Move a damaged sessions.json aside and save what parses; narrow the modes "
            "of auth files open to others.",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Check a store: sizes, corruption, stale locks and temp files, oversized entries, modes.

    On an OpenClaw 2026.9 directory (or agent database), read-only: per agent the database
    and WAL sizes, free pages, leases, the oldest reader, and what an import would bring.
    """
    from flatstate import doctor as doc
    from flatstate.openclaw.agent import AGENT_DB_NAME
    from flatstate.openclaw.root import find_root

    location = store_path(store)
    if find_root(location) is not None or os.path.basename(location) == AGENT_DB_NAME:
        if repair:
            raise ReadOnlyStore(
                location,
                "flatstate never writes OpenClaw 2026.9's databases; its own `openclaw doctor` "
                "repairs them",
            )
        _doctor_openclaw(doc.diagnose_openclaw(location), json_output)
        return
    place = where.resolve(store, agent)
    report = doc.diagnose(place.sessions, auth_dir=place.agent_dir, agent_id=place.agent_id)
    if repair and report.findings:
        report = doc.repair_all(place.sessions, report, auth_dir=place.agent_dir)
    if json_output:
        print_json(report)
    else:
        say(
            f"{report.store} ({report.backend}): {count(report.entries, 'session')}, "
            f"{human_bytes(report.store_bytes)}; transcripts: "
            f"{count(report.transcript_files, 'file')}, {human_bytes(report.transcript_bytes)} "
            f"in {report.transcripts_dir}"
        )
        for finding in report.findings:
            say(f"  [{finding.kind}] {finding.subject}: {finding.detail}")
        if report.repaired is not None:
            repaired = report.repaired
            say(f"repaired: the damaged file is now {repaired.moved_to}")
            kept = count(len(repaired.kept), "session")
            say(f"  kept {kept}; lost: {', '.join(repaired.lost) or 'nothing'}")
        for path in report.modes_fixed:
            say(f"repaired: {path} is no longer open to others")
        if not report.findings:
            say("no problems found")
    if report.findings:
        raise typer.Exit(1)


def _doctor_openclaw(report: OpenClawReport, json_output: bool) -> None:
    if json_output:
        print_json(report)
    else:
        state = report.state_database
        say(
            f"{report.root} (OpenClaw 2026.9)"
            + (
                f": state database {human_bytes(state.bytes)}, WAL {human_bytes(state.wal_bytes)}"
                if state is not None
                else ": no state database"
            )
        )
        for agent in report.agents:
            _print_openclaw_agent(agent)
        for finding in report.findings:
            say(f"  [{finding.kind}] {finding.subject}: {finding.detail}")
        if not report.findings:
            say("no problems found")
    if report.findings:
        raise typer.Exit(1)


def _print_openclaw_agent(agent: OpenClawAgentReport) -> None:
    db = agent.database
    wal = f"WAL {human_bytes(db.wal_bytes)}"
    if agent.wal_frames is not None and agent.wal_backfilled is not None:
        wal += f" ({agent.wal_frames:,} frames, {agent.wal_backfilled:,} checkpointed)"
    live = [lease.pid for lease in agent.leases if lease.live]
    parts = [
        f"{agent.agent_id}: {db.path} {human_bytes(db.bytes)}",
        wal,
        f"{db.free_pages:,} of {db.pages:,} pages free",
        f"schema {agent.schema_version} ({agent.app_version or 'unknown version'})",
        f"lease held by pid {live[0]}" if live else "no live lease",
    ]
    if agent.open_by is not None:
        parts.append(f"open by pid {agent.open_by}")
    say(", ".join(parts))
    reader = agent.oldest_reader
    if reader is not None:
        say(
            f"  oldest reader: pid {reader.pid} at WAL frame {reader.frame:,}, "
            f"{reader.behind:,} frames behind"
        )
    plan = agent.would_import
    if plan is not None:
        resting = f" (resting: {', '.join(plan.cooldowns)})" if plan.cooldowns else ""
        uncounted = " (as of the last checkpoint: the WAL is not counted)"
        say(
            f"  would import: {plan.sessions} sessions, {plan.transcripts} transcripts "
            f"({plan.events:,} events, {plan.compressed_events} compressed), "
            f"{len(plan.auth_profiles)} auth profiles, order for "
            f"{', '.join(plan.auth_order) or 'no provider'}, usage of "
            f"{len(plan.usage_stats)}{resting}{uncounted if agent.counts_exclude_wal else ''}"
        )


def stats(
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Entries, bytes on disk, cache bytes and this process's RSS after loading the store."""
    with where.sessions(where.resolve(store, agent)) as s:
        found = s.stats()
        figures = {
            **{f: getattr(found, f) for f in found.__struct_fields__},
            "process_rss_bytes": psutil.Process().memory_info().rss,
        }
    if json_output:
        print_json(figures)
        return
    grid = table(show_header=False)
    grid.add_column("figure", style="bold")
    grid.add_column("value")
    for name, value in figures.items():
        bytes_ = name.endswith("bytes") or name == "cache_limit"
        add_row(grid, name, human_bytes(value) if bytes_ else value)
    print_table(grid)


def _with_progress(title: str, run: Any) -> Any:
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
    report = _with_progress(
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
    json_output: JsonOption = False,
) -> None:
    """Write SQLite state directories back in OpenClaw's layout and formats."""
    from flatstate.transfer import export_openclaw as run

    started = time.monotonic()
    report = _with_progress(
        "exporting", lambda p: run(store_path(source), store_path(destination), progress=p)
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


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="sessions")
    root.command("doctor")(doctor)
    root.command("stats")(stats)
    root.command("import-openclaw")(import_openclaw)
    root.command("export-openclaw")(export_openclaw)
