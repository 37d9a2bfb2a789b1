"""The ``flatstate`` command: a thin shell over the library.

Each command opens a store, makes one documented library call and renders the
result, as a Rich table for people or as JSON with ``--json``. A library error
becomes one line on stderr and exit code 1.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from flatstate.errors import FlatstateError


class _Group(TyperGroup):
    """Turns flatstate's errors into one clear line on stderr and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (FlatstateError, FileNotFoundError, NotADirectoryError) as exc:
            from flatstate.cli._output import err_console

            err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from exc


app = typer.Typer(
    cls=_Group,
    name="flatstate",
    help="State for AI-agent gateways: sessions, transcripts, auth profiles and memory facts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from flatstate import __version__

        typer.echo(f"flatstate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print flatstate's version and exit.",
    ),
) -> None:
    """State for AI-agent gateways: sessions, transcripts, auth profiles and memory facts."""


def _register() -> None:
    from flatstate.cli import auth, bench, facts, sessions, transcripts

    sessions.register(app)
    transcripts.register(app, sessions.app)
    app.add_typer(bench.app, name="bench")
    app.add_typer(auth.app, name="auth")
    auth.register_bench(bench.app)
    app.add_typer(facts.app, name="facts")
    facts.register_bench(bench.app)


_register()


def main() -> None:
    app()
