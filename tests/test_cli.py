"""The CLI, in-process with Typer's runner and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from flatstate.cli import app

runner = CliRunner()


def test_every_command_has_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "bench" in result.output
    result = runner.invoke(app, ["bench", "store", "--help"])
    assert result.exit_code == 0 and "--scale-entries" in result.output


def test_bench_store_prints_figures_as_json() -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "store",
            "--entries",
            "60",
            "--small-entries",
            "30",
            "--scale-entries",
            "0",
            "--seconds",
            "0.05",
            "--soak-seconds",
            "0.5",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert set(figures["rates"]) == {"30", "60"}
    assert figures["rates"]["60"]["get_per_s"] > 0 and figures["baseline"]["get_per_s"] > 0
    assert figures["rates"]["60"]["dict_get_per_s"] > 0
    assert figures["memory"]["sessions_json_mib"] > 0
    assert figures["memory"]["derived"][0] == "sessions_json_mib"  # SQLite has no sessions.json
    assert figures["soak"]["ops"] > 0 and figures["ratios"]["get_vs_deepcopy"] > 1


def test_unknown_profile_is_a_clear_error() -> None:
    result = runner.invoke(app, ["bench", "store", "--profile", "giant"])
    assert result.exit_code != 0 and "giant" in result.output


def test_the_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flatstate", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "sessions" in result.stdout.lower()


def test_tables_sent_to_a_pipe_are_not_cut_to_80_columns(tmp_path: Path) -> None:
    import flatstate

    key = "agent:main:" + "a-long-channel-name-" * 4
    with flatstate.open_store(tmp_path / "state") as store:
        store.upsert(key, {"model": "some-model"})
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flatstate",
            "sessions",
            "list",
            "--store",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert any(key in line for line in result.stdout.splitlines())
