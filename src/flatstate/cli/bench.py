"""``flatstate bench``: benchmark programs that print figures and ratios."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.table import Table

from flatstate.cli._output import (
    JsonOption,
    add_row,
    console,
    err_console,
    print_json,
    print_machine,
    print_table,
    run_bench,
    say,
    table,
)

JsonOutOption = Annotated[str | None, typer.Option(help="Write every figure to this JSON file.")]

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
            help="PostgreSQL DSN for --backend postgres (default: $FLATSTATE_BENCH_POSTGRES_DSN); "
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
    from flatstate.bench.store import BACKENDS, DSN_ENV, StoreBenchOptions, run_store_bench
    from flatstate.bench.workload import PROFILES

    if profile not in PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if backend not in BACKENDS:
        raise typer.BadParameter(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "postgres" and not (dsn or os.environ.get(DSN_ENV)):
        raise typer.BadParameter(
            f"--backend postgres needs --dsn or {DSN_ENV}; a throwaway server: "
            "bash scripts/postgres start /tmp/flatstate-pg"
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
    run_bench(
        lambda progress: run_store_bench(options, progress=progress),
        json_output,
        _print_store_result,
    )


def _print_store_result(result: dict[str, Any]) -> None:
    backend = result["options"]["backend"]
    if result["options"].get("synchronous", "normal") != "normal":
        backend += f", synchronous={result['options']['synchronous']}"
    rates = Table(title=f"Session store rates, {backend} (ops/s)")
    for column in ("sessions", "get", "plain dict get", "snapshot", "patch"):
        rates.add_column(column, justify="right")
    for n, r in result["rates"].items():
        patch = f"{r['patch_per_s']:,}"
        if r.get("patch_mib_per_s") is not None:
            patch += f", {r['patch_mib_per_s']:,} MiB/s{_derived(r, 'patch_mib_per_s')}"
        rates.add_row(
            f"{int(n):,}",
            f"{r['get_per_s']:,}",
            f"{r['dict_get_per_s']:,}",
            f"{r['snapshot_per_s']:,}",
            patch,
        )
    base = result["baseline"]
    rates.add_row(f"{base['entries']:,}", f"{base['get_per_s']:,}", "-", "-", "-", style="dim")
    rates.caption = (
        "plain dict get: the same loop over a dict of the same entries (no freshness check); "
        "dim row: deepcopy of the whole store per read (OpenClaw's structuredClone-era cache)"
    )
    console.print(rates)
    mem = result["memory"]
    ratios = result["ratios"]
    console.print(
        f"memory: loaded store {mem['loaded_mib']} MiB for a {mem['sessions_json_mib']} MiB "
        f"sessions.json{_derived(mem, 'sessions_json_mib')} = {mem['ratio_to_sessions_json']}x; "
        f"{mem['ratio_to_compact_json']}x compact JSON{_derived(mem, 'ratio_to_compact_json')}; "
        f"{mem['pooled_strings']} pooled strings"
    )
    console.print(
        f"get vs deepcopy-per-read: {ratios['get_vs_deepcopy']:,}x; "
        f"get slowdown at scale: {ratios['get_scale']}x "
        f"(a plain dict's: {ratios['dict_get_scale']}x); "
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
        "commits (group commit)"
    )
    for lag in result["freshness"]:
        console.print(
            f"freshness, written by {lag['writer']}: seen after p50 {lag['p50_ms']} ms, "
            f"p99 {lag['p99_ms']} ms, max {lag['max_ms']} ms"
        )
    print_machine(result["machine"])


def _derived(block: dict[str, Any], key: str) -> str:
    """The mark after a figure computed from others rather than measured."""
    return " (derived)" if key in block.get("derived", ()) else ""


@app.command("transcript")
def transcript(
    appends: Annotated[int, typer.Option(help="Appends per batched-fsync run.")] = 20_000,
    fsync_appends: Annotated[int, typer.Option(help="Appends per fsync-each run.")] = 1_000,
    big_mb: Annotated[int, typer.Option(help="Size of the large transcript, in MB.")] = 100,
    compaction_entries: Annotated[
        int, typer.Option(help="Entries in the transcript to compact.")
    ] = 10_000,
    backend: Annotated[
        str,
        typer.Option(
            help="file (transcript files alone), or postgres: files beside PostgreSQL rows "
            "(appends from 1 and 64 tasks, tail and context latency)."
        ),
    ] = "file",
    dsn: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL DSN for --backend postgres (default: $FLATSTATE_BENCH_POSTGRES_DSN)."
        ),
    ] = None,
    seconds: Annotated[
        float, typer.Option(help="--backend postgres: seconds per append run.")
    ] = 3.0,
    entries: Annotated[
        int, typer.Option(help="--backend postgres: lines of the transcript read.")
    ] = 20_000,
    json_output: JsonOption = False,
) -> None:
    """Append rates, context and tail reads of a large transcript, and compaction time;
    with --backend postgres, transcript files and PostgreSQL rows side by side."""
    if backend not in ("file", "postgres"):
        raise typer.BadParameter(f"unknown backend {backend!r}; choose from file, postgres")
    if backend == "postgres":
        from flatstate.bench.store import DSN_ENV
        from flatstate.bench.transcript_backends import run_backend_comparison

        found = dsn or os.environ.get(DSN_ENV)
        if not found:
            raise typer.BadParameter(
                f"--backend postgres needs --dsn or {DSN_ENV}; a throwaway server: "
                "bash scripts/postgres start /tmp/flatstate-pg"
            )
        run_bench(
            lambda progress: run_backend_comparison(
                found, seconds=seconds, entries=entries, progress=progress
            ),
            json_output,
            _print_backend_comparison,
        )
        return
    from flatstate.bench.transcripts import run_transcript_bench

    run_bench(
        lambda progress: run_transcript_bench(
            appends=appends,
            fsync_appends=fsync_appends,
            big_bytes=big_mb * 1_000_000,
            compaction_entries=compaction_entries,
            progress=progress,
        ),
        json_output,
        _print_transcript_result,
    )


def _print_backend_comparison(result: dict[str, Any]) -> None:
    contenders = result["contenders"]
    kinds = list(contenders)
    table = Table(title="Transcripts: files (SQLite state dir) beside PostgreSQL rows")
    table.add_column("measure")
    for kind in kinds:
        table.add_column(kind, justify="right")
    for index, label in enumerate(("appends/s, 1 task", "appends/s, 64 tasks")):
        cells = []
        for kind in kinds:
            row = contenders[kind]["appends"][index]
            commits = f" ({row['appends'] / row['commits']:.1f}/commit)" if row["commits"] else ""
            cells.append(f"{row['per_s']:,}{commits}")
        table.add_row(label, *cells)
    for name in ("tail20_warm", "tail20_cold", "context_warm", "context_cold"):
        label = f"{name.replace('20', '(20)').replace('_', ' ')} ms, p50 / p99"
        figures = [contenders[k]["reads"][name] for k in kinds]
        table.add_row(label, *(f"{f['p50_ms']} / {f['p99_ms']}" for f in figures))
    console.print(table)
    reads = contenders[kinds[0]]["reads"]
    console.print(
        f"reads of a transcript of {reads['entries']:,} lines whose context is "
        f"{reads['context_messages']} messages"
    )
    print_machine(result["machine"])


def _print_transcript_result(result: dict[str, Any]) -> None:
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


@app.command("write")
def write(
    entries: Annotated[int, typer.Option(help="Sessions (~10 KiB each) in the store.")] = 2000,
    tasks: Annotated[
        str, typer.Option(help="Concurrent asyncio tasks, comma-separated.")
    ] = "1,16,64,256",
    synchronous: Annotated[
        str, typer.Option(help="Durabilities to run, comma-separated: normal, full.")
    ] = "normal,full",
    design: Annotated[
        str,
        typer.Option(
            help="flatstate (the writer), one-commit, to_thread+lock, aiosqlite+lock, or all."
        ),
    ] = "all",
    seconds: Annotated[float, typer.Option(help="Seconds each run patches.")] = 3.0,
    directory: Annotated[
        str | None, typer.Option(help="Build the stores under this directory (its disk).")
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="sqlite, or postgres: flatstate on PostgreSQL too, beside the SQLite runs."
        ),
    ] = "sqlite",
    dsn: Annotated[
        str | None,
        typer.Option(help="The PostgreSQL server (else $FLATSTATE_BENCH_POSTGRES_DSN)."),
    ] = None,
    json_out: JsonOutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Durable ~1 KiB patches from many asyncio tasks: flatstate's writer against one
    commit per write, the Agents SDK's to_thread+lock pattern and aiosqlite with a lock."""
    from flatstate.bench.store import DSN_ENV
    from flatstate.bench.write import DESIGNS, ON_POSTGRES, run_write_bench

    if backend not in ("sqlite", "postgres"):
        raise typer.BadParameter(f"backend is sqlite or postgres, not {backend!r}")
    dsn = (dsn or os.environ.get(DSN_ENV)) if backend == "postgres" else None
    if backend == "postgres" and not dsn:
        raise typer.BadParameter(f"the postgres backend needs a DSN (--dsn or ${DSN_ENV})")
    known = (*DESIGNS, ON_POSTGRES)
    designs = DESIGNS if design == "all" else tuple(design.split(","))
    unknown = sorted(set(designs) - set(known))
    if unknown:
        raise typer.BadParameter(f"unknown design {unknown[0]!r}; choose from {', '.join(known)}")
    durabilities = tuple(synchronous.split(","))
    if not set(durabilities) <= {"normal", "full"}:
        raise typer.BadParameter(f"synchronous is normal or full, not {synchronous!r}")
    try:
        counts = tuple(int(n) for n in tasks.split(","))
    except ValueError:
        raise typer.BadParameter(f"tasks is a list of numbers, not {tasks!r}") from None

    def run(progress: Any) -> dict[str, Any]:
        return run_write_bench(
            entries=entries, tasks=counts, synchronous=durabilities, designs=designs,
            seconds=seconds, directory=directory, dsn=dsn, progress=progress,
        )  # fmt: skip

    with err_console.status("starting") as status:
        report = run(status.update)
    _finish(report, json_out, None, json_output, _print_write)


