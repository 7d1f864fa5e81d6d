"""Read per-layer forward/backward scale at init out of an :class:`initwise.AuditReport`.

The comparison report plots, per weighted layer in execution order, the std of the layer's
output (forward) and the rms of the loss gradient with respect to that output (backward).
"""

from __future__ import annotations

import math
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
    return {
        "layers": [r.name for r in rows],
        "forward_std": [float(r.std) for r in rows],
        "backward_std": [math.nan if r.grad_rms is None else float(r.grad_rms) for r in rows],
        "source": "initwise.audit",
        "verdict": report.verdict,
        "forward_verdict": report.forward_verdict,
        "backward_verdict": report.backward_verdict,
        "forward_reason": report.forward_reason,
        "backward_reason": report.backward_reason,
    }
