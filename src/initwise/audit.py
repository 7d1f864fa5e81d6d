"""Audit a model's initialization: how the signal propagates, layer by layer, before training.

:func:`audit` runs one forward and one backward pass of a model on a batch and measures, for
every layer (in execution order; a module called twice gives two rows):

* **forward**: mean, std, second moment, fraction of exact zeros (dead ReLUs), fraction of
  saturated units for bounded activations, ``max |x|`` of the layer's output, and its
  ``rms / reference`` (the reference of its segment, see "Segments" below);
* **backward**: the gradient of the loss with respect to the layer's output (rms per element,
  Frobenius norm, and the norm ratio to its segment's reference gradient);
* **weights**: each parameter's empirical std (against the std an initwise ``Plan`` intended),
  its gradient, the relative update that gradient implies for SGD and for Adam, and the
  orthogonality error of orthogonal(-looking) weights;
* optionally (``spectrum=True``) the singular values of the input-output Jacobian
  (dynamical isometry), see :mod:`initwise._jacobian`.

It then gives a verdict for each pass: ``"healthy"``, ``"vanishing"`` or ``"exploding"``.

**What is compared, and why.** For weights initialized with a fan-in scheme (the default in
PyTorch and almost every scheme), ``E[h_l²]`` per element is conserved in the forward pass and
the squared *norm* of the backward signal ``E‖∂L/∂h_l‖²`` is conserved in the backward pass:
``E‖Wᵀg‖² = fan_in · Var(W) · ‖g‖² = gain² ‖g‖²`` whatever the layer widths. So the forward
scale of a row is ``ratio = rms(h_l) / rms(x)`` (per element) and its backward scale is
``grad_ratio = ‖∂L/∂h_l‖ / ‖∂L/∂y‖`` (whole batch, Frobenius), which makes narrow output
heads harmless (with normalization layers, and backward with pooling rows, which divide the
gradient norm by √(positions), the references are those of the row's segment, below). A row leaves the healthy band when either is outside
``[1 / band, band]`` (``band = 10`` by default: a factor that is ~3 standard deviations of the
finite-width fluctuation of ``log rms`` of a 50-layer width-128 ReLU network, Hanin & Rolnick
2018, but is crossed after only a few layers by any exponential drift), or when it is
non-finite (exploding), or when more than ``max_zero_fraction`` of its outputs are exactly
zero (vanishing: dead units). See :class:`AuditThresholds`.

**Segments (normalization layers).** LayerNorm, RMSNorm (also Hugging Face ``LlamaRMSNorm``,
``T5LayerNorm``..., recognized by class name or structure), GroupNorm, and BatchNorm /
InstanceNorm when they use batch statistics re-set the scale by design: GPT-2's LayerNorm maps
its 0.02-scale residual stream to scale 1 and, backward, multiplies the gradient by
``1 / 0.02``. So with ``scope="segment"`` (default) the rows are cut into segments at each
normalization row, and each row is judged against its own segment's reference:

* forward (execution order): the first segment's reference is the rms of the model's
  floating inputs (for token ids, which have no float scale: the first row's, i.e. the
  embedding output); after a normalization row it is the *interval* between the rms of that
  layer's input and of its output: a pre-norm residual branch reads the normalized scale and
  writes back into the stream's scale, so both are legitimate there. ``ratio = rms / ref``
  with ``ref`` the point of the interval nearest to ``rms`` (``ratio = 1`` inside it);
* backward (gradient-flow order, symmetrically): the first segment's reference is
  ``‖∂L/∂y‖``; after crossing a normalization row it is the interval between the gradient
  norms at that layer's output and at its input (measured with a hook on its input);
* the scale *entering* a normalization layer is judged only for non-finite values and dead
  units, since the layer divides it out: forward, the row whose output is the layer's input
  (``feeds_norm``) and the normalization row itself; backward, the normalization row's
  gradient. A tiny-init (std 0.01) BatchNorm MLP is therefore healthy in train mode;
* rows reading the same tensor (q, k, v projections) send back one summed gradient: such a
  group is vanishing only when all of its rows are (query/key gradients are small at init
  because attention is near uniform);
* rows whose output depends on no input and no parameter (``constant``, e.g. rotary cos/sin
  tables) are reported, not judged.

This still catches drift inside a segment (a block whose weights are 1000x too large is
flagged at that block), every network without normalization exactly as before, BatchNorm
whose ``eps`` floor is reached (weights ~1e-4), and eval-mode BatchNorm (running statistics:
an affine map, not a reset). It does not judge drift *across* normalization layers, e.g. a
slowly growing pre-norm residual stream, or the ~1.2-1.3x per block gradient growth of deep
BatchNorm MLPs (Yang et al., 2019): ``global_ratio`` and ``grad_global_ratio`` (against the
model input and ``‖∂L/∂y‖``) show it, and ``AuditThresholds(scope="global")`` judges by them.

The forward verdict is that of the first row (in execution order) leaving the band; the
backward verdict that of the first row in the order the gradient flows (from the output back
towards the input). ``verdict`` is the worse of the two (``exploding`` > ``vanishing`` >
``healthy``; ties go to the forward pass).

Saturation. A tanh network with ``std = 1`` weights at width 256 has pre-activations with rms
~16 (forward: exploding at the first layer) and ~95% saturated units; its backward gain per
layer is ``χ = n σ² E[tanh'(h)⁴]`` ≈ 8.5 > 1 (the chaotic phase of Poole et al. 2016), so the
gradient explodes too, even though the tanh outputs stay bounded. The saturated fraction is
reported per activation row.

Deliberate zero initialization (zero-init-last, ReZero, a zero classifier) is recognized:
modules that have an all-zero parameter and an all-zero output are marked ``zero_init`` and
skipped by the verdict, together with all-zero rows after them and, in the backward pass,
rows whose gradient is exactly zero because such a module blocks it at step 0.

**Conventions.** ``mode="train"`` (default) audits the model as the first training step sees
it (batch-statistics normalization, dropout active with the seeded RNG); ``"eval"`` audits it
in inference mode. The model is left exactly as it was: parameters and buffers (BatchNorm
running statistics are restored bitwise), existing ``.grad`` (gradients are taken with
:func:`torch.autograd.grad`, never accumulated), train/eval flags, ``requires_grad`` flags
(frozen parameters are temporarily made trainable to measure their gradient), hooks (all
removed, even on error) and the global RNG state (forked).

Without ``loss_fn`` the loss is ``L = Σ y ⊙ R`` with ``R`` i.i.d. ``N(0, 1)`` drawn from a
``torch.Generator`` seeded with ``seed``, so ``∂L/∂y = R`` has unit variance per element: the
backward pass propagates a random unit-variance direction, as in signal-propagation theory.

Weight-update scales, per unit learning rate: ``sgd_update = ‖∂L/∂W‖ / ‖W‖`` (the relative
change of ``W`` after one SGD step is ``lr × sgd_update``; ``None`` for an all-zero ``W``) and ``adam_update = sqrt(nnz(∂L/∂W))
/ ‖W‖``: Adam's first step is ``lr · m̂ / (sqrt(v̂) + ε) = lr · sign(g)`` per element (ε
neglected), so its relative size is ``lr × adam_update`` whatever the gradient's scale.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

import torch
from torch import nn

from ._checks import check_choice, check_finite_positive
from ._jacobian import SpectrumSummary, jacobian_spectrum

__all__ = [
    "AuditError",
    "AuditReport",
    "AuditThresholds",
    "LayerStats",
    "SpectrumSummary",
    "WeightStats",
    "WidthAuditReport",
    "WidthRow",
    "audit",
    "audit_plot",
    "audit_widths",
]

Verdict = Literal["healthy", "vanishing", "exploding"]
AuditMode = Literal["train", "eval"]
Reference = Literal["input", "first", "unit"]
Scope = Literal["segment", "global"]
Layers = Literal["leaves", "weighted"]
VERDICTS: tuple[str, ...] = get_args(Verdict)
_SEVERITY = {"healthy": 0, "vanishing": 1, "exploding": 2}

# Output bounds of bounded activations, for the saturated fraction.
_BOUNDS: dict[type, tuple[float, float]] = {
    nn.Tanh: (-1.0, 1.0),
    nn.Sigmoid: (0.0, 1.0),
    nn.Softsign: (-1.0, 1.0),
    nn.Hardsigmoid: (0.0, 1.0),
    nn.ReLU6: (0.0, 6.0),
}

# Normalization layers re-set the scale of their output (see the module docs, "Segments").
_NORM_TYPES: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase,
                                 *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
_NORM_NAME = re.compile(r"(rms|layer|group|batch|instance|scale)_?norm", re.IGNORECASE)


def _is_norm(m: nn.Module) -> bool:
    """Whether ``m`` is a normalization layer: torch's LayerNorm, RMSNorm, GroupNorm,
    BatchNorm*/SyncBatchNorm/InstanceNorm*; by class name (``LlamaRMSNorm``, ``T5LayerNorm``,
    ``LayerNorm2d``, ``FusedLayerNorm``...); or by structure: a leaf with an ``eps`` or
    ``variance_epsilon`` attribute whose own parameters are a 1-D ``weight`` (and ``bias``).
    BatchNorm and InstanceNorm count only when they use batch statistics (train mode, or no
    running statistics): in eval mode they are a fixed affine map."""
    if isinstance(m, nn.modules.batchnorm._NormBase):
        # With running statistics (eval mode) it is an affine map: no reset of the scale.
        return m.training or m.running_var is None
    if isinstance(m, _NORM_TYPES):
        return True
    if _NORM_NAME.search(type(m).__name__):
        # FrozenBatchNorm2d and other batch norms that only use running statistics are a
        # fixed affine map, like eval-mode BatchNorm: no reset of the scale.
        frozen = type(m).__name__.lower().startswith("frozen")
        running = getattr(m, "running_var", None) is not None and not m.training
        return not (frozen or running)
    if next(iter(m.children()), None) is not None:
        return False
    if not (hasattr(m, "eps") or hasattr(m, "variance_epsilon")):
        return False
    own = dict(m.named_parameters(recurse=False))
    return "weight" in own and set(own) <= {"weight", "bias"} and all(
        p.dim() == 1 for p in own.values())


class AuditError(RuntimeError):
    """The audited model failed; the message names the stage (forward, loss, backward...)."""


@dataclass(frozen=True)
class AuditThresholds:
    """Thresholds of the audit verdict (data: shown in every report, overridable).

    Attributes:
        band: healthy band ``[1 / band, band]`` for the forward ratio ``rms(h) / reference``
            and the backward ratio ``‖∂L/∂h‖ / ‖∂L/∂y‖``.
        max_zero_fraction: a row with more exact zeros than this is "vanishing" (dead).
        reference: forward reference scale of the first segment: ``"input"`` = rms of the
            model's floating-point inputs (falls back to the first row's rms when there are
            none, e.g. token ids: the embedding output), ``"first"`` = rms of the first row,
            ``"unit"`` = 1.
        scope: ``"segment"`` (default): normalization layers re-set the reference (each row
            is judged against the segment it lies in, see the module docs); ``"global"``:
            every row is judged against the model input (forward) and the output gradient
            (backward), normalization layers included.
        saturation_margin: an output of a bounded activation (tanh, sigmoid, ...) counts as
            saturated within ``margin × (upper − lower)`` of a bound.
        plan_sigmas: a weight's std matches its plan within this many standard errors
            (``rel. SE(std) = sqrt(2 / n) / 2`` for normal weights, a conservative bound).
        orthogonality_tol: a weight not declared orthogonal is reported as orthogonal when
            ``‖WWᵀ/g² − I‖_F`` (or ``WᵀW`` for tall ``W``) is below this.
        flat_slope: :func:`audit_widths` calls a quantity flat in width when ``|slope|`` of
            ``log(value)`` against ``log(width)`` is below this (halfway to ``±1/2``, the
            nearest exponent with which quantities scale in standard parametrization).

    >>> AuditThresholds(band=100.0).band
    100.0
    """

    band: float = 10.0
    max_zero_fraction: float = 0.99
    reference: Reference = "input"
    scope: Scope = "segment"
    saturation_margin: float = 0.02
    plan_sigmas: float = 6.0
    orthogonality_tol: float = 1e-3
    flat_slope: float = 0.25

    def __post_init__(self) -> None:
        check_finite_positive("band", self.band)
        if self.band <= 1:
            raise ValueError(f"band must be > 1, got {self.band!r}")
        if not 0 < self.max_zero_fraction <= 1:
            raise ValueError(f"max_zero_fraction must be in (0, 1], got {self.max_zero_fraction!r}")
        check_choice("reference", self.reference, get_args(Reference))
        check_choice("scope", self.scope, get_args(Scope))
        check_finite_positive("saturation_margin", self.saturation_margin)
        check_finite_positive("plan_sigmas", self.plan_sigmas)
        check_finite_positive("orthogonality_tol", self.orthogonality_tol)
        check_finite_positive("flat_slope", self.flat_slope)


@dataclass
class LayerStats:
    """Statistics of one layer call's output and of the gradient with respect to it.

    ``ratio`` is ``rms / reference`` and ``grad_ratio`` is ``grad_norm / grad_reference``, the
    references of the row's segment (module docs, "Segments"); ``segment`` / ``grad_segment``
    are the index of the normalization row that opened it (``None``: the first segment, whose
    reference is the model input, resp. ``‖∂L/∂y‖``). ``global_ratio`` and
    ``grad_global_ratio`` are against the model input and ``‖∂L/∂y‖`` throughout. ``norm``:
    a normalization layer (``in_rms`` and ``grad_in_norm`` are its input's rms and gradient
    norm); ``feeds_norm``: the row's output is a normalization layer's input. ``constant``:
    the output depends on neither the inputs nor a parameter (e.g. rotary cos/sin tables).
    ``flag`` is ``"ok"``, ``"vanishing"``, ``"exploding"``, ``"skipped"`` (zero-init) or
    ``"n/a"`` (constant); ``grad_flag`` likewise, ``"n/a"`` when no gradient reached it.
    """

    index: int
    name: str
    call: int
    type: str
    kind: str
    shape: list[int]
    numel: int
    mean: float
    std: float
    second_moment: float
    rms: float
    zero_fraction: float
    saturated_fraction: float | None
    max_abs: float
    nonfinite: bool
    ratio: float = math.nan
    zero_init: bool = False
    grad_rms: float | None = None
    grad_norm: float | None = None
    grad_max_abs: float | None = None
    grad_ratio: float | None = None
    flag: str = "ok"
    grad_flag: str = "n/a"
    norm: bool = False
    feeds_norm: bool = False
    pool: bool = False
    constant: bool = False
    in_rms: float | None = None
    grad_in_norm: float | None = None
    reference: float = math.nan
    segment: int | None = None
    global_ratio: float = math.nan
    grad_reference: float | None = None
    grad_segment: int | None = None
    grad_global_ratio: float | None = None
    shares_input_with: int | None = None


@dataclass
class WeightStats:
    """Statistics of one parameter and its gradient (update scales are per unit lr)."""

    name: str
    shape: list[int]
    numel: int
    mean: float
    std: float
    rms: float
    norm: float
    zero: bool
    requires_grad: bool
    intended_std: float | None = None
    scheme: str | None = None
    std_ratio: float | None = None
    matches_plan: bool | None = None
    orthogonal: bool = False
    orth_gain: float | None = None
    orth_error: float | None = None
    grad_rms: float | None = None
    grad_norm: float | None = None
    sgd_update: float | None = None
    adam_update: float | None = None


def _enc(v: Any) -> Any:
    """Encode floats for strict JSON: non-finite values become strings."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _enc(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_enc(x) for x in v]
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    if isinstance(v, dict):
        return {k: _dec(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_dec(x) for x in v]
    return v


def _fmt(v: float | None, spec: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return format(v, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


@dataclass
class AuditReport:
    """Result of :func:`audit`: per-layer rows, per-parameter weights, verdicts (JSON-able).

    ``forward_first`` / ``backward_first`` are the row indices where the signal first leaves
    the healthy band (``None`` when healthy); ``forward_reason`` / ``backward_reason`` say why.
    """

    model: str
    mode: str
    batch: int
    loss: float
    loss_kind: str
    input_rms: float | None
    reference_rms: float
    output_grad_norm: float
    thresholds: AuditThresholds
    rows: list[LayerStats]
    weights: list[WeightStats]
    forward_verdict: str
    backward_verdict: str
    verdict: str
    forward_first: int | None = None
    backward_first: int | None = None
    forward_reason: str = ""
    backward_reason: str = ""
    notes: list[str] = field(default_factory=list)
    spectrum: SpectrumSummary | None = None

    # -- data ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (non-finite floats as ``"inf"``/``"nan"`` strings)."""
        d: dict[str, Any] = _enc(asdict(self))
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """Return the report as strict JSON (round-trips through :meth:`from_json`)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditReport:
        """Rebuild a report from :meth:`to_dict`'s output."""
        d = _dec(dict(d))
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["thresholds"] = AuditThresholds(**d["thresholds"])
        kw["rows"] = [LayerStats(**r) for r in d["rows"]]
        kw["weights"] = [WeightStats(**w) for w in d["weights"]]
        kw["spectrum"] = SpectrumSummary(**d["spectrum"]) if d.get("spectrum") else None
        return cls(**kw)

    @classmethod
    def from_json(cls, s: str) -> AuditReport:
        """Rebuild a report from :meth:`to_json`'s output."""
        return cls.from_dict(json.loads(s))

    # -- text ------------------------------------------------------------------------------
    def _summary_lines(self) -> list[str]:
        t = self.thresholds
        lines = [
            f"verdict: {self.verdict}  (forward: {self.forward_verdict}, "
            f"backward: {self.backward_verdict})",
        ]
        if self.forward_reason:
            lines.append(f"forward: {self.forward_reason}")
        if self.backward_reason:
            lines.append(f"backward: {self.backward_reason}")
        lines.append(
            f"healthy band: rms/ref and grad-norm ratio in [{1 / t.band:.3g}, {t.band:.3g}], "
            f"zeros <= {t.max_zero_fraction:.3g}; reference rms = {self.reference_rms:.4g} "
            f"({t.reference}); scope = {t.scope} (seg/gseg: the normalization row whose "
            f"segment a row is in; ref: its reference); mode = {self.mode}; "
            f"loss = {self.loss_kind}"
        )
        if self.spectrum is not None:
            s = self.spectrum
            lines.append(
                f"jacobian spectrum ({s.side}, dim {s.dim}, {s.steps} Lanczos steps"
                f"{', exact' if s.exact else ''}): mean sv^2 {s.mean_sq_sv:.4g}, "
                f"max sv {s.max_sv:.4g}, min sv {s.min_sv:.4g}, std log sv {s.log_sv_std:.3g}, "
                f"condition {s.condition:.4g}"
            )
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def _layer_table(self, markdown: bool) -> str:
        header = ["#", "layer", "type", "shape", "mean", "std", "zeros", "sat", "max|x|",
                  "seg", "ref", "rms/ref", "grad rms", "gseg", "grad/ref", "flag"]
        segmented = self.thresholds.scope == "segment"
        rows = []
        for r in self.rows:
            flag = r.flag if r.flag not in ("ok", "n/a") else ""
            if r.grad_flag not in ("ok", "n/a"):
                flag = f"{flag}{'/' if flag else ''}grad {r.grad_flag}"
            if segmented and r.norm and not flag:
                flag = "(norm: resets ref)"
            elif segmented and r.feeds_norm and not flag:
                flag = "(enters norm)"
            elif r.constant and not flag:
                flag = "(constant)"
            name = r.name or "(model)"
            if r.call:
                name += f"#{r.call}"
            rows.append([str(r.index), name, r.type, "x".join(map(str, r.shape)),
                         _fmt(r.mean), _fmt(r.std), _fmt(r.zero_fraction, ".2f"),
                         _fmt(r.saturated_fraction, ".2f"), _fmt(r.max_abs),
                         "in" if r.segment is None else f"#{r.segment}", self._span_text(r),
                         _fmt(r.ratio), _fmt(r.grad_rms),
                         "-" if r.grad_reference is None else
                         "out" if r.grad_segment is None else f"#{r.grad_segment}",
                         _fmt(r.grad_ratio), flag])
        return _table(header, rows, markdown)

    def _span_text(self, r: LayerStats) -> str:
        """The reference interval of ``r``'s forward segment, as text."""
        if r.segment is None:
            return _fmt(self.reference_rms)
        norm = self.rows[r.segment]
        span = _span(norm.in_rms, norm.rms)
        if span is None or span[0] == span[1]:
            return _fmt(norm.rms)
        return f"{span[0]:.3g}..{span[1]:.3g}"

    def _weight_table(self, markdown: bool) -> str:
        header = ["parameter", "shape", "std", "intended", "std/int", "orth err", "grad rms",
                  "sgd upd", "adam upd"]
        rows = []
        for w in self.weights:
            orth = _fmt(w.orth_error) if w.orth_error is not None else ""
            rows.append([w.name, "x".join(map(str, w.shape)), _fmt(w.std),
                         _fmt(w.intended_std), _fmt(w.std_ratio), orth, _fmt(w.grad_rms),
                         _fmt(w.sgd_update), _fmt(w.adam_update)])
        return _table(header, rows, markdown)

    def to_markdown(self) -> str:
        """Return the report as Markdown: summary, layer table, weight table."""
        parts = [f"## initwise audit: {self.model}", ""]
        parts += [f"- {line}" for line in self._summary_lines()]
        parts += ["", "### Layers", "", self._layer_table(True), "", "### Parameters", "",
                  self._weight_table(True), ""]
        return "\n".join(parts)

    def __str__(self) -> str:
        parts = [f"initwise audit: {self.model}", *self._summary_lines(), "",
                 self._layer_table(False), "", self._weight_table(False)]
        return "\n".join(parts)

    # -- plots -----------------------------------------------------------------------------
    def plot(self, path: str | None = None, *others: AuditReport,
             labels: Sequence[str] | None = None) -> Any:
        """Plot forward and backward scale against depth (log scale), overlaying ``others``.

        Needs matplotlib (the ``report`` extra). Returns the matplotlib ``Figure``; writes it
        to ``path`` when given.
        """
        return audit_plot([self, *others], path, labels=labels)


# ------------------------------------------------------------------------------------------
# Inputs, outputs, model state
# ------------------------------------------------------------------------------------------

def _split_inputs(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    raise TypeError(
        "audit: inputs must be a tensor, a tuple of positional tensors or a dict of keyword "
        f"tensors, got {type(inputs).__name__}"
    )


def _input_tensors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    return [t for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]


def _primary(out: Any) -> torch.Tensor | None:
    """The tensor an output stands for: itself, the first floating tensor of a sequence, or
    ``logits`` / the first floating value of a mapping (e.g. a Hugging Face ModelOutput)."""
    if isinstance(out, torch.Tensor):
        return out if out.is_floating_point() else None
    if isinstance(out, Mapping):
        if "logits" in out and isinstance(out["logits"], torch.Tensor):
            return _primary(out["logits"])
        for v in out.values():
            p = _primary(v)
            if p is not None:
                return p
        return None
    if isinstance(out, (tuple, list)):
        for v in out:
            p = _primary(v)
            if p is not None:
                return p
    return None


class _ModelState:
    """Snapshot of everything the audit may touch, restored exactly by :meth:`restore`."""

    def __init__(self, model: nn.Module) -> None:
        self.training = [(m, m.training) for m in model.modules()]
        self.requires_grad = [(p, p.requires_grad) for p in model.parameters()]
        self.buffers: list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]] = []
        for m in model.modules():
            for name, b in m._buffers.items():
                if b is not None:
                    self.buffers.append((m, name, b, b.detach().clone()))

    def restore(self) -> None:
        for m, flag in self.training:
            m.training = flag
        for p, flag in self.requires_grad:
            p.requires_grad_(flag)
        with torch.no_grad():
            for m, name, b, saved in self.buffers:
                m._buffers[name] = b
                b.copy_(saved)


def _kind(m: nn.Module) -> str:
    if any(True for _ in m.parameters(recurse=False)):
        return "weighted"
    if type(m).__module__ == "torch.nn.modules.activation":
        return "activation"
    return "other"


def _bounds(m: nn.Module) -> tuple[float, float] | None:
    if isinstance(m, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
        return (float(m.min_val), float(m.max_val))
    for cls, b in _BOUNDS.items():
        if isinstance(m, cls):
            return b
    return None


# ------------------------------------------------------------------------------------------
# Statistics: a few fused reductions per tensor, no host sync until the end
# ------------------------------------------------------------------------------------------

def _flat32(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return x.reshape(-1)


def _sum_sq(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum, sum of squares) of a flat tensor: two fast fused reductions (no Welford pass)."""
    return f.sum(), torch.linalg.vector_norm(f).double() ** 2


def _out_stats(x: torch.Tensor, bounds: tuple[float, float] | None, margin: float
               ) -> torch.Tensor:
    """[sum, sum of squares, min, max, zeros, saturated] as float64 (still on device)."""
    f = _flat32(x)
    s1, s2 = _sum_sq(f)
    lo, hi = torch.aminmax(f)
    zeros = f.numel() - torch.count_nonzero(f)
    if bounds is not None:
        m = margin * (bounds[1] - bounds[0])
        sat = ((f <= bounds[0] + m) | (f >= bounds[1] - m)).sum()
    else:
        sat = zeros
    return torch.stack([s1.double(), s2.double(), lo.double(), hi.double(), zeros.double(),
                        sat.double()])


def _grad_stats(g: torch.Tensor, nonzeros: bool = False) -> torch.Tensor:
    """[sum of squares, max |g|, nonzeros (or nan)] as float64 (still on device)."""
    f = _flat32(g)
    lo, hi = torch.aminmax(f)
    nnz = (torch.count_nonzero(f).double() if nonzeros
           else torch.full((), math.nan, dtype=torch.float64, device=f.device))
    return torch.stack([_sum_sq(f)[1], torch.maximum(-lo, hi).double(), nnz])


def _plan_map(plan: Any) -> dict[str, tuple[float | None, str | None]]:
    """name -> (intended std, scheme) from a duck-typed Plan (``.entries`` or an iterable)."""
    if plan is None:
        return {}
    entries = getattr(plan, "entries", plan)
    if isinstance(entries, Mapping):
        entries = list(entries.values())
    out: dict[str, tuple[float | None, str | None]] = {}

    def get(e: Any, key: str) -> Any:
        return e.get(key) if isinstance(e, Mapping) else getattr(e, key, None)

    for e in entries:
        name = get(e, "name")
        if name is None:
            raise TypeError("audit: plan entries need a 'name' (attribute or key)")
        if get(e, "skipped"):
            continue
        std = get(e, "std")
        bound = get(e, "bound")
        if std is None and bound is not None:
            std = float(bound) / math.sqrt(3.0)
        scheme = get(e, "scheme")
        out[str(name)] = (None if std is None else float(std),
                          None if scheme is None else str(scheme))
    return out


def _orth_error(w: torch.Tensor) -> tuple[float, float]:
    """(gain g, ‖G/g² − I‖_F) with G the Gram matrix of the short side of ``w`` as a matrix."""
    w2 = w.detach().reshape(w.shape[0], -1).double()
    r, c = w2.shape
    gram = w2 @ w2.T if r <= c else w2.T @ w2
    k = min(r, c)
    g2 = torch.diagonal(gram).sum() / k
    err = torch.linalg.matrix_norm(gram / g2 - torch.eye(k, dtype=gram.dtype, device=gram.device))
    return float(g2.sqrt()), float(err)


# ------------------------------------------------------------------------------------------
# audit
# ------------------------------------------------------------------------------------------

def audit(
    model: nn.Module,
    inputs: Any,
    *,
    targets: Any = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    spectrum: bool = False,
    plan: Any = None,
    mode: AuditMode = "train",
    layers: Layers = "leaves",
    thresholds: AuditThresholds | None = None,
    seed: int = 0,
    spectrum_steps: int = 32,
    spectrum_examples: int | None = 1,
) -> AuditReport:
    """Audit how a model's initialization propagates signal forward and backward.

    See the module docstring for exactly what is measured, the verdict rules and the
    conventions (mode, default loss, update scales, model left unchanged).

    Args:
        model: any ``nn.Module``.
        inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        targets: passed to ``loss_fn(output, targets)``.
        loss_fn: returns a scalar loss from the model's (primary) output; default: the seeded
            random projection ``Σ y ⊙ R``, ``R ~ N(0, 1)``.
        spectrum: also estimate the input-output Jacobian's singular values (floating-point
            inputs only) on the first ``spectrum_examples`` examples (``None``: the whole
            batch) with ``spectrum_steps`` Lanczos steps.
        plan: an initwise ``Plan`` (or entries with ``name``, ``std``/``bound``, ``scheme``)
            to compare each parameter's std with.
        mode: ``"train"`` (what the first training step sees) or ``"eval"``.
        layers: ``"leaves"``: every leaf module and every module with its own parameters;
            ``"weighted"``: modules with their own parameters only. The model itself always
            gives the last row (its output).
        thresholds: verdict thresholds (:class:`AuditThresholds`).
        seed: seeds the default loss's projection, dropout and the Lanczos start vector.

    Returns:
        An :class:`AuditReport`.

    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(64, 64), nn.ReLU())])
    >>> for m in net:
    ...     if isinstance(m, nn.Linear):
    ...         _ = nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    >>> audit(net, torch.randn(32, 64)).verdict
    'healthy'
    >>> for m in net:
    ...     if isinstance(m, nn.Linear):
    ...         _ = nn.init.normal_(m.weight, std=0.01)
    >>> r = audit(net, torch.randn(32, 64))
    >>> r.forward_verdict, r.backward_verdict
    ('vanishing', 'vanishing')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"audit: model must be an nn.Module, got {type(model).__name__}")
    check_choice("mode", mode, get_args(AuditMode))
    check_choice("layers", layers, get_args(Layers))
    th = thresholds if thresholds is not None else AuditThresholds()
    if not isinstance(th, AuditThresholds):
        raise TypeError("audit: thresholds must be an AuditThresholds")
    if targets is not None and loss_fn is None:
        raise ValueError("audit: targets were given without loss_fn; pass loss_fn=...")
    args, kwargs = _split_inputs(inputs)
    tensors = _input_tensors(args, kwargs)
    if not tensors:
        raise ValueError("audit: inputs contain no tensor; pass a batch (a tensor, a tuple or a dict)")
    empty = [tuple(t.shape) for t in tensors if t.numel() == 0]
    if empty:
        raise ValueError(f"audit: inputs with no elements (shapes {empty}); pass a non-empty batch")
    floats = [t for t in tensors if t.is_floating_point()]
    for t in floats:
        if not bool(torch.isfinite(t).all()):
            raise ValueError("audit: inputs contain non-finite values (nan or inf)")
    plan_std = _plan_map(plan)

    params = list(dict.fromkeys(model.parameters()))
    device = params[0].device if params else (tensors[0].device if tensors else
                                              torch.device("cpu"))
    state = _ModelState(model)
    devices = [device.index or 0] if device.type == "cuda" else []
    handles: list[Any] = []
    try:
        # the audit needs autograd even when called under torch.no_grad() / inference_mode()
        # cuDNN's RNN backward refuses eval mode; the audit's own passes use the native kernels
        rnn_on_gpu = device.type == "cuda" and any(isinstance(m, nn.RNNBase) for m in model.modules())
        no_cudnn = (torch.backends.cudnn.flags(enabled=False) if rnn_on_gpu
                    else contextlib.nullcontext())
        with torch.inference_mode(False), torch.enable_grad(), no_cudnn, \
                torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            model.train(mode == "train")
            for p in params:
                if p.is_floating_point():
                    p.requires_grad_(True)
            # Floating inputs become (copies) that require grad, so that a row whose output
            # does not is known to be constant (depends on no input and no parameter).
            leaves: list[torch.Tensor] = []

            def track(t: Any) -> Any:
                if isinstance(t, torch.Tensor) and t.is_floating_point():
                    leaf = (t.clone() if t.is_inference() else t.detach()).requires_grad_(True)
                    leaves.append(leaf)
                    return leaf.clone()  # not a leaf: in-place ops of the model stay legal
                return t

            gargs = tuple(track(a) for a in args)
            gkwargs = {k: track(v) for k, v in kwargs.items()}
            report = _run(model, gargs, gkwargs, floats, targets, loss_fn, th, plan_std, layers,
                          handles, seed, dict(state.requires_grad), leaves)
            if spectrum:
                for h in handles:  # the Lanczos products must not run the statistics hooks
                    h.remove()
                handles.clear()
                torch.manual_seed(seed)
                report.spectrum = _spectrum(model, args, kwargs, spectrum_steps,
                                            spectrum_examples, seed)
    finally:
        for h in handles:
            h.remove()
        state.restore()
    report.mode = mode
    return report


