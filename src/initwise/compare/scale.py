"""Read per-layer forward/backward scale at init out of an :class:`initwise.AuditReport`.

The comparison report plots, per weighted layer in execution order, the std of the layer's
output (forward) and the rms of the loss gradient with respect to that output (backward).
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["scale_from_audit"]


def scale_from_audit(report: Any) -> dict[str, Any]:
    """Return ``{"layers", "forward_std", "backward_std", "source", verdicts...}`` of an audit.

    Example:
        >>> import torch, initwise
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> s = scale_from_audit(initwise.audit(net, torch.randn(16, 4)))
        >>> s["layers"], len(s["forward_std"]), s["source"]
        (['0', '2'], 2, 'initwise.audit')
    """
    rows = [r for r in report.rows if r.kind == "weighted"]
    labels = _row_labels(report.rows)
    return {
        "layers": [r.name for r in rows],
        "forward_std": [float(r.std) for r in rows],
        "backward_std": [math.nan if r.grad_rms is None else float(r.grad_rms) for r in rows],
        "source": "initwise.audit",
        "verdict": report.verdict,
        "forward_verdict": report.forward_verdict,
        "backward_verdict": report.backward_verdict,
        "forward_reason": _in_layers(report.forward_reason, labels),
        "backward_reason": _in_layers(report.backward_reason, labels),
    }


def _row_labels(rows: Any) -> dict[int, str]:
    """Audit row index -> words counting weighted layers 1..L, as the report's figures do."""
    out: dict[int, str] = {}
    k = 0
    for r in rows:
        if r.kind == "weighted":
            k += 1
            out[r.index] = f"layer {k} ({r.type})"
        else:
            out[r.index] = (f"the {r.type} after layer {k}" if k else f"the {r.type} before "
                            "layer 1")
    return out


def _in_layers(reason: str, labels: dict[int, str]) -> str:
    """Rewrite the audit's ``row 8 8 (ReLU)`` / ``row 8 fc (Linear)`` as layer numbers.

    Example:
        >>> _in_layers("first leaves the band at row 4 4 (ReLU): ...", {4: "the ReLU after layer 2"})
        'first leaves the band at the ReLU after layer 2: ...'
    """
    def sub(m: re.Match[str]) -> str:
        return labels.get(int(m.group(1)), m.group(0))

    return re.sub(r"\brow (\d+)(?: [^\s(]+)? \([^)]*\)", sub, reason or "")
