"""Plots for audit reports (matplotlib, imported lazily; the ``report`` extra).

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas, never pyplot, so
plotting neither opens windows nor touches global pyplot state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# Reports are read by their fields only (no import of the report module: it imports this one).

__all__ = ["plot_probes", "plot_reports", "plot_widths"]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22"]
_VERDICT_MARK = {"healthy": "✓", "vanishing": "↓", "exploding": "↑"}


def _figure(ncols: int, nrows: int, size: tuple[float, float], sharex: bool = True
            ) -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "initwise audit plots need matplotlib: pip install 'initwise[report]' "
            "(or pip install matplotlib)"
        ) from e
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    return fig, axes


def _finite_pos(v: float | None, floor: float) -> float:
    """Clip a value into ``[floor, 1 / floor]`` for log axes (inf to the top, nan stays)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return math.nan
    return min(max(v, floor), 1.0 / floor)


def _layer_positions(rows: Sequence[Any]) -> list[float]:
    """x position of each row, counting weighted layers 1..L from the input.

    A weighted layer (Linear, Conv, ...) sits at its number k; the rows after it (its
    activation, a norm, a residual add) sit between k and k + 1, so the axis counts layers the
    way the other figures do, not audit rows (a 30-layer ReLU MLP has about 60 rows).
    """
    pos: list[float] = []
    k = 0
    extra = 0
    for r in rows:
        if r.kind == "weighted":
            k += 1
            extra = 0
            pos.append(float(k))
        else:
            extra += 1
            pos.append(k + min(0.5, 0.25 * extra) if k else 0.5 * min(extra, 1))
    return pos