def _run(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
         floats: list[torch.Tensor], targets: Any, loss_fn: Callable[..., torch.Tensor] | None,
         th: AuditThresholds, plan_std: dict[str, tuple[float | None, str | None]],
         layers: str, handles: list[Any], seed: int, orig_rg: dict[torch.Tensor, bool],
         leaves: list[torch.Tensor]) -> AuditReport:
    records: list[dict[str, Any]] = []
    out_stats: list[torch.Tensor] = []
    grad_stats: dict[int, torch.Tensor] = {}
    calls: dict[str, int] = {}

    norm_in: dict[int, torch.Tensor] = {}  # row -> sum of squares of a norm's input
    norm_in_grad: dict[int, torch.Tensor] = {}  # row -> [sum of squares, ...] of its gradient
    last: list[Any] = [None]  # the previous row's output tensor (for feeds_norm)
    readers: dict[int, tuple[torch.Tensor, int]] = {}  # id(input) -> (input, first reader)

    def make_hook(name: str, m: nn.Module) -> Callable[..., None]:
        bounds = _bounds(m)
        is_norm = m is not model and _is_norm(m)

        def hook(mod: nn.Module, inp: Any, out: Any) -> None:
            y = _primary(out)
            if y is None or y.numel() == 0:
                return
            idx = len(records)
            call = calls.get(name, 0)
            calls[name] = call + 1
            rec = {"name": name, "call": call, "type": type(mod).__name__,
                   "kind": "output" if mod is model and _kind(mod) != "weighted"
                   else _kind(mod), "shape": list(y.shape), "numel": y.numel(),
                   "module": mod, "norm": False, "feeds_norm": False,
                   "constant": not y.requires_grad}
            x_in = _primary(inp)
            # siblings reading one tensor (q, k, v) share a gradient; the model (or any
            # container) reading its own input is not a sibling of its first layer
            if x_in is not None and mod is not model and next(iter(mod.children()), None) is None:
                first = readers.setdefault(id(x_in), (x_in, idx))
                rec["shares_input_with"] = first[1] if first[0] is x_in and first[1] != idx \
                    else None
            records.append(rec)
            with torch.no_grad():
                out_stats.append(_out_stats(y, bounds, th.saturation_margin))
            # parameter-free rows that shrink the tensor (global/avg pooling, mean): the
            # gradient norm legitimately drops by sqrt(numel_in / numel_out) across them
            pool = (not is_norm and mod is not model and x_in is not None
                    and next(iter(mod.parameters(recurse=False)), None) is None
                    and x_in.numel() > y.numel() and x_in.requires_grad)
            if pool and x_in is not None:
                rec["pool"] = True
                def phook(g: torch.Tensor) -> None:
                    with torch.no_grad():
                        norm_in_grad[idx] = _grad_stats(g)
                handles.append(x_in.register_hook(phook))
            x = x_in if is_norm else None
            if x is not None and x.numel() > 0:
                rec["norm"] = True
                with torch.no_grad():
                    norm_in[idx] = _sum_sq(_flat32(x))[1] / x.numel()
                prev = last[0]
                if prev is not None and prev[1] is x:
                    records[prev[0]]["feeds_norm"] = True
                if x.requires_grad:
                    def ihook(g: torch.Tensor) -> None:
                        with torch.no_grad():
                            norm_in_grad[idx] = _grad_stats(g)
                    handles.append(x.register_hook(ihook))
            last[0] = (idx, y)
            if y.requires_grad:
                def ghook(g: torch.Tensor) -> None:
                    with torch.no_grad():
                        grad_stats[idx] = _grad_stats(g)
                handles.append(y.register_hook(ghook))

        return hook

    for name, m in model.named_modules():
        is_leaf = next(iter(m.children()), None) is None
        weighted = any(True for _ in m.parameters(recurse=False))
        if m is model or weighted or (layers == "leaves" and is_leaf):
            handles.append(m.register_forward_hook(make_hook(name, m)))

    try:
        out = model(*args, **kwargs)
    except Exception as e:
        raise AuditError(
            f"audit: the model's forward pass failed on the given inputs "
            f"({type(e).__name__}: {e})"
        ) from e
    last[0] = None
    readers.clear()
    y = _primary(out)
    if y is None:
        raise AuditError("audit: the model's output contains no floating-point tensor")
    # The loss: user's, or a seeded unit-variance random projection.
    if loss_fn is None:
        gen = torch.Generator().manual_seed(seed)
        proj = torch.randn(y.shape, generator=gen, dtype=torch.float32).to(y.device, y.dtype)
        loss = (y * proj).sum()
        loss_kind = "default: sum(y * R), R ~ N(0, 1) seeded"
    else:
        try:
            loss = loss_fn(y) if targets is None else loss_fn(y, targets)
        except Exception as e:
            raise AuditError(
                f"audit: loss_fn failed on the model output of shape {tuple(y.shape)} "
                f"({type(e).__name__}: {e})"
            ) from e
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise AuditError("audit: loss_fn must return a scalar tensor")
        loss = loss.reshape(())
        loss_kind = getattr(loss_fn, "__name__", type(loss_fn).__name__)

    pnames: dict[torch.Tensor, str] = {}
    for pn, prm in model.named_parameters():
        pnames.setdefault(prm, pn)
    plist = [p for p in pnames if p.requires_grad]
    grads: tuple[torch.Tensor | None, ...] = tuple(None for _ in plist)
    if loss.requires_grad and (plist or leaves):
        try:
            grads = torch.autograd.grad(loss, [*plist, *leaves], allow_unused=True)[:len(plist)]
        except Exception as e:
            raise AuditError(f"audit: the backward pass failed ({type(e).__name__}: {e})") from e
    gmap: dict[torch.Tensor, torch.Tensor | None] = dict(zip(plist, grads, strict=True))

    # Weight statistics: one stacked vector per parameter.
    wvecs = []
    nan = torch.full((), math.nan, dtype=torch.float64)
    for p in pnames:
        f = _flat32(p)
        s1, s2 = _sum_sq(f)
        nnz = torch.count_nonzero(f).double()
        g = gmap.get(p)
        gs = _grad_stats(g, nonzeros=True) if g is not None else torch.stack([nan, nan, nan]).to(f.device)
        spread = nan.to(f.device)
        if p.dim() >= 2 and p.numel() > 0:
            w2 = f.reshape(p.shape[0], -1)
            nr = w2.norm(dim=1) if w2.shape[0] <= w2.shape[1] else w2.norm(dim=0)
            spread = ((nr.max() - nr.min()) / nr.mean().clamp_min(1e-30)).double()
        wvecs.append(torch.stack([s1.double(), s2.double(), nnz, gs[0], gs[2], spread]))

    # The one host sync for all statistics.
    fwd = torch.stack(out_stats).cpu().tolist() if out_stats else []
    bwd = {k: v.cpu().tolist() for k, v in grad_stats.items()}
    nin = {k: float(v) for k, v in norm_in.items()}
    nin_grad = {k: v.cpu().tolist()[0] for k, v in norm_in_grad.items()}
    wst = torch.stack(wvecs).cpu().tolist() if wvecs else []

    weights: list[WeightStats] = []
    zero_params: set[str] = set()
    for (p, name), (s1, s2, nnz, gss, gnnz, spread) in zip(pnames.items(), wst, strict=True):
        n = int(p.numel())
        mean = s1 / max(n, 1)
        var = max(s2 / max(n, 1) - mean * mean, 0.0)
        rms = math.sqrt(max(s2 / max(n, 1), 0.0))
        norm = rms * math.sqrt(n)
        ws = WeightStats(name=name, shape=list(p.shape), numel=n, mean=mean,
                         std=math.sqrt(max(var, 0.0)), rms=rms, norm=norm, zero=nnz == 0,
                         requires_grad=orig_rg.get(p, True))
        if ws.zero:
            zero_params.add(name)
        intended = plan_std.get(name)
        if intended is not None:
            ws.intended_std, ws.scheme = intended
            if ws.intended_std is not None and ws.intended_std > 0:
                ws.std_ratio = ws.std / ws.intended_std
                tol = th.plan_sigmas * 0.5 * math.sqrt(2.0 / max(n, 1))
                ws.matches_plan = abs(ws.std_ratio - 1.0) <= tol
            elif ws.intended_std == 0:
                ws.matches_plan = ws.std == 0
        declared = ws.scheme is not None and "orth" in ws.scheme.lower()
        candidate = p.dim() >= 2 and min(p.shape[0], n // max(p.shape[0], 1)) >= 2 and (
            math.isfinite(spread) and spread < th.orthogonality_tol)
        if (declared or candidate) and p.dim() >= 2 and not ws.zero:
            ws.orth_gain, err = _orth_error(p)
            if declared or err <= th.orthogonality_tol:
                ws.orthogonal = True
                ws.orth_error = err
        if not math.isnan(gss):
            ws.grad_norm = math.sqrt(max(gss, 0.0))
            ws.grad_rms = ws.grad_norm / math.sqrt(max(n, 1))
            # a relative update of an all-zero tensor (zero-init bias, zero-init-last) is
            # undefined: None (shown as '-'); its grad rms is still reported
            ws.sgd_update = ws.grad_norm / norm if norm > 0 else None
            ws.adam_update = math.sqrt(gnnz) / norm if norm > 0 else None
        weights.append(ws)
    del pnames

    # Rows.
    in_rms = None
    if floats:
        ss = sum(float((t.detach().double() ** 2).sum()) for t in floats)
        cnt = sum(t.numel() for t in floats)
        in_rms = math.sqrt(ss / max(cnt, 1))
    rows: list[LayerStats] = []
    param_owner = {id(mp): f"{n}" for n, mp in model.named_parameters()}
    for i, (rec, st) in enumerate(zip(records, fwd, strict=True)):
        s1, s2, lo, hi, zeros, sat = st
        numel = rec["numel"]
        mean = s1 / numel
        m2 = s2 / numel
        var = max(m2 - mean * mean, 0.0)
        bounds = _bounds(rec["module"])
        nonfinite = not (math.isfinite(lo) and math.isfinite(hi))
        mod = rec["module"]
        own_zero = any(param_owner.get(id(mp)) in zero_params
                       for pn, mp in mod.named_parameters(recurse=False)
                       if not pn.endswith("bias"))
        r = LayerStats(index=i, name=rec["name"], call=rec["call"], type=rec["type"],
                       kind=rec["kind"], shape=rec["shape"], numel=numel, mean=mean,
                       std=math.sqrt(var) if not nonfinite else math.nan,
                       second_moment=m2, rms=math.sqrt(max(m2, 0.0)) if not nonfinite
                       else math.inf, zero_fraction=zeros / numel,
                       saturated_fraction=(sat / numel) if bounds is not None else None,
                       max_abs=max(abs(lo), abs(hi)) if not nonfinite else math.inf,
                       nonfinite=nonfinite)
        r.zero_init = own_zero and zeros == numel
        r.norm, r.feeds_norm, r.constant = rec["norm"], rec["feeds_norm"], rec["constant"]
        r.pool = bool(rec.get("pool", False))
        r.shares_input_with = rec.get("shares_input_with")
        if i in nin:
            r.in_rms = math.sqrt(nin[i]) if math.isfinite(nin[i]) else math.inf
        if i in nin_grad:
            r.grad_in_norm = math.sqrt(nin_grad[i]) if math.isfinite(nin_grad[i]) else math.inf
        if i in bwd:
            gss, gmax, _ = bwd[i]
            r.grad_norm = math.sqrt(gss) if math.isfinite(gss) else math.inf
            r.grad_rms = r.grad_norm / math.sqrt(numel)
            r.grad_max_abs = gmax
        rows.append(r)

    ref = _reference(rows, in_rms, th)
    out_row = next((r for r in reversed(rows) if r.name == "" and r.call == 0), None)
    out_gnorm = out_row.grad_norm if out_row is not None and out_row.grad_norm else None
    if out_gnorm is None:
        # The output's gradient, from the loss directly.
        out_gnorm = float("nan")

    report = AuditReport(
        model=type(model).__name__, mode="", batch=_batch(args, kwargs), loss=float(loss.detach()),
        loss_kind=loss_kind, input_rms=in_rms, reference_rms=ref,
        output_grad_norm=out_gnorm, thresholds=th, rows=rows, weights=weights,
        forward_verdict="healthy", backward_verdict="healthy", verdict="healthy")
    _judge(report)
    return report


