"""Phase-diagram plot for :mod:`initwise.theory` (matplotlib, imported lazily).

Built with :class:`matplotlib.figure.Figure` and the Agg canvas, never pyplot.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# The diagram is read by its fields only: this module is imported by initwise.theory.

__all__ = ["plot_phase"]


def plot_phase(d: Any, ax: Any = None) -> Any:
    """Heat map of log χ₁ over (σ_w², σ_b²), the critical line χ₁ = 1, phase labels."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.colors import TwoSlopeNorm
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "initwise phase diagrams need matplotlib: pip install 'initwise[report]' "
            "(or pip install matplotlib)"
        ) from e
    if ax is None:
        fig = Figure(figsize=(5.5, 4.0), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    chi = np.asarray(d.chi1, dtype=np.float64)
    logchi = np.log(np.where(chi > 0, chi, np.nan))
    span = float(np.nanmax(np.abs(logchi))) if np.isfinite(logchi).any() else 1.0
    span = span if span > 0 else 1.0
    if len(d.sigma_w2) > 1 and len(d.sigma_b2) > 1:
        mesh = ax.pcolormesh(d.sigma_w2, d.sigma_b2, logchi, shading="nearest", cmap="RdBu_r",
                             norm=TwoSlopeNorm(0.0, -span, span))
        fig.colorbar(mesh, ax=ax, label="ln χ₁  (< 0 ordered, > 0 chaotic)")
    crit = [(w, b) for w, b in zip(d.critical_sigma_w2, d.sigma_b2, strict=True)
            if math.isfinite(w)]
    if crit:
        ax.plot([w for w, _ in crit], [b for _, b in crit], "k-", lw=2, label="χ₁ = 1")
        ax.legend(loc="upper left")
    ax.set_xlabel("σ_w²")
    ax.set_ylabel("σ_b²")
    ax.set_title(f"{d.activation}: order-to-chaos phase diagram")
    ax.text(0.05, 0.5, "ordered", transform=ax.transAxes)
    ax.text(0.8, 0.5, "chaotic", transform=ax.transAxes)
    return fig