def plot_reports(reports: Sequence[Any], path: str | None,
                 labels: Sequence[str] | None, colors: Sequence[str] | None = None) -> Any:
    """Forward ratio, backward ratio and zero/saturated fraction against depth, overlaid.

    The x axis counts weighted layers 1..L from the input; ``colors`` gives one colour per
    report (default: a fixed cycle).
    """
    if not reports:
        raise ValueError("audit_plot: needs at least one report")
    if labels is None:
        labels = [r.model if len(reports) == 1 else f"{i}: {r.model}"
                  for i, r in enumerate(reports)]
    labels = list(labels)
    if len(labels) != len(reports):
        raise ValueError(f"audit_plot: {len(reports)} reports but {len(labels)} labels")
    fig, axes = _figure(1, 3, (12.0, 9.0))
    ax_f, ax_b, ax_z = axes[0, 0], axes[1, 0], axes[2, 0]
    band = reports[0].thresholds.band
    floor = 1e-30
    seen: list[float] = []
    for ax in (ax_f, ax_b):
        ax.set_yscale("log")
        ax.axhspan(1.0 / band, band, color="#2ca02c", alpha=0.08, lw=0)
        ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
        for y in (1.0 / band, band):
            ax.axhline(y, color="#2ca02c", lw=0.8, ls="--", alpha=0.6)
        ax.grid(True, which="major", alpha=0.25)
    for k, (rep, label) in enumerate(zip(reports, labels, strict=True)):
        c = colors[k] if colors is not None and k < len(colors) else _COLORS[k % len(_COLORS)]
        xpos = _layer_positions(rep.rows)
        idx = xpos
        fwd = [_finite_pos(r.ratio, floor) for r in rep.rows]
        bwd = [_finite_pos(r.grad_ratio, floor) for r in rep.rows]
        full = (f"{label}  [fwd {_VERDICT_MARK[rep.forward_verdict]} {rep.forward_verdict}, "
                f"bwd {_VERDICT_MARK[rep.backward_verdict]} {rep.backward_verdict}]")
        seen += [v for v in fwd + bwd if not math.isnan(v)]
        ax_f.plot(idx, fwd, color=c, lw=1.3, marker="o", ms=2.0, label=full)
        ax_b.plot(idx, bwd, color=c, lw=1.3, marker="o", ms=2.0, label=full)
        weighted = [(x, _finite_pos(r.ratio, floor)) for x, r in zip(xpos, rep.rows, strict=True)
                    if r.kind == "weighted"]
        if weighted and len(weighted) < len(idx):
            ax_f.plot(*zip(*weighted, strict=True), ls="none", marker="s", ms=3.5, color=c,
                      alpha=0.6)
        acts = [(x, r.zero_fraction) for x, r in zip(xpos, rep.rows, strict=True)
                if r.kind in ("activation", "output") or r.zero_fraction > 0.9]
        if acts:
            ax_z.plot(*zip(*acts, strict=True), color=c, lw=1.4, marker="o", ms=2.0)
        sat = [(x, r.saturated_fraction) for x, r in zip(xpos, rep.rows, strict=True)
               if r.saturated_fraction is not None]
        if sat:
            ax_z.plot(*zip(*sat, strict=True), color=c, lw=1.2, ls="--", marker="^", ms=3)
        if rep.forward_first is not None:
            ax_f.plot([xpos[rep.forward_first]], [fwd[rep.forward_first]], marker="X", ms=11,
                      color=c, mec="k", mew=0.8, ls="none")
        if rep.backward_first is not None:
            ax_b.plot([xpos[rep.backward_first]], [bwd[rep.backward_first]], marker="X", ms=11,
                      color=c, mec="k", mew=0.8, ls="none")
    lo = min([0.3 / band, *seen])
    hi = max([3.0 * band, *seen])
    for ax in (ax_f, ax_b):
        ax.set_ylim(lo / 3.0, hi * 3.0)
    th = reports[0].thresholds
    since = "; after a norm layer, sizes relative to it" if th.scope == "segment" else ""
    ax_f.set_ylabel("output size / input size", fontsize=9)
    ax_b.set_ylabel("gradient size /\noutput's gradient size", fontsize=9)
    ax_z.set_ylabel("fraction of outputs", fontsize=9)
    ax_z.set_ylim(-0.03, 1.03)
    ax_z.set_xlabel("layer (1 = first weighted layer from the input; activations just after "
                    "their layer)")
    ax_z.grid(True, alpha=0.25)
    ax_f.set_title(f"initwise audit at init: healthy band [1/{band:g}, {band:g}] shaded, "
                   f"✕ = first layer out of band{since}", fontsize=9)
    ax_f.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    ax_z.set_title("after each activation: exact zeros (solid; about 0.5 is normal for ReLU, "
                   "near 1 means dead units), saturated outputs (dashed)", fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_probes(reports: Sequence[Any], path: str | None,
                labels: Sequence[str] | None) -> Any:
    """Correlation of two inputs against depth (measured solid, mean-field theory dashed) and
    the residual stream's rms after each residual sum (log scale), overlaid per report."""
    reps = [r for r in reports if r.correlation is not None or r.residual_growth is not None]
    if not reps:
        raise ValueError("plot_probes: no report has correlation or residual_growth; audit "
                         "with correlation=True or residual=True")
    if labels is None:
        labels = [r.model if len(reports) == 1 else f"{i}: {r.model}"
                  for i, r in enumerate(reports)]
    labels = [lab for lab, r in zip(labels, reports, strict=True) if r in reps]
    fig, axes = _figure(2, 1, (12.0, 4.5), sharex=False)
    ax_c, ax_r = axes[0, 0], axes[0, 1]
    for k, (rep, label) in enumerate(zip(reps, labels, strict=True)):
        c = _COLORS[k % len(_COLORS)]
        if rep.correlation is not None and rep.correlation.rows:
            rows = rep.correlation.rows
            ax_c.plot([r.index for r in rows], [r.cosine for r in rows], color=c, lw=1.3,
                      marker="o", ms=2.0, label=f"{label} ({rep.correlation.pairing})")
            th = [(r.index, r.theory) for r in rows if r.theory is not None]
            if th:
                ax_c.plot(*zip(*th, strict=True), color=c, lw=1.0, ls="--", alpha=0.8,
                          label=f"{label}: mean-field theory")
        g = rep.residual_growth
        if g is not None and g.sums:
            ax_r.plot(range(len(g.sums) + 1), [g.initial_rms] + [s.rms for s in g.sums],
                      color=c, lw=1.3, marker="o", ms=2.0,
                      label=f"{label} (x{g.total_growth:.3g}, exponent {g.depth_exponent:.2f})")
    ax_c.set_xlabel("module call")
    ax_c.set_ylabel("cosine of the two inputs' representations", fontsize=9)
    ax_c.set_ylim(-1.03, 1.03)
    ax_c.grid(True, alpha=0.25)
    ax_r.set_xlabel("residual sums so far")
    ax_r.set_ylabel("residual stream rms", fontsize=9)
    ax_r.set_yscale("log")
    ax_r.grid(True, which="both", alpha=0.25)
    for ax in (ax_c, ax_r):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best", framealpha=0.85)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_widths(rep: Any, path: str | None, quantity: str) -> Any:
    """One line per layer of ``quantity`` against width, log-log; flat rows solid."""
    rows = rep.quantity(quantity)
    if not rows:
        raise ValueError(
            f"Any.plot: no rows for quantity {quantity!r}; valid options: "
            "grad_rms, rms, sgd_update"
        )
    fig, axes = _figure(1, 1, (7.5, 5.0))
    ax = axes[0, 0]
    ax.set_xscale("log")
    ax.set_yscale("log")
    for k, r in enumerate(rows):
        c = _COLORS[k % len(_COLORS)]
        name = (r.name or "(model)") + (f"#{r.call}" if r.call else "")
        ax.plot(rep.widths, [_finite_pos(v, 1e-30) for v in r.values], color=c,
                ls="-" if r.flat else "--", marker="o", ms=3,
                label=f"{name} ({r.type}) slope {r.slope:+.2f}")
    ax.set_xlabel("width")
    ax.set_ylabel(quantity)
    ax.set_title(f"width sweep at init: {quantity} against width "
                 f"(solid: flat, |slope| < {rep.flat_slope:g})", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    if len(rows) <= 16:
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
