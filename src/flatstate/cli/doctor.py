"""``flatstate doctor``: check a store without trusting it, and repair what can be."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from flatstate.cli import _where as where
from flatstate.cli._output import (
    JsonOption,
    count,
    human_bytes,
    print_json,
    say,
    store_path,
)
from flatstate.cli._where import DEFAULT_STORE, AgentOption, StoreOption
from flatstate.doctor import OpenClawAgentReport, OpenClawReport
from flatstate.errors import ReadOnlyStore


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
            f"{human_bytes(report.store_bytes)} (WAL {human_bytes(report.wal_bytes)}); "
            "transcripts: "
            + (
                f"{count(report.transcript_files, 'file')}, "
                f"{human_bytes(report.transcript_bytes)} in {report.transcripts_dir}"
                if report.transcripts_dir is not None
                else f"{count(report.transcript_files, 'transcript')}, "
                f"{human_bytes(report.transcript_bytes)} in the database"
            )
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
