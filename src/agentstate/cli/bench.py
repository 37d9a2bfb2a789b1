"""``agentstate bench``: benchmark programs that print figures and ratios."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.table import Table

from agentstate.cli._output import JsonOption, console, err_console, print_json

app = typer.Typer(
    help="Benchmarks: figures and ratios against the copying strategies.", no_args_is_help=True
)


@app.command("store")
def store(
    entries: Annotated[int, typer.Option(help="Sessions in the main store.")] = 2000,
    small_entries: Annotated[
        int, typer.Option(help="Sessions in the small store (patch scaling).")
    ] = 1000,
    scale_entries: Annotated[
        int | None,
        typer.Option(
            help="Sessions in the large store (scaling; 0 skips). Default: 100,000 on sqlite, "
            "10,000 on jsonfile, 20,000 on postgres."
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="sqlite (a state directory), jsonfile or postgres.")
    ] = "sqlite",
    dsn: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL DSN for --backend postgres (default: $AGENTSTATE_BENCH_POSTGRES_DSN); "
            "each store gets a namespace of its own, removed afterwards."
        ),
    ] = None,
    synchronous: Annotated[
        str,
        typer.Option(
            help="Durability of commits: normal, full, or (postgres) off. See open_store."
        ),
    ] = "normal",
    profile: Annotated[
        str, typer.Option(help="Entry shape: small (~10 KiB) or heavy (41 KiB prompts).")
    ] = "small",
    seconds: Annotated[float, typer.Option(help="Seconds per rate measurement.")] = 2.0,
    soak_seconds: Annotated[
        float, typer.Option(help="Seconds of 90% get / 10% patch for the RSS check (0 skips).")
    ] = 60.0,
    directory: Annotated[
        str | None,
        typer.Option(help="Build the stores here (kept) instead of a temporary directory."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Measure get, snapshot and patch rates, memory and RSS growth of a session store.

    Every phase runs in a fresh process; a deepcopy-per-read cache (the way
    OpenClaw's cache worked) is measured on the same data for comparison.
    """
    from agentstate.bench.store import BACKENDS, DSN_ENV, StoreBenchOptions, run_store_bench
    from agentstate.bench.workload import PROFILES

    if profile not in PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if backend not in BACKENDS:
        raise typer.BadParameter(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "postgres" and not (dsn or os.environ.get(DSN_ENV)):
        raise typer.BadParameter(
            f"--backend postgres needs --dsn or {DSN_ENV}; a throwaway server: "
            "bash scripts/postgres start /tmp/agentstate-pg"
        )
    options = StoreBenchOptions(
        entries=entries,
        small_entries=small_entries,
        scale_entries=scale_entries,
        profile=profile,
        backend=backend,
        seconds=seconds,
        soak_seconds=soak_seconds,
        directory=directory,
        dsn=dsn,
        synchronous=synchronous,
    )
    with err_console.status("starting") as status:
        result = run_store_bench(options, progress=lambda phase: status.update(phase))
    if json_output:
        print_json(result)
        return
    _print_store_result(result)


def _print_store_result(result: dict[str, Any]) -> None:
    backend = result["options"]["backend"]
    if result["options"].get("synchronous", "normal") != "normal":
        backend += f", synchronous={result['options']['synchronous']}"
    rates = Table(title=f"Session store rates, {backend} (ops/s)")
    for column in ("sessions", "get", "snapshot", "patch"):
        rates.add_column(column, justify="right")
    for n, r in result["rates"].items():
        patch = f"{r['patch_per_s']:,}"
        if r.get("patch_mib_per_s") is not None:
            patch += f" ({r['patch_mib_per_s']:,} MiB/s)"
        rates.add_row(f"{int(n):,}", f"{r['get_per_s']:,}", f"{r['snapshot_per_s']:,}", patch)
    base = result["baseline"]
    rates.add_row(f"{base['entries']:,}", f"{base['get_per_s']:,}", "-", "-", style="dim")
    rates.caption = (
        "dim row: deepcopy of the whole store per read (OpenClaw's structuredClone-era cache)"
    )
    console.print(rates)
    mem = result["memory"]
    ratios = result["ratios"]
    console.print(
        f"memory: loaded store {mem['loaded_mib']} MiB for a "
        f"{mem['sessions_json_mib']} MiB sessions.json = {mem['ratio_to_sessions_json']}x "
        f"({mem['ratio_to_compact_json']}x compact JSON); "
        f"{mem['pooled_strings']} pooled strings"
    )
    console.print(
        f"get vs deepcopy-per-read: {ratios['get_vs_deepcopy']:,}x; "
        f"get slowdown at scale: {ratios['get_scale']}x; "
        f"patch slowdown at scale: {ratios['patch_scale']}x"
    )
    if "soak" in result:
        soak = result["soak"]
        console.print(
            f"soak: {soak['ops']:,} ops in {soak['seconds']:g} s, RSS {soak['rss_start_mib']} -> "
            f"{soak['rss_end_mib']} MiB (growth {soak['rss_growth_mib']} MiB)"
        )
    coalescing = result["coalescing"]
    console.print(
        f"coalescing: {coalescing['patches']} concurrent patches took {coalescing['commits']} "
        f"commits (window {coalescing['window_s']} s)"
    )
    for lag in result["freshness"]:
        console.print(
            f"freshness, written by {lag['writer']}: seen after p50 {lag['p50_ms']} ms, "
            f"p99 {lag['p99_ms']} ms, max {lag['max_ms']} ms"
        )
    machine = result["machine"]
    console.print(
        f"[dim]{machine['cpus']} CPUs, {machine['memory_gib']} GiB, Python {machine['python']}, "
        f"agentstate {machine['agentstate']}[/dim]"
    )


@app.command("transcript")
def transcript(
    appends: Annotated[int, typer.Option(help="Appends per batched-fsync run.")] = 20_000,
    fsync_appends: Annotated[int, typer.Option(help="Appends per fsync-each run.")] = 1_000,
    big_mb: Annotated[int, typer.Option(help="Size of the large transcript, in MB.")] = 100,
    compaction_entries: Annotated[
        int, typer.Option(help="Entries in the transcript to compact.")
    ] = 10_000,
    json_output: JsonOption = False,
) -> None:
    """Append rates, context and tail reads of a large transcript, and compaction time."""
    from agentstate.bench.transcripts import run_transcript_bench

    with err_console.status("starting") as status:
        result = run_transcript_bench(
            appends=appends,
            fsync_appends=fsync_appends,
            big_bytes=big_mb * 1_000_000,
            compaction_entries=compaction_entries,
            progress=lambda phase: status.update(phase),
        )
    if json_output:
        print_json(result)
        return
    table = Table(title="Transcript appends")
    for column in ("lock", "fsync", "appends", "lines/s"):
        table.add_column(column, justify="right" if column in ("appends", "lines/s") else "left")
    for row in result["appends"]:
        table.add_row(row["lock"], row["fsync"], f"{row['appends']:,}", f"{row['per_s']:,}")
    console.print(table)
    big = result["big"]
    console.print(
        f"{big['file_mib']} MiB transcript ({big['entries']:,} entries): context() cold "
        f"{big['context_cold_ms']} ms (max {big['context_cold_max_ms']} ms, "
        f"{big['context_bytes_read']:,} bytes read), warm {big['context_warm_ms']} ms; "
        f"tail(20) cold {big['tail20_cold_ms']} ms"
    )
    comp = result["compaction"]
    console.print(
        f"compact() of {comp['entries']:,} entries ({comp['file_mib']} MiB): "
        f"{comp['compact_ms']} ms, "
        f"{comp['summarized_messages']:,} messages summarized, "
        f"{comp['tokens_before']:,} -> {comp['tokens_after']:,} tokens"
    )
