"""Secret refs: where a secret lives when it is not in ``auth-profiles.json``.

A ``keyRef`` or ``tokenRef`` is either a string, ``env:NAME`` or
``file:PATH``, or OpenClaw's object form ``{"source": "env" | "file", "id":
NAME_OR_PATH}``. A ref is resolved each time the secret is used, never at load,
so a rotated environment variable or file takes effect at once and the
plaintext is never cached in the store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flatstate.errors import SecretUnavailable

__all__ = ["REF_SOURCES", "parse_ref", "resolve_ref"]

REF_SOURCES = ("env", "file")

# A secret file is a few kilobytes at most; a larger one is a wrong path.
_MAX_SECRET_FILE = 64 << 10


def parse_ref(ref: Any) -> tuple[str, str] | None:
    """``(source, name)`` of a string or object ref, or None if it is not one we know.

    >>> parse_ref("env:OPENAI_API_KEY")
    ('env', 'OPENAI_API_KEY')
    >>> parse_ref({"source": "file", "provider": "default", "id": "~/.keys/openai"})
    ('file', '~/.keys/openai')
    >>> parse_ref("vault:x") is None
    True
    """
    if isinstance(ref, str):
        source, sep, name = ref.partition(":")
        if sep and source in REF_SOURCES and name.strip():
            return source, name.strip()
        return None
    if isinstance(ref, Mapping):
        kind = ref.get("source")
        ident = ref.get("id")
        if kind in REF_SOURCES and isinstance(ident, str) and ident.strip():
            return str(kind), ident.strip()
    return None


def resolve_ref(profile_id: str, ref: Any, base_dir: str) -> str:
    """The secret ``ref`` points at; a relative ``file:`` path is taken from ``base_dir``.

    Raises :class:`~flatstate.errors.SecretUnavailable` naming the profile and
    the ref (never a value) when the variable is unset or the file unreadable.
    """
    parsed = parse_ref(ref)
    if parsed is None:
        raise SecretUnavailable(
            profile_id,
            "its secret ref is not of a known form",
            'Use \'env:NAME\' or \'file:PATH\' (or {"source": "env"|"file", "id": ...}).',
        )
    source, name = parsed
    if source == "env":
        value = os.environ.get(name)
        if not value:
            raise SecretUnavailable(
                profile_id,
                f"environment variable {name} (from its ref env:{name}) is not set",
                f"Set {name} in this process's environment.",
            )
        return value
    path = os.path.join(base_dir, os.path.expanduser(name))
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_SECRET_FILE + 1)
    except OSError as exc:
        raise SecretUnavailable(
            profile_id,
            f"its ref file:{name} cannot be read ({type(exc).__name__})",
            f"Create {path} holding the secret, readable by this user only.",
        ) from None
    try:
        text = data.decode("utf-8").strip() if len(data) <= _MAX_SECRET_FILE else ""
    except UnicodeDecodeError:
        # The error object would carry the file's bytes: drop it.
        text = ""
    if not text:
        raise SecretUnavailable(
            profile_id,
            f"its ref file:{name} is empty, not UTF-8, or over {_MAX_SECRET_FILE // 1024} KiB",
            f"Put only the secret in {path}.",
        )
    return text
