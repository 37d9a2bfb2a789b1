"""``flatstate sessions ...``, ``doctor``, ``stats``, ``import-openclaw``, ``export-openclaw``."""

from __future__ import annotations

import time
from typing import Annotated, Any

import psutil
import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from flatstate import open_store
from flatstate.cli._output import (
    DEFAULT_STORE,
    JsonOption,
    StoreOption,
    ago,
    console,
    err_console,
    human_bytes,
    print_json,
    store_path,
)
from flatstate.errors import InvalidEntry
from flatstate.frozen import decode_json
from flatstate.maintenance import (
    MaintenanceConfig,
    MaintenanceReport,
    parse_bytes,
    parse_duration_ms,
)
from flatstate.model import merge_patch, now_ms

app = typer.Typer(help="List, inspect, change and prune sessions.", no_args_is_help=True)

DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
]


@app.command("list")
def list_sessions(
    store: StoreOption = DEFAULT_STORE,
    limit: Annotated[
        int, typer.Option(help="Show at most this many (newest first); 0 for all.")
    ] = 50,
    json_output: JsonOption = False,
) -> None:
    """List sessions, most recently updated first."""
    with open_store(store_path(store), readonly=True) as s:
        rows = sorted(s.items(), key=lambda kv: -(kv[1].updated_at or 0))
    if limit:
        rows = rows[:limit]
    if json_output:
        print_json({key: entry for key, entry in rows})
        return
    now = now_ms()
    table = Table(title=f"{len(rows)} sessions")
    for column in ("key", "sessionId", "updated", "model", "channel", "tokens"):
        table.add_column(column, overflow="fold")
    for key, entry in rows:
        table.add_row(
            key,
            entry.session_id[:8],
            ago(entry.updated_at, now),
            entry.model or "-",
            entry.last_channel or entry.channel or "-",
            f"{entry.total_tokens:,}" if entry.total_tokens else "-",
        )
    console.print(table)


@app.command("show")
def show(key: str, store: StoreOption = DEFAULT_STORE, json_output: JsonOption = False) -> None:
    """Print one session's entry."""
    with open_store(store_path(store), readonly=True) as s:
        entry = s.get(key)
    if entry is None:
        err_console.print(f"error: no session {key!r} in {store}")
        raise typer.Exit(1)
    if json_output:
        print_json(entry)
    else:
        console.print_json(data=entry.to_dict())


def _changes(assignments: list[str], patch_json: str | None) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if patch_json:
        value = decode_json(patch_json)
        if not isinstance(value, dict):
            raise InvalidEntry(None, '--patch takes a JSON object, e.g. \'{"model": "gpt-5"}\'')
        changes.update(value)
    for assignment in assignments:
        field, sep, raw = assignment.partition("=")
        if not sep or not field:
            raise InvalidEntry(None, f"--set takes FIELD=VALUE, not {assignment!r}")
        try:
            changes[field] = decode_json(raw)
        except Exception:  # not JSON: take the text as a string
            changes[field] = raw
    if not changes:
        raise InvalidEntry(None, "nothing to change: give --set FIELD=VALUE or --patch JSON")
    return changes


@app.command("patch")
def patch(
    key: str,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="FIELD=VALUE; VALUE is JSON when it parses, else text; null removes."
        ),
    ] = None,
    patch_json: Annotated[
        str | None, typer.Option("--patch", help="A JSON object of changes.")
    ] = None,
    preserve_activity: Annotated[
        bool, typer.Option(help="Keep updatedAt (metadata and route updates).")
    ] = False,
    store: StoreOption = DEFAULT_STORE,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Merge changes into a session with OpenClaw's rules (creating it if missing)."""
    changes = _changes(set_ or [], patch_json)
    with open_store(store_path(store), readonly=dry_run) as s:
        if dry_run:
            entry = merge_patch(
                s.canonical_key(key), s.get(key), changes, preserve_activity=preserve_activity
            )
        else:
            result = s.patch(key, changes, preserve_activity=preserve_activity)
            assert result is not None
            entry = result
    if json_output:
        print_json(entry)
    else:
        console.print_json(data=entry.to_dict())
        if dry_run:
            err_console.print("dry run: nothing was written")


