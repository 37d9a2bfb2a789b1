"""Charts of a seed benchmark run (matplotlib, in the ``bench`` extra)."""

from __future__ import annotations

from typing import Any

__all__ = ["plot_seed"]


def plot_seed(report: dict[str, Any], path: str) -> None:
    """Three panels: RSS over time per strategy, operations a second, latency percentiles.

    Operations and latency are on log scales: the strategies differ by up to
    five orders of magnitude, and a linear axis would show only the fastest.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'flatstate[bench]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    store = report["store"]
    derived = " (derived)" if "sessions_json_mib" in store.get("derived", ()) else ""
    fig, (rss_axis, ops_axis, latency_axis) = plt.subplots(
        1, 3, figsize=(18, 6), gridspec_kw={"width_ratios": [5, 3, 5]}
    )
    fig.suptitle(
        f"Seed workload: {store['entries']:,} sessions on {store['backend']}; as sessions.json "
        f"{store['sessions_json_mib']} MiB{derived}; one durable patch every "
        f"{report['options']['write_every']} operations"
    )
    for run in runs:
        rss_axis.plot([s[0] for s in run["samples"]], [s[1] for s in run["samples"]])
    rss_axis.set_title("RSS (summed over a strategy's processes)")
    rss_axis.set_xlabel("seconds")
    rss_axis.set_ylabel("MiB")
    rss_axis.legend([run["strategy"] for run in runs], fontsize=8)
    rss_axis.grid(alpha=0.3)

    names = [run["strategy"] for run in runs]
    rates = [run["ops_per_s"] for run in runs]
    bars = ops_axis.bar(names, rates, color=[f"C{i}" for i in range(len(runs))])
    ops_axis.bar_label(bars, [f"{r:,.0f}" for r in rates], fontsize=7)
    ops_axis.set_yscale("log")
    ops_axis.set_title("operations a second (log)")
    ops_axis.set_xticks(range(len(names)), names, fontsize=8, rotation=45, ha="right")
    ops_axis.grid(alpha=0.3, axis="y")

    labels, p50, p99, p999 = [], [], [], []
    for run in runs:
        for kind in ("get", "snapshot", "patch"):
            figures = run["latency"].get(kind)
            if figures:
                labels.append(f"{run['strategy']} {kind}")
                p50.append(figures["p50_ms"])
                p99.append(figures["p99_ms"])
                p999.append(figures["p999_ms"])
    positions = range(len(labels))
    latency_axis.bar([x - 0.27 for x in positions], p50, width=0.27, label="p50")
    latency_axis.bar(list(positions), p99, width=0.27, label="p99")
    latency_axis.bar([x + 0.27 for x in positions], p999, width=0.27, label="p99.9")
    latency_axis.set_xticks(list(positions), labels, fontsize=7, rotation=45, ha="right")
    latency_axis.set_yscale("log")
    latency_axis.set_ylabel("ms (log)")
    latency_axis.set_title("latency")
    latency_axis.legend(fontsize=8)
    latency_axis.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
