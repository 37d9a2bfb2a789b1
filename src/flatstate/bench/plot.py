"""Charts of a seed benchmark run (matplotlib, in the ``bench`` extra)."""

from __future__ import annotations

from typing import Any

__all__ = ["plot_seed"]


def plot_seed(report: dict[str, Any], path: str) -> None:
    """RSS over time per strategy, and latency percentiles of each strategy's reads."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'flatstate[bench]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    fig, (rss_axis, latency_axis) = plt.subplots(1, 2, figsize=(13, 5))
    for run in runs:
        times = [s[0] for s in run["samples"]]
        rss = [s[1] for s in run["samples"]]
        rss_axis.plot(times, rss, label=f"{run['strategy']} ({run['ops_per_s']:,.0f} ops/s)")
    store = report["store"]
    rss_axis.set_title(
        f"RSS, {store['entries']:,} sessions ({store['sessions_json_mib']} MiB JSON)"
    )
    rss_axis.set_xlabel("seconds")
    rss_axis.set_ylabel("MiB")
    rss_axis.legend(fontsize=8)
    rss_axis.grid(alpha=0.3)

    labels, p50, p99, p999 = [], [], [], []
    for run in runs:
        for kind in ("get", "snapshot", "patch"):
            figures = run["latency"].get(kind)
            if figures:
                labels.append(f"{run['strategy']}\n{kind}")
                p50.append(figures["p50_ms"])
                p99.append(figures["p99_ms"])
                p999.append(figures["p999_ms"])
    positions = range(len(labels))
    latency_axis.bar([x - 0.27 for x in positions], p50, width=0.27, label="p50")
    latency_axis.bar(list(positions), p99, width=0.27, label="p99")
    latency_axis.bar([x + 0.27 for x in positions], p999, width=0.27, label="p99.9")
    latency_axis.set_xticks(list(positions), labels, fontsize=7)
    latency_axis.set_yscale("log")
    latency_axis.set_ylabel("ms (log)")
    latency_axis.set_title("latency")
    latency_axis.legend(fontsize=8)
    latency_axis.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