def _print_write(report: dict[str, Any]) -> None:
    table = Table(
        title=f"Durable patches, {report['entries']:,} sessions, {report['seconds']} s each"
    )
    columns = ("design", "sync", "tasks", "writes/s", "vs one-commit", "vs to_thread", "p50 ms",
               "p99 ms", "batch", "loop lag p50/p99 ms", "CPU µs/write")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("design", "sync") else "right")
    by = {(r["design"], r["synchronous"], r["tasks"]): r for r in report["runs"]}
    for run in report["runs"]:
        where = (run["synchronous"], run["tasks"])
        ratios = [
            _times(run["writes_per_s"] / other["writes_per_s"])
            if (other := by.get((name, *where))) and other["writes_per_s"]
            else "-"
            for name in ("one-commit", "to_thread+lock")
        ]
        table.add_row(
            run["design"], run["synchronous"], str(run["tasks"]), f"{run['writes_per_s']:,}",
            *ratios, f"{run['p50_ms']:.2f}", f"{run['p99_ms']:.2f}", f"{run['mean_batch']:.1f}",
            f"{run['loop_lag_p50_ms']:.2f} / {run['loop_lag_p99_ms']:.2f}",
            f"{run['cpu_us_per_write']}",
        )  # fmt: skip
    console.print(table)
    fsync = report["fsync_ms"]
    console.print(
        f"fsync of 4 KiB beside the runs: p50 {fsync['before']['p50']} ms, p99 "
        f"{fsync['before']['p99']} ms before; p50 {fsync['after']['p50']} ms, p99 "
        f"{fsync['after']['p99']} ms after"
    )
    print_machine(report["machine"])


