"""``flatstate auth``: list, show, add, remove, order and status of auth profiles.

Every command finds ``auth-profiles.json`` through ``--store`` (see
:mod:`flatstate.cli._where`) and makes one library call. The reading commands
open the store read-only, so they leave every file and mode as it was (a mode
open to others is reported; a write or ``flatstate doctor --repair`` narrows
it). Secrets are never printed: a profile shows its provider, type, email and
``…`` plus the last four characters of its secret, or its ref. ``add`` reads a
secret from a hidden prompt, an environment variable or stdin, never from a
command-line argument, which would land in shell history and ``ps``.
"""

from __future__ import annotations

import os
import sys
from shlex import quote
from typing import Annotated, Any

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
    table,
    when,
)
from flatstate.cli._where import DEFAULT_STORE, AgentOption, StoreOption
from flatstate.errors import InvalidProfile
from flatstate.model import now_ms

app = typer.Typer(
    help="Auth profiles (OpenClaw's auth-profiles.json): keys, tokens, OAuth grants, cooldowns.",
    no_args_is_help=True,
)

ProfileArgument = Annotated[
    str, typer.Argument(metavar="PROFILE_ID", help="Profile id, e.g. anthropic:default.")
]
ProviderOption = Annotated[
    str | None, typer.Option(metavar="PROVIDER", help="Only this provider's profiles.")
]
InheritFrom = Annotated[
    str | None,
    typer.Option(
        "--inherit-from",
        metavar="PATH",
        help="The main agent's store (anything --store takes), whose profiles this agent "
        "inherits; the agent wins per id.",
    ),
]


def _missing_profile(profile_id: str, place: where.Place) -> InvalidProfile:
    return InvalidProfile(
        profile_id,
        f"no such profile (list them with: flatstate auth list --store {quote(place.shown)})",
    )


def _readonly_note(store: Any) -> None:
    if store.readonly:
        say("note: the auth store is read-only (FLATSTATE_AUTH_READONLY): nothing was written")


@app.command("list")
def list_profiles(
    provider: ProviderOption = None,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    inherit_from: InheritFrom = None,
    json_output: JsonOption = False,
) -> None:
    """List profiles: id, provider, type, email and the last 4 characters of the secret."""
    place = where.resolve(store, agent)
    auth = where.auth(place, inherit_from=inherit_from)
    rows = [
        {"id": p.id, "provider": p.provider, "type": p.type, "email": p.email, "secret": p.hint}
        for p in auth.profiles(provider)
    ]
    if json_output:
        source = {**place.describe(), "store": auth.path}
        print_json(listing([source], rows, len(rows)))
        return
    grid = table()
    grid.add_column("id", no_wrap=True)
    for column in ("provider", "type", "email", "secret"):
        grid.add_column(column, overflow="fold")
    for row in rows:
        add_row(grid, *(row[c] or "-" for c in ("id", "provider", "type", "email", "secret")))
    print_table(grid, f"{count(len(rows), 'auth profile')} in {auth.path}")


@app.command("show")
def show(
    profile_id: ProfileArgument,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    inherit_from: InheritFrom = None,
    json_output: JsonOption = False,
) -> None:
    """Show one profile's fields (secrets as their last 4 characters) and its usage stats."""
    place = where.resolve(store, agent)
    auth = where.auth(place, inherit_from=inherit_from)
    profile = auth.get(profile_id)
    if profile is None:
        raise _missing_profile(profile_id, place)
    stats = auth.usage(profile_id)
    fields: dict[str, Any] = profile.redacted()
    usage = stats.to_dict() if stats is not None else None
    result = {"id": profile.id, "profile": fields, "usage": usage}
    if json_output:
        print_json(result)
        return
    now = now_ms()
    grid = table(show_header=False)
    grid.add_column("field", style="bold")
    grid.add_column("value", overflow="fold")
    rows = [*fields.items(), *((f"usage.{k}", v) for k, v in (usage or {}).items())]
    for name, value in rows:
        timed = name == "expires" or name.removeprefix("usage.") in _TIMES
        add_row(grid, name, when(value, now) if timed else value)
    print_table(grid, f"auth profile {profile.id} in {auth.path}")


# usageStats fields that hold epoch milliseconds.
_TIMES = frozenset({"lastUsed", "cooldownUntil", "disabledUntil", "lastFailureAt"})


def _interactive() -> bool:
    return sys.stdin.isatty()


