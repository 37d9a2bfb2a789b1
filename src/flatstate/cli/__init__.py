"""The ``flatstate`` command: a thin shell over the library.

Each command opens a store, makes one documented library call and renders the
result, as text for people or as JSON with ``--json``. An error becomes one line
on stderr and exit code 1 (with ``--json``, an error object on stdout); no
traceback reaches the user, and nothing printed carries a password.
"""

from __future__ import annotations

import logging
from typing import Any, get_args, get_origin

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from flatstate.errors import FlatstateError

# Help shows what a value is, never a Python type: a metavar by the option's value type.
_METAVARS: dict[object, str] = {int: "N", float: "X"}


def _plain_help(command: Any) -> None:
    """Plain help (no boxes, no markup eaten from '[...]') with a metavar on every value,
    for ``command`` and everything under it."""
    command.rich_markup_mode = None
    for param in command.params:
        if param.param_type_name == "argument":
            # Its name says what it is: Typer would print a Python type after it.
            param.display_type_rich = lambda ctx: None
            if param.metavar is None:
                param.metavar = param.name.upper()
        elif param.metavar is None and not param.is_flag:
            annotation = param.type_descriptor.annotation
            if get_origin(annotation) is list:
                annotation = get_args(annotation)[0]
            param.metavar = _METAVARS.get(annotation, "TEXT")
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


class _Group(TyperGroup):
    """Turns errors into one clear line (or a JSON error object) and exit code 1, and keeps
    the library's log records, which the commands report themselves, off the terminal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_help(self)

    def invoke(self, ctx: Any) -> Any:
        from flatstate.cli._output import json_mode, report_error, reset_json_mode

        reset_json_mode()
        quiet = logging.NullHandler()  # without a handler, Python prints warnings raw
        logger = logging.getLogger("flatstate")
        logger.addHandler(quiet)
        try:
            return super().invoke(ctx)
        except TyperException as exc:  # a usage error: click prints it, unless --json
            if not json_mode():
                raise
            report_error(exc.format_message(), "UsageError")
            raise typer.Exit(exc.exit_code) from exc
        except (FlatstateError, OSError, ValueError) as exc:
            report_error(exc)
            raise typer.Exit(1) from exc
        finally:
            logger.removeHandler(quiet)


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
    """The command tree, one module a group or top-level command."""
    from flatstate.cli import (
        auth,
        bench,
        copy,
        doctor,
        facts,
        sessions,
        stats,
        transcripts,
        transfer,
    )

    app.add_typer(sessions.app, name="sessions")
    app.add_typer(transcripts.app, name="transcript")
    app.command("doctor")(doctor.doctor)
    app.command("stats")(stats.stats)
    app.command("import-openclaw")(transfer.import_openclaw)
    app.command("export-openclaw")(transfer.export_openclaw)
    app.command("copy")(copy.copy)
    app.add_typer(auth.app, name="auth")
    app.add_typer(facts.app, name="facts")
    app.add_typer(bench.app, name="bench")


_register()


def main() -> None:
    app()
