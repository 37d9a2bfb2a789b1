"""``flatstate transcript show|tail|context|compact KEY`` and ``flatstate sessions reset KEY``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from flatstate import open_store
from flatstate.cli._output import (
    DEFAULT_STORE,
    JsonOption,
    StoreOption,
    console,
    err_console,
    print_json,
    store_path,
)
from flatstate.frozen import FrozenMap

app = typer.Typer(help="Read and compact session transcripts.", no_args_is_help=True)

KeyArgument = Annotated[str, typer.Argument(help="The session key, e.g. agent:main:main or main.")]


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


def _print(entries: tuple[FrozenMap, ...], json_output: bool) -> None:
    if json_output:
        print_json(list(entries))
        return
    for entry in entries:
        console.print(_line(entry), markup=False, highlight=False)


def _report_problems(transcript: Any) -> None:
    for problem in transcript.problems:
        where = f"line {problem.line}" if problem.line is not None else f"byte {problem.offset}"
        err_console.print(f"warning: {transcript.path}: {where}: {problem.problem}", markup=False)


@app.command("show")
def show(
    key: KeyArgument, store: StoreOption = DEFAULT_STORE, json_output: JsonOption = False
) -> None:
    """Every entry of the transcript, first to last (reads the whole file)."""
    with open_store(store_path(store), readonly=True) as s:
        transcript = s.transcript(key, create=False, reconcile=False)
        _print(tuple(transcript.iter_entries()), json_output)
        _report_problems(transcript)


@app.command("tail")
def tail(
    key: KeyArgument,
    n: Annotated[int, typer.Option("-n", "--lines", help="How many entries.")] = 20,
    store: StoreOption = DEFAULT_STORE,
    json_output: JsonOption = False,
) -> None:
    """The last entries, read from the end of the file."""
    with open_store(store_path(store), readonly=True) as s:
        transcript = s.transcript(key, create=False, reconcile=False)
        _print(transcript.tail(n), json_output)
        _report_problems(transcript)


@app.command("context")
def context(
    key: KeyArgument, store: StoreOption = DEFAULT_STORE, json_output: JsonOption = False
) -> None:
    """What the model sees: the latest summary, then the kept entries."""
    with open_store(store_path(store), readonly=True) as s:
        transcript = s.transcript(key, create=False, reconcile=False)
        _print(transcript.context().messages, json_output)
        _report_problems(transcript)


@app.command("compact")
def compact(
    key: KeyArgument,
    keep_recent_tokens: Annotated[
        int, typer.Option(help="Tokens of recent entries to keep.")
    ] = 20_000,
    instructions: Annotated[str | None, typer.Option(help="Passed to the summarizer.")] = None,
    store: StoreOption = DEFAULT_STORE,
    json_output: JsonOption = False,
) -> None:
    """Compact now with the built-in summarizer (a deterministic digest, no model)."""
    from flatstate.compaction import compact as run

    with open_store(store_path(store)) as s:
        s.transcript(key, create=False)
        result = run(s, key, keep_recent_tokens=keep_recent_tokens, instructions=instructions)
    if json_output:
        print_json(result)
    elif result is None:
        console.print("nothing to compact: the context fits in --keep-recent-tokens")
    else:
        console.print(
            f"compacted {result.summarized_messages} messages: {result.tokens_before:,} -> "
            f"{result.tokens_after:,} tokens; compactionCount is now {result.compaction_count}"
        )


def reset(
    key: KeyArgument,
    compress: Annotated[
        bool, typer.Option(help="Compress the archived transcript (zstd).")
    ] = False,
    store: StoreOption = DEFAULT_STORE,
    json_output: JsonOption = False,
) -> None:
    """Start a session afresh: a new sessionId, the old transcript archived as .reset.<time>."""
    with open_store(store_path(store)) as s:
        entry = s.reset(key, compress=compress)
    if json_output:
        print_json(entry)
    else:
        console.print(f"{key}: new sessionId {entry.session_id}")


def register(root: typer.Typer, sessions: typer.Typer) -> None:
    root.add_typer(app, name="transcript")
    sessions.command("reset")(reset)