@app.command("frameworks")
def frameworks(
    sessions: Annotated[int, typer.Option(help="Conversations, each its own session.")] = 1000,
    turns: Annotated[int, typer.Option(help="Turns each conversation gets, in order.")] = 4,
    concurrency: Annotated[
        str, typer.Option(help="Sessions served at once, comma-separated.")
    ] = "1,64",
    contender: Annotated[
        str,
        typer.Option(
            help="sdk-sqlite, sdk-async-sqlite, adk-sqlite, adk-database, flatstate, "
            "flatstate-adk, comma-separated, or all."
        ),
    ] = "all",
    directory: Annotated[
        str | None, typer.Option(help="Keep the databases under this directory (its disk).")
    ] = None,
    json_out: JsonOutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Agent-framework session backends side by side: a turn reads the last 20 items and
    stores two of ~1 KiB, durably (the Agents SDK's and ADK's own backends, and flatstate)."""
    from flatstate.bench.frameworks import CONTENDERS, run_frameworks_bench

    chosen = CONTENDERS if contender == "all" else tuple(contender.split(","))
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown:
        raise typer.BadParameter(
            f"unknown contender {unknown[0]!r}; choose from {', '.join(CONTENDERS)}"
        )
    try:
        counts = tuple(int(n) for n in concurrency.split(","))
    except ValueError:
        raise typer.BadParameter(f"concurrency is a list of numbers, not {concurrency!r}") from None
    if sessions < 1 or turns < 1 or min(counts) < 1:
        raise typer.BadParameter("sessions, turns and every concurrency are 1 or more")

    with err_console.status("starting") as status:
        report = run_frameworks_bench(
            sessions=sessions, turns=turns, concurrency=counts, contenders=chosen,
            directory=directory, progress=status.update,
        )  # fmt: skip
    _finish(report, json_out, None, json_output, _print_frameworks)


def _print_frameworks(report: dict[str, Any]) -> None:
    from flatstate.bench.frameworks import OURS

    table = Table(
        title=f"Framework sessions: {report['sessions']:,} sessions x "
        f"{report['turns_per_session']} turns (get {report['history_limit']}, add 2 x ~1 KiB)"
    )
    columns = ("contender", "at once", "turns/s", "flatstate vs", "p50 ms", "p99 ms",
               "RSS start/peak MiB", "MiB/1k turns", "failed")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "contender" else "right")
    ours = {r["concurrency"]: r for r in report["runs"] if r["contender"] == OURS}
    for run in report["runs"]:
        mine = ours.get(run["concurrency"])
        ratio = (
            _times(mine["turns_per_s"] / run["turns_per_s"])
            if mine and run["turns_per_s"] and run["contender"] != OURS
            else "-"
        )
        table.add_row(
            run["contender"], str(run["concurrency"]), f"{run['turns_per_s']:,.0f}", ratio,
            f"{run['p50_ms']:.2f}", f"{run['p99_ms']:.2f}",
            f"{run['rss_start_mib']:.0f} / {run['rss_peak_mib']:.0f}",
            f"{run['rss_slope_mib_per_1k_turns']:+.2f}", str(run["failed_turns"]),
        )  # fmt: skip
    console.print(table)
    for count, ratio in report["ratios"].items():
        console.print(
            f"at {count}: flatstate {_times(ratio['flatstate_vs_best'])} the best contender "
            f"({ratio['best_contender']})"
        )
    for name, why in report["skipped"].items():
        console.print(f"skipped {name}: {why}")
    fsync = report["fsync_ms"]
    console.print(
        f"fsync of 4 KiB beside the runs: p50 {fsync['before']['p50']} ms, p99 "
        f"{fsync['before']['p99']} ms before; p50 {fsync['after']['p50']} ms, p99 "
        f"{fsync['after']['p99']} ms after"
    )
    versions = report["machine"]["versions"]
    packages = ("openai-agents", "google-adk", "sqlalchemy", "aiosqlite")
    console.print("[dim]" + ", ".join(f"{p} {versions.get(p)}" for p in packages) + "[/dim]")
    print_machine(report["machine"])


@app.command("seed")
def seed(
    entries: Annotated[int, typer.Option(help="Sessions in the store.")] = 2000,
    read: Annotated[str, typer.Option(help="entry (get), store (snapshot) or mixed.")] = "entry",
    write_every: Annotated[int, typer.Option(help="One patch every N operations.")] = 10,
    compaction_every: Annotated[float, typer.Option(help="Seconds between compactions.")] = 5.0,
    facts: Annotated[int, typer.Option(help="Facts recalled after each compaction.")] = 8467,
    strategy: Annotated[
        str,
        typer.Option(
            help="flatstate (ours), dict (no copy: the floor), entrycopy, deepcopy, json, "
            "orjson, pickle, or all."
        ),
    ] = "all",
    profile: Annotated[str, typer.Option(help="small (~10 KiB entries) or heavy.")] = "small",
    seconds: Annotated[float, typer.Option(help="Seconds each strategy runs.")] = 10.0,
    backend: Annotated[str, typer.Option(help="sqlite or jsonfile.")] = "sqlite",
    processes: Annotated[
        int,
        typer.Option(help="Worker processes sharing the store (flatstate; a contender runs one)."),
    ] = 1,
    tasks: Annotated[
        int,
        typer.Option(
            help="asyncio tasks per flatstate process, each running the loop on the async API "
            "(0: one synchronous caller; --read entry only)."
        ),
    ] = 0,
    json_out: JsonOutOption = None,
    plot: Annotated[
        str | None, typer.Option(help="Draw RSS, operations a second and latency to this PNG.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """The workload that grew OpenClaw's gateway ~1 GB a minute, against copying caches."""
    from flatstate.bench.seed import SeedOptions, run_seed

    options = SeedOptions(
        entries=entries, read=read, write_every=write_every, compaction_every=compaction_every,
        facts=facts, strategy=strategy, profile=profile, seconds=seconds, backend=backend,
        processes=processes, tasks=tasks,
    )  # fmt: skip
    try:
        report = _run_live(lambda progress: run_seed(options, progress), options.chosen())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _finish(report, json_out, plot, json_output, _print_seed)


@app.command("soak")
def soak(
    minutes: Annotated[float, typer.Option(help="How long to run.")] = 5.0,
    entries: Annotated[int, typer.Option(help="Sessions in the store.")] = 2000,
    read: Annotated[str, typer.Option(help="entry, store or mixed.")] = "entry",
    profile: Annotated[str, typer.Option(help="small or heavy.")] = "small",
    backend: Annotated[str, typer.Option(help="sqlite or jsonfile.")] = "sqlite",
    json_out: JsonOutOption = None,
    plot: Annotated[str | None, typer.Option(help="Draw RSS over time to this PNG.")] = None,
    json_output: JsonOption = False,
) -> None:
    """The seed workload (ours only) for longer: has RSS levelled off?"""
    from flatstate.bench.seed import OURS, SeedOptions, run_seed, soak_verdict

    options = SeedOptions(
        entries=entries, read=read, strategy=OURS, profile=profile,
        seconds=minutes * 60, backend=backend,
    )  # fmt: skip
    report = _run_live(lambda progress: run_seed(options, progress), [OURS])
    report["soak"] = soak_verdict(report["runs"][0], options.warmup)
    _finish(report, json_out, plot, json_output, _print_seed)


def _run_live(run: Any, strategies: list[str]) -> Any:
    """Run with a live table of operations and RSS per strategy, summed over its workers."""
    from rich.live import Live

    state: dict[str, dict[int, tuple[int, float, float]]] = {}

    def render() -> Table:
        table = Table(title="flatstate bench (live)")
        for column in ("strategy", "seconds", "ops", "ops/s", "RSS MiB"):
            table.add_column(column, justify="right")
        for name in strategies:
            workers = state.get(name, {}).values()
            ops = sum(w[0] for w in workers)
            elapsed = max((w[1] for w in workers), default=0.0)
            rss = sum(w[2] for w in workers)
            rate = f"{ops / elapsed:,.0f}" if elapsed else "-"
            table.add_row(name, f"{elapsed:.0f}", f"{ops:,}", rate, f"{rss:.1f}")
        return table

    with Live(render(), console=err_console, refresh_per_second=4, transient=True) as live:

        def progress(message: tuple[Any, ...]) -> None:
            strategy, worker, ops, elapsed, rss = message
            if strategy == "setup":
                live.update(Table(title="building the store, transcripts and facts..."))
                return
            state.setdefault(strategy, {})[worker] = (ops, elapsed, rss)
            live.update(render())

        return run(progress)


def _finish(
    report: Any, json_out: str | None, plot: str | None, json_output: bool, show: Any
) -> None:
    if json_out:
        import msgspec

        with open(json_out, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode(report), indent=2))
    if plot:
        from flatstate.bench.plot import plot_seed

        plot_seed(report, plot)
    if json_output:
        print_json(report)
    else:
        show(report)


