"""``flatstate facts``: the memory facts of an agent.

Each command opens the facts database of ``--store`` (``facts.sqlite`` in a
state directory, or in an OpenClaw agent's ``agent/`` directory; see
:mod:`flatstate.cli._where`), makes one ``FactStore`` call and renders the
result. Only ``add`` creates the database; the reading commands open it
read-only. A fact id may be given as the 8 characters ``facts list`` shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from flatstate.cli import _where as where
from flatstate.cli._output import (
    JsonOption,
    add_row,
    count,
    listing,
    print_json,
    print_table,
    say,
    shown_of,
    table,
    when,
)
from flatstate.cli._where import DEFAULT_STORE, AgentOption, StoreOption
from flatstate.model import now_ms

if TYPE_CHECKING:
    from flatstate.facts import Fact

app = typer.Typer(help="Durable memory facts: add, search, list, show, forget, decay, stats.")

FactArgument = Annotated[
    str, typer.Argument(metavar="ID", help="A fact id, or its first 8 characters.")
]


def _print_facts(title: str, facts: tuple[Fact, ...], scores: list[float] | None = None) -> None:
    now = now_ms()
    grid = table()
    if scores is not None:
        grid.add_column("score", justify="right")
    for column in ("id", "category", "class", "created", "text"):
        grid.add_column(column, overflow="fold")
    for i, fact in enumerate(facts):
        row = [fact.id[:8], fact.category, fact.decay_class, when(fact.created_at, now), fact.text]
        if scores is not None:
            row.insert(0, f"{scores[i]:.3f}")
        add_row(grid, *row)
    print_table(grid, title)


def _source(place: where.Place, path: str) -> dict[str, Any]:
    return {**place.describe(), "store": path}


@app.command("add")
def add(
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The fact, in one sentence.")],
    category: Annotated[
        str, typer.Option(metavar="CATEGORY", help="preference, decision, entity, ...")
    ] = "other",
    why: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Why it matters or where it came from.")
    ] = None,
    importance: Annotated[
        float, typer.Option(min=0.0, max=1.0, metavar="X", help="How much it matters, 0 to 1.")
    ] = 0.5,
    entity: Annotated[
        str | None, typer.Option(metavar="NAME", help="What the fact is about.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Which attribute of the entity; a new fact about the same entity and key "
            "supersedes the live one.",
        ),
    ] = None,
    value: Annotated[
        str | None, typer.Option(metavar="TEXT", help="The attribute's value.")
    ] = None,
    source: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Who or what stated it.")
    ] = None,
    decay_class: Annotated[
        str | None,
        typer.Option(
            metavar="CLASS",
            help="permanent, stable, normal, short, session or ephemeral (default: guessed).",
        ),
    ] = None,
    confidence: Annotated[
        float, typer.Option(min=0.0, max=1.0, metavar="X", help="How sure, 0 to 1.")
    ] = 1.0,
    tag: Annotated[
        list[str] | None, typer.Option(metavar="TAG", help="A tag (repeatable).")
    ] = None,
    supersedes: Annotated[
        str | None, typer.Option(metavar="ID", help="Id (or its first 8 characters) it replaces.")
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add a fact; a restatement of a live fact returns (and confirms) that fact instead."""
    with where.facts(where.resolve(store, agent), write=True) as facts:
        replaced = supersedes and facts.resolve(supersedes).id
        # A new value of an entity's attribute replaces the values held until now.
        same_key = facts.lookup(entity, key) if entity and key else ()
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
            supersedes=replaced or None,
        )
        for old in same_key:
            if old.id not in (fact.id, replaced):
                facts.supersede(old, fact)
    if json_output:
        print_json(fact)
        return
    say(f"{fact.id[:8]}  [{fact.category}, {fact.decay_class}] {fact.text}")


@app.command("search")
def search(
    query: Annotated[
        str, typer.Argument(metavar="QUERY", help="Any text; it is split into words.")
    ],
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most this many facts.")] = 10,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Rank live facts for a query (bm25, freshness, confidence); changes nothing."""
    place = where.resolve(store, agent)
    with where.facts(place) as facts:
        hits = facts.search(query, limit=limit)
        path = facts.path
    if json_output:
        print_json(listing([_source(place, path)], list(hits), None))
        return
    title = f"{count(len(hits), 'fact')} for {query!r}"
    _print_facts(title, tuple(h.fact for h in hits), [h.score for h in hits])


@app.command("list")
def list_(
    n: Annotated[int, typer.Option("-n", "--count", min=0, metavar="N", help="How many.")] = 20,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """The newest live facts, newest first."""
    place = where.resolve(store, agent)
    with where.facts(place) as facts:
        newest, total, path = facts.list(n), facts.count(), facts.path
    if json_output:
        print_json(listing([_source(place, path)], list(newest), total))
        return
    _print_facts(f"{shown_of(len(newest), total, 'live fact')} in {path}", newest)


@app.command("show")
def show(
    fact_id: FactArgument,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every field of one fact."""
    with where.facts(where.resolve(store, agent)) as facts:
        fact, path = facts.resolve(fact_id), facts.path
    if json_output:
        print_json(fact)
        return
    now = now_ms()
    grid = table(show_header=False)
    grid.add_column("field", style="bold")
    grid.add_column("value", overflow="fold")
    for name in fact.__struct_fields__:
        value: Any = getattr(fact, name)
        if name.endswith("_at"):
            value = when(value, now)
        elif isinstance(value, tuple):
            value = ", ".join(value) or "-"
        add_row(grid, name, "-" if value is None else value)
    print_table(grid, f"fact {fact.id} in {path}")


@app.command("forget")
def forget(
    fact_id: FactArgument,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete a fact for good."""
    with where.facts(where.resolve(store, agent), write=True) as facts:
        fact = facts.resolve(fact_id)
        facts.forget(fact.id)
    if json_output:
        print_json({"forgotten": fact.id})
        return
    say(f"forgot {fact.id[:8]}: {fact.text}")


@app.command("decay")
def decay(
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Delete expired facts, halve fading ones, drop those under 0.1 confidence."""
    with where.facts(where.resolve(store, agent), write=True) as facts:
        report = facts.decay()
    if json_output:
        print_json(report)
        return
    say(
        f"expired {report.expired:,}, halved {report.halved:,}, dropped {report.dropped:,} "
        "(confidence below 0.1)"
    )


@app.command("stats")
def stats(
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """How many facts there are, by state and decay class, and the database's size."""
    with where.facts(where.resolve(store, agent)) as facts:
        result = facts.stats()
    if json_output:
        print_json(result)
        return
    grid = table(show_header=False)
    grid.add_column("what", style="bold")
    grid.add_column("value", justify="right")
    add_row(grid, "live", f"{result.live:,}")
    add_row(grid, "superseded", f"{result.superseded:,}")
    add_row(grid, "expired (awaiting decay)", f"{result.expired:,}")
    add_row(grid, "total rows", f"{result.total:,}")
    for name, number in result.by_class:
        add_row(grid, f"  live {name}", f"{number:,}")
    add_row(grid, "vectors", f"{result.vectors:,}")
    add_row(grid, "on disk", f"{result.disk_bytes / (1 << 20):.2f} MiB")
    print_table(grid, result.path)


# -- the benchmark (registered on the bench sub-app) ------------------------------
