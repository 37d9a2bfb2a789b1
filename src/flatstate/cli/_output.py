"""Output shared by every command: the consoles, JSON, errors, tables, times and counts."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flatstate.frozen import encode_json, escape_surrogates


def _width(stream: Any) -> int | None:
    """Rich's own choice on a terminal or under $COLUMNS; otherwise (a pipe, a CI log, a file)
    wide enough that tables of figures are not cut to 80 columns and ellipsized."""
    if os.environ.get("COLUMNS") or (stream is not None and stream.isatty()):
        return None
    return 160


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))

# Whether this invocation asked for JSON: its errors are then a JSON object on stdout too.
_json_mode = [False]


def _remember_json(value: bool) -> bool:
    _json_mode[0] = value
    return value


def reset_json_mode() -> None:
    _json_mode[0] = False


def json_mode() -> bool:
    return _json_mode[0]


JsonOption = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print machine-readable JSON instead of text (errors too, as an object).",
        callback=_remember_json,
        is_eager=True,
    ),
]


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON on stdout (msgspec Structs, frozen maps and plain data)."""
    sys.stdout.write(encode_json(value, indent=2).decode() + "\n")
    sys.stdout.flush()


# A URL's password (scheme://user:PASSWORD@host) and a conninfo's password=VALUE.
_SECRETS = re.compile(r"(?<=://)([^/?#@\s:]*):[^/?#@\s]*@|\b(ssl)?password\s*=\s*('[^']*'|\S+)")


def redact(text: str) -> str:
    """``text`` without any database password it quotes: a last guard on what we print.
    A lone surrogate (text a file kept) is shown as its escape: no stream can print it."""
    text = escape_surrogates(text)
    return _SECRETS.sub(lambda m: f"{m.group(1)}@" if m.group(1) is not None else "", text)


def report_error(exc: BaseException | str, kind: str | None = None) -> None:
    """One line on stderr (``error: ...``), or with ``--json`` an error object on stdout."""
    message = redact(" ".join(str(exc).split()))
    if _json_mode[0]:
        kind = kind or type(exc).__name__
        print_json({"error": {"type": kind, "message": message}})
    else:
        err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"warning: {redact(message)}", markup=False, highlight=False, soft_wrap=True)


def say(text: str) -> None:
    """A line for people, printed as it is (no markup: keys may hold [brackets])."""
    console.print(escape_surrogates(text), markup=False, highlight=False, soft_wrap=True)


def table(*, show_header: bool = True) -> Table:
    """A table for people: boxed on a terminal, plain columns into a pipe or a file."""
    return Table(show_header=show_header, box=box.HEAVY_HEAD if console.is_terminal else None)


def print_table(grid: Table, title: str | None = None) -> None:
    """``grid`` under a title line of its own (a table's title would wrap to its width)."""
    if title:
        say(title)
    console.print(grid)


def add_row(grid: Table, *cells: object, style: str | None = None) -> None:
    """Add a row of values shown as they are: a key holding [brackets] is not markup."""
    grid.add_row(*(Text(escape_surrogates(str(cell))) for cell in cells), style=style)


def run_bench(
    run: Callable[[Callable[[str], None]], dict[str, Any]],
    json_output: bool,
    print_tables: Callable[[dict[str, Any]], None],
) -> None:
    """Run a benchmark under a spinner that names its phase (on stderr), then print its
    figures: all of them as JSON, or tables for people."""
    with err_console.status("starting") as status:
        result = run(status.update)
    if json_output:
        print_json(result)
    else:
        print_tables(result)


def print_machine(machine: dict[str, Any], sqlite: str | None = None) -> None:
    """The dim closing line of a benchmark: where its figures were measured. ``sqlite``
    names another SQLite than the standard module's (the facts store's driver)."""
    versions = machine["versions"]
    parts = [
        f"{machine['cpus']} CPUs",
        f"{machine['memory_gib']} GiB",
        f"Python {versions['python']}",
        f"SQLite {sqlite or versions['sqlite']}",
        *([f"PostgreSQL {versions['postgresql']}"] if versions.get("postgresql") else []),
        *([f"{machine['filesystem']} file system"] if machine.get("filesystem") else []),
        f"flatstate {machine['flatstate']}",
    ]
    console.print(f"[dim]{', '.join(parts)}[/dim]")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 session', '2 sessions', '1,024 entries'."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def shown_of(shown: int, total: int, noun: str) -> str:
    """'3 of 50 sessions' when a listing is cut, else '5 sessions'."""
    return count(shown, noun) if shown == total else f"{shown:,} of {count(total, noun)}"


def listing(stores: list[dict[str, Any]], items: list[Any], total: int | None) -> dict[str, Any]:
    """The one JSON shape of every listing: where from, how many shown and in all, the items.

    ``total`` is None where counting everything would mean reading everything (a tail).
    """
    return {"stores": stores, "count": len(items), "total": total, "items": items}


def _age(ms: float, now_ms: int) -> str:
    seconds = (now_ms - ms) / 1000
    later, seconds = seconds < 0, abs(seconds)
    amount = f"{int(seconds)}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            amount = f"{int(seconds // size)}{unit}"
            break
    return f"in {amount}" if later else f"{amount} ago"


def when(ms: object, now_ms: int) -> str:
    """An epoch-milliseconds time in ISO 8601 (UTC) with its age: '2026-03-11T10:20:00Z (3m
    ago)' or '(in 45s)'; '-' when there is none."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "-"
    try:
        stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(ms)
    return f"{stamp.replace('+00:00', 'Z')} ({_age(ms, now_ms)})"


def store_path(value: str) -> str:
    return os.path.expanduser(value)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"