READ_WORDS = {
    "entry": "reads of one session at a time",
    "store": "reads of the whole store",
    "mixed": "reads of one session and of the whole store, in turn",
}


def _print_seed(report: dict[str, Any]) -> None:
    from flatstate.bench.seed import OURS

    store = report["store"]
    options = report["options"]
    console.print(
        f"Seed workload: {store['entries']:,} sessions on {store['backend']}, {store['profile']} "
        f"profile; as sessions.json {store['sessions_json_mib']} MiB"
        f"{_derived(store, 'sessions_json_mib')}; {READ_WORDS[options['read']]}, one durable "
        f"patch every {options['write_every']} operations, a compaction every "
        f"{options['compaction_every']:g} s; {options['seconds']:g} s per strategy."
    )
    table = Table(title="How fast each cache serves it, and how much memory it holds")
    columns = ("strategy", "ops/s", "reads/s", "writes/s", "read p50 / p99 (timed)",
               "patch p50 / p99 (timed)", "RSS start → peak MiB", "RSS slope MiB/min",
               "lost writes")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for run in report["runs"]:
        latency = run["latency"]
        rss = f"{run['rss_start_mib']:.1f} → {run['rss_peak_mib']:.1f}"
        if run["processes"] > 1:
            rss += f" (each ≤ {run['rss_process_peak_mib']:.1f})"
        slope = run["rss_slope_mib_per_min"]
        table.add_row(
            run["strategy"]
            + (f" ×{run['processes']}" if run["processes"] > 1 else "")
            + (f", {run['tasks']} tasks" if run.get("tasks") else ""),
            f"{run['ops_per_s']:,.0f}",
            f"{run['reads_per_s']:,.0f}",
            f"{run['writes_per_s']:,.0f}",
            _latency(latency["get"] or latency["snapshot"]),
            _latency(latency["patch"]),
            rss,
            "-" if slope is None else f"{slope:g}",
            f"{run['lost_writes']}",
            style="dim" if run["strategy"] == "dict" else None,
        )
    table.caption = (
        "dim: dict hands out our frozen entries from one shared, mutable dict with no freshness "
        "check (the floor; readers not isolated). entrycopy parses only the entry read; deepcopy, "
        "json, orjson and pickle copy the whole store on every read and write. Every write is a "
        "durable flatstate commit; dict and entrycopy make theirs through a store that keeps its "
        "cache, as ours does, and their RSS holds it. RSS is summed over a strategy's processes."
    )
    console.print(table)
    ratios = report.get("ratios", {})
    if "best_isolating" in ratios:
        console.print(
            f"{OURS} served {_times(ratios['ops_vs_best_isolating'])} the operations a second of "
            f"the fastest contender that keeps readers isolated ({ratios['best_isolating']})"
        )
    if "ops_vs_dict" in ratios:
        console.print(
            f"{OURS} served {_times(ratios['ops_vs_dict'])} the operations a second of a plain "
            "dict that copies nothing and isolates no reader (the floor)"
        )
    if "targets" in report:
        targets = report["targets"]
        console.print(
            "RSS slope <= 1 MiB/min: "
            + (
                "not judged (run --seconds 40 or more)"
                if targets["rss_slope_ok"] is None
                else str(targets["rss_slope_ok"])
            )
            + "; peak RSS <= "
            f"{targets['peak_rss_limit_mib']} MiB: {targets['peak_rss_ok']}; "
            f"no lost writes: {targets['no_lost_writes']}"
        )
    if "soak" in report:
        verdict = report["soak"]
        first, second = verdict["rss_half_slopes_mib_per_min"]
        console.print(
            f"soak: RSS slope over each half after warm-up {first:g} and {second:g} MiB/min "
            f"({'levelled off' if verdict['levelled_off'] else 'still growing'}); Python heap "
            f"{verdict['heap_blocks_slope_per_min']:+,} blocks a minute; largest growth of the "
            f"cache: {verdict['cache_bytes_growth']:,} bytes"
        )
    print_machine(report["machine"])


