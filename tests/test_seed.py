"""The seed benchmark: every contender runs, no write is lost, and our memory stays flat.

The soak test is the CI leak check the seed issue asks for: it bounds the RSS
slope and the Python heap's growth after warm-up, never a speed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flatstate.bench.seed import (
    STRATEGIES,
    SeedOptions,
    merged_percentiles,
    run_seed,
    slope_per_min,
    soak_verdict,
)
from flatstate.bench.store import sessions_json_size
from flatstate.cli import app
from tests.conftest import require_extra

# The goal is RSS growth under 1 MiB a minute. A leak of that size raises the slope of both
# halves after warm-up to 1 MiB/min or more: leaks of 1 MiB/min injected into the workers
# (100-byte objects; 64 KiB buffers) measured 1.27 and 1.11. In three healthy runs the quieter
# half measured 0.05 to 0.19 (a one-time step of ~0.4 MiB, early after warm-up, lands in the
# other one). The bound sits between them, over twice the healthy figures and under half the
# leaks'.
SUSTAINED_SLOPE_LIMIT_MIB = 0.5
# A leak of 1 MiB a minute in objects of 256 bytes or less adds 4,096 heap blocks a minute or
# more (100-byte objects measured 12,179); runs without one measured between -1,962 and +80,
# the garbage collector's timing moving them.
HEAP_BLOCKS_LIMIT_PER_MIN = 4_000


def test_every_strategy_runs_and_loses_no_write() -> None:
    options = SeedOptions(entries=60, facts=200, seconds=1.0, compaction_every=0.3, strategy="all")
    report = run_seed(options)
    runs = {run["strategy"]: run for run in report["runs"]}
    assert (
        set(runs)
        == set(STRATEGIES)
        == {*("flatstate", "dict", "entrycopy", "deepcopy", "json", "orjson", "pickle")}
    )
    for run in runs.values():
        assert run["ops"] > 0 and run["writes"] > 0 and run["lost_writes"] == 0, run["strategy"]
        assert run["samples"] and run["rss_peak_mib"] >= run["rss_start_mib"] > 0
    ours = runs["flatstate"]
    assert ours["compactions"] > 0
    assert ours["latency"]["get"]["samples"] > 0 and ours["latency"]["patch"]["samples"] > 0
    ratios = report["ratios"]
    assert ratios["best_isolating"] in {"entrycopy", "deepcopy", "json", "orjson", "pickle"}
    assert ratios["ops_vs_best_isolating"] > 0 and ratios["ops_vs_dict"] > 0
    assert report["targets"]["no_lost_writes"]
    assert report["targets"]["rss_slope_ok"] is None  # a second says nothing of a slope
    assert ours["rss_slope_mib_per_min"] is None


def test_tasks_in_two_processes_share_commits_and_lose_no_write() -> None:
    options = SeedOptions(
        entries=60, facts=100, seconds=2.0, compaction_every=0.5, strategy="flatstate",
        processes=2, tasks=8,
    )  # fmt: skip
    run = run_seed(options)["runs"][0]
    assert run["processes"] == 2 and run["tasks"] == 8
    assert run["writes"] > 0 and run["compactions"] > 0
    assert run["lost_writes"] == 0
    assert run["counted_patches"] == run["writes"]
    assert run["counted_compactions"] == run["compactions"]
    assert all(w["ops"] for w in run["workers"])
    # One patch in every ten operations of each task.
    assert run["writes"] == pytest.approx(run["ops"] / 10, rel=0.05)


def test_tasks_need_the_entry_reads() -> None:
    with pytest.raises(ValueError, match="--read entry"):
        run_seed(SeedOptions(strategy="flatstate", tasks=4, read="store"))


def test_two_processes_are_all_counted() -> None:
    options = SeedOptions(
        entries=60, facts=100, seconds=2.0, compaction_every=0.5, strategy="flatstate", processes=2
    )
    run = run_seed(options)["runs"][0]
    assert run["processes"] == 2 and run["writes"] > 0
    assert run["lost_writes"] == 0
    assert run["counted_patches"] == run["writes"]
    assert run["counted_compactions"] == run["compactions"]
    workers = run["workers"]
    assert [w["worker"] for w in workers] == [0, 1]
    assert run["ops"] == sum(w["ops"] for w in workers) and all(w["ops"] for w in workers)
    assert run["rss_start_mib"] == pytest.approx(sum(w["rss_start_mib"] for w in workers))
    assert run["rss_process_peak_mib"] == max(w["rss_peak_mib"] for w in workers)
    assert run["rss_peak_mib"] > run["rss_process_peak_mib"]


def test_latencies_merge_weighted_by_what_each_worker_timed() -> None:
    busy = ([0.001] * 10, 1000)  # ten values standing for 1,000 timings of 1 ms
    idle = ([0.002] * 10, 10)
    merged = merged_percentiles([busy, idle])
    # Pooled, 1,000 of the 1,010 timings were 1 ms: the median and p99 are 1 ms, p99.9 is 2 ms.
    assert merged == {"p50_ms": 1.0, "p99_ms": 1.0, "p999_ms": 2.0, "samples": 1010}
    assert merged_percentiles([([], 0)]) is None


def test_the_command_writes_json_with_its_context_and_a_chart(tmp_path: Path) -> None:
    require_extra("matplotlib", "bench")
    out, chart = tmp_path / "seed.json", tmp_path / "seed.png"
    result = CliRunner().invoke(
        app,
        [
            *("bench", "seed", "--entries", "40", "--facts", "50", "--seconds", "1"),
            *("--strategy", "flatstate", "--read", "store"),
            *("--json-out", str(out), "--plot", str(chart)),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["runs"][0]["latency"]["snapshot"]["samples"] > 0
    machine = report["machine"]
    assert {"python", "sqlite", "msgspec", "immutables", "orjson"} <= set(machine["versions"])
    assert isinstance(machine["filesystem"], str) and machine["filesystem"]
    assert report["store"]["derived"] == ["sessions_json_mib"]  # SQLite has no sessions.json
    assert "(derived)" in result.output
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_a_json_store_is_measured_and_any_other_derived(tmp_path: Path) -> None:
    sizes = {"sessions_json_bytes": 1234}
    assert sessions_json_size(str(tmp_path / "state"), sizes) == (1234, True)
    path = tmp_path / "sessions.json"
    path.write_text("{}\n")
    assert sessions_json_size(str(path), sizes) == (3, False)


def test_soak_reports_whether_memory_levelled_off() -> None:
    result = CliRunner().invoke(
        app, ["bench", "soak", "--minutes", "0.05", "--entries", "40", "--json"]
    )
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)["soak"]
    assert {"rss_sustained_slope_mib_per_min", "levelled_off", "heap_blocks_slope_per_min"} <= set(
        verdict
    )


def test_the_soak_bound_tells_a_step_from_a_leak_the_size_of_the_goal() -> None:
    def verdict(rss: list[float]) -> dict[str, Any]:
        samples = [[t, mib, mib, 1000] for t, mib in enumerate(rss)]
        return soak_verdict({"samples": samples, "cache_bytes_growth": 0}, warmup=0)

    flat = [50.0] * 20
    step = flat[:7] + [50.4] * 13  # a cache filled once, early after warm-up
    leak = [50.0 + t / 60 for t in range(20)]  # 1 MiB a minute, one sample a second
    assert verdict(step)["rss_sustained_slope_mib_per_min"] <= SUSTAINED_SLOPE_LIMIT_MIB
    assert verdict(step)["levelled_off"]
    assert verdict(leak)["rss_sustained_slope_mib_per_min"] > SUSTAINED_SLOPE_LIMIT_MIB
    assert verdict(flat)["heap_blocks_slope_per_min"] == 0


def test_unknown_choices_are_clear_errors() -> None:
    result = CliRunner().invoke(app, ["bench", "seed", "--strategy", "snapshot"])
    assert result.exit_code != 0 and "snapshot" in result.output and "entrycopy" in result.output


def test_slope() -> None:
    assert slope_per_min([(0, 10.0), (30, 11.0), (60, 12.0)]) == 2.0
    assert slope_per_min([(0, 10.0)]) == 0.0


@pytest.mark.slow
def test_soak_memory_levels_off() -> None:
    """90 s of the seed workload: neither RSS nor the Python heap keeps growing after warm-up.

    Not shorter: SQLite's page caches fill for the first ~50 s on a quiet machine (RSS rose
    0.6 MiB and then stayed within 0.1 MiB), which a 45 s run read as a slope of 0.85 MiB/min.
    """
    options = SeedOptions(
        entries=2000, facts=2000, seconds=90.0, compaction_every=2.0, strategy="flatstate"
    )
    run = run_seed(options)["runs"][0]
    verdict = soak_verdict(run, options.warmup)
    assert verdict["rss_sustained_slope_mib_per_min"] <= SUSTAINED_SLOPE_LIMIT_MIB, run["samples"]
    assert verdict["heap_blocks_slope_per_min"] <= HEAP_BLOCKS_LIMIT_PER_MIN, run["samples"]
    assert run["lost_writes"] == 0
