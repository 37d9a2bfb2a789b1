"""LangGraph's own conformance suite (langgraph-checkpoint-conformance) against
FlatstateSaver on SQLite and on PostgreSQL: every base test and every extended capability."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NO_POSTGRES, POSTGRES_DSN, require_extra


def _run_suite(name: str, make: Any, capsys: pytest.CaptureFixture[str]) -> Any:
    conformance = require_extra("langgraph.checkpoint.conformance", "langgraph")
    from langgraph.checkpoint.conformance.report import ProgressCallbacks

    async def factory() -> AsyncIterator[Any]:
        saver = await asyncio.to_thread(make)
        try:
            yield saver
        finally:
            await saver.aclose()

    registered = conformance.checkpointer_test(name=name)(factory)
    report = asyncio.run(conformance.validate(registered, progress=ProgressCallbacks.verbose()))
    with capsys.disabled():  # the capability results, in the test run's output
        report.print_report()
    return report


def _assert_full(report: Any) -> None:
    failures = {cap: r.failures for cap, r in report.results.items() if r.passed is not True}
    assert report.passed_all_base(), failures
    for cap in ("delete_for_runs", "copy_thread", "prune"):
        result = report.results[cap]
        assert result.detected, f"{cap} not detected"
        assert result.passed is True, (cap, result.failures)
    assert report.conformance_level() == "FULL"


def test_conformance_on_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_extra("langgraph", "langgraph")
    from flatstate.integrations.langgraph import FlatstateSaver

    counter = iter(range(100))
    report = _run_suite(
        "FlatstateSaver(sqlite)",
        lambda: FlatstateSaver(str(tmp_path / f"s{next(counter)}")),
        capsys,
    )
    _assert_full(report)


@pytest.mark.postgres
@pytest.mark.parametrize("namespace", [None, "team-7"])
def test_conformance_on_postgres(capsys: pytest.CaptureFixture[str], namespace: str | None) -> None:
    """On the default namespace's tables and on a namespace's own (``?namespace=``)."""
    require_extra("langgraph", "langgraph")
    if POSTGRES_DSN is None:
        pytest.skip(NO_POSTGRES)
    from flatstate.integrations.langgraph import FlatstateSaver

    schema = f"lg_{uuid.uuid4().hex[:10]}"
    location = f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}schema={schema}"
    if namespace is not None:
        location += f"&namespace={namespace}"
    report = _run_suite("FlatstateSaver(postgres)", lambda: FlatstateSaver(location), capsys)
    _assert_full(report)