def _latency(figures: dict[str, Any] | None) -> str:
    """p50 and p99 in the unit that suits them, and how many operations were timed, as in
    "2.0 µs / 4.5 µs (7,143)": a p99 of four timings is one of them, not a percentile."""
    if not figures:
        return "-"
    return (
        f"{_duration(figures['p50_ms'])} / {_duration(figures['p99_ms'])} ({figures['samples']:,})"
    )


def _duration(ms: float) -> str:
    value, unit = (ms * 1000, "µs") if ms < 1 else (ms, "ms")
    return f"{value:.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.3g}×"


@app.command("auth")
def bench_auth(
    calls: Annotated[
        int, typer.Option(help="Calls of select_profile and of get (RSS measured around).")
    ] = 1_000_000,
    profiles: Annotated[int, typer.Option(help="Profiles in the store.")] = 12,
    write_calls: Annotated[int, typer.Option(help="Calls of mark_failure (0 skips).")] = 500,
    refresh_calls: Annotated[
        int, typer.Option(help="Forced refresh_oauth calls, instant refresher (0 skips).")
    ] = 100,
    backend: Annotated[
        str,
        typer.Option(
            help="file (auth-profiles.json), or postgres: the file figures and, beside them, "
            "the same phases on PostgreSQL."
        ),
    ] = "file",
    dsn: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL DSN for --backend postgres (default: $FLATSTATE_BENCH_POSTGRES_DSN); "
            "the profiles get a namespace of their own, removed afterwards."
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Measure select_profile, read and write rates and RSS growth, vs a deepcopy per read."""
    from flatstate.bench.auth import BACKENDS, DSN_ENV, AuthBenchOptions, run_auth_bench

    if backend not in BACKENDS:
        raise typer.BadParameter(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "postgres" and not (dsn or os.environ.get(DSN_ENV)):
        raise typer.BadParameter(
            f"--backend postgres needs --dsn or {DSN_ENV}; a throwaway server: "
            "bash scripts/postgres start /tmp/flatstate-pg"
        )
    options = AuthBenchOptions(
        calls=calls,
        profiles=profiles,
        write_calls=write_calls,
        refresh_calls=refresh_calls,
        backend=backend,
        dsn=dsn,
    )
    command = f"flatstate bench auth --calls {calls} --profiles {profiles}"
    if backend != "file":
        command += f" --backend {backend}"
    run_bench(
        lambda progress: {**run_auth_bench(options, progress=progress), "command": command},
        json_output,
        _print_auth_bench,
    )


_AUTH_PHASES = {
    "select_profile": "select_profile(provider)",
    "get": "get(profile_id)",
    "get_stat_every_call": "get, a check on every call",
    "mark_failure": "mark_failure (locked write)",
    "refresh_oauth": "refresh_oauth, forced, instant refresher",
    "baseline": "deepcopy of the store per read",
}


def _print_auth_bench(result: dict[str, Any]) -> None:
    grid = table()
    grid.add_column("operation")
    postgres = result.get("postgres")
    columns = ["calls", "ops/s", "RSS before", "RSS after", "growth"]
    if postgres:
        columns += ["postgres calls", "postgres ops/s", "postgres growth"]
    for column in columns:
        grid.add_column(column, justify="right")
    for phase, r in result["phases"].items():
        cells = [
            f"{r['calls']:,}",
            f"{r['per_s']:,}",
            f"{r['rss_before_mib']} MiB",
            f"{r['rss_after_mib']} MiB",
            f"{r['rss_growth_mib']:+} MiB",
        ]
        if postgres:
            p = postgres.get(phase)
            cells += (
                [f"{p['calls']:,}", f"{p['per_s']:,}", f"{p['rss_growth_mib']:+} MiB"]
                if p
                else ["-", "-", "-"]
            )
        add_row(
            grid,
            _AUTH_PHASES.get(phase, phase),
            *cells,
            style="dim" if phase == "baseline" else None,
        )
    where = "file, and PostgreSQL beside it" if postgres else "file"
    print_table(grid, f"Auth store ({result['options']['profiles']} profiles; {where})")
    if "get_vs_deepcopy" in result:
        say(f"get vs deepcopy-per-read: {result['get_vs_deepcopy']:,}x")
    if postgres:
        say(
            "postgres 'a check on every call' asks the server for the store's version "
            "(a round trip); with the default check_interval, a read waits for one at most "
            "once per 0.25 s."
        )
    print_machine(result["machine"])
    say(f"command: {result['command']}")


@app.command("facts")
def bench_facts(
    sizes: Annotated[
        str, typer.Option(help="Comma-separated fact counts to measure recall at.")
    ] = "10000,100000",
    recalls: Annotated[int, typer.Option(help="Timed recalls per size.")] = 2000,
    adds: Annotated[int, typer.Option(help="Facts added one at a time for the add rate.")] = 5000,
    soak_recalls: Annotated[
        int, typer.Option(help="Recalls between the two RSS readings (0 skips).")
    ] = 100_000,
    soak_size: Annotated[int, typer.Option(help="Facts in the store for the RSS check.")] = 10_000,
    vector_recalls: Annotated[
        int,
        typer.Option(help="Timed hybrid (keyword + vector) recalls at the first size (0 skips)."),
    ] = 500,
    seed: Annotated[int, typer.Option(help="Seed of the generated corpus and queries.")] = 7,
    directory: Annotated[
        str | None, typer.Option(help="Build the databases here (kept) instead of a temp dir.")
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="sqlite, or postgres: recall and adds measured on PostgreSQL too, beside "
            "SQLite's figures from the same run."
        ),
    ] = "sqlite",
    dsn: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL DSN for --backend postgres (default: $FLATSTATE_BENCH_POSTGRES_DSN); "
            "each size gets a namespace of its own, removed afterwards."
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Measure recall latency (p50/p99), add rate and RSS across 100,000 recalls.

    Every phase runs in a fresh process on a seeded, generated corpus.
    """
    from flatstate.bench.facts import BACKENDS, DSN_ENV

    if backend not in BACKENDS:
        raise typer.BadParameter(f"choose from {', '.join(BACKENDS)}", param_hint="'--backend'")
    if backend == "postgres" and not (dsn or os.environ.get(DSN_ENV)):
        raise typer.BadParameter(f"--backend postgres needs --dsn or ${DSN_ENV}")
    from flatstate.bench.facts import FactsBenchOptions, run_facts_bench

    try:
        counts = [int(part) for part in sizes.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"sizes must be comma-separated integers, not {sizes!r}") from None
    options = FactsBenchOptions(
        sizes=counts,
        recalls=recalls,
        adds=adds,
        soak_recalls=soak_recalls,
        soak_size=soak_size,
        vector_recalls=vector_recalls,
        seed=seed,
        directory=directory,
        backend=backend,
        dsn=dsn,
    )
    run_bench(
        lambda progress: run_facts_bench(options, progress=progress),
        json_output,
        _print_facts_bench,
    )


def _print_facts_bench(result: dict[str, Any]) -> None:
    postgres = result.get("postgres")
    grid = table()
    columns = ["facts", "p50", "p99", "max", "mean facts/recall", "populate facts/s"]
    if postgres:
        columns += ["postgres p50", "postgres p99", "postgres max", "postgres populate/s"]
    for column in columns:
        grid.add_column(column, justify="right")
    for size, r in result["recall"].items():
        cells = [
            f"{int(size):,}",
            f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['max_ms']:.3f}",
            f"{r['mean_facts']:.1f}",
            f"{r['populate_per_s']:,}",
        ]
        if postgres:
            p = postgres["recall"][size]
            cells += [
                f"{p['p50_ms']:.3f}",
                f"{p['p99_ms']:.3f}",
                f"{p['max_ms']:.3f}",
                f"{p['populate_per_s']:,}",
            ]
        add_row(grid, *cells)
    if "vector_recall" in result:
        v = result["vector_recall"]
        add_row(
            grid,
            f"{v['facts']:,} (hybrid)",
            f"{v['p50_ms']:.3f}",
            f"{v['p99_ms']:.3f}",
            f"{v['max_ms']:.3f}",
            f"{v['mean_facts']:.1f}",
            "-",
            *(["-"] * 4 if postgres else []),
            style="dim",
        )
        grid.caption = f"dim row: keyword + vector ({v['dimensions']}-d hashed embedding)"
    print_table(
        grid, "Fact recall latency (ms)" + (": SQLite, then PostgreSQL" if postgres else "")
    )
    adds = [("", result["add"])] + ([("postgres ", postgres["add"])] if postgres else [])
    for label, add in adds:
        console.print(
            f"{label}add: {add['per_s']:,} facts/s, one transaction each (median of "
            f"{add['chunk']:,}-add chunks; {add['overall_per_s']:,}/s overall; "
            f"{add['count']:,} adds into {add['start_facts']:,} facts)"
        )
    if "soak" in result:
        soak = result["soak"]
        console.print(
            f"RSS across {soak['recalls']:,} recalls at {soak['facts']:,} facts: "
            f"{soak['rss_before_mib']} -> {soak['rss_after_mib']} MiB "
            f"(growth {soak['rss_growth_mib']} MiB)"
        )
    print_machine(result["machine"], sqlite=result["sqlite"])


