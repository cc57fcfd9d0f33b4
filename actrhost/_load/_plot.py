"""``--plot out.png``: latency over time, and latency by percentile (matplotlib, optional).

matplotlib is an optional extra (``pip install 'actrhost[plot]'``); the argument check
refuses ``--plot`` before the run when it is missing, so this module may import it freely.
"""

from __future__ import annotations

import math
from typing import Any

#: Percentile axis ticks of the percentile curve (HdrHistogram's plot style).
PERCENTILE_TICKS = (0.0, 90.0, 99.0, 99.9, 99.99, 99.999)


def _x_of(percentile: float) -> float:
    """Position on the percentile axis: 1 / (1 - p), log-scaled, so the tail is visible."""
    return 1.0 / max(1.0 - percentile / 100.0, 1e-7)


def write_plot(result: dict[str, Any], path: str) -> None:
    """Write a two-panel PNG of ``result`` (a :func:`._report.build_result` dict) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and never a window
    import matplotlib.pyplot as plt

    target, load = result["target"], result["load"]
    fig, (over_time, by_pct) = plt.subplots(2, 1, figsize=(10, 8), dpi=100)
    loop = (
        f"open loop {load['rate_per_s']:g}/s"
        if load["loop"] == "open"
        else f"concurrency {load['concurrency']}"
    )
    fig.suptitle(
        f"actrhost load: {target['mode']} {target['route_key'] or target['target']} "
        f"on {target['node']} ({loop}, {result['throughput']['ok_per_s']:,.0f} ok/s)",
        fontsize=11,
    )

    points = result["timeline"]["points"]
    times = [p["t_s"] for p in points]
    for key, label, style in (
        ("p50_ms", "p50", "-"),
        ("p99_ms", "p99", "-"),
        ("max_ms", "max", ":"),
    ):
        values = [math.nan if p[key] is None else p[key] for p in points]
        over_time.plot(times, values, style, label=label, linewidth=1.2)
    over_time.set_yscale("log")
    over_time.set_xlabel("time since warm-up ended (s)")
    over_time.set_ylabel("latency (ms)")
    over_time.grid(True, which="both", alpha=0.3)
    rate_axis = over_time.twinx()
    rate_axis.plot(
        times, [p["ok_per_s"] for p in points], color="grey", alpha=0.5, linewidth=1, label="ok/s"
    )
    errors = [p["errors"] / result["timeline"]["interval_s"] for p in points]
    if any(errors):
        rate_axis.plot(times, errors, color="red", alpha=0.6, linewidth=1, label="errors/s")
    rate_axis.set_ylabel("requests/s")
    top = max([p["ok_per_s"] for p in points] + errors + [1.0])
    rate_axis.set_ylim(0, top * 1.25)  # headroom: a steady rate would hide under the frame
    lines = over_time.get_legend_handles_labels()
    more = rate_axis.get_legend_handles_labels()
    over_time.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    over_time.set_title("latency over time (of requests completed in each interval)", fontsize=10)

    # The 100th percentile sits at infinity on this axis: draw the curve up to the last
    # finite point and mark the maximum as a line.
    curve = [(p, v) for p, v in result["percentile_curve"] if p < 100.0]
    if curve:
        by_pct.plot(
            [_x_of(p) for p, _ in curve], [v for _, v in curve], linewidth=1.5, label="latency"
        )
        by_pct.axhline(
            result["latency_ms"]["max"],
            color="grey",
            linestyle=":",
            linewidth=1,
            label=f"max {result['latency_ms']['max']:.3g} ms",
        )
        by_pct.set_xscale("log")
        last = _x_of(curve[-1][0])
        ticks = [t for t in PERCENTILE_TICKS if _x_of(t) <= last]
        by_pct.set_xticks([_x_of(t) for t in ticks])
        by_pct.set_xticklabels([f"{t:g}%" for t in ticks])
        by_pct.minorticks_off()
        by_pct.set_xlim(1.0, max(last, 10.0))
        by_pct.legend(loc="upper left", fontsize=8)
    by_pct.set_xlabel("percentile")
    by_pct.set_ylabel("latency (ms)")
    by_pct.grid(True, alpha=0.3)
    label = "from scheduled send time" if load["loop"] == "open" else "per request"
    by_pct.set_title(f"latency by percentile ({label})", fontsize=10)

    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