def _batch(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    for t in _input_tensors(args, kwargs):
        if t.dim() > 0:
            return int(t.shape[0])
    return 1


def _reference(rows: list[LayerStats], in_rms: float | None, th: AuditThresholds) -> float:
    if th.reference == "unit":
        return 1.0
    if th.reference == "input" and in_rms is not None and in_rms > 0:
        return in_rms
    for r in rows:
        if not r.constant and math.isfinite(r.rms) and r.rms > 0:
            return r.rms
    return 1.0


def _nearest(v: float, lo: float, hi: float) -> float:
    """The point of ``[lo, hi]`` nearest to ``v`` (``v`` itself inside; ``hi`` for nan)."""
    return hi if math.isnan(v) else min(max(v, lo), hi)


def _span(a: float | None, b: float | None) -> tuple[float, float] | None:
    """``(min, max)`` of the finite positive values among ``a`` and ``b`` (None if none)."""
    vals = [v for v in (a, b) if v is not None and math.isfinite(v) and v > 0]
    return (min(vals), max(vals)) if vals else None


def _where(rep: AuditReport, seg: int | None, backward: bool) -> str:
    if seg is None:
        return ("the output gradient" if backward else
                "the model input" if rep.input_rms is not None and rep.thresholds.reference
                == "input" else f"reference '{rep.thresholds.reference}'")
    r = rep.rows[seg]
    return f"segment after row {seg} {r.name or '(model)'} ({r.type})"


def _judge(rep: AuditReport) -> None:
    """Set ratios, segments, flags, verdicts and reasons on ``rep`` (rules: module docs)."""
    th = rep.thresholds
    lo, hi = 1.0 / th.band, th.band
    segmented = th.scope == "segment"
    seen_zero_init = False
    notes: list[str] = []
    # Forward, in execution order: each normalization row opens a segment whose reference is
    # the interval between its input's and its output's rms.
    ref0 = rep.reference_rms
    span: tuple[float, float] = (ref0, ref0)
    seg: int | None = None
    for r in rep.rows:
        label = f"row {r.index} {r.name or '(model)'} ({r.type})"
        r.segment = seg
        r.global_ratio = r.rms / ref0 if ref0 > 0 else math.inf
        r.reference = _nearest(r.rms, *span)
        r.ratio = r.rms / r.reference if r.reference > 0 else math.inf
        r.flag = "ok"
        if r.constant:
            r.flag = "n/a"
            continue
        if r.zero_init or (seen_zero_init and r.zero_fraction == 1.0 and not r.nonfinite):
            r.flag = "skipped"
            if r.zero_init:
                notes.append(f"{label}: zero-initialized (skipped by the verdict)")
            seen_zero_init = True
            continue
        judged = not (segmented and (r.norm or r.feeds_norm))
        if r.nonfinite or (judged and r.ratio > hi):
            r.flag = "exploding"
        elif (judged and r.ratio < lo) or r.zero_fraction > th.max_zero_fraction:
            r.flag = "vanishing"
        if r.saturated_fraction is not None and r.saturated_fraction > 0.5:
            notes.append(f"{label}: {r.saturated_fraction:.0%} of outputs saturated")
        if segmented and r.norm and (new := _span(r.in_rms, r.rms)) is not None \
                and math.isfinite(r.rms) and r.rms > 0:
            span, seg = new, r.index
    first = next((r for r in rep.rows if r.flag in ("vanishing", "exploding")), None)
    if first is not None:
        rep.forward_verdict = first.flag
        rep.forward_first = first.index
        in_band = lo <= first.ratio <= hi or (segmented and (first.norm or first.feeds_norm))
        why = ("non-finite values" if first.nonfinite else
               f"{first.zero_fraction:.1%} exact zeros" if in_band else
               f"rms/ref = {first.ratio:.3g} (reference rms {first.reference:.3g}: "
               f"{_where(rep, first.segment, False)})")
        rep.forward_reason = (f"first leaves the band at row {first.index} "
                              f"{first.name or '(model)'} ({first.type}): {why}")
    # Backward, in gradient-flow order (output to input): each normalization row opens a
    # segment whose reference is the interval between the gradient norms at its output and at
    # its input.
    blocked = seen_zero_init
    g0 = rep.output_grad_norm
    g_ok = math.isfinite(g0) and g0 > 0
    gspan: tuple[float, float] = (g0, g0)
    gseg: int | None = None
    for r in reversed(rep.rows):
        r.grad_ratio = r.grad_reference = r.grad_global_ratio = r.grad_segment = None
        if r.grad_norm is None:
            r.grad_flag = "n/a"
            continue
        if g_ok:
            r.grad_segment = gseg
            r.grad_global_ratio = r.grad_norm / g0
            r.grad_reference = _nearest(r.grad_norm, *gspan)
            r.grad_ratio = (r.grad_norm / r.grad_reference if r.grad_reference > 0
                            else math.inf)
        if blocked and r.grad_norm == 0.0:
            r.grad_flag = "skipped"
            continue
        judged = not (segmented and r.norm)
        gr = r.grad_ratio
        if gr is None:
            r.grad_flag = "exploding" if not math.isfinite(r.grad_norm) else "n/a"
        elif not math.isfinite(gr) or (judged and gr > hi):
            r.grad_flag = "exploding"
        elif judged and gr < lo:
            r.grad_flag = "vanishing"
        else:
            r.grad_flag = "ok"
        if segmented and g_ok and (r.norm or r.pool) and r.grad_in_norm is not None and \
                math.isfinite(r.grad_in_norm) and r.grad_in_norm > 0:
            gspan = _span(r.grad_norm, r.grad_in_norm) or gspan
            gseg = r.index
    # Rows reading the same tensor (q, k, v projections) send back one summed gradient: the
    # gradient vanishes there only when it does in every one of them.
    group_max: dict[int, float] = {}
    for r in rep.rows:
        if r.grad_ratio is not None and r.grad_flag in ("ok", "vanishing", "exploding"):
            key = r.index if r.shares_input_with is None else r.shares_input_with
            group_max[key] = max(group_max.get(key, 0.0), r.grad_ratio)
    for r in rep.rows:
        key = r.index if r.shares_input_with is None else r.shares_input_with
        if r.grad_flag == "vanishing" and group_max.get(key, 0.0) >= lo:
            r.grad_flag = "ok"
    bfirst = next((r for r in reversed(rep.rows) if r.grad_flag in ("vanishing", "exploding")),
                  None)
    if bfirst is not None:
        rep.backward_verdict = bfirst.grad_flag
        rep.backward_first = bfirst.index
        ref = (f" (reference {bfirst.grad_reference / g0:.3g} x ‖∂L/∂y‖: "
               f"{_where(rep, bfirst.grad_segment, True)})"
               if bfirst.grad_reference is not None else "")
        rep.backward_reason = (f"first leaves the band at row {bfirst.index} "
                               f"{bfirst.name or '(model)'} ({bfirst.type}): grad-norm ratio "
                               f"{_fmt(bfirst.grad_ratio)}{ref}")
    f, b = rep.forward_verdict, rep.backward_verdict
    rep.verdict = f if _SEVERITY[f] >= _SEVERITY[b] else b
    n_norm = sum(r.norm for r in rep.rows)
    if segmented and n_norm:
        notes.append(f"{n_norm} normalization rows re-set the reference (scope 'segment'): "
                     "the scale entering them is judged only for non-finite values and "
                     "dead units")
    for w in rep.weights:
        if w.matches_plan is False:
            notes.append(f"{w.name}: std {w.std:.4g} differs from the plan's "
                         f"{w.intended_std:.4g} (ratio {w.std_ratio:.3g})")
    rep.notes = notes


def _spectrum(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], steps: int,
              examples: int | None, seed: int) -> SpectrumSummary:
    from torch.func import functional_call

    if steps < 1:
        raise ValueError(f"audit: spectrum_steps must be >= 1, got {steps}")

    def cut(t: Any) -> Any:
        if examples is not None and isinstance(t, torch.Tensor) and t.dim() > 0:
            return t[:examples]
        return t

    args = tuple(cut(a) for a in args)
    kwargs = {k: cut(v) for k, v in kwargs.items()}
    slots: list[tuple[int | None, str | None]] = [
        (i, None) for i, a in enumerate(args)
        if isinstance(a, torch.Tensor) and a.is_floating_point()]
    slots += [(None, k) for k, v in kwargs.items()
              if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not slots:
        raise ValueError(
            "audit: spectrum=True needs floating-point inputs (the Jacobian is taken with "
            "respect to them); models fed integer token ids have none"
        )
    parts = [args[i] if i is not None else kwargs[str(k)] for i, k in slots]
    sizes = [p.numel() for p in parts]
    x0 = torch.cat([p.detach().reshape(-1) for p in parts])
    params = {n: p.detach() for n, p in model.named_parameters()}
    # Running statistics of norm layers in training mode are not passed (None): they would be
    # mutated inside the transform; in training mode they do not affect the output.
    buffers: dict[str, torch.Tensor | None] = {}
    for mname, m in model.named_modules():
        for bname, b in m._buffers.items():
            full = f"{mname}.{bname}" if mname else bname
            norm_train = m.training and isinstance(m, nn.modules.batchnorm._NormBase)
            buffers[full] = None if norm_train else b

    def fn(x: torch.Tensor) -> torch.Tensor:
        a = list(args)
        kw = dict(kwargs)
        for (i, k), piece in zip(slots, torch.split(x, sizes), strict=True):
            src = args[i] if i is not None else kwargs[str(k)]
            if i is not None:
                a[i] = piece.reshape(src.shape)
            else:
                kw[str(k)] = piece.reshape(src.shape)
        torch.manual_seed(seed)  # the same dropout masks at every product
        y = _primary(functional_call(model, (params, buffers), tuple(a), kw))  # type: ignore[arg-type]
        if y is None:
            raise AuditError("audit: the model's output contains no floating-point tensor")
        return y

    gen = torch.Generator().manual_seed(seed)
    try:
        return jacobian_spectrum(fn, x0, steps=steps, generator=gen)
    except AuditError:
        raise
    except Exception as e:
        raise AuditError(
            f"audit: the Jacobian spectrum failed ({type(e).__name__}: {e}); try mode='eval' "
            "or a larger spectrum_examples"
        ) from e


# ------------------------------------------------------------------------------------------
# Width sweeps (coordinate check)
# ------------------------------------------------------------------------------------------

@dataclass
class WidthRow:
    """One layer across widths: its values per width and the log-log slope against width."""

    name: str
    call: int
    type: str
    quantity: str
    values: list[float]
    slope: float
    flat: bool


@dataclass
class WidthAuditReport:
    """Result of :func:`audit_widths`: per-layer quantities against width, with slopes.

    ``rows`` hold, for each layer present at every width, the forward output ``rms`` (per
    coordinate), the backward ``grad_rms`` (per coordinate) and, for weighted layers, the
    weight's ``sgd_update`` scale. ``flat`` marks ``|slope| < flat_slope``.
    """

    widths: list[int]
    flat_slope: float
    rows: list[WidthRow]
    verdicts: list[str]
    reports: list[AuditReport] = field(default_factory=list)

    def quantity(self, name: str) -> list[WidthRow]:
        """Rows of one quantity: ``"rms"``, ``"grad_rms"`` or ``"sgd_update"``."""
        return [r for r in self.rows if r.quantity == name]

    def to_dict(self, *, include_reports: bool = False) -> dict[str, Any]:
        """Return a JSON-able dict (the per-width reports only when asked)."""
        d = asdict(self)
        if not include_reports:
            d["reports"] = []
        return dict(_enc(d))

    def to_json(self, indent: int | None = 2) -> str:
        """Return strict JSON (per-width reports left out)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WidthAuditReport:
        """Rebuild from :meth:`to_dict`."""
        d = _dec(dict(d))
        return cls(widths=list(d["widths"]), flat_slope=d["flat_slope"],
                   rows=[WidthRow(**r) for r in d["rows"]], verdicts=list(d["verdicts"]),
                   reports=[AuditReport.from_dict(r) for r in d.get("reports", [])])

    def to_markdown(self) -> str:
        """Return a Markdown table per quantity (values per width, slope, flat)."""
        out = [f"## initwise width audit: widths {self.widths}", "",
               f"- flat: |slope of log value vs log width| < {self.flat_slope}",
               f"- verdicts per width: {', '.join(self.verdicts)}", ""]
        for q in ("rms", "grad_rms", "sgd_update"):
            rows = self.quantity(q)
            if not rows:
                continue
            header = ["layer", "type", *[f"w={w}" for w in self.widths], "slope", "flat"]
            body = [[(r.name or "(model)") + (f"#{r.call}" if r.call else ""), r.type,
                     *[_fmt(v) for v in r.values], f"{r.slope:+.3f}", "yes" if r.flat else "no"]
                    for r in rows]
            out += [f"### {q}", "", _table(header, body, True), ""]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_markdown()

    def plot(self, path: str | None = None, quantity: str = "rms") -> Any:
        """Plot ``quantity`` against width (log-log), one line per layer. Needs matplotlib."""
        from ._audit_plot import plot_widths

        return plot_widths(self, path, quantity)


def _slope(widths: Sequence[int], values: Sequence[float]) -> float:
    pts = [(math.log(w), math.log(v)) for w, v in zip(widths, values, strict=True)
           if v is not None and math.isfinite(v) and v > 0]
    if len(pts) < 2:
        return math.nan
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return math.nan
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


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
    """Audit ``factory(width)`` at several widths: which quantities stay constant as width grows.

    The coordinate check of Yang et al. (Tensor Programs V, muP, 2022): for each layer, the
    per-coordinate output rms, gradient rms and the SGD update scale are fitted against width
    on log-log axes; a quantity is ``flat`` when ``|slope| < thresholds.flat_slope`` (0.25).
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
            s = _slope(ws, vals)
            rows.append(WidthRow(name=key[0], call=key[1], type=maps[0][key].type,
                                 quantity=quantity, values=vals, slope=s,
                                 flat=math.isfinite(s) and abs(s) < th.flat_slope))
    for wname in wmaps[0]:
        if not all(wname in wm for wm in wmaps) or not wname.endswith("weight"):
            continue
        vals = [math.nan if (u := wm[wname].sgd_update) is None else float(u) for wm in wmaps]
        s = _slope(ws, vals)
        rows.append(WidthRow(name=wname, call=0, type="parameter", quantity="sgd_update",
                             values=vals, slope=s, flat=math.isfinite(s) and abs(s) < th.flat_slope))
    return WidthAuditReport(widths=ws, flat_slope=th.flat_slope, rows=rows,
                            verdicts=[r.verdict for r in reports],
                            reports=reports if keep_reports else [])


def audit_plot(reports: AuditReport | Sequence[AuditReport], path: str | None = None,
               labels: Sequence[str] | None = None) -> Any:
    """Plot forward and backward scale against depth for one or more reports, overlaid.

    Three panels share the depth axis (row index, log scale on y): the forward ratio
    ``rms / reference``, the backward ratio ``‖∂L/∂h‖ / ‖∂L/∂y‖``, and the zero/saturated
    fraction; the healthy band is shaded and each report's first out-of-band row marked.
    Needs matplotlib (the ``report`` extra). Returns the ``Figure``; saves it to ``path``.
    """
    from ._audit_plot import plot_reports

    reps = [reports] if isinstance(reports, AuditReport) else list(reports)
    return plot_reports(reps, path, labels)