@app.command("langgraph")
def bench_langgraph(
    threads: Annotated[
        int, typer.Option(help="LangGraph threads the steps are shared over.")
    ] = 100,
    steps: Annotated[int, typer.Option(help="Steps in all (a put_writes and a put each).")] = 1000,
    state_kib: Annotated[int, typer.Option(help="KiB of documents in the state.")] = 64,
    change_kib: Annotated[int, typer.Option(help="KiB of it one step rewrites.")] = 1,
    gets: Annotated[
        int,
        typer.Option(
            help="get_tuple calls (latest checkpoint) a round; the best of 5 rounds counts."
        ),
    ] = 2000,
    runs: Annotated[
        int,
        typer.Option(
            help="Runs of every contender, alternated, each in a fresh process; a rate counts "
            "the best run (the machine's speed drifts)."
        ),
    ] = 3,
    contenders: Annotated[
        str, typer.Option(help="Comma-separated contenders, or all (see the docs).")
    ] = "all",
    dsn: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL server for the PostgreSQL contenders (default: "
            "$FLATSTATE_BENCH_POSTGRES_DSN, else a throwaway one from scripts/postgres); "
            "each gets a schema of its own, dropped afterwards."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated documents.")] = 7,
    json_out: JsonOutOption = None,
    json_output: JsonOption = False,
) -> None:
    """LangGraph checkpointers side by side, each in a fresh process: SqliteSaver,
    AsyncSqliteSaver, PostgresSaver and FlatstateSaver (SQLite and PostgreSQL, sync and
    async): put, put_writes and get_tuple rates, bytes on disk, RSS."""
    from flatstate.bench.langgraph import CONTENDERS, LangGraphBenchOptions, run_langgraph_bench

    chosen = CONTENDERS if contenders == "all" else tuple(c.strip() for c in contenders.split(","))
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown:
        raise typer.BadParameter(
            f"unknown contender {unknown[0]!r}; choose from {', '.join(CONTENDERS)}"
        )
    if min(threads, steps, state_kib, change_kib, runs) < 1 or gets < 0:
        raise typer.BadParameter(
            "threads, steps, state-kib, change-kib and runs must be at least 1"
        )
    options = LangGraphBenchOptions(
        threads=threads, steps=steps, state_kib=state_kib, change_kib=change_kib, gets=gets,
        runs=runs, seed=seed, dsn=dsn or os.environ.get("FLATSTATE_BENCH_POSTGRES_DSN"),
        contenders=chosen,
    )  # fmt: skip
    command = (
        f"flatstate bench langgraph --threads {threads} --steps {steps} --state-kib {state_kib} "
        f"--change-kib {change_kib} --gets {gets} --runs {runs}"
    )
    with err_console.status("starting") as status:
        report = {**run_langgraph_bench(options, progress=status.update), "command": command}
    _finish(report, json_out, None, json_output, _print_langgraph)


def _print_langgraph(report: dict[str, Any]) -> None:
    grid = table()
    grid.add_column("checkpointer")
    for column in ("put/s", "put_writes/s", "get_tuple/s", "disk", "RSS", "durability"):
        grid.add_column(column, justify="right")
    grid.add_column("vs SqliteSaver (put, get, disk)", justify="right")
    for name, run in report["runs"].items():
        ratios = run.get("vs_sqlite_saver")
        add_row(
            grid,
            name,
            f"{run['put_per_s']:,}",
            f"{run['put_writes_per_s']:,}",
            f"{run['get_tuple_per_s']:,}",
            f"{run['disk_bytes'] / (1 << 20):.2f} MiB",
            f"{run['rss_end_mib']} MiB",
            run["synchronous"],
            (
                f"{_times(ratios['put'])}, {_times(ratios['get_tuple'])}, {_times(ratios['disk'])}"
                if ratios
                else "-"
            ),
            style="dim" if name.startswith(("Sqlite", "AsyncSqlite", "Postgres")) else None,
        )
    o = report["options"]
    print_table(
        grid,
        f"LangGraph checkpointers: {o['steps']:,} steps over {o['threads']} threads, "
        f"{o['state_kib']} KiB state, {o['change_kib']} KiB changed per step; "
        f"each rate the best of {o['runs']} alternated runs",
    )
    for name, why in report["skipped"].items():
        say(f"{name}: skipped ({why})")
    print_machine(report["machine"])
    say(f"command: {report['command']}")
