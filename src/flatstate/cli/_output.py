"""Output shared by every command: one console, one JSON writer, one option set."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console

from flatstate.frozen import encode_json


def _width(stream: Any) -> int | None:
    """Rich's own choice on a terminal or under $COLUMNS; otherwise (a pipe, a CI log, a file)
    wide enough that tables of figures are not cut to 80 columns and ellipsized."""
    if os.environ.get("COLUMNS") or (stream is not None and stream.isatty()):
        return None
    return 160


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")
]


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON on stdout (msgspec Structs, frozen maps and plain data)."""
    sys.stdout.write(msgspec.json.format(encode_json(value), indent=2).decode() + "\n")
    sys.stdout.flush()


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


DEFAULT_STORE = "~/.flatstate/main"

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        envvar="FLATSTATE_STORE",
        help="A sessions.json (OpenClaw's), a state directory (SQLite) or a postgresql:// URL "
        "(keep its password out of the process list: pass it in FLATSTATE_STORE).",
    ),
]


def store_path(value: str) -> str:
    return os.path.expanduser(value)


def ago(ms: object, now_ms: int) -> str:
    """'3m ago' for an epoch-milliseconds value; '-' when there is none."""
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "-"
    seconds = max(0.0, (now_ms - ms) / 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{n} B"
