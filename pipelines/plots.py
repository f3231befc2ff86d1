"""Figures written as PNG artifacts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


from forecasting.data import DEMAND, ID, TIME, Panel
from forecasting.files import atomic_path
from forecasting.forecast import Forecast


def fan_chart(
    forecast: Forecast,
    history: Panel,
    path: str | Path,
    *,
    clusters: Sequence[str] | None = None,
    actuals: np.ndarray | None = None,
    context: int = 168,
    max_clusters: int = 4,
) -> Path:
    """Recent history, then the forecast's median with 50 % and 90 % bands, for a few clusters."""
    plt = pyplot()
    chosen = list(clusters or forecast.cluster_ids[:max_clusters])
    q05, q25, q50, q75, q95 = forecast.quantile([0.05, 0.25, 0.5, 0.75, 0.95])
    fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 2.6 * len(chosen)), squeeze=False)
    hist = history.history()
    for ax, cluster in zip(axes[:, 0], chosen, strict=True):
        c = forecast.index_of(cluster)
        past = hist[hist[ID] == cluster].tail(context)
        ax.plot(past[TIME], past[DEMAND], color="black", lw=1, label="observed")
        when = forecast.timestamps(c)
        ax.fill_between(when, q05[c], q95[c], color="tab:blue", alpha=0.2, label="90 % interval")
        ax.fill_between(when, q25[c], q75[c], color="tab:blue", alpha=0.35, label="50 % interval")
        ax.plot(when, q50[c], color="tab:blue", lw=1.5, label="median")
        if actuals is not None:
            ax.plot(when, actuals[c], color="tab:red", lw=1, ls="--", label="actual")
        ax.set_title(cluster, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7, loc="upper left", ncols=5)
    fig.tight_layout()
    return save_png(fig, path)


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display), imported only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write `fig` as a PNG atomically (a half-written figure is never left at `path`), then close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return path
