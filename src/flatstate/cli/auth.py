"""``flatstate auth``: list, show, add, remove, order and status of auth profiles.

Every command opens the store of ``--agent-dir`` (default: the main agent of
``$OPENCLAW_STATE_DIR`` or ``~/.openclaw``, i.e. ``~/.openclaw/agents/main/agent``)
and makes one library call. Secrets are never printed: a profile shows its
provider, type, email and ``…`` plus the last four characters of its secret,
or its ref. ``add`` reads a secret from a hidden prompt, an environment
variable or stdin, never from a command-line argument, which would land in
shell history and ``ps``.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from flatstate.cli._output import (
    JsonOption,
    console,
    err_console,
    print_json,
    print_machine,
    run_bench,
)

app = typer.Typer(
    help="Auth profiles (OpenClaw's auth-profiles.json): keys, tokens, OAuth grants, cooldowns.",
    no_args_is_help=True,
)


def default_agent_dir() -> str:
    """The main agent's directory under OpenClaw's state root."""
    root = os.environ.get("OPENCLAW_STATE_DIR") or os.path.join("~", ".openclaw")
    return os.path.join(os.path.expanduser(root), "agents", "main", "agent")


AgentDir = Annotated[
    str | None,
    typer.Option(
        "--agent-dir",
        help="Agent directory holding auth-profiles.json "
        "[default: $OPENCLAW_STATE_DIR or ~/.openclaw, then agents/main/agent].",
        show_default=False,
    ),
]
InheritFrom = Annotated[
    str | None,
    typer.Option(
        "--inherit-from",
        help="Main agent directory whose profiles this agent inherits (the agent wins per key).",
    ),
]


def _open(agent_dir: str | None, inherit_from: str | None = None) -> Any:
    from flatstate.auth import open_auth_store

    store = open_auth_store(agent_dir or default_agent_dir(), inherit_from=inherit_from)
    for problem in store.problems:
        err_console.print(
            f"warning: {problem.path}: {problem.message}", markup=False, highlight=False
        )
    return store


def _readonly_note(store: Any) -> None:
    if store.readonly:
        err_console.print(
            "note: the auth store is read-only (FLATSTATE_AUTH_READONLY): nothing was written",
            markup=False,
        )


@app.command("list")
def list_profiles(
    provider: Annotated[str | None, typer.Option(help="Only this provider's profiles.")] = None,
    agent_dir: AgentDir = None,
    inherit_from: InheritFrom = None,
    json_output: JsonOption = False,
) -> None:
    """List profiles: id, provider, type, email and the last 4 characters of the secret."""
    store = _open(agent_dir, inherit_from)
    rows = [
        {
            "id": p.id,
            "provider": p.provider,
            "type": p.type,
            "email": p.email,
            "secret": p.hint,
        }
        for p in store.profiles(provider)
    ]
    if json_output:
        print_json(rows)
        return
    table = Table(title=f"Auth profiles ({store.path})")
    table.add_column("id", no_wrap=True)
    for column in ("provider", "type", "email", "secret"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(row[c] or "") for c in ("id", "provider", "type", "email", "secret")))
    console.print(table)


@app.command("show")
def show(
    profile_id: Annotated[str, typer.Argument(help="Profile id, e.g. anthropic:default.")],
    agent_dir: AgentDir = None,
    inherit_from: InheritFrom = None,
    json_output: JsonOption = False,
) -> None:
    """Show one profile's fields (secrets as their last 4 characters) and its usage stats."""
    from flatstate.errors import InvalidProfile

    store = _open(agent_dir, inherit_from)
    profile = store.get(profile_id)
    if profile is None:
        raise InvalidProfile(profile_id, "no such profile (list them with `flatstate auth list`)")
    stats = store.usage(profile_id)
    result = {
        "id": profile.id,
        "profile": profile.redacted(),
        "usage": stats.to_dict() if stats is not None else None,
    }
    if json_output:
        print_json(result)
        return
    table = Table(title=f"Auth profile {profile.id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in result["profile"].items():
        table.add_row(key, str(value))
    for key, value in (result["usage"] or {}).items():
        table.add_row(f"usage.{key}", str(value))
    console.print(table)


@app.command("add")
def add(
    profile_id: Annotated[str, typer.Argument(help="Profile id, e.g. openai:default.")],
    kind: Annotated[
        str, typer.Option("--type", help="api_key, token or oauth (oauth reads JSON on stdin).")
    ] = "api_key",
    provider: Annotated[
        str | None, typer.Option(help="Provider [default: the part of the id before ':'].")
    ] = None,
    email: Annotated[str | None, typer.Option(help="Account email, for display.")] = None,
    ref: Annotated[
        str | None,
        typer.Option(help="Store a keyRef/tokenRef (env:NAME or file:PATH) instead of a secret."),
    ] = None,
    secret_env: Annotated[
        str | None, typer.Option(help="Read the secret from this environment variable.")
    ] = None,
    secret_stdin: Annotated[
        bool,
        typer.Option(help="Read the secret (oauth: a JSON object of tokens) from stdin."),
    ] = False,
    expires: Annotated[int | None, typer.Option(help="Token expiry, epoch ms.")] = None,
    agent_dir: AgentDir = None,
    json_output: JsonOption = False,
) -> None:
    """Add or replace a profile; the secret comes from a hidden prompt, --secret-env or stdin."""
    store = _open(agent_dir)
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
    profile = store.add(profile_id, credential)
    _readonly_note(store)
    row = {"id": profile.id, "provider": profile.provider, "type": profile.type}
    row["secret"] = profile.hint
    if json_output:
        print_json(row)
        return
    console.print(
        f"added {profile.id} ({profile.provider}, {profile.type}, {profile.hint})",
        markup=False,
        highlight=False,
    )


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
    profile_id: Annotated[str, typer.Argument(help="Profile id to remove.")],
    agent_dir: AgentDir = None,
    inherit_from: InheritFrom = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a profile with its usage stats, order entries and lastGood."""
    store = _open(agent_dir, inherit_from)
    removed = store.remove(profile_id)
    _readonly_note(store)
    if json_output:
        print_json({"id": profile_id, "removed": removed})
        return
    console.print(
        f"removed {profile_id}" if removed else f"no profile {profile_id}",
        markup=False,
        highlight=False,
    )


@app.command("order")
def order(
    provider: Annotated[str, typer.Argument(help="Provider, e.g. anthropic.")],
    profile_ids: Annotated[
        list[str] | None, typer.Argument(help="New order of profile ids (none: show it).")
    ] = None,
    clear: Annotated[bool, typer.Option(help="Remove the explicit order.")] = False,
    agent_dir: AgentDir = None,
    inherit_from: InheritFrom = None,
    json_output: JsonOption = False,
) -> None:
    """Show or set the explicit order in which a provider's profiles are tried."""
    from flatstate.auth.rotation import provider_key

    store = _open(agent_dir, inherit_from)
    if clear or profile_ids:
        current = store.set_order(provider, None if clear else profile_ids)
        _readonly_note(store)
    else:
        found = store.snapshot().order.get(provider_key(provider))
        if found is None:
            found = store.snapshot().order.get(provider)
        current = tuple(found or ())
    if json_output:
        print_json({"provider": provider, "order": list(current)})
        return
    text = " -> ".join(current) if current else "(no explicit order: lastGood, then oldest use)"
    console.print(f"{provider}: {text}", markup=False, highlight=False)


def _left(ms: int | None) -> str:
    if ms is None:
        return ""
    seconds = max(0, ms) // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def _when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%m-%d %H:%M:%S")


@app.command("status")
def status(
    provider: Annotated[str | None, typer.Option(help="Only this provider's profiles.")] = None,
    now: Annotated[
        int | None, typer.Option(help="Evaluate at this time, epoch ms [default: now].")
    ] = None,
    agent_dir: AgentDir = None,
    inherit_from: InheritFrom = None,
    json_output: JsonOption = False,
) -> None:
    """Show which profiles are usable, in cooldown or disabled, and the time left."""
    from flatstate.auth.rotation import provider_key

    store = _open(agent_dir, inherit_from)
    rows = store.status(now)
    if provider is not None:
        rows = tuple(r for r in rows if provider_key(r.provider) == provider_key(provider))
    if json_output:
        print_json(rows)
        return
    table = Table(title=f"Auth profile status ({store.path})")
    table.add_column("id", overflow="fold")
    for column in ("state", "left", "until (UTC)"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold")
    table.add_column("errors", justify="right")
    for r in rows:
        style = {"ok": "green", "cooldown": "yellow", "disabled": "red"}.get(r.state, "")
        table.add_row(
            r.id,
            f"[{style}]{r.state}[/{style}]",
            _left(r.remaining_ms),
            _when(r.until),
            r.reason or "",
            str(r.error_count),
        )
    console.print(table)


def register_bench(bench_app: typer.Typer) -> None:
    """Add ``flatstate bench auth`` to the bench command group."""

    @bench_app.command("auth")
    def bench_auth(
        calls: Annotated[
            int, typer.Option(help="Calls of select_profile and of get (RSS measured around).")
        ] = 1_000_000,
        profiles: Annotated[int, typer.Option(help="Profiles in the store.")] = 12,
        json_output: JsonOption = False,
    ) -> None:
        """Measure select_profile and profile-read rates and RSS growth, vs a deepcopy per read."""
        from flatstate.bench.auth import AuthBenchOptions, run_auth_bench

        options = AuthBenchOptions(calls=calls, profiles=profiles)
        command = f"flatstate bench auth --calls {calls} --profiles {profiles}"
        run_bench(
            lambda progress: {**run_auth_bench(options, progress=progress), "command": command},
            json_output,
            _print_bench,
        )


def _print_bench(result: dict[str, Any]) -> None:
    table = Table(title=f"Auth store reads ({result['options']['profiles']} profiles)")
    table.add_column("operation")
    for column in ("calls", "ops/s", "RSS before", "RSS after", "growth"):
        table.add_column(column, justify="right")
    names = {
        "select_profile": "select_profile(provider)",
        "get": "get(profile_id)",
        "get_stat_every_call": "get, stat on every call",
        "baseline": "deepcopy of the store per read",
    }
    for phase, r in result["phases"].items():
        table.add_row(
            names.get(phase, phase),
            f"{r['calls']:,}",
            f"{r['per_s']:,}",
            f"{r['rss_before_mib']} MiB",
            f"{r['rss_after_mib']} MiB",
            f"{r['rss_growth_mib']:+} MiB",
            style="dim" if phase == "baseline" else None,
        )
    console.print(table)
    if "get_vs_deepcopy" in result:
        console.print(f"get vs deepcopy-per-read: {result['get_vs_deepcopy']:,}x")
    print_machine(result["machine"])
    console.print(f"command: {result['command']}", markup=False, highlight=False)
