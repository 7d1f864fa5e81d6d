"""Read per-layer forward/backward scale at init out of an :class:`initwise.AuditReport`.

The comparison report plots, per layer, the std of each layer's output (forward) and of the
loss gradient with respect to it (backward). This module maps the library audit's rows onto
``{"layers", "forward_std", "backward_std", "source"}`` and returns ``None`` when the audit
does not carry both, so the caller can measure them itself.
"""

from __future__ import annotations

from typing import Any

__all__ = ["scale_from_audit"]


def _rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("layers", "rows", "records"):
        v = d.get(key)
        if isinstance(v, list) and v and isinstance(v[0], dict):
            return v
    return []


def _pick(row: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for k in keys:
        v = row.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


_FWD = ("forward_std", "output_std", "std", "rms")
_BWD = ("backward_std", "grad_output_std", "grad_std", "grad_rms")


def scale_from_audit(report: Any) -> dict[str, Any] | None:
    """Return the audit's per-layer forward/backward scale, or ``None`` if it lacks them.

    Example:
        >>> scale_from_audit({"layers": [{"name": "0", "output_std": 1.0, "grad_std": 0.1}]})
        {'layers': ['0'], 'forward_std': [1.0], 'backward_std': [0.1], 'source': 'initwise.audit'}
    """
    d = report.to_dict() if hasattr(report, "to_dict") else report
    if not isinstance(d, dict):
        return None
    rows = _rows(d)
    if any("kind" in r for r in rows):  # the initwise audit: keep layers with weights
        rows = [r for r in rows if r.get("kind") == "weighted"]
    names, fwd, bwd = [], [], []
    for i, row in enumerate(rows):
        f, b = _pick(row, _FWD), _pick(row, _BWD)
        if f is None:
            continue
        names.append(str(row.get("name", row.get("module", i))))
        fwd.append(f)
        bwd.append(float("nan") if b is None else b)
    if not names:
        return None
    out: dict[str, Any] = {"layers": names, "forward_std": fwd, "backward_std": bwd,
                           "source": "initwise.audit"}
    for key in ("verdict", "forward_verdict", "backward_verdict", "forward_reason",
                "backward_reason"):
        if isinstance(d.get(key), str):
            out[key] = d[key]
    return out
