"""``flatstate facts``: the memory facts of a state directory.

Each command opens the facts database, makes one ``FactStore`` call and
renders the result. The state directory is ``--state-dir``, else
``$FLATSTATE_HOME``, else ``~/.flatstate/main``.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from flatstate.cli._output import JsonOption, console, print_json, print_machine, run_bench

if TYPE_CHECKING:
    from flatstate.facts import Fact, FactStore

app = typer.Typer(help="Durable memory facts: add, search, list, show, forget, decay, stats.")

ENV_HOME = "FLATSTATE_HOME"
DEFAULT_HOME = os.path.join("~", ".flatstate", "main")


def default_state_dir() -> str:
    """``$FLATSTATE_HOME`` if set, else ``~/.flatstate/main``."""
    return os.path.expanduser(os.environ.get(ENV_HOME) or DEFAULT_HOME)


StateDirOption = Annotated[
    str | None,
    typer.Option(
        "--state-dir",
        help=f"State directory holding facts.sqlite [default: ${ENV_HOME} or {DEFAULT_HOME}].",
        show_default=False,
    ),
]


def _open(state_dir: str | None, *, create: bool = False) -> FactStore:
    from flatstate.facts import open_facts

    return open_facts(state_dir or default_state_dir(), create=create)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def _facts_table(title: str, facts: tuple[Fact, ...], scores: list[float] | None = None) -> Table:
    table = Table(title=title)
    if scores is not None:
        table.add_column("score", justify="right")
    for column in ("id", "category", "class", "created", "text"):
        table.add_column(column, overflow="fold")
    for i, fact in enumerate(facts):
        row = [fact.id[:8], fact.category, fact.decay_class, _when(fact.created_at), fact.text]
        if scores is not None:
            row.insert(0, f"{scores[i]:.3f}")
        table.add_row(*row)
    return table


@app.command("add")
def add(
    text: Annotated[str, typer.Argument(help="The fact, in one sentence.")],
    category: Annotated[str, typer.Option(help="preference, decision, entity, ...")] = "other",
    why: Annotated[str | None, typer.Option(help="Why it matters or where it came from.")] = None,
    importance: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.5,
    entity: Annotated[str | None, typer.Option(help="What the fact is about.")] = None,
    key: Annotated[str | None, typer.Option(help="Which attribute of the entity.")] = None,
    value: Annotated[str | None, typer.Option(help="The attribute's value.")] = None,
    source: Annotated[str | None, typer.Option(help="Who or what stated it.")] = None,
    decay_class: Annotated[
        str | None,
        typer.Option(
            help="permanent, stable, normal, short, session or ephemeral [default: guess]"
        ),
    ] = None,
    confidence: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    tag: Annotated[list[str] | None, typer.Option(help="A tag (repeatable).")] = None,
    supersedes: Annotated[str | None, typer.Option(help="Id of a fact this replaces.")] = None,
    state_dir: StateDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add a fact; a restatement of a live fact returns (and confirms) that fact instead."""
    with _open(state_dir, create=True) as facts:
        fact = facts.add(
            text,
            category=category,
            why=why,
            importance=importance,
            entity=entity,
            key=key,
            value=value,
            source=source,
            decay_class=decay_class,
            confidence=confidence,
            tags=tuple(tag or ()),
            supersedes=supersedes,
        )
    if json_output:
        print_json(fact)
        return
    console.print(f"{fact.id}  [{fact.category}, {fact.decay_class}] {fact.text}", markup=False)


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="Any text; it is split into words.")],
    limit: Annotated[int, typer.Option(min=1, help="At most this many facts.")] = 10,
    state_dir: StateDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Rank live facts for a query (bm25, freshness, confidence); changes nothing."""
    with _open(state_dir) as facts:
        hits = facts.search(query, limit=limit)
    if json_output:
        print_json(hits)
        return
    table = _facts_table(
        f"{len(hits)} facts for {query!r}",
        tuple(hit.fact for hit in hits),
        [hit.score for hit in hits],
    )
    console.print(table)


@app.command("list")
def list_(
    n: Annotated[int, typer.Option("-n", "--count", min=0, help="How many facts.")] = 20,
    state_dir: StateDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """The newest live facts, newest first."""
    with _open(state_dir) as facts:
        newest = facts.list(n)
    if json_output:
        print_json(newest)
        return
    console.print(_facts_table(f"{len(newest)} newest facts", newest))


@app.command("show")
def show(
    fact_id: Annotated[str, typer.Argument(help="A fact id (or its first 8 characters).")],
    state_dir: StateDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every field of one fact."""
    with _open(state_dir) as facts:
        fact = facts.resolve(fact_id)
    if json_output:
        print_json(fact)
        return
    table = Table(show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for name in fact.__struct_fields__:
        value: Any = getattr(fact, name)
        if name.endswith("_at") and isinstance(value, int):
            value = f"{value}  ({_when(value)} UTC)"
        elif isinstance(value, tuple):
            value = ", ".join(value) or "-"
        table.add_row(name, "-" if value is None else str(value))
    console.print(table)


@app.command("forget")
def forget(
    fact_id: Annotated[str, typer.Argument(help="A fact id (or its first 8 characters).")],
    state_dir: StateDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a fact for good."""
    with _open(state_dir) as facts:
        fact = facts.resolve(fact_id)
        facts.forget(fact.id)
    if json_output:
        print_json({"forgotten": fact.id})
        return
    console.print(f"forgot {fact.id}: {fact.text}", markup=False)


@app.command("decay")
def decay(state_dir: StateDirOption = None, json_output: JsonOption = False) -> None:
    """Delete expired facts, halve fading ones, drop those under 0.1 confidence."""
    with _open(state_dir) as facts:
        report = facts.decay()
    if json_output:
        print_json(report)
        return
    console.print(
        f"expired {report.expired}, halved {report.halved}, dropped {report.dropped} "
        "(confidence below 0.1)"
    )


@app.command("stats")
def stats(state_dir: StateDirOption = None, json_output: JsonOption = False) -> None:
    """How many facts there are, by state and decay class, and the database's size."""
    with _open(state_dir) as facts:
        result = facts.stats()
    if json_output:
        print_json(result)
        return
    table = Table(title=result.path, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("live", f"{result.live:,}")
    table.add_row("superseded", f"{result.superseded:,}")
    table.add_row("expired (awaiting decay)", f"{result.expired:,}")
    table.add_row("total rows", f"{result.total:,}")
    for name, count in result.by_class:
        table.add_row(f"  live {name}", f"{count:,}")
    table.add_row("vectors", f"{result.vectors:,}")
    table.add_row("on disk", f"{result.disk_bytes / (1 << 20):.2f} MiB")
    console.print(table)


# -- the benchmark (registered on the bench sub-app) ------------------------------


def register_bench(bench_app: typer.Typer) -> None:
    """Add ``flatstate bench facts`` to the bench sub-app."""
    bench_app.command("facts")(bench_facts)


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
    json_output: JsonOption = False,
) -> None:
    """Measure recall latency (p50/p99), add rate and RSS across 100,000 recalls.

    Every phase runs in a fresh process on a seeded, generated corpus.
    """
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
    )
    run_bench(
        lambda progress: run_facts_bench(options, progress=progress), json_output, _print_bench
    )


def _print_bench(result: dict[str, Any]) -> None:
    table = Table(title="Fact recall latency (ms)")
    for column in ("facts", "p50", "p99", "max", "mean facts/recall", "populate facts/s"):
        table.add_column(column, justify="right")
    for size, r in result["recall"].items():
        table.add_row(
            f"{int(size):,}",
            f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['max_ms']:.3f}",
            f"{r['mean_facts']:.1f}",
            f"{r['populate_per_s']:,}",
        )
    if "vector_recall" in result:
        v = result["vector_recall"]
        table.add_row(
            f"{v['facts']:,} (hybrid)",
            f"{v['p50_ms']:.3f}",
            f"{v['p99_ms']:.3f}",
            f"{v['max_ms']:.3f}",
            f"{v['mean_facts']:.1f}",
            "-",
            style="dim",
        )
        table.caption = f"dim row: keyword + vector ({v['dimensions']}-d hashed embedding)"
    console.print(table)
    add = result["add"]
    console.print(
        f"add: {add['per_s']:,} facts/s, one transaction each (median of {add['chunk']:,}-add "
        f"chunks; {add['overall_per_s']:,}/s overall; {add['count']:,} adds into "
        f"{add['start_facts']:,} facts)"
    )
    if "soak" in result:
        soak = result["soak"]
        console.print(
            f"RSS across {soak['recalls']:,} recalls at {soak['facts']:,} facts: "
            f"{soak['rss_before_mib']} -> {soak['rss_after_mib']} MiB "
            f"(growth {soak['rss_growth_mib']} MiB)"
        )
    print_machine(result["machine"], sqlite=result["sqlite"])
