"""A PNG of a model's latency and satisfaction over a window (`companion monitor` writes it)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["write_chart"]


def write_chart(series: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Draw `ModelPerformanceMonitor.series(...)` to `path` (written atomically); return it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"chart path must end in .png, not {path.name!r}")
    mids = [
        datetime.fromisoformat(b["start"]) + (datetime.fromisoformat(b["end"]) - datetime.fromisoformat(b["start"])) / 2
        for b in series
    ]

    def column(key: str) -> list[float]:
        return [float("nan") if b[key] is None else b[key] for b in series]

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(mids, column("avg_response_time"), marker="o", label="mean")
    ax1.plot(mids, column("p95_response_time"), marker="x", linestyle="--", label="p95")
    ax1.set_ylabel("response time (ms)")
    ax1.legend(loc="upper left")
    ax1b = ax1.twinx()
    ax1b.bar(
        mids,
        [b["requests"] for b in series],
        width=(mids[1] - mids[0]) * 0.8 if len(mids) > 1 else 0.01,
        alpha=0.15,
        color="gray",
    )
    ax1b.set_ylabel("requests")
    ax2.plot(mids, column("user_satisfaction"), marker="o", color="tab:green")
    ax2.set_ylim(0, 100)
    ax2.set_ylabel("satisfaction (%)")
    ax2.set_xlabel("time (UTC)")
    if all(b["user_satisfaction"] is None for b in series):
        ax2.text(0.5, 0.5, "no feedback in this window", transform=ax2.transAxes, ha="center", va="center")
    if all(b["avg_response_time"] is None for b in series):
        ax1.text(0.5, 0.5, "no generations in this window", transform=ax1.transAxes, ha="center", va="center")
    fig.suptitle(title)
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
