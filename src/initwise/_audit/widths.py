"""Width sweeps: how each layer's scale changes with the width of the model."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .._math import loglog_slope
from .api import audit
from .report import AuditReport, WidthAuditReport, WidthRow


def audit_widths(
    factory: Callable[[int], nn.Module],
    widths: Iterable[int],
    inputs: Any = None,
    *,
    inputs_fn: Callable[[int], Any] | None = None,
    seed: int = 0,
    keep_reports: bool = False,
    **audit_kwargs: Any,
) -> WidthAuditReport:
    """Audit ``factory(width)`` at init at several widths: which quantities stay constant.

    A width sweep of :func:`audit` at init, with no training step: for each layer, the
    per-coordinate output rms, gradient rms and the single-learning-rate SGD update scale are
    fitted against width on log-log axes; a quantity is ``flat`` when
    ``|slope| < thresholds.flat_slope`` (0.25). The output ``rms`` checks the init scale.

    This is not the muP coordinate check. Under a width-transferring parametrization (muP,
    Yang et al., Tensor Programs V, 2022) gradients are *meant* to shrink with width: the
    readout multiplier is ``1/width`` and the per-layer learning rates grow to compensate.
    This function sees neither the learning rates nor any update, so it reports every
    ``grad_rms`` and ``sgd_update`` of a correct muP model as not flat (slope about -1; tested).
    To validate a parametrization, use :func:`initwise.coord_check`, which trains a few steps
    with the parametrization's per-layer learning rates and measures the layers' outputs.
    Each model is built under a forked RNG seeded with ``seed``, so the global RNG is
    untouched. Layers are matched across widths by module name and call index.

    Args:
        factory: ``width -> model``.
        widths: at least two widths.
        inputs: fixed inputs for every width, or ``None`` with ``inputs_fn(width)``.
        keep_reports: keep each width's :class:`AuditReport` in ``.reports``.
        **audit_kwargs: passed to :func:`audit` (``loss_fn``, ``mode``, ``thresholds``...).

    >>> def mlp(w):
    ...     net = nn.Sequential(nn.Linear(16, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU())
    ...     for m in net:
    ...         if isinstance(m, nn.Linear):
    ...             _ = nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    ...     return net
    >>> rep = audit_widths(mlp, [32, 128, 512], torch.randn(64, 16))
    >>> [r.flat for r in rep.quantity("rms")]
    [True, True, True, True, True]
    """
    ws = [int(w) for w in widths]
    if len(ws) < 2:
        raise ValueError("audit_widths: needs at least two widths")
    if any(w <= 0 for w in ws):
        raise ValueError(f"audit_widths: widths must be positive, got {ws}")
    if (inputs is None) == (inputs_fn is None):
        raise ValueError("audit_widths: pass exactly one of inputs or inputs_fn")
    if audit_kwargs.get("spectrum"):
        raise ValueError("audit_widths: spectrum is not supported; use audit()")
    reports: list[AuditReport] = []
    for w in ws:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = factory(w)
        x = inputs_fn(w) if inputs_fn is not None else inputs
        reports.append(audit(model, x, seed=seed, **audit_kwargs))
    th = reports[0].thresholds
    keys = [(r.name, r.call) for r in reports[0].rows]
    common = set(keys)
    for rep in reports[1:]:
        common &= {(r.name, r.call) for r in rep.rows}
    rows: list[WidthRow] = []
    maps = [{(r.name, r.call): r for r in rep.rows} for rep in reports]
    wmaps = [{w.name: w for w in rep.weights} for rep in reports]
    for quantity in ("rms", "grad_rms"):
        for key in keys:
            if key not in common:
                continue
            vals = [getattr(m[key], quantity) for m in maps]
            vals = [math.nan if v is None else float(v) for v in vals]
            s = loglog_slope(ws, vals)
            rows.append(WidthRow(name=key[0], call=key[1], type=maps[0][key].type,
                                 quantity=quantity, values=vals, slope=s,
                                 flat=math.isfinite(s) and abs(s) < th.flat_slope))
    for wname in wmaps[0]:
        if not all(wname in wm for wm in wmaps) or not wname.endswith("weight"):
            continue
        vals = [math.nan if (u := wm[wname].sgd_update) is None else float(u) for wm in wmaps]
        s = loglog_slope(ws, vals)
        rows.append(WidthRow(name=wname, call=0, type="parameter", quantity="sgd_update",
                             values=vals, slope=s, flat=math.isfinite(s) and abs(s) < th.flat_slope))
    return WidthAuditReport(widths=ws, flat_slope=th.flat_slope, rows=rows,
                            verdicts=[r.verdict for r in reports],
                            reports=reports if keep_reports else [])