@app.command("delete")
def delete(
    key: str,
    store: StoreOption = DEFAULT_STORE,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Remove a session (its transcript stays; `prune` archives unreferenced ones)."""
    with open_store(store_path(store), readonly=dry_run) as s:
        existed = s.get(key) is not None if dry_run else s.delete(key)
    if json_output:
        print_json({"key": key, "deleted": existed and not dry_run, "existed": existed})
    elif not existed:
        console.print(f"no session {key!r}; nothing to delete")
    else:
        console.print(f"{'would delete' if dry_run else 'deleted'} {key}")


@app.command("prune")
def prune(
    store: StoreOption = DEFAULT_STORE,
    enforce: Annotated[
        bool, typer.Option("--enforce", help="Remove; without it, only warn.")
    ] = False,
    active_key: Annotated[str | None, typer.Option(help="A session never to remove.")] = None,
    prune_after: Annotated[
        str, typer.Option(help="Remove sessions idle this long (30d, 12h).")
    ] = "30d",
    max_entries: Annotated[
        int, typer.Option(help="Keep at most this many sessions (0: no cap).")
    ] = 500,
    max_disk: Annotated[
        str | None,
        typer.Option(help="Disk budget of the sessions directory (10GB); off by default."),
    ] = None,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Prune old sessions, cap their number, archive transcripts, keep the disk budget."""
    config = MaintenanceConfig(
        mode="enforce" if enforce else "warn",
        prune_after_ms=parse_duration_ms(prune_after),
        max_entries=max_entries or None,
        max_disk_bytes=parse_bytes(max_disk) if max_disk else None,
    )
    with open_store(store_path(store), readonly=dry_run or not enforce) as s:
        report = s.maintain(config, active_key=active_key, dry_run=dry_run)
    if json_output:
        print_json(report)
        return
    _print_report(report)


def _print_report(report: MaintenanceReport) -> None:
    acted = report.mode == "enforce" and not report.dry_run
    verb = "removed" if acted else "would remove"
    console.print(
        f"{report.before_count} sessions; {verb} {len(report.pruned)} by age and "
        f"{len(report.capped)} by the cap; {report.after_count} remain"
    )
    for path in report.archived:
        console.print(f"  archived {path}")
    for path in report.removed_archives:
        console.print(f"  {'deleted' if acted else 'would delete'} old archive {path}")
    if report.disk_budget is not None:
        budget = report.disk_budget
        console.print(
            f"disk: {human_bytes(budget.total_bytes_before)} -> "
            f"{human_bytes(budget.total_bytes_after)} (budget {human_bytes(budget.max_bytes)}, "
            f"high water {human_bytes(budget.high_water_bytes)})"
        )
    for warning in report.warnings:
        err_console.print(f"warning: {warning}")


def doctor(
    store: StoreOption = DEFAULT_STORE,
    repair: Annotated[
        bool,
        typer.Option("--repair", help="Move a damaged sessions.json aside and save what parses."),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Check a store: sizes, corruption, stale locks and temp files, oversized entries."""
    from flatstate import doctor as doc

    location = store_path(store)
    report = doc.diagnose(location)
    if repair and any(f.kind == "corrupt" for f in report.findings):
        report.repaired = doc.repair(location)
    if json_output:
        print_json(report)
    else:
        console.print(
            f"{report.store} ({report.backend}): {report.entries} sessions, "
            f"{human_bytes(report.store_bytes)} (WAL {human_bytes(report.wal_bytes)}); "
            f"transcripts: {report.transcript_files} files, "
            f"{human_bytes(report.transcript_bytes)} in {report.transcripts_dir}"
        )
        for finding in report.findings:
            console.print(f"  [{finding.kind}] {finding.subject}: {finding.detail}", markup=False)
        if report.repaired is not None:
            repaired = report.repaired
            console.print(f"repaired: the damaged file is now {repaired.moved_to}", markup=False)
            console.print(
                f"  kept {len(repaired.kept)} sessions; "
                f"lost: {', '.join(repaired.lost) or 'nothing'}",
                markup=False,
            )
        elif not report.findings:
            console.print("no problems found")
    if report.findings and report.repaired is None:
        raise typer.Exit(1)


def stats(store: StoreOption = DEFAULT_STORE, json_output: JsonOption = False) -> None:
    """Entries, bytes on disk, cache bytes and this process's RSS after loading the store."""
    with open_store(store_path(store), readonly=True) as s:
        figures = {
            **{f: getattr(s.stats(), f) for f in s.stats().__struct_fields__},
            "process_rss_bytes": psutil.Process().memory_info().rss,
        }
    if json_output:
        print_json(figures)
        return
    table = Table(show_header=False)
    for name, value in figures.items():
        shown = (
            human_bytes(value) if name.endswith("bytes") or name == "cache_limit" else str(value)
        )
        table.add_row(name, shown)
    console.print(table)


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
    json_output: JsonOption = False,
) -> None:
    """Copy OpenClaw sessions, transcripts and auth profiles into SQLite state directories."""
    from flatstate.transfer import import_openclaw as run

    started = time.monotonic()
    report = _with_progress(
        "importing", lambda p: run(store_path(source), store_path(destination), progress=p)
    )
    _print_transfer(report, json_output, time.monotonic() - started)


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
        console.print(
            f"{agent.agent_id}: {agent.sessions} sessions, {agent.transcripts} transcript files"
            f"{', auth profiles' if agent.auth_profiles else ''} -> {agent.destination}"
        )
        for key in agent.skipped_keys:
            err_console.print(f"  skipped {key!r}: not a valid session key (see flatstate doctor)")
    console.print(f"{report.sessions} sessions in {seconds:.1f} s")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="sessions")
    root.command("doctor")(doctor)
    root.command("stats")(stats)
    root.command("import-openclaw")(import_openclaw)
    root.command("export-openclaw")(export_openclaw)
