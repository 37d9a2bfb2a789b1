"""``flatstate bench transcript``: append rates, reads of a 100 MB transcript, compaction time.

- appends: lines/s with a batched fsync and with an fsync per append, for
  both lock modes (``flock`` in state directories; ``file``, OpenClaw's lock
  file plus flock, beside a sessions.json);
- a 100 MB transcript with a compaction near its end: ``context()`` and
  ``tail(20)`` from cold (a new reader, an empty index) and warm;
- ``compact()`` of a 10,000-entry transcript with the built-in summarizer.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from flatstate.bench.measure import machine

__all__ = ["run_transcript_bench", "write_large_transcript"]


def _message(i: int, size: int = 200) -> dict[str, Any]:
    role = "user" if i % 2 == 0 else "assistant"
    text = f"{role} {i} " + "lorem ipsum " * (size // 12)
    return {
        "type": "message",
        "message": {"role": role, "content": [{"type": "text", "text": text}]},
    }


def _appends(root: str, lock: str, batched: bool, count: int) -> dict[str, Any]:
    from flatstate.transcripts import FsyncPolicy, Transcript

    policy = FsyncPolicy.batched() if batched else FsyncPolicy()
    transcript = Transcript(
        os.path.join(root, f"append-{lock}-{batched}.jsonl"), lock=lock, fsync=policy
    )
    entries = [_message(i) for i in range(64)]
    started = time.perf_counter()
    for i in range(count):
        transcript.append(entries[i % 64])
    transcript.flush()
    elapsed = time.perf_counter() - started
    return {
        "lock": lock,
        "fsync": f"batched (every {policy.every} or {policy.seconds} s)"
        if batched
        else "every append",
        "appends": count,
        "per_s": round(count / elapsed),
    }


def write_large_transcript(path: str, size: int) -> int:
    """A transcript of ``size`` bytes ending in a compaction that keeps the 20 entries
    before it, then 10 more entries; returns the number of entries before it."""
    line = _message(0, 1000)
    with open(path, "wb") as f:
        f.write(
            b'{"type":"session","version":3,"id":"big","timestamp":"2026-01-01T00:00:00.000Z","cwd":"/"}\n'
        )
        previous = None
        i = 0
        while f.tell() < size:
            f.write(
                json.dumps({**_message(i, 1000), "id": f"e{i}", "parentId": previous}).encode()
                + b"\n"
            )
            previous = f"e{i}"
            i += 1
        compaction = {
            "type": "compaction", "id": "c1", "parentId": previous, "summary": "earlier work",
            "firstKeptEntryId": f"e{i - 20}", "tokensBefore": i * 250,
            "timestamp": "2026-01-01T00:00:00.000Z",
        }  # fmt: skip
        f.write(json.dumps(compaction).encode() + b"\n")
        for k in range(10):
            f.write(
                json.dumps(
                    {**line, "id": f"t{k}", "parentId": "c1" if k == 0 else f"t{k - 1}"}
                ).encode()
                + b"\n"
            )
    return i


def _timed(fn: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """(median ms, max ms) over ``rounds`` calls."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


def _big_reads(root: str, size: int) -> dict[str, Any]:
    from flatstate.transcripts import file as transcripts

    path = os.path.join(root, "big.jsonl")
    entries = write_large_transcript(path, size)

    def cold_context() -> None:
        transcripts._index.clear()
        transcripts.Transcript(path).context()

    def cold_tail() -> None:
        transcripts.Transcript(path).tail(20)

    cold_ms, cold_max = _timed(cold_context, 20)
    reader = transcripts.Transcript(path)
    context = reader.context()
    warm_ms, _ = _timed(reader.context, 1000)
    tail_ms, _ = _timed(cold_tail, 20)
    probe = transcripts.Transcript(path)
    transcripts._index.clear()
    probe.context()
    return {
        "file_mib": round(os.path.getsize(path) / (1 << 20), 1),
        "entries": entries,
        "context_messages": len(context.messages),
        "context_cold_ms": round(cold_ms, 3),
        "context_cold_max_ms": round(cold_max, 3),
        "context_bytes_read": probe.bytes_read,
        "context_warm_ms": round(warm_ms, 4),
        "tail20_cold_ms": round(tail_ms, 3),
    }


def _compaction(root: str, entries: int) -> dict[str, Any]:
    from flatstate import open_store
    from flatstate.compaction import compact
    from flatstate.transcripts import FsyncPolicy

    with open_store(os.path.join(root, "state"), transcript_fsync=FsyncPolicy.batched()) as store:
        transcript = store.transcript("main")
        batch = []
        for i in range(entries):
            batch.append(_message(i))
            if len(batch) == 500:
                transcript.append_many(batch)
                batch = []
        if batch:
            transcript.append_many(batch)
        transcript.flush()
        size = os.path.getsize(transcript.path)
        started = time.perf_counter()
        result = compact(store, "main")
        elapsed = (time.perf_counter() - started) * 1000
    assert result is not None
    return {
        "entries": entries,
        "file_mib": round(size / (1 << 20), 2),
        "compact_ms": round(elapsed, 1),
        "summarized_messages": result.summarized_messages,
        "tokens_before": result.tokens_before,
        "tokens_after": result.tokens_after,
    }


def run_transcript_bench(
    *, appends: int = 20_000, fsync_appends: int = 1_000, big_bytes: int = 100_000_000,
    compaction_entries: int = 10_000, progress: Callable[[str], None] = lambda phase: None,
) -> dict[str, Any]:  # fmt: skip
    """Every phase in a temporary directory, removed afterwards."""
    root = tempfile.mkdtemp(prefix="flatstate-transcript-bench-")
    try:
        result: dict[str, Any] = {"machine": machine(root), "appends": []}
        for lock in ("flock", "file"):
            progress(f"appending with the {lock} lock")
            result["appends"].append(_appends(root, lock, True, appends))
            result["appends"].append(_appends(root, lock, False, fsync_appends))
        progress(f"writing and reading a {big_bytes / 1e6:.0f} MB transcript")
        result["big"] = _big_reads(root, big_bytes)
        progress(f"compacting a {compaction_entries:,}-entry transcript")
        result["compaction"] = _compaction(root, compaction_entries)
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
