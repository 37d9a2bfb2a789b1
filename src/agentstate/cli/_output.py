"""Output shared by every command: one console, one JSON writer, one option set."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console

from agentstate.frozen import encode_json

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")
]


def print_json(value: Any) -> None:
    """Write ``value`` as indented JSON on stdout (msgspec Structs, frozen maps and plain data)."""
    sys.stdout.write(msgspec.json.format(encode_json(value), indent=2).decode() + "\n")
    sys.stdout.flush()
