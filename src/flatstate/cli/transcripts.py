"""``flatstate transcript show|tail|context|compact|export|import KEY``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated

import typer

from flatstate.cli import _where as where
from flatstate.cli._output import JsonOption, listing, print_json, say, warn
from flatstate.cli._where import DEFAULT_STORE, AgentOption, StoreOption
from flatstate.cli.sessions import KeyArgument, need
from flatstate.files import atomic_write
from flatstate.frozen import FrozenMap
from flatstate.transcripts import TranscriptLike

app = typer.Typer(help="Read and compact session transcripts.", no_args_is_help=True)


def _line(entry: FrozenMap) -> str:
    """One readable line for an entry or a message."""
    kind = entry.get("type") or entry.get("role")
    message = entry.get("message") if entry.get("type") == "message" else entry
    if entry.get("type") == "compaction" or kind == "compactionSummary":
        return f"[summary] {entry.get('summary')}"
    if isinstance(message, FrozenMap) and "role" in message:
        content = message.get("content")
        if isinstance(content, str):
            text = content
        else:
            parts = []
            for block in content or ():
                if block.get("type") == "text":
                    parts.append(block.get("text", ""))
                elif block.get("type") == "toolCall":
                    parts.append(f"<call {block.get('name')}>")
            text = " ".join(parts)
        return f"[{message.get('role')}] {text[:200]}"
    return f"[{kind}]"


def _read(
    key: str,
    store: str,
    agent: str | None,
    json_output: bool,
    entries_of: Callable[[TranscriptLike], tuple[FrozenMap, ...]],
    whole: bool,
) -> None:
    """Print what ``entries_of`` reads from the transcript of ``key``: lines for people, or
    the listing (``total`` only where ``whole``: a tail does not count the file)."""
    place = where.resolve(store, agent)
    with where.sessions(place) as s:
        need(s, key, place)
        transcript = s.transcript(key, create=False, reconcile=False)
        entries = entries_of(transcript)
        canonical = s.canonical_key(key)
    if json_output:
        source = {**place.describe(), "key": canonical, "transcript": transcript.path}
        print_json(listing([source], list(entries), len(entries) if whole else None))
    else:
        for entry in entries:
            say(_line(entry))
    for problem in transcript.problems:
        at = f"line {problem.line}" if problem.line is not None else f"byte {problem.offset}"
        warn(f"{transcript.path}: {at}: {problem.problem}")


@app.command("show")
def show(
    key: KeyArgument,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every entry of the transcript, first to last (reads the whole file)."""
    _read(key, store, agent, json_output, lambda t: tuple(t.iter_entries()), whole=True)


@app.command("tail")
def tail(
    key: KeyArgument,
    n: Annotated[
        int, typer.Option("-n", "--lines", min=0, metavar="N", help="How many entries.")
    ] = 20,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """The last entries, read from the end of the file."""
    _read(key, store, agent, json_output, lambda t: t.tail(n), whole=False)


@app.command("context")
def context(
    key: KeyArgument,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """What the model sees: the latest summary, then the kept entries."""
    _read(key, store, agent, json_output, lambda t: t.context().messages, whole=True)


@app.command("compact")
def compact(
    key: KeyArgument,
    keep_recent_tokens: Annotated[
        int, typer.Option(min=1, metavar="N", help="Tokens of recent entries to keep.")
    ] = 20_000,
    instructions: Annotated[
        str | None, typer.Option(metavar="TEXT", help="Passed to the summarizer.")
    ] = None,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Compact now with the built-in summarizer (a deterministic digest, no model)."""
    from flatstate.compaction import compact as run

    place = where.resolve(store, agent)
    with where.sessions(place, write=True, create=False) as s:
        need(s, key, place)
        result = run(s, key, keep_recent_tokens=keep_recent_tokens, instructions=instructions)
    if json_output:
        print_json(result)
    elif result is None:
        say("nothing to compact: the context fits in --keep-recent-tokens")
    else:
        say(
            f"compacted {result.summarized_messages:,} messages: {result.tokens_before:,} -> "
            f"{result.tokens_after:,} tokens; compactionCount is now {result.compaction_count}"
        )


FileArgument = Annotated[
    str, typer.Argument(metavar="FILE", help="A JSONL file; - for standard output or input.")
]


@app.command("export")
def export(
    key: KeyArgument,
    file: FileArgument,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write the transcript as OpenClaw's JSONL: every line as stored, header first."""
    if file == "-" and json_output:
        raise typer.BadParameter("--json prints the report on standard output: give a FILE")
    place = where.resolve(store, agent)
    written = 0

    def counted(lines: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal written
        for line in lines:
            written += 1
            yield line

    with where.sessions(place) as s:
        need(s, key, place)
        transcript = s.transcript(key, create=False, reconcile=False)
        if file == "-":
            for line in counted(transcript.export_lines()):
                sys.stdout.buffer.write(line)
            sys.stdout.flush()
        else:
            atomic_write(file, counted(transcript.export_lines()), mode=0o600)
        canonical = s.canonical_key(key)
    if json_output:
        print_json(
            {"key": canonical, "transcript": transcript.path, "file": file, "lines": written}
        )
    elif file != "-":
        say(f"{written:,} lines of {canonical} -> {file}")


@app.command("import")
def import_(
    key: KeyArgument,
    file: FileArgument,
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Fill the empty transcript of KEY (the session is created if missing) from OpenClaw
    JSONL, kept line for line; a transcript that holds lines is left as it is."""
    from flatstate.compaction import reconcile

    place = where.resolve(store, agent)
    # The file is opened first: one that cannot be read must not leave a session behind.
    with (
        contextlib.nullcontext(sys.stdin.buffer) if file == "-" else open(file, "rb") as f,
        where.sessions(place, write=True) as s,
    ):
        transcript = s.transcript(key)
        lines = transcript.import_lines(f)
        count = reconcile(s, key, transcript)  # the imported compactions are the count's truth
        canonical = s.canonical_key(key)
    if json_output:
        print_json(
            {
                "key": canonical,
                "transcript": transcript.path,
                "file": file,
                "lines": lines,
                "compaction_count": count,
            }
        )
    else:
        say(f"{lines:,} lines from {file} -> {canonical}")
