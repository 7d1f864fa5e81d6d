"""LSUV's results as data: the rule for custom layers, per-layer rows, progress steps, the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LayerRule:
    """How to calibrate a user layer type: the weight, the bias, and where the bias broadcasts.

    The layer's output (its first element if it returns a tuple) must be ``u + B`` with ``u``
    linear in ``getattr(module, weight)`` and ``B`` the bias broadcast along ``bias_dim`` of
    the output (``-1``: last dimension, like ``nn.Linear``; ``1``: channels, like convs).

    >>> LayerRule("kernel", bias=None)
    LayerRule(weight='kernel', bias=None, bias_dim=-1)
    """

    weight: str = "weight"
    bias: str | None = "bias"
    bias_dim: int = -1


@dataclass(frozen=True)
class LSUVLayer:
    """One calibrated layer call, in execution order.

    ``name`` is the qualified name of the rescaled weight (``attn.in_proj_weight[v]`` for a
    block), ``module`` the module that was called, ``call`` its call index within a forward
    pass (shared modules have several rows), ``calibrated`` whether this call set the scale
    (the first call) or is only reported. ``std_before`` is the output std in the first pass
    before this layer was rescaled (upstream layers already calibrated), ``std_after`` the std
    in the final verification pass. ``scale`` is the total factor applied to the weight since
    its (orthogonal) pre-init, ``iterations`` the number of passes that rescaled it. Without
    a verification pass (``LSUVReport.verified`` false), ``std_after`` is the std of the
    corrected output in the first pass.
    """

    name: str
    module: str
    kind: str
    call: int
    calibrated: bool
    std_before: float | None
    std_after: float
    scale: float
    iterations: int
    normalized_by: str | None = None


@dataclass(frozen=True)
class LSUVStep:
    """Progress event: one layer call measured in pass ``pass_index`` (1-based)."""

    pass_index: int
    name: str
    call: int
    std: float
    rescaled_by: float


@dataclass
class LSUVReport:
    """Result of :func:`lsuv`: per-layer rows in execution order and the cost of the run.

    ``verified``: a fresh pass measured the final stds (else the first pass provably equals
    one, or ``verify=False``). ``verify_reasons``: why the first pass was not provably exact.
    ``skipped``: layers never executed by the batch; ``parametrized``: layers left untouched
    on purpose (parametrizations, heads tied to an embedding); ``uncalibrated``: weights of
    other weighted modules that no layer rule covers (fused expert tensors, custom layers),
    each with why and what to pass: nothing is left out silently.
    """

    layers: list[LSUVLayer]
    forward_passes: int
    target_std: float
    tol: float
    include_bias: bool
    converged: bool
    max_error: float
    skipped: list[str] = field(default_factory=list)
    parametrized: list[str] = field(default_factory=list)
    verified: bool = True
    verify_reasons: list[str] = field(default_factory=list)
    uncalibrated: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (rows as dicts)."""
        return asdict(self)

    def __str__(self) -> str:
        head = (
            f"LSUV: {len(self.layers)} layer calls, {self.forward_passes} forward "
            f"pass{'es' if self.forward_passes != 1 else ''}, "
            f"target std {self.target_std:g}, max |std/target - 1| = {self.max_error:.2e} "
            f"(tol {self.tol:g}, {'converged' if self.converged else 'NOT converged'})"
        )
        rows = [("layer", "call", "std before", "std after", "scale", "iters", "note")]
        for r in self.layers:
            note = "" if r.calibrated else "reported only (shared)"
            if r.normalized_by:
                note = (note + "; " if note else "") + f"re-normalized by {r.normalized_by}"
            before = "-" if r.std_before is None else f"{r.std_before:.4f}"
            rows.append(
                (r.name, str(r.call), before, f"{r.std_after:.4f}", f"{r.scale:.4g}",
                 str(r.iterations), note)
            )  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [head] + ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        if not self.verified:
            lines.append("std after: the first pass's corrected outputs (exact by construction; "
                         "no verification pass)" if not self.verify_reasons else
                         "std after: first pass, NOT verified by a fresh pass (verify=False) "
                         f"although: {'; '.join(self.verify_reasons)}")  # fmt: skip
        elif self.verify_reasons:
            lines.append(f"verified by a fresh pass because: {'; '.join(self.verify_reasons)}")
        if self.skipped:
            lines.append(f"not executed (left untouched): {', '.join(self.skipped)}")
        if self.parametrized:
            lines.append("left untouched (parametrized, e.g. weight_norm: rescale before "
                         "parametrizing; or tied to an embedding table): "
                         f"{', '.join(self.parametrized)}")
        return "\n".join(lines)


