"""The ```python blocks of README.md and docs/*.md run, so the docs cannot drift from the code.

Each block runs for real, with a fresh temporary directory as cwd and HOME pointed at another
(``~/.flatstate/...`` is private to the test); it fails if it raises or logs an error. The
blocks of one page share a namespace in order, like a notebook: a block's test first runs the
blocks above it on its page. A block that cannot run is preceded by the line
``<!-- not run: REASON -->`` and is reported as a skip with that reason. The PostgreSQL URL the
docs use (``DOCS_POSTGRES_URL``) is replaced by a namespace of its own on the test server;
without a server those blocks skip. Blocks in other languages are not run: the shell blocks
install packages, start servers or run benchmarks for minutes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from flatstate import SessionStore
from tests.conftest import postgres_location

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"^(?:<!-- not run: (?P<reason>[^\n]+?) -->\n)?```python\n(?P<code>.*?)^```$", re.M | re.S
)
DOCS_POSTGRES_URL = "postgresql://gw:secret@db.internal/agents"


class Block(NamedTuple):
    page: str  # relative to the repository
    line: int  # the block's first line of code
    code: str
    not_run: str | None

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [
        Block(
            page.relative_to(ROOT).as_posix(),
            text.count("\n", 0, match.start("code")) + 1,
            match["code"],
            match["reason"],
        )
        for match in BLOCK.finditer(text)
    ]


BLOCKS = [block for page in PAGES for block in blocks_of(page)]


def run(block: Block, namespace: dict[str, Any], tmp_path: Path) -> None:
    """Run one block; its tracebacks name the page and the line in it."""
    code = block.code
    if DOCS_POSTGRES_URL in code:
        code = code.replace(DOCS_POSTGRES_URL, postgres_location(tmp_path))  # skips without one
    # dont_inherit: a block runs as its reader would, without this module's __future__
    # imports (string annotations would hide a TypedDict's types from LangGraph).
    source = "\n" * (block.line - 1) + code
    exec(compile(source, block.page, "exec", dont_inherit=True), namespace)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(
            b, id=str(b), marks=pytest.mark.postgres if DOCS_POSTGRES_URL in b.code else ()
        )
        for b in BLOCKS
    ],
)
def test_block_runs(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if block.not_run is not None:
        pytest.skip(f"not run: {block.not_run}")
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    for name in ("FLATSTATE_HOME", "FLATSTATE_STORE", "OPENCLAW_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    namespace: dict[str, Any] = {"__name__": "docs"}
    above = [
        b for b in BLOCKS if b.page == block.page and b.line < block.line and b.not_run is None
    ]
    try:
        for earlier in above:
            run(earlier, namespace, tmp_path)
        run(block, namespace, tmp_path)
    finally:
        for value in namespace.values():
            if isinstance(value, SessionStore):
                value.close()
    assert not (cwd / "~").exists(), "a '~/...' path in the docs was taken literally"
    # A compaction hook that raises is only logged: an error logged counts as a failure too.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_python_block_is_found(page: Path) -> None:
    assert len(blocks_of(page)) == page.read_text(encoding="utf-8").count("```python")
