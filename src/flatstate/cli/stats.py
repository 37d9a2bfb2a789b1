"""``flatstate stats``: entries, bytes on disk, cache bytes and the process's RSS."""

from __future__ import annotations

import psutil

from flatstate.cli import _where as where
from flatstate.cli._output import (
    JsonOption,
    add_row,
    human_bytes,
    print_json,
    print_table,
    table,
)
from flatstate.cli._where import DEFAULT_STORE, AgentOption, StoreOption


def stats(
    store: StoreOption = DEFAULT_STORE,
    agent: AgentOption = None,
    json_output: JsonOption = False,
) -> None:
    """Entries, bytes on disk, cache bytes and this process's RSS after loading the store."""
    with where.sessions(where.resolve(store, agent)) as s:
        found = s.stats()
        figures = {
            **{f: getattr(found, f) for f in found.__struct_fields__},
            "process_rss_bytes": psutil.Process().memory_info().rss,
        }
    if json_output:
        print_json(figures)
        return
    grid = table(show_header=False)
    grid.add_column("figure", style="bold")
    grid.add_column("value")
    for name, value in figures.items():
        bytes_ = name.endswith("bytes") or name == "cache_limit"
        add_row(grid, name, human_bytes(value) if bytes_ else value)
    print_table(grid)
