"""``flatstate sessions list|show|patch|delete|prune|reset``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer

from flatstate.cli import _where as where
from flatstate.cli._output import (
    JsonOption,
    add_row,
    count,
    human_bytes,
    listing,
    print_json,
    print_table,
    say,
    shown_of,
    table,
    warn,
    when,
)
from flatstate.cli._where import DEFAULT_STORE, AgentOption, AllAgentsOption, StoreOption
from flatstate.errors import SessionNotFound
from flatstate.frozen import FrozenMap, decode_json, encode_json
from flatstate.keys import DEFAULT_AGENT_ID, normalize_key
from flatstate.maintenance import (
    MaintenanceConfig,
    MaintenanceReport,
    parse_bytes,
    parse_duration_ms,
)
from flatstate.model import SessionEntry, merge_patch, now_ms
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
        int,
        typer.Option(min=0, metavar="N", help="Show at most this many (newest first); 0 for all."),
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
    if where.missing(place):  # a patch that is refused must not leave a new store behind
        merge_patch(
            normalize_key(key, place.agent_id or DEFAULT_AGENT_ID),
            None,
            changes,
            preserve_activity=preserve_activity,
        )
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
    with where.sessions(place, write=not dry_run, create=False) as s:
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
        int,
        typer.Option(metavar="N", min=0, help="Keep at most this many sessions (0: no cap)."),
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
    with where.sessions(place, write=enforce and not dry_run, create=False) as s:
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


@app.command("reset")
def reset(
    key: KeyArgument,
    compress: Annotated[
        bool, typer.Option("--compress", help="Compress the archived transcript (zstd).")
    ] = False,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Start a session afresh: a new sessionId, the old transcript archived as .reset.<time>."""
    place = where.resolve(store, agent)
    with where.sessions(place, write=True, create=False) as s:
        need(s, key, place)
        entry = s.reset(key, compress=compress)
        canonical = s.canonical_key(key)
    if json_output:
        print_json(entry)
    else:
        say(f"{canonical}: new sessionId {entry.session_id}")
