"""The PNG of an overload run: completions, enqueues and backlog over time (and the cores per part).

Written next to the run's JSON by :mod:`jobqueue.bench.overload` (matplotlib: the ``bench`` extra).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from jobqueue.bench.cpu import plot_cpu


def plot(document: dict[str, Any], path: Path) -> Path | None:
    """Completions and backlog over time, as a PNG next to the JSON (None: no matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    windows = document["windows"]
    t = [w["t"] for w in windows]
    if any(w.get("cpu") for w in windows):
        fig, (ax, cpu_ax) = plt.subplots(
            2, 1, figsize=(11, 8), sharex=True, gridspec_kw={"height_ratios": [2, 1]}, squeeze=True
        )
        plot_cpu(cpu_ax, windows)
    else:
        fig, ax = plt.subplots(figsize=(11, 5.5))
    ax.plot(t, [w["completion_rate"] for w in windows], label="completions/s", color="tab:blue", lw=1.2)
    ax.plot(t, [w["enqueue_rate"] for w in windows], label="enqueues/s", color="tab:green", lw=0.8, alpha=0.7)
    cap = (document["summary"].get("capacity") or {}).get("rate")
    if cap:
        ax.axhline(cap, color="tab:gray", ls=":", lw=1, label=f"capacity {cap:,.0f}/s")
    peak = document["summary"].get("peak_rate_smoothed")
    floor = document["summary"].get("floor")  # the verdict's fraction of the peak
    if peak and floor:
        ax.axhline(floor * peak, color="tab:red", ls="--", lw=1, label=f"{floor:.0%} of peak ({floor * peak:,.0f}/s)")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("jobs/s")
    # the backlog load (enqueue_many COPY, tens of thousands per second) would flatten the rest
    top = max([w["completion_rate"] for w in windows] + [w["offered"] for w in windows] + [1.0])
    ax.set_ylim(bottom=0, top=top * 1.6)
    ax2 = ax.twinx()
    ax2.plot(t, [w["backlog"] for w in windows], label="backlog (jobs)", color="tab:orange", lw=1.5)
    ax2.set_ylabel("backlog (jobs)")
    ax2.set_ylim(bottom=0)
    vac_x = []
    for prev, cur in itertools.pairwise(windows):
        if (cur["table"].get("autovacuum_count") or 0) > (prev["table"].get("autovacuum_count") or 0):
            vac_x.append(cur["t"])
    for i, x in enumerate(vac_x):
        ax.axvline(x, color="tab:purple", lw=0.6, alpha=0.5, label="autovacuum of jobqueue.job" if i == 0 else None)
    last_phase = None
    for w in windows:
        if w["phase"] != last_phase:
            ax.annotate(w["phase"], (w["t"], 0), xytext=(2, 4), textcoords="offset points", fontsize=8, color="0.3")
            last_phase = w["phase"]
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title(document.get("title", "jobqueue bench: overload"), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
