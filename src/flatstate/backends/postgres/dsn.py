"""PostgreSQL locations: the DSN libpq sees, flatstate's own URL parameters, and the
redacted form that names a store in messages (never its password)."""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from flatstate.errors import InvalidLocation
from flatstate.keys import DEFAULT_AGENT_ID, normalize_agent_id

__all__ = [
    "DEFAULT_SCHEMA",
    "Location",
    "dsn_params",
    "local_state_dir",
    "redact_dsn",
    "resolve",
    "split_dsn",
]

DEFAULT_SCHEMA = "flatstate"
# The DSN's query parameters that are flatstate's, not libpq's.
OWN_PARAMS = ("namespace", "schema", "state_dir")
_SECRET_PARAMS = ("password", "sslpassword")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
MAX_NAMESPACE = 200


def split_dsn(dsn: str) -> tuple[str, dict[str, str]]:
    """Separate flatstate's own URL parameters (``namespace``, ``schema``, ``state_dir``)
    from the DSN that libpq sees."""
    if "://" not in dsn:
        return dsn, {}
    parts = urlsplit(dsn)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in pairs if k in OWN_PARAMS}
    rest = [(k, v) for k, v in pairs if k not in OWN_PARAMS]
    return urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote))), ours


def dsn_params(libpq_dsn: str, location: str) -> dict[str, Any]:
    """The connection parameters of ``libpq_dsn``; InvalidLocation naming ``location`` (the
    redacted form) when psycopg cannot parse it, since psycopg's own message quotes the text
    it choked on, which may be the password."""
    try:
        params: dict[str, Any] = conninfo_to_dict(libpq_dsn)
    except psycopg.ProgrammingError:
        raise InvalidLocation(
            location,
            "not a usable PostgreSQL DSN",
            "Write it as postgresql://user@host:port/database, with a password's special "
            "characters %-encoded (see docs/postgres.md).",
        ) from None
    return params


def redact_dsn(dsn: str) -> str:
    """``dsn`` without its password (for messages, logs and ``location``)."""
    if "://" not in dsn:
        try:
            fields = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError:
            return "<unparsable DSN>"
        return make_conninfo(
            "", **{k: v for k, v in fields.items() if k not in _SECRET_PARAMS and v is not None}
        )
    parts = urlsplit(dsn)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = (userinfo.split(":", 1)[0] + at + hosts) if at else parts.netloc
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, v) for k, v in pairs if k not in _SECRET_PARAMS], quote_via=quote)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def safe_dirname(namespace: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", namespace) or "_"


class Location(NamedTuple):
    """Where a store is: what libpq connects to, and flatstate's part of it."""

    libpq_dsn: str
    namespace: str
    schema: str
    state_dir: str
    redacted: str  # for messages, logs and ``location``


def resolve(
    dsn: str,
    *,
    agent_id: str | None,
    namespace: str | None,
    schema: str | None,
    state_dir: str | None,
) -> Location:
    """The store a DSN and the keyword options name (a keyword wins over the URL)."""
    libpq_dsn, url_options = split_dsn(dsn)
    namespace = namespace or url_options.get("namespace")
    if not namespace:
        namespace = normalize_agent_id(agent_id or DEFAULT_AGENT_ID)
    schema = schema or url_options.get("schema") or DEFAULT_SCHEMA
    state_dir = state_dir or url_options.get("state_dir")
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"schema must be a lower-case identifier (letters, digits, _), not {schema!r}"
        )
    if len(namespace) > MAX_NAMESPACE or "\x00" in namespace:
        raise ValueError(f"namespace must be at most {MAX_NAMESPACE} characters, without NUL")
    query = urlencode(
        [("namespace", namespace)] + ([("schema", schema)] if schema != DEFAULT_SCHEMA else []),
        quote_via=quote,
    )
    redacted = redact_dsn(libpq_dsn)
    if "://" in redacted:
        redacted += ("&" if "?" in redacted else "?") + query
    else:
        redacted = f"{redacted} (namespace {namespace!r}, schema {schema!r})"
    state_dir = os.path.expanduser(
        state_dir or os.path.join("~", ".flatstate", safe_dirname(namespace))
    )
    return Location(libpq_dsn, namespace, schema, state_dir, redacted)


def local_state_dir(dsn: str, *, agent_id: str | None = None) -> str:
    """The local directory of a store at ``dsn`` (where an earlier flatstate kept its
    transcripts, facts and auth profiles), found without connecting: the URL's ``state_dir``,
    else ``~/.flatstate/<namespace>``."""
    return resolve(dsn, agent_id=agent_id, namespace=None, schema=None, state_dir=None).state_dir