@app.command("add")
def add(
    profile_id: Annotated[
        str, typer.Argument(metavar="PROFILE_ID", help="Profile id, e.g. openai:default.")
    ],
    kind: Annotated[
        str,
        typer.Option(
            "--type",
            metavar="TYPE",
            help="api_key, token or oauth (oauth reads a JSON object of tokens).",
        ),
    ] = "api_key",
    provider: Annotated[
        str | None,
        typer.Option(metavar="PROVIDER", help="Provider (default: the id's part before ':')."),
    ] = None,
    email: Annotated[
        str | None, typer.Option(metavar="EMAIL", help="Account email, for display.")
    ] = None,
    ref: Annotated[
        str | None,
        typer.Option(
            metavar="REF",
            help="Store a keyRef/tokenRef (env:NAME or file:PATH) instead of a secret.",
        ),
    ] = None,
    secret_env: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Read the secret from this environment variable."),
    ] = None,
    secret_stdin: Annotated[
        bool,
        typer.Option(
            "--secret-stdin", help="Read the secret (oauth: a JSON object of tokens) from stdin."
        ),
    ] = False,
    expires: Annotated[
        int | None, typer.Option(metavar="MS", help="Token expiry, epoch milliseconds.")
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add or replace a profile; the secret comes from a hidden prompt, --secret-env or stdin."""
    credential: dict[str, Any] = {
        "type": kind,
        "provider": provider or profile_id.partition(":")[0],
    }
    if email:
        credential["email"] = email
    if expires is not None:
        credential["expires"] = expires
    if kind == "oauth":
        credential.update(_oauth_tokens(secret_stdin, secret_env))
    elif ref is not None:
        credential["keyRef" if kind == "api_key" else "tokenRef"] = ref
    else:
        field = "key" if kind == "api_key" else "token"
        credential[field] = _read_secret(profile_id, secret_env, secret_stdin)
    auth, profile = where.auth_change(
        where.resolve(store, agent), lambda auth: auth.add(profile_id, credential)
    )
    _readonly_note(auth)
    row = {"id": profile.id, "provider": profile.provider, "type": profile.type}
    row["secret"] = profile.hint
    if json_output:
        print_json(row)
        return
    say(f"added {profile.id} ({profile.provider}, {profile.type}, {profile.hint})")


def _read_secret(profile_id: str, env: str | None, stdin: bool) -> str:
    if env is not None:
        value = os.environ.get(env, "")
        if not value:
            raise typer.BadParameter(f"environment variable {env} is not set or empty")
        return value
    if stdin:
        value = sys.stdin.readline().strip()
        if not value:
            raise typer.BadParameter("nothing was read from stdin")
        return value
    if not _interactive():
        raise typer.BadParameter(
            "there is no terminal to ask for the secret on: pipe it in with --secret-stdin, "
            "or name a variable with --secret-env NAME (or store a --ref)"
        )
    value = str(typer.prompt(f"Secret for {profile_id}", hide_input=True)).strip()
    if not value:
        raise typer.BadParameter("an empty secret was entered")
    return value


def _oauth_tokens(stdin: bool, env: str | None) -> dict[str, Any]:
    """OAuth tokens come as a JSON object ({access, refresh, expires, ...}) on stdin or in $ENV."""
    import json

    if env is not None:
        text = os.environ.get(env, "")
    elif stdin:
        text = sys.stdin.read()
    else:
        raise typer.BadParameter(
            "an oauth profile needs --secret-stdin (or --secret-env NAME) with a JSON object "
            'such as {"access": ..., "refresh": ..., "expires": ...}'
        )
    try:
        tokens = json.loads(text)
    except ValueError:
        raise typer.BadParameter("the oauth tokens are not valid JSON") from None
    if not isinstance(tokens, dict):
        raise typer.BadParameter("the oauth tokens must be a JSON object")
    return tokens


@app.command("remove")
def remove(
    profile_id: ProfileArgument,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    inherit_from: InheritFrom = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a profile with its usage stats, order entries and lastGood."""
    place = where.resolve(store, agent)

    def remove_it(auth: Any) -> None:
        if auth.get(profile_id) is None:
            raise _missing_profile(profile_id, place)
        auth.remove(profile_id)

    auth, _ = where.auth_change(place, remove_it, inherit_from=inherit_from)
    _readonly_note(auth)
    if json_output:
        print_json({"id": profile_id, "removed": True})
        return
    say(f"removed {profile_id}")


@app.command("order")
def order(
    provider: Annotated[str, typer.Argument(metavar="PROVIDER", help="Provider, e.g. anthropic.")],
    profile_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="PROFILE_ID", help="New order of profile ids (none: show it)."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the explicit order.")] = False,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    inherit_from: InheritFrom = None,
    json_output: JsonOption = False,
) -> None:
    """Show or set the explicit order in which a provider's profiles are tried."""
    from flatstate.auth.rotation import provider_key

    place = where.resolve(store, agent)
    if clear or profile_ids:
        auth, current = where.auth_change(
            place,
            lambda auth: auth.set_order(provider, None if clear else profile_ids),
            inherit_from=inherit_from,
        )
        _readonly_note(auth)
    else:
        auth = where.auth(place, inherit_from=inherit_from)
        found = auth.snapshot().order.get(provider_key(provider))
        if found is None:
            found = auth.snapshot().order.get(provider)
        current = tuple(found or ())
    if json_output:
        print_json({"provider": provider, "order": list(current)})
        return
    text = " -> ".join(current) if current else "(no explicit order: lastGood, then oldest use)"
    say(f"{provider}: {text}")


_STATE_STYLES = {"ok": "green", "cooldown": "yellow", "disabled": "red", "expired": "red"}


@app.command("status")
def status(
    provider: ProviderOption = None,
    now: Annotated[
        int | None,
        typer.Option(metavar="MS", help="Evaluate at this time, epoch ms (default: now)."),
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    inherit_from: InheritFrom = None,
    json_output: JsonOption = False,
) -> None:
    """Show which profiles are usable, in cooldown, disabled or expired, and until when."""
    from flatstate.auth.rotation import provider_key

    place = where.resolve(store, agent)
    auth = where.auth(place, inherit_from=inherit_from)
    at = now_ms() if now is None else now
    rows = auth.status(at)
    if provider is not None:
        rows = tuple(r for r in rows if provider_key(r.provider) == provider_key(provider))
    if json_output:
        source = {**place.describe(), "store": auth.path}
        print_json(listing([source], list(rows), len(rows)))
        return
    grid = table()
    for column in ("id", "state", "until", "expires", "reason"):
        grid.add_column(column, overflow="fold")
    grid.add_column("errors", justify="right")
    for r in rows:
        add_row(
            grid,
            r.id,
            r.state,
            when(r.until, at),
            when(r.expires, at),
            r.reason or "-",
            r.error_count,
            style=_STATE_STYLES.get(r.state),
        )
    print_table(grid, f"{count(len(rows), 'auth profile')} in {auth.path}")
