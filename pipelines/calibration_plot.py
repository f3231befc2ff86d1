"""Calibration figure: nominal vs observed coverage, written as a PNG artifact (Agg backend)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.plots import pyplot, save_png


def calibration_plot(table: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Plot `forecasting.metrics.calibration`'s table: observed share below each quantile and inside
    each central interval against the nominal level; a calibrated forecast follows the diagonal,
    an over-confident one falls below it at the interval line."""
    fig, ax = pyplot().subplots(figsize=(5.2, 5.0))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="ideal")
    ax.plot(table["level"], table["quantile"], marker="o", ms=3, color="tab:blue",
            label="quantile: share of actuals ≤ q(level)")
    ax.plot(table["level"], table["interval"], marker="s", ms=3, color="tab:orange",
            label="central interval of width = level")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal level", ylabel="observed share", aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)
